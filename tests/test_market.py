"""Candles -> scaled window tensors: causality end to end, splits, and the on-disk cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.data.synthetic import synthetic_candles
from hmarl.market.market_data import (
    build_market,
    cached_market,
    data_warnings,
    market_for_config,
)

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
    loaded = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "loaded from cache" in logs[-1]
    assert (
        np.array_equal(built.macro, loaded.macro, equal_nan=True) and built.splits == loaded.splits
    )
    assert built.index.equals(loaded.index) and built.scalers == loaded.scalers
    # the tensors are read-only memory maps of the entry's files, not copies in memory
    for array in (loaded.macro, loaded.micro):
        assert isinstance(array, np.memmap) and not array.flags.writeable
    in_memory = build_market(candles, **PARAMS)  # no cache: plain arrays, the same values
    assert np.array_equal(in_memory.macro, loaded.macro, equal_nan=True)
    assert np.array_equal(in_memory.micro, loaded.micro, equal_nan=True)

    def replace(path: Path, data: bytes) -> None:  # a new file: the mapped one stays intact
        (path.parent / "new").write_bytes(data)
        os.replace(path.parent / "new", path)

    entry = next(p for p in tmp_path.glob("market-*") if p.is_dir())
    macro = entry / "macro.npy"
    replace(macro, macro.read_bytes()[: macro.stat().st_size // 2])  # truncated: corrupt
    again = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "stale or corrupt" in logs[-2] and "built and cached" in logs[-1]
    assert np.array_equal(built.macro, again.macro, equal_nan=True)

    entry = next(p for p in tmp_path.glob("market-*") if p.is_dir())
    macro = entry / "macro.npy"
    data = bytearray(macro.read_bytes())  # a valid file whose numbers were altered
    data[-4:] = b"\x00\x00\x80\x7f"
    replace(macro, bytes(data))
    cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    assert "stale or corrupt" in logs[-2]

    other = cached_market(
        candles, cache_dir=tmp_path, log=logs.append, **{**PARAMS, "micro_window": 10}
    )
    assert "built and cached" in logs[-1] and len(list(tmp_path.glob("market-*"))) == 2
    assert other.micro_window == 10
    assert not list(tmp_path.glob(".*")), "no temporary left behind"


def test_a_backtest_reads_the_training_entry_instead_of_building_a_second(
    candles: pd.DataFrame, tmp_path: Path
) -> None:
    logs: list[str] = []
    trained = cached_market(candles, cache_dir=tmp_path, log=logs.append, **PARAMS)
    backtest = cached_market(
        candles, cache_dir=tmp_path, log=logs.append, **{**PARAMS, "scalers": trained.scalers}
    )
    assert "loaded from cache" in logs[-1] and len(list(tmp_path.glob("market-*"))) == 1
    assert np.array_equal(trained.macro, backtest.macro, equal_nan=True)
    # other scalers (another training's): their own entry, never the fitted one's tensors
    shifted = {k: {"mean": [m + 1.0 for m in v["mean"]], "std": v["std"]} for k, v in
               trained.scalers.items()}  # fmt: skip
    moved = cached_market(
        candles, cache_dir=tmp_path, log=logs.append, **{**PARAMS, "scalers": shifted}
    )
    assert "built and cached" in logs[-1] and len(list(tmp_path.glob("market-*"))) == 2
    assert not np.array_equal(trained.macro, moved.macro, equal_nan=True)


def test_a_killed_build_leaves_debris_that_the_next_build_removes(
    candles: pd.DataFrame, tmp_path: Path
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)  # a process that has exited: its temporaries are debris
    debris = tmp_path / f".market-abc.{pid}.x1y2z3.tmp"
    debris.mkdir()
    (debris / "macro.npy").write_bytes(b"half")
    live = tmp_path / f".market-abc.{os.getpid()}.live12.tmp"  # a writer still at work
    live.mkdir()
    cached_market(candles, cache_dir=tmp_path, log=None, **PARAMS)
    assert not debris.exists() and live.exists()


def test_warnings_for_constant_prices_and_window_spans() -> None:
    minute = synthetic_candles(3000, seed=1)
    minute.index = pd.date_range("2024-01-01", periods=len(minute), freq="1min", tz="UTC")
    notes = data_warnings(minute, 492, 60)
    assert len(notes) == 2
    assert "features.macro_window=492 bars of 1 min span 8.2 h" in notes[0]
    assert "41 h" in notes[0] and "data.resample=5min" in notes[0]
    assert "features.macro_window=2460" in notes[0]
    assert "features.micro_window=60" in notes[1] and "features.micro_window=300" in notes[1]
    five = synthetic_candles(3000, seed=1)
    assert data_warnings(five, 492, 60) == []  # the specification's bars: nothing to say
    flat = five.copy()
    flat[["open", "high", "low", "close"]] = 100.0
    (note,) = data_warnings(flat, 492, 60)
    assert note.startswith("constant prices: every close is the same") and "data.path" in note


def test_too_few_candles_names_the_longer_window() -> None:
    from hmarl.config import DataConfig

    with pytest.raises(ValueError, match=r"features\.micro_window=50000 \+ feature warm-up"):
        market_for_config(DataConfig(n_candles=20000), feature_names=[], macro_window=492,
                          micro_window=50000, cache_dir=None, log=None)  # fmt: skip


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
