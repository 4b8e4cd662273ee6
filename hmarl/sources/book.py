"""Real top-of-book ticks: Binance's daily dumps, the websocket capture and a generic CSV.

Why one module: a quoting run on real data needs the best bid and ask with their sizes and
the trades, on one clock, sorted, checked row by row, cut to a trading session and split by
day. Three sources feed the same :class:`hmarl.sources.ticks.Ticks` frames:

* **Binance public daily dumps** (data.binance.vision, USD-M futures by default)::

      {base}/data/futures/um/daily/bookTicker/{SYMBOL}/{SYMBOL}-bookTicker-{YYYY-MM-DD}.zip
      {base}/data/futures/um/daily/trades/{SYMBOL}/{SYMBOL}-trades-{YYYY-MM-DD}.zip
      {base}/data/futures/um/daily/aggTrades/{SYMBOL}/{SYMBOL}-aggTrades-{YYYY-MM-DD}.zip

  each beside its ``.CHECKSUM``, fetched and verified by the klines downloader's machinery
  (:func:`hmarl.sources.binance.fetch_files`: SHA-256 before the final name, resumable), then
  parsed once and cached as Parquet (``<cache>/<SYMBOL>/<day>/quotes.parquet``,
  ``trades.parquet``). The CSV layouts (a header row in recent files; older files have none,
  and the columns are read by position either way):

  ========== ==================================================================================
  bookTicker ``update_id, best_bid_price, best_bid_qty, best_ask_price, best_ask_qty,
             transaction_time, event_time``
  trades     ``id, price, qty, quote_qty, time, is_buyer_maker``
  aggTrades  ``agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
             is_buyer_maker``
  ========== ==================================================================================

  **Clock**: the matching engine's time for both (``transaction_time`` of a book update, the
  trade's ``time``), so trades and the book are placed by one clock; epoch units (ms, or us in
  the 2025+ spot dumps) are read from the magnitude. ``is_buyer_maker`` true means the seller
  was the aggressor (``is_buy`` False).
* **The websocket capture** the project already reads (:func:`hmarl.sources.ticks.
  read_ws_capture`: ``<local ns> <json>`` lines, receive-time clock).
* **A generic CSV** (or Parquet): quotes with ``ts, bid, bid_qty, ask, ask_qty`` and trades
  with ``ts, price, qty, side`` (``side``: the aggressor, ``buy``/``sell``).

**Row checks** (:func:`check_quotes`, :func:`check_trades`), in file order, before anything is
sorted: one error naming the file and the data row (1-based, the header not counted) for a
crossed book (bid above ask), a negative size, a non-positive price, a trade of size <= 0,
or time going back. Two standard repairs, each off by default and counted in the log line:
``drop_crossed`` drops crossed quotes (transient artefacts of a feed that publishes the two
sides separately; a locked book, bid = ask, is kept) and ``sort`` sorts rows by time (a
stable sort: dumps written by several writers interleave a little).

**Sessions** (:func:`session_filter`): ``"13:00-20:50"`` keeps ticks whose UTC time of day is
in [13:00, 20:50); a window that wraps midnight (``"22:00-02:00"``) is allowed.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hmarl.config import parse_session
from hmarl.data.candles import DataError, first_bad, show
from hmarl.data.parsing import timestamps_to_ns
from hmarl.io import write_parquet
from hmarl.sources.binance import (
    BASE_URL,
    MARKET_PATHS,
    FetchReport,
    RemoteFile,
    fetch_files,
)
from hmarl.sources.ticks import Ticks, read_ws_capture

Kind = Literal["bookTicker", "trades", "aggTrades"]
KINDS: dict[str, tuple[str, ...]] = {
    "bookTicker": (
        "update_id",
        "best_bid_price",
        "best_bid_qty",
        "best_ask_price",
        "best_ask_qty",
        "transaction_time",
        "event_time",
    ),
    "trades": ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
    "aggTrades": (
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
    ),
}
# Column positions of (ts, price, qty, is_buyer_maker) in the two trade layouts.
_TRADE_FIELDS = {"trades": (4, 1, 2, 5), "aggTrades": (5, 1, 2, 6)}
_DAY_NS = 86_400 * 1_000_000_000
QUOTE_COLUMNS = ("ts", "bid_price", "bid_qty", "ask_price", "ask_qty")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Repairs:
    """The documented repairs, off by default (a bad row is then an error)."""

    drop_crossed: bool = False  # drop quotes with bid above ask
    sort: bool = False  # stable-sort rows by time instead of failing on time going back


# --- row checks ---------------------------------------------------------------------------


def _fail(where: str, row: int, what: str) -> DataError:
    return DataError(f"{where}: data row {row + 1}: {what}")


def _check_time(ts: np.ndarray, where: str, repairs: Repairs) -> np.ndarray | None:
    """The stable time order when ``repairs.sort`` (None when already sorted), else fail."""
    back = first_bad(np.diff(ts) < 0)
    if back is None:
        return None
    if not repairs.sort:
        raise _fail(
            where,
            back + 1,
            f"time goes back ({pd.Timestamp(int(ts[back + 1]), tz='UTC')} after "
            f"{pd.Timestamp(int(ts[back]), tz='UTC')}); sort the rows by time (repair: sort)",
        )
    return np.argsort(ts, kind="stable")


def check_quotes(
    quotes: pd.DataFrame, where: str, repairs: Repairs = Repairs(), log: Log | None = None
) -> pd.DataFrame:
    """``quotes`` (columns :data:`QUOTE_COLUMNS`, in file order) checked row by row, repaired
    where asked, and sorted by time; the error names ``where`` and the data row."""
    bid, ask = quotes["bid_price"].to_numpy(), quotes["ask_price"].to_numpy()
    sizes = (quotes["bid_qty"].to_numpy(), quotes["ask_qty"].to_numpy())
    checks = (
        ((bid <= 0) | (ask <= 0), "price <= 0: prices must be positive"),
        ((sizes[0] < 0) | (sizes[1] < 0), "negative size: sizes on the book are >= 0"),
    )
    for bad, what in checks:
        row = first_bad(bad)
        if row is not None:
            raise _fail(where, row, what)
    crossed = bid > ask
    row = first_bad(crossed)
    if row is not None and not repairs.drop_crossed:
        raise _fail(
            where,
            row,
            f"crossed book (bid {bid[row]:g} above ask {ask[row]:g}); check the bid and ask "
            "columns, or drop crossed quotes (repair: drop_crossed)",
        )
    kept = quotes.loc[~crossed]
    if crossed.any() and log is not None:
        log(f"{where}: dropped {int(crossed.sum())} crossed quotes of {len(quotes)}")
    order = _check_time(kept["ts"].to_numpy(np.int64), where, repairs)
    if order is not None:
        kept = kept.iloc[order]
        if log is not None:
            log(f"{where}: sorted {len(kept)} quotes by time")
    return kept.reset_index(drop=True)


def check_trades(
    trades: pd.DataFrame, where: str, repairs: Repairs = Repairs(), log: Log | None = None
) -> pd.DataFrame:
    """``trades`` (ts, price, qty, is_buy; file order) checked row by row and sorted by time."""
    bad = (trades["price"].to_numpy() <= 0) | (trades["qty"].to_numpy() <= 0)
    row = first_bad(bad)
    if row is not None:
        raise _fail(where, row, "trade price or size <= 0: a trade has both positive")
    order = _check_time(trades["ts"].to_numpy(np.int64), where, repairs)
    if order is None:
        return trades.reset_index(drop=True)
    if log is not None:
        log(f"{where}: sorted {len(trades)} trades by time")
    return trades.iloc[order].reset_index(drop=True)


# --- Binance dumps ------------------------------------------------------------------------


def tick_file(
    symbol: str, kind: str, day: date, *, market: str = "um", base_url: str = BASE_URL
) -> RemoteFile:
    """The daily zip of ``kind`` (``bookTicker``, ``trades``, ``aggTrades``) for one UTC day."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {list(KINDS)}")
    if market not in MARKET_PATHS:
        raise ValueError(f"market {market!r} is not one of {sorted(MARKET_PATHS)}")
    name = f"{symbol}-{kind}-{day:%Y-%m-%d}.zip"
    url = f"{base_url.rstrip('/')}/data/{MARKET_PATHS[market]}/daily/{kind}/{symbol}/{name}"
    return RemoteFile(url=url, name=name, period="daily")


