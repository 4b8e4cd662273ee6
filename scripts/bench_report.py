"""What ``report.html`` adds to a backtest of one year of 5-minute bars: seconds and megabytes.

The runs are settled like a backtest's (hmarl.stats.baselines on a synthetic year of 105,192 bars):
the "strategy" is a momentum rule of another lookback with action probabilities made up from
its positions, since the page's cost depends on the number of bars and trades, not on who
decided them. Statistics and the random-timing band come from the same functions as a
backtest (compute_stats, stats_table, random_timing). Timed: only writing report.html, the
first call in the process (Bokeh's import included), i.e. what a backtest pays extra.

    python scripts/bench_report.py            # one year
    python scripts/bench_report.py --bars 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hmarl.data.synthetic import synthetic_candles
from hmarl.market.env import EnvParams
from hmarl.market.market_data import MarketData
from hmarl.stats.baselines import baseline_steps, settled_frame
from hmarl.stats.metrics import compute_stats, stats_table
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.steps import POSITION, PROB_COLUMNS

YEAR_OF_5MIN_BARS = 105_192  # 288 x 365.25


def year_market(bars: int, seed: int = 0) -> MarketData:
    """A synthetic market of ``bars`` 5-minute bars (no features: only prices are needed)."""
    candles = synthetic_candles(bars + 1, seed, trend_drift=3e-4)
    close = candles["close"].to_numpy(np.float64)
    returns = np.append(close[1:] / close[:-1] - 1.0, 0.0)
    empty = np.zeros((close.size, 3), dtype=np.float32)
    splits = {"all": (0, bars)}
    return MarketData(candles.index, close, returns, empty, empty, splits, ["x"], 2, 2, {}, "bench")


def runs_for(market: MarketData, env: EnvParams) -> dict[str, pd.DataFrame]:
    """Strategy (a 48-bar momentum rule with probabilities) first, then the baselines."""
    lo, hi = market.splits["all"]
    strategy_positions = baseline_steps(market, lo, hi, env, momentum_bars=48, names=["momentum"])
    position = strategy_positions["momentum"][POSITION].to_numpy().copy()
    strategy = settled_frame(market, lo, hi, position, env)
    noise = np.random.default_rng(0).dirichlet([4.0, 1.0, 1.0], size=position.size)
    for code, column in enumerate(PROB_COLUMNS):
        strategy[column] = noise[:, code]
    baselines = baseline_steps(market, lo, hi, env, momentum_bars=288)
    return {"strategy": strategy, **baselines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=YEAR_OF_5MIN_BARS)
    args = parser.parse_args()
    env = EnvParams()
    market = year_market(args.bars)
    runs = runs_for(market, env)
    stats = {name: compute_stats(steps, n_bootstrap=0) for name, steps in runs.items()}
    lo, hi = market.splits["all"]
    null = random_timing(runs["strategy"], market.returns[lo:hi], env, n=200)
    table = stats_table({**stats, "strategy": {**stats["strategy"], **random_timing_stats(null)}})
    doc = {"meta": {"checkpoint": "bench", "data": "synthetic", "bars": hi - lo}, "stats": stats}

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        import bokeh.embed
        import bokeh.plotting  # noqa: F401  (timed apart: a backtest pays it once)

        from hmarl.report.html import DISPLAY_BUCKETS, write_report_html

        imported = time.perf_counter() - t0
        path = write_report_html(Path(tmp) / "report.html", runs, table, doc, null.band)
        seconds = time.perf_counter() - t0
        size = path.stat().st_size
    trades = int((np.diff(runs["strategy"][POSITION].to_numpy()) != 0).sum())
    print(
        f"report.html for {hi - lo:,} bars ({trades:,} position changes): "
        f"{seconds:.2f} s extra (of which Bokeh's import {imported:.2f} s), {size / 1e6:.2f} MB; "
        f"each line drawn with at most {2 * DISPLAY_BUCKETS:,} points (min/max per bucket)"
    )


if __name__ == "__main__":
    main()
