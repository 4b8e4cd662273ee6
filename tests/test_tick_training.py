"""The trainer runs on tick-derived bars with the `features=book` set (issue: real market data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import compose_config, run_cli

from hmarl.data.reading import load_candles
from hmarl.market.features import build_features, required_columns
from hmarl.sources.ticks import BAR_EXTRA_COLUMNS, Ticks, read_ws_capture, ticks_to_bars, write_bars
from hmarl.train.trainer import train


def synthetic_ticks(minutes: int = 40, seed: int = 0) -> Ticks:
    """A random-walk book (quotes every ~0.2 s) with trades at the touch (~every 0.5 s)."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-08-09", tz="UTC").value
    n_q = minutes * 60 * 5
    q_ts = t0 + np.sort(rng.integers(0, minutes * 60 * 10**9, n_q))
    mid = 60_000 * np.exp(np.cumsum(rng.normal(0, 2e-5, n_q)))
    half = rng.choice([0.005, 0.01, 0.02], n_q)
    quotes = pd.DataFrame(
        {
            "ts": q_ts,
            "bid_price": mid - half,
            "bid_qty": rng.gamma(2, 1, n_q),
            "ask_price": mid + half,
            "ask_qty": rng.gamma(2, 1, n_q),
        }
    )
    n_t = minutes * 60 * 2
    t_ts = t0 + np.sort(rng.integers(0, minutes * 60 * 10**9, n_t))
    idx = np.clip(np.searchsorted(q_ts, t_ts, side="right") - 1, 0, n_q - 1)
    is_buy = rng.random(n_t) < 0.5
    price = np.where(
        is_buy, quotes["ask_price"].to_numpy()[idx], quotes["bid_price"].to_numpy()[idx]
    )
    trades = pd.DataFrame(
        {"ts": t_ts, "price": price, "qty": rng.gamma(1.5, 0.01, n_t), "is_buy": is_buy}
    )
    return Ticks(quotes, trades)


def test_book_features_need_the_bar_columns() -> None:
    cfg = compose_config("features=book")
    needed = set(required_columns(cfg.features.names)) - {"open", "high", "low", "close", "volume"}
    assert needed <= set(BAR_EXTRA_COLUMNS)


def test_trains_on_tick_bars_with_book_features(tmp_path: Path) -> None:
    bars_path = tmp_path / "bars.parquet"
    write_bars(ticks_to_bars(synthetic_ticks(), "1s"), bars_path, "1s")
    candles = load_candles(
        bars_path, fmt="parquet", extra_columns=list(BAR_EXTRA_COLUMNS), log=None
    )
    assert len(candles) > 2000
    proc = run_cli(
        "hmarl.train",
        "+experiment=asym_1_10",
        "data=parquet",
        f"data.path={bars_path}",
        "features=book",
        "trainer.episodes=4",
        "trainer.n_envs=4",
        "trainer.episode_len=32",
        "trainer.eval_every=2",
        "tracking=none",
        f"cache_dir={tmp_path}/cache",
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "episodes: 4 (MacroNet steps: 1)" in proc.stdout
    assert (tmp_path / "out" / "checkpoints" / "last.pt").exists()


@pytest.mark.realdata
def test_trains_on_the_real_capture(tmp_path: Path, shared_data: Path) -> None:
    bars_path = tmp_path / "ws_1s.parquet"
    write_bars(
        ticks_to_bars(read_ws_capture(shared_data / "binance_spot_btcusdt_20240809_ws.gz"), "1s"),
        bars_path,
        "1s",
    )
    cfg = compose_config(
        "+experiment=asym_1_10",
        "data=parquet",
        f"data.path={bars_path}",
        "features=book",
        "features.macro_window=30",
        "features.micro_window=8",
        "trainer.episodes=3",
        "trainer.n_envs=2",
        "trainer.episode_len=16",
        "tracking=none",
        f"cache_dir={tmp_path}/cache",
    )
    result = train(cfg, tmp_path / "out", progress=False)
    assert result.state.episode == 3 and result.last_checkpoint.exists()
    feats = build_features(
        load_candles(bars_path, fmt="parquet", extra_columns=list(BAR_EXTRA_COLUMNS), log=None),
        cfg.features.names,
    )
    assert np.isfinite(feats.iloc[1:].to_numpy()).all()
