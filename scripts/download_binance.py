"""Download Binance public klines (verified, resumable) into one candle Parquet.

    python scripts/download_binance.py BTCUSDT 5m 2024-01-01 2024-03-31 --out-dir data/binance
    python scripts/download_binance.py BTCUSDT 1h 2024-01-01 2024-01-31 --market um \
        --out data/btcusdt_um_1h.parquet

Re-running the same command resumes: verified zips are skipped, the rest are fetched.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from hmarl.sources.binance import (
    BASE_URL,
    INTERVAL_FREQ,
    MARKET_PATHS,
    download_klines,
    exit_code,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; dates are UTC days, both ends inclusive."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("symbol", help="e.g. BTCUSDT")
    parser.add_argument("interval", choices=list(INTERVAL_FREQ), help="kline interval")
    parser.add_argument("start", type=date.fromisoformat, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("end", type=date.fromisoformat, help="last UTC day (inclusive)")
    parser.add_argument("--market", choices=list(MARKET_PATHS), default="spot")
    parser.add_argument("--out-dir", type=Path, default=Path("data/binance"), help="zip folder")
    parser.add_argument("--out", type=Path, default=None, help="Parquet path (default in out-dir)")
    parser.add_argument("--base-url", default=BASE_URL, help="mirror of data.binance.vision")
    parser.add_argument("--gap-policy", choices=["error", "ffill"], default="error")
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds per request, the whole file included (raise it for a slow link)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the download; an error prints one ``error:`` line and returns 2 (a bad request:
    dates, symbol, data) or 1 (a download that failed: network, checksum, disk)."""
    args = parse_args(argv)
    return exit_code(
        lambda: download_klines(
            args.symbol,
            args.interval,
            args.start,
            args.end,
            args.out_dir,
            market=args.market,
            base_url=args.base_url,
            out_parquet=args.out,
            gap_policy=args.gap_policy,
            timeout=args.timeout,
            progress=not args.no_progress,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
