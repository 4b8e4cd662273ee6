"""Candles -> scaled window tensors: causality end to end, splits, and the on-disk cache."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.data.synthetic import synthetic_candles
from hmarl.market.market_data import build_market, cached_market

PARAMS = {
    "feature_names": [],
    "macro_window": 48,
    "micro_window": 12,
    "train_frac": 0.6,
    "val_frac": 0.2,
}


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return synthetic_candles(3000, seed=4)


def test_nothing_after_t_reaches_rows_up_to_t(candles: pd.DataFrame) -> None:
    """Perturb every candle after t: inputs at rows <= t and the train-only scaler are unchanged."""
    base = build_market(candles, **PARAMS)
    rng = np.random.default_rng(0)
    for t in rng.integers(base.splits["train"][1] + 1, len(candles) - 5, size=3):
        changed = candles.copy()
        scale = rng.uniform(0.8, 1.25, size=len(candles) - t - 1)
        for col in ("open", "high", "low", "close"):
            changed.iloc[t + 1 :, changed.columns.get_loc(col)] *= scale
        changed.iloc[t + 1 :, changed.columns.get_loc("volume")] *= rng.uniform(
            0.1, 10, size=len(scale)
        )
        other = build_market(changed, **PARAMS)
        assert np.array_equal(base.macro[: t + 1], other.macro[: t + 1], equal_nan=True)
        assert np.array_equal(base.micro[: t + 1], other.micro[: t + 1], equal_nan=True)
        assert base.scalers == other.scalers
        assert not np.array_equal(base.macro[t + 1 :], other.macro[t + 1 :], equal_nan=True)


def test_splits_are_chronological_and_never_use_the_next_split(candles: pd.DataFrame) -> None:
    m = build_market(candles, **PARAMS)
    rows = m.meta["row_splits"]
    assert m.splits["train"][0] == m.meta["first_valid"] > 0
    for name in ("train", "val", "test"):
        lo, hi = m.splits[name]
        assert rows[name][0] <= lo < hi == rows[name][1] - 1  # the last bar makes no decision
        assert np.isfinite(m.macro[lo:hi]).all() and np.isfinite(m.micro[lo:hi]).all()
    assert m.splits["train"][1] < m.splits["val"][0] < m.splits["val"][1] < m.splits["test"][0]
    lo, hi = m.splits["train"]  # z-scored on train rows
    np.testing.assert_allclose(m.macro[lo:hi].mean(0), 0, atol=1e-4)


def test_given_scalers_are_used_not_refitted(candles: pd.DataFrame) -> None:
    first = build_market(candles, **PARAMS)
    shifted = candles.copy()
    shifted[["open", "high", "low", "close"]] *= 1.7
    shifted["volume"] *= 3.0
    reused = build_market(shifted, **PARAMS, scalers=first.scalers)
    refit = build_market(shifted, **PARAMS)
    assert reused.scalers == first.scalers and refit.scalers != first.scalers


def test_cache_round_trip_and_corrupt_or_stale_entries_are_rebuilt(
    candles: pd.DataFrame, tmp_path: Path
) -> None:
    logs: list[str] = []
    built = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    (entry,) = tmp_path.glob("market-*.npz")
    loaded = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "loaded from cache" in logs[-1]
    assert (
        np.array_equal(built.macro, loaded.macro, equal_nan=True) and built.splits == loaded.splits
    )
    assert built.index.equals(loaded.index) and built.scalers == loaded.scalers

    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated: corrupt
    again = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "stale or corrupt" in logs[-2] and "built and cached" in logs[-1]
    assert np.array_equal(built.macro, again.macro, equal_nan=True)

    with zipfile.ZipFile(entry) as z:  # a valid archive whose numbers were altered
        members = {n: z.read(n) for n in z.namelist()}
    macro = bytearray(members["macro.npy"])
    macro[-4:] = b"\x00\x00\x80\x7f"
    members["macro.npy"] = bytes(macro)
    with zipfile.ZipFile(entry, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "stale or corrupt" in logs[-2]

    other = cached_market(
        candles, cache_dir=tmp_path, log=logs.append, **{**PARAMS, "micro_window": 10}
    )
    assert "built and cached" in logs[-1] and len(list(tmp_path.glob("market-*.npz"))) == 2
    assert other.micro_window == 10


def test_backtest_refuses_bars_of_another_length(tmp_path: Path) -> None:
    from hmarl.backtest.inputs import backtest_market
    from hmarl.config import BacktestError, DataConfig

    data = DataConfig(n_candles=3000, market_seed=4, train_frac=0.6, val_frac=0.2)
    spec = build_market(synthetic_candles(3000, seed=4), **PARAMS).feature_spec()
    assert spec["bar_seconds"] == 300.0
    assert backtest_market(spec, data, cache_dir=None, log=None).bar_seconds == 300.0
    with pytest.raises(
        BacktestError, match="has 900 s bars but the checkpoint was trained on 300 s"
    ):
        backtest_market(
            spec,
            DataConfig(n_candles=9000, market_seed=4, resample="15min"),
            cache_dir=None,
            log=None,
        )
