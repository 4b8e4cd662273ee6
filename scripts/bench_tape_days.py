"""Time the per-day evaluation (hmarl/backtest/tape_days.py) on one synthetic trading day.

    OMP_NUM_THREADS=1 python scripts/bench_tape_days.py                # 100,000 book updates
    OMP_NUM_THREADS=1 python scripts/bench_tape_days.py --quotes 1000000 --dt 0.1

The day: ``--quotes`` top-of-book updates and ``--trades`` trades in the 13:00-20:50 UTC
session (hmarl.sources.book.synthetic_ticks); the evaluation writes every file of a real run
(metrics.json, steps.csv, daily_metrics.csv, the aggregates) into a temporary folder. The
issue's target: one trading day of ~100k book updates in < 30 s on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from hmarl.backtest.tape_days import QuoteSetup, evaluate_days
from hmarl.sources.book import synthetic_ticks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quotes", type=int, default=100_000)
    parser.add_argument("--trades", type=int, default=30_000)
    parser.add_argument("--dt", type=float, default=1.0, help="decision step, seconds")
    args = parser.parse_args(argv)
    day = date(2024, 1, 2)
    ticks = synthetic_ticks(day, quotes=args.quotes, trades=args.trades, seed=0)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        daily = evaluate_days({("SYN", day): ticks}, Path(out), QuoteSetup(dt=args.dt))
        seconds = time.perf_counter() - started
    row = daily.iloc[0]
    print(
        f"one day: {args.quotes} book updates, {args.trades} trades, {int(row['Steps [#]'])} "
        f"steps of {args.dt:g} s: evaluated and written in {seconds:.2f} s "
        f"({int(row['Fills bid [#]'])} bid / {int(row['Fills ask [#]'])} ask fills)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