def _dump_table(path: Path, kind: str, columns: dict[str, str]) -> pd.DataFrame:
    """``columns`` (name -> dtype) of the CSV inside a dump zip, named by :data:`KINDS`
    whether the file has a header row or not.

    Streamed from the zip with typed columns (a futures bookTicker day holds millions of
    rows); a value that does not parse sends the file through a text read instead, so that
    the error can name its row.
    """
    names = list(KINDS[kind])
    with zipfile.ZipFile(path) as archive:
        member = next(m for m in archive.namelist() if m.lower().endswith(".csv"))
        with archive.open(member) as source:
            first = source.readline().decode("utf-8", errors="replace").strip()
        if first.count(",") != len(names) - 1:
            raise DataError(
                f"{path}: expected the {len(names)} {kind} columns {names}, "
                f"the first line reads {first[:120]!r}"
            )
        header = 0 if first and not first[0].isdigit() else None
        read = {"header": header, "names": names, "usecols": list(columns)}
        try:
            with archive.open(member) as source:
                return pd.read_csv(source, dtype=columns, **read)  # type: ignore[call-overload]
        except (ValueError, TypeError):
            with archive.open(member) as source:
                return pd.read_csv(source, dtype=str, **read)  # type: ignore[call-overload]


def _float(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    row = first_bad(~np.isfinite(values))
    if row is not None:
        raise _fail(
            where, row, f"column {column}: not a finite number ({show(frame[column].iloc[row])})"
        )
    return values


def _maker_flag(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """``is_buyer_maker`` text (true/false) as booleans; the error names the row. Worked on
    the column's categories (two values, whatever the row count)."""
    values = frame[column].astype("category")
    names = [str(c).strip().lower() for c in values.cat.categories]
    maker = np.array([n in ("true", "1") for n in names] + [False])  # last: missing (code -1)
    valid = np.array([n in ("true", "1", "false", "0") for n in names] + [False])
    codes = values.cat.codes.to_numpy()
    row = first_bad(~valid[codes])
    if row is not None:
        raise _fail(
            where, row, f"column {column}: not true/false ({show(frame[column].iloc[row])})"
        )
    return maker[codes]


def read_book_ticker(
    path: Path, repairs: Repairs = Repairs(), log: Log | None = None
) -> pd.DataFrame:
    """Quotes of a ``bookTicker`` dump zip, checked and sorted (clock: ``transaction_time``)."""
    table = _dump_table(
        path,
        "bookTicker",
        {
            "best_bid_price": "float64",
            "best_bid_qty": "float64",
            "best_ask_price": "float64",
            "best_ask_qty": "float64",
            "transaction_time": "int64",
        },
    )
    where = str(path)
    quotes = pd.DataFrame(
        {
            "ts": timestamps_to_ns(
                pd.to_numeric(table["transaction_time"], errors="coerce"), where
            ),
            "bid_price": _float(table, "best_bid_price", where),
            "bid_qty": _float(table, "best_bid_qty", where),
            "ask_price": _float(table, "best_ask_price", where),
            "ask_qty": _float(table, "best_ask_qty", where),
        }
    )
    return check_quotes(quotes, where, repairs, log)


def read_trade_dump(
    path: Path, kind: str, repairs: Repairs = Repairs(), log: Log | None = None
) -> pd.DataFrame:
    """Trades of a ``trades`` or ``aggTrades`` dump zip, checked and sorted."""
    names = KINDS[kind]
    ts_col, price_col, qty_col, maker_col = (names[i] for i in _TRADE_FIELDS[kind])
    dtypes = {ts_col: "int64", price_col: "float64", qty_col: "float64", maker_col: "category"}
    table = _dump_table(path, kind, dtypes)
    where = str(path)
    trades = pd.DataFrame(
        {
            "ts": timestamps_to_ns(pd.to_numeric(table[ts_col], errors="coerce"), where),
            "price": _float(table, price_col, where),
            "qty": _float(table, qty_col, where),
            "is_buy": ~_maker_flag(table, maker_col, where),
        }
    )
    return check_trades(trades, where, repairs, log)


DAY_FILES = ("quotes.parquet", "trades.parquet")  # a cached day's files, in Ticks' order


def capture_ticker(path: Path) -> str:
    """A capture's ticker: ``binance_<market>_<symbol>_<day>_ws.gz`` names its symbol; else
    the file's name up to its first dot, upper-cased."""
    parts = path.name.split("_")
    return (parts[2] if len(parts) > 3 else path.name.split(".")[0]).upper()


def day_dir(cache: Path, symbol: str, day: date) -> Path:
    """``<cache>/<SYMBOL>/<YYYY-MM-DD>``: a day's Parquet files."""
    return cache / symbol / f"{day:%Y-%m-%d}"


@dataclass(frozen=True)
class DayFiles:
    """What :func:`download_ticks` left for one (symbol, day)."""

    symbol: str
    day: date
    quotes: Path
    trades: Path
    n_quotes: int
    n_trades: int


def download_ticks(
    symbols: Sequence[str],
    start: date,
    end: date,
    cache: Path,
    *,
    trades: Literal["trades", "aggTrades"] = "aggTrades",
    market: str = "um",
    base_url: str = BASE_URL,
    repairs: Repairs = Repairs(),
    timeout: float = 30.0,
    progress: bool = True,
    log: Log | None = print,
) -> tuple[list[DayFiles], FetchReport]:
    """Fetch, verify and cache as Parquet the quotes and trades of every (symbol, UTC day).

    The zips stay under ``<cache>/zips`` (the resume state); a day whose Parquet files exist
    is not parsed again (delete them to re-parse, e.g. with other repairs).
    """
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}")
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    plan = [
        tick_file(symbol.upper(), kind, day, market=market, base_url=base_url)
        for symbol in symbols
        for day in days
        for kind in ("bookTicker", trades)
    ]
    report = fetch_files(plan, cache / "zips", timeout=timeout, progress=progress)
    out: list[DayFiles] = []
    for i, (symbol, day) in enumerate((s.upper(), d) for s in symbols for d in days):
        book_zip, trade_zip = report.paths[2 * i], report.paths[2 * i + 1]
        folder = day_dir(cache, symbol, day)
        quotes_path, trades_path = (folder / f for f in DAY_FILES)
        if not (quotes_path.is_file() and trades_path.is_file()):
            write_parquet(quotes_path, read_book_ticker(book_zip, repairs, log))
            write_parquet(trades_path, read_trade_dump(trade_zip, trades, repairs, log))
        out.append(
            DayFiles(
                symbol,
                day,
                quotes_path,
                trades_path,
                len(pd.read_parquet(quotes_path, columns=["ts"])),
                len(pd.read_parquet(trades_path, columns=["ts"])),
            )
        )
    if log is not None:
        log(
            f"ticks: {report.downloaded} zips downloaded, {report.present} already present; "
            f"{len(out)} symbol-days cached under {cache}"
        )
    return out, report


def load_day(cache: Path, symbol: str, day: date) -> Ticks:
    """A cached day (written by :func:`download_ticks`) as :class:`Ticks`."""
    folder = day_dir(cache, symbol.upper(), day)
    paths = tuple(folder / f for f in DAY_FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{missing[0]} is absent: download the day first "
            f"(python scripts/download_ticks.py {symbol.upper()} {day} {day} --cache {cache})"
        )
    return Ticks(quotes=pd.read_parquet(paths[0]), trades=pd.read_parquet(paths[1]))


# --- writing the dump layouts (a local mirror's files) -------------------------------------


def dump_csv(ticks: Ticks) -> dict[str, str]:
    """``ticks`` in the ``bookTicker`` and ``aggTrades`` dump layouts (header rows, ms stamps,
    prices and sizes to 8 decimals as Binance publishes them): what :func:`read_book_ticker`
    and :func:`read_trade_dump` read back. Why here: a local mirror (``scripts/tick_mirror.py``,
    the tests' fake server) serves files in the real formats, written from :class:`Ticks`."""
    q, t = ticks.quotes, ticks.trades
    ms_q, ms_t = q["ts"].to_numpy(np.int64) // 1_000_000, t["ts"].to_numpy(np.int64) // 1_000_000
    book = pd.DataFrame(
        {
            "update_id": np.arange(len(q)),
            "best_bid_price": q["bid_price"].round(8),
            "best_bid_qty": q["bid_qty"].round(8),
            "best_ask_price": q["ask_price"].round(8),
            "best_ask_qty": q["ask_qty"].round(8),
            "transaction_time": ms_q,
            "event_time": ms_q,
        }
    )
    ids = np.arange(len(t))
    trades = pd.DataFrame(
        {
            "agg_trade_id": ids,
            "price": t["price"].round(8),
            "quantity": t["qty"].round(8),
            "first_trade_id": ids,
            "last_trade_id": ids,
            "transact_time": ms_t,
            "is_buyer_maker": np.where(t["is_buy"].to_numpy(bool), "false", "true"),
        }
    )
    return {"bookTicker": book.to_csv(index=False), "aggTrades": trades.to_csv(index=False)}


def dump_zip(name: str, text: str) -> bytes:
    """A dump zip as Binance publishes it: ``<name without .zip>.csv`` inside ``name``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name.removesuffix(".zip") + ".csv", text)
    return buffer.getvalue()


# --- generic CSV --------------------------------------------------------------------------


def _read_any(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _columns(frame: pd.DataFrame, wanted: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing columns {missing}; found {list(frame.columns)}")


def read_generic(
    quotes_path: Path, trades_path: Path, repairs: Repairs = Repairs(), log: Log | None = None
) -> Ticks:
    """Quotes (``ts, bid, bid_qty, ask, ask_qty``) and trades (``ts, price, qty, side``) from
    CSV or Parquet files; ``ts`` is a date or an epoch number (unit from its magnitude)."""
    q_where, t_where = str(quotes_path), str(trades_path)
    q = _read_any(Path(quotes_path))
    _columns(q, ("ts", "bid", "bid_qty", "ask", "ask_qty"), q_where)
    quotes = pd.DataFrame(
        {
            "ts": timestamps_to_ns(q["ts"], q_where),
            "bid_price": _float(q, "bid", q_where),
            "bid_qty": _float(q, "bid_qty", q_where),
            "ask_price": _float(q, "ask", q_where),
            "ask_qty": _float(q, "ask_qty", q_where),
        }
    )
    t = _read_any(Path(trades_path))
    _columns(t, ("ts", "price", "qty", "side"), t_where)
    side = t["side"].astype(str).str.strip().str.lower()
    row = first_bad(~side.isin(["buy", "sell"]).to_numpy())
    if row is not None:
        raise _fail(t_where, row, f"column side: {t['side'].iloc[row]!r} is not buy or sell")
    trades = pd.DataFrame(
        {
            "ts": timestamps_to_ns(t["ts"], t_where),
            "price": _float(t, "price", t_where),
            "qty": _float(t, "qty", t_where),
            "is_buy": (side == "buy").to_numpy(bool),
        }
    )
    return Ticks(
        quotes=check_quotes(quotes, q_where, repairs, log),
        trades=check_trades(trades, t_where, repairs, log),
    )


# --- sessions and days --------------------------------------------------------------------


def in_session(ts: np.ndarray, session: str) -> np.ndarray:
    """Whether each time (int64 ns, UTC) falls in the session's [start, end) time of day."""
    start, end = parse_session(session)
    tod = np.asarray(ts, dtype=np.int64) % _DAY_NS
    if start < end:
        return (tod >= start) & (tod < end)
    return (tod >= start) | (tod < end)  # the window wraps midnight


def session_filter(ticks: Ticks, session: str) -> Ticks:
    """The quotes and trades inside ``session`` (e.g. ``"13:00-20:50"``, UTC)."""
    quotes = ticks.quotes.loc[in_session(ticks.quotes["ts"].to_numpy(), session)]
    trades = ticks.trades.loc[in_session(ticks.trades["ts"].to_numpy(), session)]
    return Ticks(quotes=quotes.reset_index(drop=True), trades=trades.reset_index(drop=True))


def split_days(ticks: Ticks) -> dict[date, Ticks]:
    """The ticks of each UTC day that has quotes, oldest first."""
    q_day = ticks.quotes["ts"].to_numpy(np.int64) // _DAY_NS
    t_day = ticks.trades["ts"].to_numpy(np.int64) // _DAY_NS
    out: dict[date, Ticks] = {}
    for day in np.unique(q_day):
        stamp = pd.Timestamp(int(day) * _DAY_NS, tz="UTC").date()
        out[stamp] = Ticks(
            quotes=ticks.quotes.loc[q_day == day].reset_index(drop=True),
            trades=ticks.trades.loc[t_day == day].reset_index(drop=True),
        )
    return out


# --- one source from the command line -----------------------------------------------------


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The scripts' shared options naming one tick source (``days_from_arguments`` reads them)."""
    group = parser.add_argument_group("ticks (one source; default: the bundled capture)")
    group.add_argument("--capture", type=Path, default=None, help="websocket capture (.gz)")
    group.add_argument("--cache", type=Path, default=None, help="scripts/download_ticks.py cache")
    group.add_argument("--symbols", nargs="*", default=["BTCUSDT"], help="with --cache")
    group.add_argument(
        "--days", nargs="*", type=date.fromisoformat, default=[], help="with --cache"
    )
    group.add_argument("--quotes", type=Path, default=None, help="generic quotes CSV")
    group.add_argument("--trades", type=Path, default=None, help="generic trades CSV")
    group.add_argument("--ticker", default=None, help="name of a capture's or CSV's ticker")
    group.add_argument("--drop-crossed", action="store_true", help="repair: drop crossed quotes")
    group.add_argument("--session", default=None, help="UTC window, e.g. 13:00-20:50")


def days_from_arguments(args: argparse.Namespace, capture: Path) -> dict[tuple[str, date], Ticks]:
    """The ticks of each (ticker, UTC day) of the source the arguments name (``capture``: the
    default), cut to ``--session``; a wrong combination is a ``ValueError`` naming it."""
    repairs = Repairs(drop_crossed=args.drop_crossed)
    days: dict[tuple[str, date], Ticks]
    if args.cache is not None:
        if not args.days:
            raise ValueError("--cache needs --days (and --symbols)")
        days = {(s.upper(), d): load_day(args.cache, s, d) for s in args.symbols for d in args.days}
    elif args.quotes is not None or args.trades is not None:
        if args.quotes is None or args.trades is None:
            raise ValueError("give both --quotes and --trades")
        ticker = args.ticker or Path(args.quotes).stem
        ticks = read_generic(args.quotes, args.trades, repairs)
        days = {(ticker, d): t for d, t in split_days(ticks).items()}
    else:
        path = args.capture or capture
        if not path.is_file():
            raise ValueError(f"{path} is absent: pass --capture, --cache or --quotes/--trades")
        ticker = args.ticker or capture_ticker(path)
        days = {(ticker, d): t for d, t in split_days(read_ws_capture(path)).items()}
    if args.session:
        days = {key: session_filter(ticks, args.session) for key, ticks in days.items()}
    return days


# --- a synthetic day, for tests and benchmarks ---------------------------------------------


def synthetic_ticks(
    day: date,
    *,
    quotes: int,
    trades: int,
    seed: int,
    session: str = "13:00-20:50",
    price: float = 100.0,
    tick: float = 0.01,
    lot: float = 0.001,
) -> Ticks:
    """A seeded top-of-book day in :class:`Ticks` frames (no download needed): ``quotes``
    book updates at uniform random times in the session, the best bid a random walk on the
    tick grid (a tick up or down with probability 0.1 each), a spread of 1 or 2 ticks, 1 to 9
    lots displayed; ``trades`` trades of 1 to 4 lots, half of them buys, printing at the best
    quote standing at their time, or one tick through it (one in five)."""
    rng = np.random.default_rng(seed)
    start, end = parse_session(session)
    base = int(pd.Timestamp(day, tz="UTC").value)
    q_ts = np.sort(rng.integers(base + start, base + end, quotes))
    bid_t = np.round(price / tick) + np.cumsum(rng.choice([-1, 0, 1], quotes, p=[0.1, 0.8, 0.1]))
    ask_t = bid_t + rng.integers(1, 3, quotes)
    book = pd.DataFrame(
        {
            "ts": q_ts,
            "bid_price": bid_t * tick,
            "bid_qty": rng.integers(1, 10, quotes) * lot,
            "ask_price": ask_t * tick,
            "ask_qty": rng.integers(1, 10, quotes) * lot,
        }
    )
    t_ts = np.sort(rng.integers(int(q_ts[0]) + 1, base + end, trades))
    standing = np.searchsorted(q_ts, t_ts, side="right") - 1
    is_buy = rng.random(trades) < 0.5
    through = (rng.random(trades) < 0.2).astype(np.float64)
    px = np.where(is_buy, ask_t[standing] + through, bid_t[standing] - through) * tick
    prints = pd.DataFrame(
        {"ts": t_ts, "price": px, "qty": rng.integers(1, 5, trades) * lot, "is_buy": is_buy}
    )
    return Ticks(quotes=book, trades=prints)
