"""Ticks -> bars: hand-computed values on a tiny stream, causality, readers, the real capture."""

from __future__ import annotations

import gzip
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.data.reading import load_candles
from hmarl.sources.ticks import (
    BAR_EXTRA_COLUMNS,
    Ticks,
    bar_columns,
    read_ticks,
    read_trades,
    read_ws_capture,
    ticks_to_bars,
    write_bars,
)

REPO = Path(__file__).resolve().parents[1]
T0 = pd.Timestamp("2024-01-01", tz="UTC").value  # ns; the tiny stream's seconds count from here
SEC = 1_000_000_000

# (seconds, bid, bid_qty, ask, ask_qty): the book before 1 s makes the first whole bar [1, 2).
QUOTES = [
    (0.50, 100.0, 1.0, 100.2, 3.0),
    (1.25, 100.0, 2.0, 100.2, 2.0),
    (1.75, 100.1, 4.0, 100.2, 1.0),
    (2.50, 100.1, 1.0, 100.3, 1.0),
    (4.00, 100.2, 3.0, 100.4, 1.0),  # exactly at a close: belongs to the bar [4, 5)
    (5.20, 100.2, 1.0, 100.4, 1.0),  # last tick: the last whole bar closes at 5 s
]
# (seconds, price, qty, aggressor is buy)
TRADES = [
    (0.9, 100.1, 5.0, True),  # before the first whole bar: ignored
    (1.1, 100.1, 1.0, True),
    (1.5, 100.0, 2.0, False),
    (1.9, 100.2, 1.5, True),
    (2.0, 100.1, 0.5, False),  # exactly at a close: belongs to the bar [2, 3)
    (4.5, 100.3, 3.0, True),
    (5.1, 100.4, 2.0, True),  # inside the unfinished bar [5, 6): no bar
]


def make_ticks(
    quotes: Sequence[tuple[float, ...]], trades: Sequence[tuple[float, float, float, bool]]
) -> Ticks:
    """Ticks from (seconds, ...) tuples; timestamps in ns from T0."""
    q = np.array(quotes, dtype=np.float64)
    quote_frame = pd.DataFrame(q[:, 1:], columns=["bid_price", "bid_qty", "ask_price", "ask_qty"])
    quote_frame.insert(0, "ts", T0 + np.round(q[:, 0] * SEC).astype(np.int64))
    trade_frame = pd.DataFrame(
        {
            "ts": T0 + np.round(np.array([t[0] for t in trades]) * SEC).astype(np.int64),
            "price": [t[1] for t in trades],
            "qty": [t[2] for t in trades],
            "is_buy": [t[3] for t in trades],
        }
    )
    return Ticks(quotes=quote_frame, trades=trade_frame)


def test_tiny_stream_matches_hand_computed_bars() -> None:
    bars = ticks_to_bars(make_ticks(QUOTES, TRADES), "1s", ret_horizons=(1, 2), rv_horizons=(2,))
    closes = pd.to_datetime(T0 + np.array([2, 3, 4, 5]) * SEC, unit="ns", utc=True)
    assert list(bars.index) == list(closes)
    assert list(bars.columns) == bar_columns((1, 2), (2,))
    assert (bars.dtypes == np.float64).all()
    mid = np.array([100.15, 100.2, 100.2, 100.3])
    spread = np.array([0.1, 0.2, 0.2, 0.2])
    expected = {
        "open": [100.1, 100.1, 100.2, 100.3],
        "high": [100.2, 100.1, 100.2, 100.3],
        "low": [100.0, 100.1, 100.2, 100.3],
        "close": [100.2, 100.1, 100.2, 100.3],  # bar [3, 4) has no trade: the mid, flagged
        "volume": [4.5, 0.5, 0.0, 3.0],
        "trade_count": [3, 1, 0, 1],
        "no_trade": [0, 0, 1, 0],
        "mid": mid,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "imbalance_last": [0.6, 0.0, 0.0, 0.5],
        # [1,2): -0.5 for 0.25 s, 0 for 0.5 s, 0.6 for 0.25 s; [2,3): 0.6 then 0, half each
        "imbalance_tw": [0.025, 0.3, 0.0, 0.5],
        "bid_size_mean": [1 * 0.25 + 2 * 0.5 + 4 * 0.25, 4 * 0.5 + 1 * 0.5, 1.0, 3.0],
        "ask_size_mean": [3 * 0.25 + 2 * 0.5 + 1 * 0.25, 1.0, 1.0, 1.0],
        "trade_pressure": [(2.5 - 2.0) / 4.5, -1.0, 0.0, 1.0],
    }
    for column, values in expected.items():
        np.testing.assert_allclose(bars[column], values, rtol=1e-12, atol=1e-12, err_msg=column)
    r1 = np.log(mid[1:] / mid[:-1])
    np.testing.assert_allclose(bars["ret_1"], [np.nan, *r1], rtol=1e-12)
    np.testing.assert_allclose(bars["ret_2"], [np.nan, np.nan, *np.log(mid[2:] / mid[:-2])])
    rv = np.sqrt(r1[:-1] ** 2 + r1[1:] ** 2)
    np.testing.assert_allclose(bars["rv_2"], [np.nan, np.nan, *rv], rtol=1e-12)


