"""Turn top-of-book quotes and trades into time bars with microstructure columns (Parquet).

    python scripts/ticks_to_bars.py --ws ../shared/data/binance_spot_btcusdt_20240809_ws.gz \
        --freq 1s --out data/btcusdt_ws_1s.parquet
    python scripts/ticks_to_bars.py --quotes quotes.csv --trades trades.csv --freq 1min \
        --out bars.parquet

The Parquet is indexed by bar OPEN time (``timestamp``), like every candle file, so
``load_candles(path, fmt="parquet", extra_columns=BAR_EXTRA_COLUMNS)`` reads it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hmarl.sources.ticks import (
    DEFAULT_RET_HORIZONS,
    DEFAULT_RV_HORIZONS,
    read_ticks,
    read_ws_capture,
    ticks_to_bars,
    write_bars,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments: one websocket capture, or a quotes file and a trades file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ws", type=Path, help="websocket capture: '<ns> <json>' per line")
    source.add_argument("--quotes", type=Path, help="CSV/Parquet: ts,bid_price,bid_qty,...")
    parser.add_argument(
        "--trades", type=Path, help="CSV/Parquet: ts,price,qty,side (with --quotes)"
    )
    parser.add_argument("--symbol", default=None, help="pick one symbol of a multi-symbol capture")
    parser.add_argument("--freq", default="1s", help="bar length: 1s, 1min, 5min, ...")
    parser.add_argument("--ret", type=int, nargs="+", default=list(DEFAULT_RET_HORIZONS))
    parser.add_argument("--rv", type=int, nargs="+", default=list(DEFAULT_RV_HORIZONS))
    parser.add_argument("--out", type=Path, required=True, help="output Parquet")
    args = parser.parse_args(argv)
    if args.quotes is not None and args.trades is None:
        parser.error("--quotes needs --trades")
    return args


def main(argv: list[str] | None = None) -> int:
    """Read, build bars, write atomically; bad input prints one clear line and exits with 1."""
    args = parse_args(argv)
    began = time.perf_counter()
    try:
        if args.ws is not None:
            ticks = read_ws_capture(args.ws, symbol=args.symbol)
        else:
            ticks = read_ticks(args.quotes, args.trades)
        bars = ticks_to_bars(ticks, args.freq, ret_horizons=args.ret, rv_horizons=args.rv)
        candles = write_bars(bars, args.out, args.freq)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(ticks.quotes)} quotes, {len(ticks.trades)} trades -> {len(bars)} bars of "
        f"{args.freq}; {len(candles)} after the warm-up ({candles.index[0]} .. "
        f"{candles.index[-1]}, open times) -> {args.out} in {time.perf_counter() - began:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
