"""What the Bayes filter of the planted model captures of the oracle (no training).

Why: the planted market (hmarl/market/planted.py: real BTCUSDT 2024Q4 candles with a seeded
regime drift of 3e-4 a bar) has a known best policy, the oracle that knows the regime; no reader
of prices can know the regime, only infer it. The filter that is *told* the model (the drift, the
regime lengths) and reads every past return is the best such inference
(:func:`hmarl.market.planted.regime_filter`); the rules on its posterior here show what a causal
policy, a trained network included, can expect to capture on exactly the bars a benchmark scores
(a bound in expectation, not on every run: on a few thousand bars a policy may beat it by luck):

* ``--bars walkforward`` (default): the stitched test bars of ``scripts/walkforward_planted.py``'s
  walk-forward (expanding folds of 30 / 14 / 7 days, 6 folds), issue 27's planted target;
* ``--bars split``: the last 15% of the file, ``scripts/bench_learning.py``'s ``planted`` test.

Each bar's return is read as ``N(drift * regime, sigma)``, sigma the exponentially weighted
volatility of the returns before it (``--vol-span`` bars). Rules, each settled by the
environment at the benchmark's fee from flat (:func:`hmarl.market.env.settle`):

* ``markov`` / ``duration``: the filter with geometric regimes, or with the generator's own
  gamma(2) lengths (at least 144 bars); long when P(up) - P(down) rises above +a, short below -a,
  the last side in between (the agent's actions: it can go long or short, not flat); ``a`` the best
  of 0.1 ... 0.9 on these very bars (an optimistic bound);
* ``duration+flat``: the same filter, long above +a, short below -a, flat in between (the oracle's
  third position, which the default action mode lacks);
* ``late100``: the oracle that learns each regime 100 bars late (the earlier yardstick).

    python scripts/planted_bounds.py --draws 0 1 2
    python scripts/planted_bounds.py --bars split --draws 0 1 2 3 4 5

Figures: docs/walkforward.md, "The Bayes filter's bound".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from bench_learning import PLANTED_DRIFT, Q4, SHARED
from flow_rule_bounds import hysteresis, print_captures

from hmarl.data.reading import load_candles
from hmarl.market.env import EnvParams, settle
from hmarl.market.planted import (
    late_oracle_positions,
    oracle_positions,
    plant_edge,
    regime_filter,
)
from hmarl.walkforward.folds import Lengths, plan_folds
from hmarl.walkforward.schema import WindowMode

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))
MEAN_REGIME_BARS, MIN_REGIME_BARS = 720.0, 144  # hmarl.market.planted.regime_path's defaults
DAY_BARS = 288  # 5-minute bars


def walkforward_rows(n_bars: int) -> np.ndarray:
    """The decision rows of walkforward_planted.py's stitched record: each fold's test segment
    but its last bar (a decision earns the bar after it, which the next segment does not hold)."""
    lengths = Lengths(30 * DAY_BARS, 14 * DAY_BARS, 7 * DAY_BARS, 7 * DAY_BARS)
    folds = plan_folds(n_bars, lengths, WindowMode.expanding, wanted=6)
    return np.concatenate([np.arange(f.test_start, f.end - 1) for f in folds])


def settled(positions: np.ndarray, paid: np.ndarray, fee: float) -> float:
    """Compounded return of ``positions`` over the bars they are paid on, settled by the
    environment (:func:`hmarl.market.env.settle`: the fee on each rebalance, a position's drift
    within the bar), from flat: the settlement of every benchmark's record and oracle."""
    equity = settle(positions[None, :], paid[None, :], EnvParams(commission=fee)).equity
    return float(equity[0, -1]) - 1.0


def three_way(signal: np.ndarray, a: float) -> np.ndarray:
    """+1 above a, -1 below -a, flat in between."""
    return np.where(signal > a, 1.0, np.where(signal < -a, -1.0, 0.0))


def bounds(
    candles: pd.DataFrame, draw: int, drift: float, fee: float, bars: str, vol_span: int
) -> dict[str, float]:
    """Each rule's capture of the oracle (ratio of returns) on one planted draw's scored bars."""
    planted, regime = plant_edge(candles, draw, drift=drift)
    close = planted["close"].to_numpy(dtype=np.float64)
    n = len(close)
    rows = walkforward_rows(n) if bars == "walkforward" else np.arange(int(n * 0.85), n - 1)
    paid = close[rows + 1] / close[rows] - 1.0  # a decision at row t earns bar t+1
    oracle = settled(oracle_positions(regime, rows), paid, fee)
    log_ret = np.r_[np.nan, np.diff(np.log(close))]
    # sigma of bar t from the returns before it (causal); the first bars use the first estimate
    var = pd.Series(log_ret**2).ewm(span=vol_span, min_periods=20).mean().shift(1)
    sigma = np.sqrt(var.bfill().to_numpy())
    means = (-drift, 0.0, drift)
    out = {"oracle_pct": 100.0 * oracle}
    for name, least in (("markov", None), ("duration", MIN_REGIME_BARS)):
        post = regime_filter(
            log_ret, sigma, means, mean_regime_bars=MEAN_REGIME_BARS, min_regime_bars=least
        )
        signal = (post[:, 2] - post[:, 0])[rows]
        out[name] = max(settled(hysteresis(signal, a), paid, fee) for a in THRESHOLDS) / oracle
        if least is not None:
            flat = max(settled(three_way(signal, a), paid, fee) for a in THRESHOLDS)
            out["duration+flat"] = flat / oracle
    out["late100"] = settled(late_oracle_positions(regime, rows, 100), paid, fee) / oracle
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="planted seeds")
    parser.add_argument("--bars", choices=("walkforward", "split"), default="walkforward")
    parser.add_argument("--drift", type=float, default=PLANTED_DRIFT, help="log drift per bar")
    parser.add_argument("--fee", type=float, default=0.001, help="per unit traded (EnvConfig)")
    parser.add_argument("--vol-span", type=int, default=288, help="bars of the volatility EWMA")
    parser.add_argument("--data", type=Path, default=SHARED / Q4, help="the candles to plant on")
    args = parser.parse_args(argv)
    candles = load_candles(args.data, log=None)
    rows = [bounds(candles, d, args.drift, args.fee, args.bars, args.vol_span) for d in args.draws]
    print(f"bars: {args.bars}; capture of the oracle (ratio of returns), fee {args.fee}")
    print_captures("draw", args.draws, rows, digits=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
