"""Write (and serve) a local mirror of data.binance.vision's tick dumps, for the quoting pipeline.

    python scripts/tick_mirror.py --out mirror                          # the bundled capture
    python scripts/tick_mirror.py --out mirror --shifted-days 2 --synthetic ETHUSDT --serve 8765

The mirror holds ``bookTicker`` and ``aggTrades`` zips in Binance's published layout, each
beside its ``.CHECKSUM``, under ``<out>/data/futures/um/daily/<kind>/<SYMBOL>/``, so
``scripts/download_ticks.py --base-url http://127.0.0.1:<port>`` downloads and verifies them
as it would the real site. ``<out>/MIRROR.md`` states where every file's rows come from:

* **the capture's day** (``--capture``, the bundled Binance spot BTCUSDT capture by default):
  its real quotes and trades, receive-time stamps to the millisecond, in the dump layout
  (Binance publishes ``bookTicker`` dumps for USD-M futures only, so the spot rows sit under
  the futures path: real rows, another product's folder);
* ``--shifted-days N``: **generated** days, the capture's rows shifted by 1..N days: not the
  market of those days;
* ``--synthetic SYMBOL``: a **generated** ticker, ``hmarl.sources.book.synthetic_ticks`` rows
  in the capture's time window on each day (a random walk, not market data).

``--serve PORT`` then serves ``<out>`` on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import date, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from hmarl.io import atomic_write, write_text
from hmarl.sources.book import (
    capture_ticker,
    dump_csv,
    dump_zip,
    split_days,
    synthetic_ticks,
    tick_file,
)
from hmarl.sources.ticks import Ticks, read_ws_capture

CAPTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "binance_spot_btcusdt_20240809_ws.gz"
)
DAY_NS = 86_400 * 1_000_000_000


def shifted(ticks: Ticks, days: int) -> Ticks:
    """The same rows ``days`` days later."""
    q, t = ticks.quotes.copy(), ticks.trades.copy()
    q["ts"] += days * DAY_NS
    t["ts"] += days * DAY_NS
    return Ticks(quotes=q, trades=t)


def window(ticks: Ticks) -> str:
    """The capture's UTC time-of-day window, ``HH:MM-HH:MM`` (whole minutes around it)."""
    ts = ticks.quotes["ts"].to_numpy(np.int64)
    start, end = (int(x % DAY_NS) // 60_000_000_000 for x in (ts[0], ts[-1]))
    end = min(end + 1, 24 * 60)
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def publish(root: Path, symbol: str, day: date, ticks: Ticks) -> list[Path]:
    """The day's two zips and their ``.CHECKSUM`` files at their mirror paths under ``root``."""
    written = []
    for kind, text in dump_csv(ticks).items():
        remote = tick_file(symbol, kind, day, base_url="")
        body = dump_zip(remote.name, text)
        path = root / remote.url.lstrip("/")
        written.append(atomic_write(path, lambda p, b=body: p.write_bytes(b)))
        digest = hashlib.sha256(body).hexdigest()
        write_text(path.with_name(path.name + ".CHECKSUM"), f"{digest}  {remote.name}\n")
    return written


def build(
    out: Path, capture: Path, shifted_days: int, synthetic: list[str], seed: int = 0
) -> list[str]:
    """Write the mirror; return the provenance lines of MIRROR.md (one per symbol-day)."""
    ticker = capture_ticker(capture)
    days = split_days(read_ws_capture(capture))
    lines = []
    for first, ticks in days.items():
        when = window(ticks)
        for k in range(shifted_days + 1):
            day = first + timedelta(days=k)
            publish(out, ticker, day, shifted(ticks, k) if k else ticks)
            what = "real rows of the capture" if not k else f"GENERATED: the capture shifted {k} d"
            lines.append(f"| {ticker} | {day} | {what} ({capture.name}) |")
            for i, symbol in enumerate(synthetic):
                price = float(ticks.quotes["bid_price"].iloc[0])
                fake = synthetic_ticks(
                    day,
                    quotes=len(ticks.quotes),
                    trades=len(ticks.trades),
                    seed=seed + 1000 * i + k,
                    session=when,
                    price=price,
                )
                publish(out, symbol.upper(), day, fake)
                lines.append(f"| {symbol.upper()} | {day} | GENERATED: synthetic_ticks, {when} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="mirror folder")
    parser.add_argument("--capture", type=Path, default=CAPTURE, help="websocket capture (.gz)")
    parser.add_argument("--shifted-days", type=int, default=0, help="generated days after it")
    parser.add_argument("--synthetic", nargs="*", default=[], help="generated tickers")
    parser.add_argument("--seed", type=int, default=0, help="of the generated tickers")
    parser.add_argument("--serve", type=int, default=None, metavar="PORT", help="then serve")
    args = parser.parse_args(argv)
    if not args.capture.is_file():
        print(f"error: {args.capture} is absent: pass --capture <ws capture .gz>", file=sys.stderr)
        return 2
    if args.shifted_days < 0:
        print("error: --shifted-days must be >= 0", file=sys.stderr)
        return 2
    lines = build(args.out, args.capture, args.shifted_days, args.synthetic, args.seed)
    table = "\n".join(["| symbol | day | rows |", "|---|---|---|", *lines])
    note = (
        "# A local mirror of data.binance.vision (scripts/tick_mirror.py)\n\n"
        "Real-format files (bookTicker and aggTrades zips with .CHECKSUM). Rows marked "
        "GENERATED are not market data.\n\n"
    )
    write_text(args.out / "MIRROR.md", note + table + "\n")
    print(table)
    print(f"{len(lines)} symbol-days written under {args.out}")
    if args.serve is not None:
        handler = partial(SimpleHTTPRequestHandler, directory=str(args.out))
        httpd = ThreadingHTTPServer(("127.0.0.1", args.serve), handler)
        print(f"serving http://127.0.0.1:{httpd.server_address[1]} (Ctrl-C stops)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
