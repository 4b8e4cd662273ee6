"""How much the short convention and the fee rule matter: a steps.csv replayed three ways.

hmarl holds every position, shorts included, as a constant fraction of equity: HOLD rebalances
back to the target (and pays the fee on that small trade). Engines such as backtesting.py hold a
fixed number of units between trades instead, so a short's exposure grows as the price rises.
This replays a backtest's ``steps.csv`` (its prices and target positions) with cash and units:

- ``constant fraction``: rebalanced every bar, fee on the notional actually traded (= hmarl);
- ``fixed units``: units bought or sold only on bars where the target changes, then held;
- ``old fee rule``: constant fraction, fee ``c |p - q|`` on the target measured before the fee
  (what hmarl charged before the fee was solved exactly).

Usage::

    python scripts/fixed_units_replay.py backtests/<date>/<time>/steps.csv [--cost 0.001]

``--cost`` is commission + slippage as a fraction (stats.json ``meta.env``: commission +
slippage_bps / 1e4); by default it is read from the ``stats.json`` beside ``steps.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from hmarl.steps import NEXT_PRICE, POSITION, PRICE


def replay(steps: pd.DataFrame, cost: float, mode: str) -> tuple[float, float]:
    """(final equity, notional traded as a multiple of equity) of one replay mode."""
    cash, units, last_target, turnover = 1.0, 0.0, 0.0, 0.0
    for price, next_price, target in zip(
        steps[PRICE], steps[NEXT_PRICE], steps[POSITION], strict=True
    ):
        equity = cash + units * price
        trade = mode != "fixed units" or target != last_target
        last_target = target
        if trade:
            held = units * price / equity
            if mode == "old fee rule":
                fee = cost * abs(target - held) * equity
            else:  # fee = c |target (E - fee) - units price|, by fixed-point iteration
                fee = 0.0
                for _ in range(100):
                    fee = cost * abs(target * (equity - fee) - units * price)
            new_units = target * (equity - fee) / price
            turnover += abs(new_units - units) * price / equity
            cash -= (new_units - units) * price + fee
            units = new_units
        final = cash + units * next_price
    return final, turnover


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", type=Path, help="a backtest's steps.csv")
    parser.add_argument("--cost", type=float, default=None, help="commission + slippage")
    args = parser.parse_args(argv)
    steps = pd.read_csv(args.steps, index_col=0)
    cost = args.cost
    if cost is None:
        env = json.loads((args.steps.parent / "stats.json").read_text())["meta"]["env"]
        cost = env["commission"] + env["slippage_bps"] * 1e-4
    shorts = int((steps[POSITION] < 0).sum())
    print(f"{args.steps}: {len(steps)} bars, {shorts} short, cost rate {cost:g}")
    reference, _ = replay(steps, cost, "constant fraction")
    for mode in ("constant fraction", "fixed units", "old fee rule"):
        final, turnover = replay(steps, cost, mode)
        print(
            f"{mode:>17}: return {100 * (final - 1):+.6f}%  turnover {turnover:8.3f}x  "
            f"final equity vs constant fraction {final / reference - 1:+.3e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