def random_ticks(seed: int, seconds: int = 20) -> Ticks:
    """A random walk book and trades over ``seconds`` s, some stamps on bar edges."""
    rng = np.random.default_rng(seed)
    n_q, n_t = 300, 120
    tq = np.sort(np.concatenate([[0.3], rng.uniform(0.3, seconds, n_q - 8), np.arange(2, 9)]))
    bid = 100 + np.cumsum(rng.normal(0, 0.02, n_q)).round(2)
    quotes = [
        (t, b, q1, b + s, q2)
        for t, b, q1, s, q2 in zip(
            tq,
            bid,
            rng.uniform(0, 5, n_q),
            rng.choice([0.01, 0.02, 0.05], n_q),
            rng.uniform(0, 5, n_q),
            strict=True,
        )
    ]
    tt = np.sort(np.concatenate([rng.uniform(0.3, seconds, n_t - 5), np.arange(3, 8)]))
    trades = [
        (t, 100 + rng.normal(0, 0.1), rng.uniform(0.01, 2), bool(rng.integers(2))) for t in tt
    ]
    return make_ticks(quotes, trades)


def _alter_from(ticks: Ticks, cut: int, seed: int) -> Ticks:
    """Change every tick at or after ``cut`` ns and add ticks there, keeping the book sane."""
    rng = np.random.default_rng(seed)
    quotes, trades = ticks.quotes.copy(), ticks.trades.copy()
    late_q, late_t = quotes["ts"] >= cut, trades["ts"] >= cut
    quotes.loc[late_q, "bid_price"] = rng.uniform(90, 95, late_q.sum())
    quotes.loc[late_q, "ask_price"] = quotes.loc[late_q, "bid_price"] + 1.0
    quotes.loc[late_q, "bid_qty"] = rng.uniform(0, 9, late_q.sum())
    trades.loc[late_t, "price"] = rng.uniform(90, 95, late_t.sum())
    trades.loc[late_t, "is_buy"] = ~trades.loc[late_t, "is_buy"]
    extra_q = pd.DataFrame(
        {
            "ts": [cut, cut + 7],
            "bid_price": [80.0, 81.0],
            "bid_qty": [9.0, 1.0],
            "ask_price": [80.5, 81.5],
            "ask_qty": [0.1, 2.0],
        }
    )
    extra_t = pd.DataFrame(
        {"ts": [cut, cut + 3], "price": [80.2, 81.2], "qty": [50.0, 1.0], "is_buy": [True, False]}
    )
    return Ticks(
        quotes=pd.concat([quotes, extra_q]).sort_values("ts", kind="stable", ignore_index=True),
        trades=pd.concat([trades, extra_t]).sort_values("ts", kind="stable", ignore_index=True),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ticks_at_or_after_a_close_change_nothing_up_to_that_bar(seed: int) -> None:
    ticks = random_ticks(seed)
    bars = ticks_to_bars(ticks, "1s")
    for j in (0, 3, 4, 9, len(bars) - 2):
        cut = int(bars.index[j].value)  # close of bar j, ns
        altered = ticks_to_bars(_alter_from(ticks, cut, seed + j), "1s")
        pd.testing.assert_frame_equal(altered.iloc[: j + 1], bars.iloc[: j + 1])
        assert not altered.iloc[j + 1 :].equals(bars.iloc[j + 1 :]), "the change must show later"


@pytest.mark.parametrize("freq", ["1s", "5s", "1min"])
def test_bars_are_a_gapless_grid_of_the_requested_length(freq: str) -> None:
    ticks = random_ticks(5, seconds=150)
    bars = ticks_to_bars(ticks, freq)
    step = pd.Timedelta(freq)
    assert (bars.index.to_series().diff().dropna() == step).all()
    assert (pd.DatetimeIndex(bars.index).asi8 % step.value == 0).all()
    assert bars["volume"].sum() <= ticks.trades["qty"].sum()
    assert (
        bars["trade_count"].sum()
        == (
            (ticks.trades["ts"] >= bars.index[0].value - step.value)
            & (ticks.trades["ts"] < bars.index[-1].value)
        ).sum()
    )


def test_too_short_stream_and_bad_lengths_fail_clearly() -> None:
    ticks = make_ticks(QUOTES, TRADES)
    with pytest.raises(ValueError, match="less than one whole bar"):
        ticks_to_bars(ticks, "5s")
    with pytest.raises(ValueError, match="not a fixed bar spacing"):
        ticks_to_bars(ticks, "fortnight")
    with pytest.raises(ValueError, match="horizons must be >= 1"):
        ticks_to_bars(ticks, "1s", ret_horizons=(0,))


# --- readers ------------------------------------------------------------------------------


def _write_generic(tmp_path: Path) -> tuple[Path, Path]:
    """QUOTES as a CSV with ms stamps; TRADES as a Parquet with datetimes and Binance's m."""
    ticks = make_ticks(QUOTES, TRADES)
    quotes = ticks.quotes.assign(ts=ticks.quotes["ts"] // 1_000_000)
    quotes_path = tmp_path / "quotes.csv"
    quotes.to_csv(quotes_path, index=False)
    trades = ticks.trades.assign(ts=pd.to_datetime(ticks.trades["ts"], unit="ns", utc=True))
    trades["is_buyer_maker"] = ~trades.pop("is_buy")
    trades_path = tmp_path / "trades.parquet"
    trades.to_parquet(trades_path)
    return quotes_path, trades_path


def test_generic_files_read_back_the_same_ticks(tmp_path: Path) -> None:
    quotes_path, trades_path = _write_generic(tmp_path)
    ticks = read_ticks(quotes_path, trades_path)
    reference = make_ticks(QUOTES, TRADES)
    pd.testing.assert_frame_equal(ticks.quotes, reference.quotes)
    pd.testing.assert_frame_equal(ticks.trades, reference.trades)
    side = pd.read_parquet(trades_path).assign(
        side=lambda f: np.where(f.is_buyer_maker, "SELL", "buy")
    )
    side.drop(columns="is_buyer_maker").to_csv(tmp_path / "side.csv", index=False)
    pd.testing.assert_frame_equal(read_trades(tmp_path / "side.csv"), reference.trades)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.drop(columns="ask_qty"), r"quotes.csv: missing columns \['ask_qty'\]"),
        (
            lambda f: f.assign(bid_qty=["x", *f.bid_qty[1:]]),
            "data row 1, column bid_qty: not a finite",
        ),
        (
            lambda f: f.assign(bid_price=f.ask_price + 1),
            "quotes at 2024-01-01 00:00:00.500000.*bid above ask",
        ),
    ],
)
def test_bad_generic_quotes_name_file_row_and_column(
    tmp_path: Path, edit: object, message: str
) -> None:
    quotes_path, trades_path = _write_generic(tmp_path)
    edit(pd.read_csv(quotes_path)).to_csv(quotes_path, index=False)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        read_ticks(quotes_path, trades_path)


