"""Download Binance daily bookTicker and trade dumps (verified, resumable) into a Parquet cache.

    python scripts/download_ticks.py BTCUSDT ETHUSDT 2024-01-01 2024-01-03 --cache data/ticks
    python scripts/download_ticks.py BTCUSDT 2024-01-02 2024-01-02 --trades trades --drop-crossed

Every (symbol, UTC day) becomes ``<cache>/<SYMBOL>/<day>/quotes.parquet`` and
``trades.parquet`` (read them with ``hmarl.sources.book.load_day``); the zips stay under
``<cache>/zips``. Re-running the same command resumes: verified zips are skipped.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from pathlib import Path

from hmarl.sources.binance import BASE_URL, MARKET_PATHS, exit_code
from hmarl.sources.book import Repairs, download_ticks

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Symbols then the first and last UTC day (both inclusive)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("args", nargs="+", metavar="SYMBOL... START END")
    parser.add_argument("--cache", type=Path, default=Path("data/ticks"), help="cache folder")
    parser.add_argument("--market", choices=list(MARKET_PATHS), default="um")
    parser.add_argument("--trades", choices=["aggTrades", "trades"], default="aggTrades")
    parser.add_argument("--base-url", default=BASE_URL, help="mirror of data.binance.vision")
    parser.add_argument("--drop-crossed", action="store_true", help="repair: drop crossed quotes")
    parser.add_argument("--sort", action="store_true", help="repair: sort rows by time")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the download; an error prints one ``error:`` line and returns 2 (a bad request or
    bad data) or 1 (a download that failed: network, checksum, disk)."""
    args = parse_args(argv)
    *symbols, first, last = args.args
    if not symbols or not (_DAY.match(first) and _DAY.match(last)):
        print("error: give SYMBOL... START END, days as YYYY-MM-DD (UTC)", file=sys.stderr)
        return 2
    return exit_code(
        lambda: download_ticks(
            symbols,
            date.fromisoformat(first),
            date.fromisoformat(last),
            args.cache,
            trades=args.trades,
            market=args.market,
            base_url=args.base_url,
            repairs=Repairs(drop_crossed=args.drop_crossed, sort=args.sort),
            timeout=args.timeout,
            progress=not args.no_progress,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
