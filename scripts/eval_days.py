"""Per-day, per-ticker evaluation of the closed-form quotes on real ticks (tape_days.py).

    python scripts/eval_days.py --out outputs/mm_days                      # the bundled capture
    python scripts/eval_days.py --cache data/ticks --symbols BTCUSDT ETHUSDT \
        --days 2024-01-02 2024-01-03 --session 13:00-20:50 --tick 0.1 --out outputs/mm_days

Writes ``<out>/<TICKER>/<day>/metrics.json``, ``steps.csv`` and ``day.png``, ``daily_metrics.csv``,
``aggregated_by_ticker.csv`` and ``aggregated_by_liquidity.csv``, and prints the daily table
and the time taken.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from hmarl.backtest.tape_days import add_setup_arguments, evaluate_days, setup_from_arguments
from hmarl.sources.book import add_source_arguments, days_from_arguments

CAPTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "binance_spot_btcusdt_20240809_ws.gz"
)
SHOWN = ["ticker", "day", "liquidity", "Book updates [#]", "PnL [quote]", "Fills bid [#]"]
SHOWN += ["Fills ask [#]", "Inventory |mean| [lots]", "Max. Drawdown [price x lots]"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    add_setup_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="skip each day's day.png")
    args = parser.parse_args(argv)
    try:
        started = time.perf_counter()
        days = days_from_arguments(args, CAPTURE)
        loaded = time.perf_counter()
        setup = setup_from_arguments(args)
        daily = evaluate_days(days, args.out, setup, plots=not args.no_plots)
    except ValueError as exc:  # includes DataError: a bad row, named
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = time.perf_counter()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(daily[SHOWN].to_string(index=False))
    print(
        f"{len(daily)} ticker-days: read {loaded - started:.1f} s, evaluated and written "
        f"{done - loaded:.1f} s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