def test_bad_trade_side_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {"ts": [1, 2], "price": [1.0, 2.0], "qty": [1, 1], "side": ["buy", "hold"]}
    ).to_csv(path, index=False)
    with pytest.raises(ValueError, match="data row 2, column side: unknown side 'hold'"):
        read_trades(path)
    pd.DataFrame({"ts": [1], "price": [1.0], "qty": [1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="trades need one of the columns"):
        read_trades(path)


def _ws_line(ns: int, stream: str, data: dict[str, object]) -> str:
    return f"{ns} {json.dumps({'stream': stream, 'data': data})}\n"


def test_ws_capture_uses_receive_time_and_skips_depth(tmp_path: Path) -> None:
    lines = [
        _ws_line(T0 + 1, "btcusdt@depth@100ms", {"e": "depthUpdate", "E": 9, "b": [], "a": []}),
        _ws_line(
            T0 + 2,
            "btcusdt@bookTicker",
            {"u": 1, "s": "BTCUSDT", "b": "10.5", "B": "2", "a": "10.6", "A": "3"},
        ),
        _ws_line(
            T0 + 3,
            "btcusdt@trade",
            {"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "10.6", "q": "0.5", "m": False},
        ),
        _ws_line(
            T0 + 4,
            "btcusdt@trade",
            {"e": "trade", "E": 6, "T": 6, "s": "BTCUSDT", "p": "10.5", "q": "0.25", "m": True},
        ),
    ]
    path = tmp_path / "capture_ws.gz"
    with gzip.open(path, "wt") as sink:
        sink.writelines(lines)
    ticks = read_ws_capture(path)
    assert ticks.quotes.to_dict("records") == [
        {"ts": T0 + 2, "bid_price": 10.5, "bid_qty": 2.0, "ask_price": 10.6, "ask_qty": 3.0}
    ]
    assert ticks.trades["ts"].tolist() == [T0 + 3, T0 + 4]
    assert ticks.trades["is_buy"].tolist() == [True, False]  # m = buyer is maker -> seller hit
    np.testing.assert_array_equal(ticks.trades[["price", "qty"]], [[10.6, 0.5], [10.5, 0.25]])

    bad_price = {"e": "trade", "s": "BTCUSDT", "p": "n/a", "q": "1", "m": True}
    for bad_line in (f"{T0 + 5} {{not json\n", _ws_line(T0 + 5, "x@trade", bad_price)):
        with gzip.open(path, "wt") as sink:
            sink.writelines([*lines, bad_line])
        with pytest.raises(ValueError, match=r"capture_ws.gz, line 5: unreadable message"):
            read_ws_capture(path)


# --- output -------------------------------------------------------------------------------


def test_parquet_is_open_time_indexed_and_loads_as_candles(tmp_path: Path) -> None:
    ticks = random_ticks(7, seconds=60)
    bars = ticks_to_bars(ticks, "1s")
    path = tmp_path / "bars.parquet"
    written = write_bars(bars, path, "1s")
    stored = pd.read_parquet(path)
    defined = bars.iloc[30:]  # rv_30 needs 30 one-bar returns: the warm-up is not stored
    assert defined.notna().all().all() and bars.iloc[29].isna().any()
    assert stored.index.name == "timestamp"
    pd.testing.assert_frame_equal(stored, written, check_freq=False)
    assert list(pd.DatetimeIndex(stored.index) + pd.Timedelta("1s")) == list(defined.index)
    candles = load_candles(path, fmt="parquet", extra_columns=list(BAR_EXTRA_COLUMNS))
    assert list(candles.columns[:5]) == ["open", "high", "low", "close", "volume"]
    np.testing.assert_array_equal(candles.index, stored.index)
    for column in ("close", "spread", "imbalance_tw", "trade_pressure", "rv_30"):
        np.testing.assert_array_equal(candles[column].to_numpy(), defined[column].to_numpy())


def test_cli_turns_generic_files_into_a_parquet(tmp_path: Path) -> None:
    quotes_path, trades_path = _write_generic(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "ticks_to_bars", REPO / "scripts" / "ticks_to_bars.py"
    )
    assert spec and spec.loader
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "bars.parquet"
    argv = ["--quotes", str(quotes_path), "--trades", str(trades_path), "--out", str(out)]
    assert cli.main([*argv, "--ret", "1", "--rv", "2"]) == 0
    stored = pd.read_parquet(out)
    expected = ticks_to_bars(make_ticks(QUOTES, TRADES), "1s", ret_horizons=(1,), rv_horizons=(2,))
    np.testing.assert_array_equal(stored.to_numpy(), expected.iloc[2:].to_numpy())  # rv_2 warm-up
    assert cli.main([*argv, "--freq", "1h"]) == 1


# --- the real capture ---------------------------------------------------------------------


def test_real_capture_one_second_bars(shared_data: Path) -> None:
    began = time.perf_counter()
    ticks = read_ws_capture(shared_data / "binance_spot_btcusdt_20240809_ws.gz")
    bars = ticks_to_bars(ticks, "1s")
    elapsed = time.perf_counter() - began
    assert elapsed < 10, f"{elapsed:.1f} s for ~58k lines"
    assert len(ticks.quotes) == 45_134 and len(ticks.trades) == 10_147
    span = (ticks.quotes["ts"].iloc[-1] - ticks.quotes["ts"].iloc[0]) / 1e9
    assert len(bars) >= span - 2 and len(bars) > 290  # ~5 minutes
    assert (bars.index.to_series().diff().dropna() == pd.Timedelta("1s")).all()
    assert (bars["spread"] > 0).all()
    traded = bars[bars["no_trade"] == 0]
    gap = (traded["close"] - traded["mid"]).abs() / traded["mid"]
    assert gap.median() < 1e-5
    assert np.corrcoef(traded["close"], traded["mid"])[0, 1] > 0.99
    assert bars[list(BAR_EXTRA_COLUMNS)].iloc[30:].notna().all().all()
