"""What a causal rule on ``planted_flow``'s flow column captures of the oracle (no training).

Why: when the specialists fall short of the oracle on ``planted_flow`` this separates what the
flow column allows from what the learner takes. For each seed it plants the benchmark's flow
market (hmarl/market/planted.py ``plant_flow``) on the Q4 candles and settles, on the last 15% of
bars (the benchmark's test split), long / short rules on a smoothing of the column against the
oracle on the same bars, at the same fee:

* ``mean12``, ``mean8``, ``ema10``: long above +a, short below -a, hold in between; ``a`` the best
  of 0.4 / 0.5 / 0.6 on these very bars (an optimistic bound);
* ``filter``: the three-state forward filter of the planted model
  (:func:`hmarl.market.planted.regime_filter`: stay probability 1 - 1/45, ``flow ~ N(regime, 1)``),
  long when P(up) - P(down) > 0.5, short below -0.5, a fixed threshold.

    python scripts/flow_rule_bounds.py --seeds 10

Figures: docs/specialists.md, "An EMA for the flow reader".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from bench_learning import PLANTED_DRIFT, Q4, SHARED

from hmarl.data.reading import load_candles
from hmarl.market.planted import FLOW_COLUMN, oracle_positions, plant_flow, regime_filter

THRESHOLDS = (0.4, 0.5, 0.6)


def settle(positions: np.ndarray, returns: np.ndarray, fee: float) -> float:
    """Compounded return of holding ``positions[i]`` over ``returns[i]``, paying ``fee`` per unit
    of position change (from flat before the first bar)."""
    turnover = np.abs(np.diff(positions, prepend=0.0))
    return float(np.prod((1.0 + positions * returns) * (1.0 - fee * turnover)) - 1.0)


def hysteresis(signal: np.ndarray, a: float) -> np.ndarray:
    """+1 once the signal rises above a, -1 once it falls below -a, the last side in between."""
    side = np.where(signal > a, 1.0, np.where(signal < -a, -1.0, np.nan))
    return pd.Series(side).ffill().fillna(0.0).to_numpy()


def bounds(candles: pd.DataFrame, seed: int, drift: float, fee: float) -> dict[str, float]:
    """Each rule's capture of the oracle on the last 15% of bars of one planted draw."""
    planted, regime = plant_flow(candles, seed, drift=drift)
    close = planted["close"].to_numpy(dtype=np.float64)
    flow = planted[FLOW_COLUMN].to_numpy(dtype=np.float64)
    rows = np.arange(int(len(close) * 0.85), len(close) - 1)  # decision at t earns bar t+1
    paid = close[rows + 1] / close[rows] - 1.0
    oracle = settle(oracle_positions(regime, rows), paid, fee)
    smooth = {
        "mean12": pd.Series(flow).rolling(12).mean().to_numpy(),
        "mean8": pd.Series(flow).rolling(8).mean().to_numpy(),
        "ema10": pd.Series(flow).ewm(span=10, adjust=False).mean().to_numpy(),
    }
    out = {"oracle_pct": 100.0 * oracle}
    for name, signal in smooth.items():
        best = max(settle(hysteresis(signal, a)[rows], paid, fee) for a in THRESHOLDS)
        out[name] = best / oracle
    post = regime_filter(flow, 1.0, (-1.0, 0.0, 1.0), mean_regime_bars=45.0)
    filtered = post[:, 2] - post[:, 0]  # P(up) - P(down)
    out["filter"] = settle(hysteresis(filtered, 0.5)[rows], paid, fee) / oracle
    return out


def print_captures(
    label: str, keys: Sequence[int], rows: Sequence[dict[str, float]], digits: int
) -> None:
    """A markdown table: per draw the oracle's return and each rule's capture, then the mean and
    range of each rule's capture over the draws."""
    names = [k for k in rows[0] if k != "oracle_pct"]
    print(f"| {label} | oracle % | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for key, row in zip(keys, rows, strict=True):
        cells = " | ".join(f"{100 * row[k]:.{digits}f}%" for k in names)
        print(f"| {key} | {row['oracle_pct']:+.1f} | {cells} |", flush=True)
    spans = [[100 * r[k] for r in rows] for k in names]
    means = " | ".join(
        f"{np.mean(v):.{digits}f}% ({min(v):.{digits}f}-{max(v):.{digits}f}%)" for v in spans
    )
    print(f"| mean (min-max) | | {means} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--drift", type=float, default=PLANTED_DRIFT, help="log drift per bar")
    parser.add_argument("--fee", type=float, default=0.001, help="per unit traded (EnvConfig)")
    parser.add_argument("--data", type=Path, default=SHARED / Q4, help="the candles to plant on")
    args = parser.parse_args(argv)
    candles = load_candles(args.data, log=None)
    rows = [bounds(candles, seed, args.drift, args.fee) for seed in range(args.seeds)]
    print_captures("seed", list(range(args.seeds)), rows, digits=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
