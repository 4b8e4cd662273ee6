"""The random-timing null: the strategy's own trades at random times, on its bars and costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hmarl.market.env import EnvParams, settle
from hmarl.report.plots import equity_figure
from hmarl.stats.metrics import trades
from hmarl.stats.random_timing import random_timing, random_timing_positions, random_timing_stats

POS = np.array([0, 0, 1, 1, 1, 0, -1, -1, 1, 0, 0, 0.5, 1, 0, 0, -1, 0, 0], dtype=np.float64)


def strategy(position: np.ndarray, returns: np.ndarray, env: EnvParams) -> pd.DataFrame:
    s = settle(torch.from_numpy(position)[None], torch.from_numpy(returns)[None], env)
    index = pd.date_range("2024-01-01", periods=position.size, freq="5min", tz="UTC")
    frame = pd.DataFrame(
        {"action": 0, "position": position, "turnover": s.turnover[0].numpy()}, index=index
    )
    return frame.assign(fee=s.fee[0].numpy(), equity=s.equity[0].numpy())


def test_paths_keep_the_trades_and_exposure() -> None:
    paths = random_timing_positions(POS, 300, np.random.default_rng(0))
    want = trades(strategy(POS, np.zeros(POS.size), EnvParams()))
    starts = set()
    for row in paths:
        got = trades(strategy(row, np.zeros(POS.size), EnvParams()))
        assert len(got) == len(want) == 5  # no two trades merge
        assert got["side"].tolist() == want["side"].tolist()  # sides in the same order
        assert sorted(got["bars"]) == sorted(want["bars"])
        assert (row > 0).sum() == (POS > 0).sum() and (row < 0).sum() == (POS < 0).sum()
        assert sorted(row) == sorted(POS)  # the same position values (0.5 kept in its trade)
        starts.add(tuple(got["entry"]))
    assert len(starts) > 100  # the timing really varies
    again = random_timing_positions(POS, 300, np.random.default_rng(0))
    assert (again == paths).all()  # seeded


def test_degenerate_strategies_sit_in_the_middle() -> None:
    r = np.random.default_rng(1).normal(0, 0.002, 500)
    env = EnvParams()
    for position in (np.zeros(500), np.ones(500)):  # flat; long from the first bar
        null = random_timing(strategy(position, r, env), r, env, n=50, seed=0)
        assert np.allclose(null.final_equity, null.strategy_equity, rtol=1e-12)
        stats = random_timing_stats(null)
        assert stats["Random-Timing Percentile [%]"] == 50.0
        assert stats["Random-Timing p-value"] == 1.0
        assert stats["Random-Timing Policies"] == 50


def test_settled_with_the_strategys_costs() -> None:
    r = np.full(40, 0.001)
    position = np.r_[np.zeros(10), np.ones(20), np.zeros(10)]
    env = EnvParams(commission=0.01)
    null = random_timing(strategy(position, r, env), r, env, n=20, seed=3)
    # any placement of the 20-bar long trade: 20 bars of +0.1%, a 1% fee on the notional
    # actually traded: entering buys 1/(1+c) of the equity (fee c/(1+c)), exiting sells it all
    assert null.final_equity == pytest.approx(np.full(20, 1.001**20 / 1.01 * 0.99), rel=1e-12)
    assert null.band["p05"].iloc[-1] == pytest.approx(null.final_equity.min())


@pytest.mark.realdata
def test_buy_once_and_hold_on_real_candles_is_buy_and_hold(
    shared_data: Path, tmp_path: Path
) -> None:
    from hmarl.data.reading import load_candles

    close = load_candles(shared_data / "binance_spot_BTCUSDT_5m_2024Q4.csv", log=None)["close"]
    r = (close.shift(-1) / close - 1.0).to_numpy()[:-1][:8000]
    position = np.r_[np.zeros(40), np.ones(r.size - 40)]  # buys after 40 bars, holds
    env = EnvParams()
    steps = strategy(position, r, env)
    null = random_timing(steps, r, env, n=1000, seed=0)
    stats = random_timing_stats(null)
    assert 20.0 < stats["Random-Timing Percentile [%]"] < 80.0  # indistinguishable
    assert stats["Random-Timing p-value"] > 0.2
    band = null.band
    assert (band["p95"] - band["p05"]).iloc[len(band) // 10 :].min() > 0  # a visible band
    fig = equity_figure({"strategy": steps}, "t", band)
    assert any(c.get_label() == "random timing, 5-95%" for c in fig.axes[0].collections)
