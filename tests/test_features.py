"""Feature registry: causality, explicit warm-up, finiteness, hand-checked values, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.market import features
from hmarl.market.features import (
    DEFAULT_FEATURES,
    available_features,
    build_features,
    feature_lookback,
    register_feature,
    required_columns,
)
from hmarl.market.windows import Scaler, window_stats

START = "2024-01-01 00:00"  # a Monday


def make_candles(
    n: int, seed: int = 0, zero_volume: float = 0.0, start: str = START
) -> pd.DataFrame:
    """Valid 5-minute candles from a geometric random walk, a fraction of zero-volume bars."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.003, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.002, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.002, n))
    volume = rng.gamma(2.0, 5.0, n)
    volume[rng.random(n) < zero_volume] = 0.0
    index = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    frame = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame(frame, index=index)


def flat_candles(close: np.ndarray, volume: float = 1.0) -> pd.DataFrame:
    """Bars whose open/high/low equal the close (a known path for hand checks)."""
    index = pd.date_range(START, periods=len(close), freq="5min", tz="UTC")
    frame = {"open": close, "high": close, "low": close, "close": close}
    return pd.DataFrame(frame, index=index).assign(volume=volume)


def perturb_after(candles: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Replace every candle after row t by a different valid candle (prices and volume)."""
    rng = np.random.default_rng(seed)
    n = len(candles) - t - 1
    close = candles["close"].to_numpy()[t + 1 :] * np.exp(rng.normal(0.0, 0.05, n))
    open_ = close * np.exp(rng.normal(0.0, 0.01, n))
    new = {
        "open": open_,
        "high": np.maximum(open_, close) * 1.01,
        "low": np.minimum(open_, close) * 0.99,
        "close": close,
        "volume": rng.gamma(1.0, 50.0, n) * (rng.random(n) < 0.7),
        "spread": rng.uniform(5.0, 9.0, n),
    }
    out = candles.copy()
    for col in candles.columns:
        out[col] = np.concatenate([candles[col].to_numpy()[: t + 1], new[col]])
    return out


# ---------------------------------------------------------------- causality


def _pipeline(candles: pd.DataFrame, names: list[str], t: int) -> list[np.ndarray]:
    """Everything the agent sees at t: features, macro/micro-like windows, train scaler."""
    x = build_features(candles, names).to_numpy()
    macro, micro = window_stats(x, 50), window_stats(x, 10)
    scaler = Scaler.fit(macro, (0, t + 1))
    return [x, macro, micro, scaler.mean, scaler.std]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nothing_at_or_before_t_depends_on_later_candles(seed: int) -> None:
    candles = make_candles(420, seed=seed, zero_volume=0.1)
    candles["spread"] = np.random.default_rng(seed).uniform(0.5, 1.5, len(candles))
    names = [*DEFAULT_FEATURES, "ret_48", "col:spread", "col_ema6:spread"]
    rng = np.random.default_rng(100 + seed)
    # The scaler needs finite macro rows at or before t: feature lookback + 49.
    first_full = feature_lookback(names) + 49
    for t in rng.integers(first_full, len(candles) - 2, size=4):
        before = _pipeline(candles, names, int(t))
        after = _pipeline(perturb_after(candles, int(t), seed), names, int(t))
        for old, new in zip(before[:3], after[:3], strict=True):
            assert np.array_equal(old[: t + 1], new[: t + 1], equal_nan=True)
            assert not np.array_equal(old[t + 1 :], new[t + 1 :], equal_nan=True)
        for old, new in zip(before[3:], after[3:], strict=True):
            assert np.array_equal(old, new)


# ---------------------------------------------------------------- registry and warm-up


def test_default_set_is_twenty_unique_registered_names() -> None:
    assert len(DEFAULT_FEATURES) == 20
    assert len(set(DEFAULT_FEATURES)) == 20
    frame = build_features(make_candles(300))
    assert list(frame.columns) == list(DEFAULT_FEATURES)
    assert (frame.dtypes == np.float64).all()


@pytest.mark.parametrize("zero_volume", [0.0, 0.3, 1.0])
def test_every_default_is_nan_before_its_lookback_and_finite_after(zero_volume: float) -> None:
    candles = make_candles(600, seed=4, zero_volume=zero_volume)
    frame = build_features(candles)
    assert frame.index.equals(candles.index)
    for name in DEFAULT_FEATURES:
        values = frame[name].to_numpy()
        lookback = feature_lookback([name])
        assert np.isnan(values[:lookback]).all(), name
        assert np.isfinite(values[lookback:]).all(), name
    overall = feature_lookback(DEFAULT_FEATURES)
    assert overall == max(feature_lookback([n]) for n in DEFAULT_FEATURES)
    assert np.isfinite(frame.to_numpy()[overall:]).all()
    assert np.isnan(frame.to_numpy()[overall - 1]).any()


def test_ema_warmup_is_three_spans() -> None:
    assert feature_lookback(["ema_ratio_12_48"]) == 3 * 48
    assert feature_lookback(["macd_signal_12_26_9"]) == 3 * 26 + 3 * 9
    assert feature_lookback(["rsi_14"]) == 1 + 3 * 27
    assert feature_lookback(["ret_5", "rv_7"]) == 7


def test_required_columns_follow_the_names() -> None:
    assert required_columns(["ret_1"]) == ["close"]
    assert required_columns(["tod_sin", "dow_cos"]) == []
    assert required_columns(["col:spread", "atr_3"]) == ["spread", "high", "low", "close"]
    assert set(required_columns(DEFAULT_FEATURES)) == {"high", "low", "close", "volume"}


def test_available_features_lists_patterns_with_descriptions() -> None:
    listing = available_features()
    for pattern in ("ret_{h}", "macd_signal_{fast}_{slow}_{signal}", "col:{column}", "tod_sin"):
        assert listing[pattern]


def test_extra_columns_pass_through_and_are_ignored_otherwise() -> None:
    candles = make_candles(50).assign(imbalance=np.linspace(-1, 1, 50), note="x")
    frame = build_features(candles, ["col:imbalance", "ret_1"])
    np.testing.assert_array_equal(frame["col:imbalance"], np.linspace(-1, 1, 50))


def test_register_feature_adds_a_parametrised_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_REGISTRY", dict(features._REGISTRY))

    @register_feature("close_lag_{k}", "close k bars ago", columns=("close",), lookback=lambda k: k)
    def _lag(candles: pd.DataFrame, k: int) -> np.ndarray:
        return candles["close"].shift(k).to_numpy()

    candles = make_candles(30)
    frame = build_features(candles, ["close_lag_3"])
    np.testing.assert_array_equal(frame["close_lag_3"].to_numpy()[3:], candles["close"][:-3])
    assert feature_lookback(["close_lag_3"]) == 3
    with pytest.raises(ValueError, match="already registered"):
        register_feature("close_lag_{k}", "again", columns=("close",))


# ---------------------------------------------------------------- hand-checked values


def test_returns_and_realised_vol_match_their_definitions() -> None:
    candles = make_candles(80, seed=5)
    close = candles["close"].to_numpy()
    frame = build_features(candles, ["ret_1", "ret_12", "rv_12"])
    for t in (12, 40, 79):
        assert frame["ret_1"].iloc[t] == pytest.approx(np.log(close[t] / close[t - 1]), rel=1e-12)
        assert frame["ret_12"].iloc[t] == pytest.approx(np.log(close[t] / close[t - 12]), rel=1e-12)
        one_bar = np.log(close[t - 11 : t + 1] / close[t - 12 : t])
        assert frame["rv_12"].iloc[t] == pytest.approx(np.std(one_bar), rel=1e-9)


def test_oscillators_on_monotone_and_flat_paths() -> None:
    names = ["rsi_14", "stoch_k_14", "range_pos_48", "obv_slope_48", "bb_pctb_20"]
    rise = build_features(flat_candles(100.0 * 1.001 ** np.arange(300)), names).iloc[-1]
    fall = build_features(flat_candles(100.0 * 0.999 ** np.arange(300)), names).iloc[-1]
    flat = build_features(flat_candles(np.full(300, 100.0)), [*names, "bb_width_20", "macd_12_26"])
    assert rise["rsi_14"] == 100.0 and fall["rsi_14"] == 0.0
    assert rise["stoch_k_14"] == 100.0 and fall["stoch_k_14"] == 0.0
    assert rise["range_pos_48"] == 1.0 and fall["range_pos_48"] == 0.0
    assert rise["obv_slope_48"] == 1.0 and fall["obv_slope_48"] == -1.0
    for path, row in ((1.001, rise), (0.999, fall)):
        last20 = 100.0 * path ** np.arange(280, 300)
        band = 4.0 * last20.std()
        expected = (last20[-1] - (last20.mean() - band / 2)) / band
        assert row["bb_pctb_20"] == pytest.approx(expected, rel=1e-9)
    last = flat.iloc[-1]
    assert last["rsi_14"] == 50.0 and last["stoch_k_14"] == 50.0 and last["range_pos_48"] == 0.5
    assert last["bb_pctb_20"] == 0.5 and last["bb_width_20"] == 0.0
    assert last["obv_slope_48"] == 0.0 and last["macd_12_26"] == 0.0


def _ema_loop(x: np.ndarray, span: int) -> np.ndarray:
    """Textbook recursive EMA seeded at the first value (independent of pandas)."""
    alpha, out = 2.0 / (span + 1.0), np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = alpha * x[i] + (1.0 - alpha) * out[i - 1]
    return out


def test_ema_features_match_a_plain_recursion() -> None:
    candles = make_candles(200, seed=6)
    close = candles["close"].to_numpy()
    frame = build_features(candles, ["macd_12_26", "macd_signal_12_26_9", "ema_ratio_12_48"])
    macd = (_ema_loop(close, 12) - _ema_loop(close, 26)) / close
    start = feature_lookback(["macd_signal_12_26_9"])
    np.testing.assert_allclose(frame["macd_12_26"][78:], macd[78:], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(
        frame["macd_signal_12_26_9"][start:], _ema_loop(macd, 9)[start:], rtol=1e-9, atol=1e-15
    )
    ratio = np.log(_ema_loop(close, 12) / _ema_loop(close, 48))
    np.testing.assert_allclose(frame["ema_ratio_12_48"][144:], ratio[144:], rtol=1e-9)


def test_column_ema_matches_a_plain_recursion_and_keeps_the_columns_nans() -> None:
    candles = make_candles(60, seed=7)
    flow = np.random.default_rng(7).standard_normal(60)
    flow[40] = np.nan
    frame = build_features(candles.assign(flow=flow), ["col_ema5:flow"])
    got = frame["col_ema5:flow"].to_numpy()
    assert feature_lookback(["col_ema5:flow"]) == 15
    assert required_columns(["col_ema5:flow"]) == ["flow"]
    assert np.isnan(got[:15]).all() and np.isnan(got[40])
    # after the gap the EMA carries on from its last value (pandas' ignore_na=False decay)
    np.testing.assert_allclose(got[15:40], _ema_loop(flow[:40], 5)[15:40], rtol=1e-12)
    assert np.isfinite(got[41:]).all()


def test_atr_volume_features_on_known_bars() -> None:
    candles = flat_candles(np.full(120, 200.0))
    candles["high"], candles["low"] = 201.0, 199.0
    candles["volume"] = np.where(np.arange(120) % 3 == 0, 0.0, 10.0)
    frame = build_features(candles, ["atr_14", "logvol_chg", "vol_z_48"])
    assert frame["atr_14"].iloc[-1] == pytest.approx(2.0 / 200.0, rel=1e-12)
    volume = candles["volume"].to_numpy()
    np.testing.assert_array_equal(frame["logvol_chg"][1:], np.diff(np.log1p(volume)))
    window = volume[-48:]
    expected = (volume[-1] - window.mean()) / window.std()
    assert frame["vol_z_48"].iloc[-1] == pytest.approx(expected, rel=1e-9)
    still = flat_candles(np.full(60, 5.0), volume=0.0)
    assert build_features(still, ["vol_z_48"])["vol_z_48"].iloc[-1] == 0.0


def test_time_features_at_known_times() -> None:
    times = ["2024-01-01 06:00", "2024-01-01 12:00", "2024-01-04 12:00", "2024-01-07 18:00"]
    index = pd.DatetimeIndex(times, tz="UTC")
    candles = flat_candles(np.full(4, 1.0)).set_axis(index)
    frame = build_features(candles, ["tod_sin", "tod_cos", "dow_sin", "dow_cos"])
    np.testing.assert_allclose(frame["tod_sin"], [1.0, 0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(frame["tod_cos"], [0.0, -1.0, -1.0, 0.0], atol=1e-12)
    week = np.array([0.25, 0.5, 3.5, 6.75]) / 7.0  # Monday 06:00 .. Sunday 18:00
    np.testing.assert_allclose(frame["dow_sin"], np.sin(2 * np.pi * week), atol=1e-12)
    np.testing.assert_allclose(frame["dow_cos"], np.cos(2 * np.pi * week), atol=1e-12)
    local = build_features(candles.tz_convert("America/New_York"), ["tod_sin", "dow_cos"])
    np.testing.assert_allclose(local.to_numpy(), frame[["tod_sin", "dow_cos"]].to_numpy())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["ret_1", "momentum_5"],
            r"'momentum_5': unknown feature name.*Available patterns: ret_\{h\}",
        ),
        (["rv_0"], "parameter n must be a positive integer"),
        (["macd_26_12"], "fast span 26 must be below slow span 12"),
        (["ret_1", "ret_1"], "repeat"),
        ("ret_1", "list of feature names"),
        ([], "no feature names"),
    ],
)
def test_bad_names_fail_with_the_available_list(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_features(make_candles(20), names)


def test_bad_candles_name_the_column_and_row() -> None:
    candles = make_candles(30)
    with pytest.raises(ValueError, match=r"lack columns \['volume'\]"):
        build_features(candles.drop(columns="volume"), ["logvol_chg"])
    broken = candles.copy()
    broken.loc[broken.index[7], "close"] = np.nan
    with pytest.raises(
        ValueError, match=r"'close' must be finite and > 0: row 7 \(2024-01-01 00:35"
    ):
        build_features(broken, ["ret_1"])
    with pytest.raises(ValueError, match="'note' must be numeric"):
        build_features(candles.assign(note="x"), ["col:note"])
    with pytest.raises(ValueError, match="tz-aware"):
        build_features(candles.tz_localize(None), ["tod_sin"])


@pytest.mark.realdata
def test_real_btcusdt_candles_give_finite_features_and_windows(shared_data: Path) -> None:
    raw = pd.read_csv(shared_data / "binance_spot_BTCUSDT_5m_2024Q1.csv")
    candles = raw.set_axis(pd.DatetimeIndex(raw.pop("timestamp"), tz="UTC"), axis=0)
    candles.columns = candles.columns.str.lower()
    x = build_features(candles.astype(np.float64)).to_numpy()
    start = feature_lookback(DEFAULT_FEATURES)
    assert np.isfinite(x[start:]).all()
    for window in (492, 60):
        stats = window_stats(x, window)
        assert np.isfinite(stats[start + window - 1 :]).all()
        assert np.isnan(stats[start + window - 2]).any()
