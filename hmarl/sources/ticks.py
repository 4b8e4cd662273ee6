"""Top-of-book quotes and trades -> time bars with microstructure columns.

The conventions below (clock, bar span and stamp, coverage, columns) are documented once,
beside the one pipeline that follows them: read, bar, write.

Why bars: the trainer consumes candles; tick data (a Binance websocket capture, or a
generic quotes/trades export) becomes a regular candle frame whose extra columns carry
what candles lose: spread, book imbalance, trade pressure, short-horizon returns and
realised volatility (the fourteen order-book features of the user's earlier B3 work).

Conventions (read these before using the columns):

* Clock. Every tick is placed by ONE clock. Websocket captures use the local receive time
  (the ``<ns>`` before each message) for every stream: spot ``bookTicker`` messages carry
  no exchange time, and mixing exchange time for trades with receive time for quotes
  would misplace trades against the book by the clock offset (on the bundled 2024-08-09
  capture receive time runs ~1.27 s *behind* the trade time ``T``). Receive order is also
  what a live consumer of the same feed would have known, so it is the causal order.
  Generic files use their own ``ts`` column.
* Bar span. A bar covers the half-open interval [open, close) on a grid aligned to the
  epoch (multiples of the bar length). A tick stamped exactly at ``close`` belongs to the
  next bar. Only ticks before ``close`` contribute, so a bar never sees its future.
* Bar stamp. :func:`ticks_to_bars` indexes bars by their CLOSE time (``close_time``):
  the moment the bar is known. Candle files in :mod:`hmarl.data` are indexed by OPEN time,
  so :func:`bars_to_candles` / :func:`write_bars` store ``timestamp = close_time - freq``;
  ``load_candles(path, fmt="parquet", extra_columns=BAR_EXTRA_COLUMNS)`` then reads the
  Parquet like any other candle file, and a decision "at the close of bar t" sees exactly
  the ticks before ``timestamp[t] + freq``.
* Coverage. Bars start at the first grid point at or after the first quote (the book must
  be known over the whole bar) and end at the last grid point at or before the last tick
  (the capture must outlast the bar). The grid has no gaps: a bar with no tick repeats
  the book state.

Columns (all float64):

* ``open high low close volume``: trades of the bar (``volume`` in base units). A bar
  without trades has open = high = low = close = ``mid`` at close, volume 0 and
  ``no_trade`` = 1.0 (else 0.0); ``trade_count`` counts trades.
* ``mid`` = (bid + ask) / 2, ``spread`` = ask - bid, ``spread_bps`` = spread / mid * 1e4 and
  ``imbalance_last`` = (bid_qty - ask_qty) / (bid_qty + ask_qty), all from the last quote
  before close (0 imbalance when both sizes are 0).
* ``imbalance_tw``, ``bid_size_mean``, ``ask_size_mean``: time-weighted over [open, close)
  (each quote weighted by how long it stood), so a burst of updates does not outweigh a
  book that stood still for most of the bar.
* ``trade_pressure`` = (aggressive buy volume - aggressive sell volume) / volume, 0 without
  trades.
* ``ret_{k}`` = log(mid_t / mid_{t-k}) and ``rv_{k}`` = sqrt(sum of the last k squared one-bar
  mid log returns) (not annualised); the first k bars are NaN (warm-up, not invented).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmarl.data.candles import CANDLE_COLUMNS, DataError
from hmarl.data.parsing import timestamps_to_ns
from hmarl.data.timestamps import freq_ns
from hmarl.data.validation import validate_candles
from hmarl.io import write_parquet

QUOTE_COLUMNS = ("ts", "bid_price", "bid_qty", "ask_price", "ask_qty")
TRADE_COLUMNS = ("ts", "price", "qty")
# Trade side columns accepted, first found wins: aggressor side "buy"/"sell", or Binance's m.
SIDE_COLUMNS = ("side", "aggressor", "is_buyer_maker")
DEFAULT_RET_HORIZONS = (1, 5, 10)
DEFAULT_RV_HORIZONS = (10, 30)


def bar_columns(
    ret_horizons: Sequence[int] = DEFAULT_RET_HORIZONS,
    rv_horizons: Sequence[int] = DEFAULT_RV_HORIZONS,
) -> list[str]:
    """Every column :func:`ticks_to_bars` produces, in order."""
    return [
        *CANDLE_COLUMNS,
        *("trade_count", "no_trade", "mid", "spread", "spread_bps"),
        *("imbalance_last", "imbalance_tw", "bid_size_mean", "ask_size_mean", "trade_pressure"),
        *(f"ret_{k}" for k in ret_horizons),
        *(f"rv_{k}" for k in rv_horizons),
    ]


BAR_EXTRA_COLUMNS = tuple(bar_columns()[5:])


@dataclass(frozen=True)
class Ticks:
    """Quotes and trades on one clock, each sorted by ``ts`` (int64 ns since epoch, UTC).

    quotes: ts, bid_price, bid_qty, ask_price, ask_qty.
    trades: ts, price, qty, is_buy (True when the aggressor bought).
    """

    quotes: pd.DataFrame
    trades: pd.DataFrame


# --- readers ------------------------------------------------------------------------------


def _quote_frame(
    ts: Any, bid_price: Any, bid_qty: Any, ask_price: Any, ask_qty: Any
) -> pd.DataFrame:
    """Typed, time-sorted quotes frame (a stable sort keeps arrival order on equal stamps)."""
    frame = pd.DataFrame(
        {
            "ts": np.asarray(ts, dtype=np.int64),
            "bid_price": np.asarray(bid_price, dtype=np.float64),
            "bid_qty": np.asarray(bid_qty, dtype=np.float64),
            "ask_price": np.asarray(ask_price, dtype=np.float64),
            "ask_qty": np.asarray(ask_qty, dtype=np.float64),
        }
    )
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _trade_frame(ts: Any, price: Any, qty: Any, is_buy: Any) -> pd.DataFrame:
    """Typed, time-sorted trades frame."""
    frame = pd.DataFrame(
        {
            "ts": np.asarray(ts, dtype=np.int64),
            "price": np.asarray(price, dtype=np.float64),
            "qty": np.asarray(qty, dtype=np.float64),
            "is_buy": np.asarray(is_buy, dtype=bool),
        }
    )
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _classify(data: dict[str, Any]) -> str:
    """'quote', 'trade' or 'other' for one websocket payload (combined or raw stream)."""
    event = data.get("e")
    if event in ("trade", "aggTrade"):
        return "trade"
    if event in (None, "bookTicker") and {"b", "B", "a", "A"} <= data.keys():
        return "quote"
    return "other"


def read_ws_capture(path: str | Path, *, symbol: str | None = None) -> Ticks:
    """Quotes (``@bookTicker``) and trades (``@trade``/``@aggTrade``) of a websocket capture.

    Format: gzip or plain text, one message a line, ``<local receive ns> <json>``, combined
    (``{"stream":..., "data":...}``) or raw payloads. Depth diffs and other streams are
    skipped (depth is not needed for top-of-book features). All ticks take the receive
    time (see the module docstring). A capture holding several symbols needs ``symbol``.
    """
    path = Path(path)
    quotes: dict[str, list[Any]] = {key: [] for key in QUOTE_COLUMNS}
    trades: dict[str, list[Any]] = {"ts": [], "price": [], "qty": [], "is_buy": []}
    symbols: set[str] = set()
    wanted = symbol.upper() if symbol else None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            stamp, _, payload = line.partition(" ")
            if "depth" in payload[:64] or not payload.strip():
                continue  # depth diffs: the bulk of the bytes, never used
            try:
                message = json.loads(payload)
                data = message.get("data", message)
                kind = _classify(data)
                if kind == "other" or (wanted and data.get("s") != wanted):
                    continue
                ts = int(stamp)
                symbols.add(data.get("s", ""))
                if kind == "quote":
                    for key, value in zip(QUOTE_COLUMNS, (ts, *_quote_fields(data)), strict=True):
                        quotes[key].append(value)
                else:
                    for key, value in zip(trades, (ts, *_trade_fields(data)), strict=True):
                        trades[key].append(value)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DataError(f"{path}, line {number}: unreadable message ({exc})") from exc
    if len(symbols) > 1:
        raise DataError(f"{path}: holds symbols {sorted(symbols)}; pass symbol=... to pick one")
    ticks = Ticks(quotes=_quote_frame(**quotes), trades=_trade_frame(**trades))
    check_ticks(ticks, str(path))
    return ticks


def _quote_fields(data: dict[str, Any]) -> tuple[float, float, float, float]:
    """bid, bid qty, ask, ask qty of a bookTicker payload (Binance sends decimal strings)."""
    return float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"])


def _trade_fields(data: dict[str, Any]) -> tuple[float, float, bool]:
    """price, qty and aggressor-is-buyer of a trade payload (``m``: buyer is the maker)."""
    if not isinstance(data["m"], bool):
        raise TypeError(f"field m must be true/false, got {data['m']!r}")
    return float(data["p"]), float(data["q"]), not data["m"]


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame; the suffix decides."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".gz", ".txt"):
        return pd.read_csv(path)
    raise DataError(f"{path}: unknown tick file type {path.suffix!r} (use .csv or .parquet)")


def _require(frame: pd.DataFrame, columns: Sequence[str], where: Path) -> None:
    """Fail naming the file and the missing columns."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing columns {missing}; found {list(frame.columns)}")


def _aggressor_is_buy(frame: pd.DataFrame, where: Path) -> np.ndarray:
    """Aggressor side as booleans from ``side``/``aggressor`` (buy/sell) or ``is_buyer_maker``."""
    column = next((name for name in SIDE_COLUMNS if name in frame.columns), None)
    if column is None:
        raise DataError(f"{where}: trades need one of the columns {list(SIDE_COLUMNS)}")
    values = frame[column]
    if column == "is_buyer_maker":
        text = values.astype(str).str.strip().str.lower()
        maker = text.isin(["true", "1", "1.0", "t", "yes"])
        valid = maker | text.isin(["false", "0", "0.0", "f", "no"])
        is_buy = ~maker
    else:
        text = values.astype(str).str.strip().str.lower()
        is_buy = text.isin(["buy", "b"])
        valid = is_buy | text.isin(["sell", "s"])
    if not valid.all():
        row = int(np.flatnonzero(~valid.to_numpy())[0])
        raise DataError(
            f"{where}: data row {row + 1}, column {column}: unknown side {values.iloc[row]!r}"
        )
    return is_buy.to_numpy(dtype=bool)


def _numeric(frame: pd.DataFrame, column: str, where: Path) -> np.ndarray:
    """A float64 column, failing on the first non-numeric or missing row."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(f"{where}: data row {row}, column {column}: not a finite number")
    return values


def read_quotes(path: str | Path) -> pd.DataFrame:
    """Top-of-book updates from a CSV/Parquet with columns ts, bid_price, bid_qty, ask_price,
    ask_qty (one row per update; the book holds until the next row)."""
    path = Path(path)
    frame = _read_table(path)
    _require(frame, QUOTE_COLUMNS, path)
    return _quote_frame(
        timestamps_to_ns(frame["ts"], str(path)),
        *(_numeric(frame, column, path) for column in QUOTE_COLUMNS[1:]),
    )


def read_trades(path: str | Path) -> pd.DataFrame:
    """Trades from a CSV/Parquet with columns ts, price, qty and a side column (see
    ``SIDE_COLUMNS``: aggressor ``buy``/``sell``, or ``is_buyer_maker`` true = seller hit)."""
    path = Path(path)
    frame = _read_table(path)
    _require(frame, TRADE_COLUMNS, path)
    return _trade_frame(
        timestamps_to_ns(frame["ts"], str(path)),
        _numeric(frame, "price", path),
        _numeric(frame, "qty", path),
        _aggressor_is_buy(frame, path),
    )


def read_ticks(quotes_path: str | Path, trades_path: str | Path) -> Ticks:
    """Quotes and trades from two generic files, checked."""
    ticks = Ticks(quotes=read_quotes(quotes_path), trades=read_trades(trades_path))
    check_ticks(ticks, f"{quotes_path} / {trades_path}")
    return ticks


def check_ticks(ticks: Ticks, where: str) -> None:
    """Fail on books that cannot be real: no quotes, non-positive prices, negative sizes,
    bid above ask (usually swapped columns), non-positive trade prices or sizes."""
    quotes, trades = ticks.quotes, ticks.trades
    if quotes.empty:
        raise DataError(f"{where}: no top-of-book quotes; bars need a book for the mid price")
    checks = (
        ("quotes", quotes, (quotes["bid_price"] <= 0) | (quotes["ask_price"] <= 0), "price <= 0"),
        ("quotes", quotes, (quotes["bid_qty"] < 0) | (quotes["ask_qty"] < 0), "negative size"),
        ("quotes", quotes, quotes["bid_price"] > quotes["ask_price"], "bid above ask"),
        ("trades", trades, (trades["price"] <= 0) | (trades["qty"] <= 0), "price or qty <= 0"),
    )
    for kind, frame, bad, what in checks:
        if bad.any():
            row = frame.iloc[int(np.flatnonzero(bad.to_numpy())[0])]
            stamp = pd.Timestamp(int(row["ts"]), unit="ns", tz="UTC")
            raise DataError(f"{where}: {kind} at {stamp}: {what}: {row.drop('ts').to_dict()}")


# --- bars ---------------------------------------------------------------------------------


def bar_edges(ticks: Ticks, step: int) -> np.ndarray:
    """Grid points (ns) [open_0, close_0 = open_1, ..., close_last] fully covered by the ticks."""
    first_quote = int(ticks.quotes["ts"].iloc[0])
    last_tick = int(max(ticks.quotes["ts"].iloc[-1], ticks.trades["ts"].to_numpy().max(initial=0)))
    first_open = -(-first_quote // step) * step
    last_close = last_tick // step * step
    if last_close - first_open < step:
        first, last = pd.Timestamp(first_quote, tz="UTC"), pd.Timestamp(last_tick, tz="UTC")
        raise DataError(
            f"ticks span {first} .. {last}, less than one whole bar of "
            f"{pd.Timedelta(step, unit='ns')} after the first quote"
        )
    return np.arange(first_open, last_close + 1, step, dtype=np.int64)


def _time_weighted(ts: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-bar time average of a step function (value i holds from ts[i] to ts[i+1]).

    The timeline is cut at every quote and every bar edge, so each bar sums only its own
    pieces: no running total crosses bars, and nothing at or after a close leaks back.
    Needs ts[0] <= edges[0]. values: [Q, C] -> [n_bars, C].
    """
    inside = ts[(ts > edges[0]) & (ts < edges[-1])]
    points = np.union1d(edges, inside)
    starts, durations = points[:-1], np.diff(points).astype(np.float64)
    state = np.searchsorted(ts, starts, side="right") - 1
    bar = np.searchsorted(edges, starts, side="right") - 1
    n_bars = len(edges) - 1
    step = float(edges[1] - edges[0])
    return np.stack(
        [
            np.bincount(bar, weights=values[state, c] * durations, minlength=n_bars) / step
            for c in range(values.shape[1])
        ],
        axis=1,
    )


def _imbalance(bid_qty: np.ndarray, ask_qty: np.ndarray) -> np.ndarray:
    """(bid - ask) / (bid + ask), 0 where both sides are empty."""
    total = bid_qty + ask_qty
    return np.divide(bid_qty - ask_qty, total, out=np.zeros_like(total), where=total > 0)


def _book_columns(quotes: pd.DataFrame, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Spread, mid, imbalance and sizes per bar from the quotes (last before close, and
    time-weighted over the bar)."""
    ts = quotes["ts"].to_numpy()
    bid, ask = quotes["bid_price"].to_numpy(), quotes["ask_price"].to_numpy()
    bid_qty, ask_qty = quotes["bid_qty"].to_numpy(), quotes["ask_qty"].to_numpy()
    imbalance = _imbalance(bid_qty, ask_qty)
    last = np.searchsorted(ts, edges[1:], side="left") - 1  # last quote strictly before close
    mid = (bid[last] + ask[last]) / 2.0
    spread = ask[last] - bid[last]
    weighted = _time_weighted(ts, np.stack([imbalance, bid_qty, ask_qty], axis=1), edges)
    return {
        "mid": mid,
        "spread": spread,
        "spread_bps": spread / mid * 1e4,
        "imbalance_last": imbalance[last],
        "imbalance_tw": weighted[:, 0],
        "bid_size_mean": weighted[:, 1],
        "ask_size_mean": weighted[:, 2],
    }


def _trade_columns(
    trades: pd.DataFrame, edges: np.ndarray, mid: np.ndarray
) -> dict[str, np.ndarray]:
    """OHLCV, trade count, pressure and the no-trade flag per bar; a bar without trades
    takes the mid at close as its four prices."""
    n_bars = len(edges) - 1
    bar = np.searchsorted(edges, trades["ts"].to_numpy(), side="right") - 1
    keep = (bar >= 0) & (bar < n_bars)
    bar = bar[keep]
    price, qty = trades["price"].to_numpy()[keep], trades["qty"].to_numpy()[keep]
    signed = np.where(trades["is_buy"].to_numpy()[keep], qty, -qty)
    count = np.bincount(bar, minlength=n_bars)
    volume = np.bincount(bar, weights=qty, minlength=n_bars)
    net = np.bincount(bar, weights=signed, minlength=n_bars)
    traded = np.flatnonzero(count)
    first = np.searchsorted(bar, traded, side="left")  # bar is sorted: trades are time-sorted
    ohlc = {name: mid.copy() for name in ("open", "high", "low", "close")}
    if len(traded):
        ohlc["open"][traded] = price[first]
        ohlc["high"][traded] = np.maximum.reduceat(price, first)
        ohlc["low"][traded] = np.minimum.reduceat(price, first)
        ohlc["close"][traded] = price[first + count[traded] - 1]
    pressure = np.divide(net, volume, out=np.zeros(n_bars), where=volume > 0)
    return {
        **ohlc,
        "volume": volume,
        "trade_count": count.astype(np.float64),
        "no_trade": (count == 0).astype(np.float64),
        "trade_pressure": pressure,
    }


def _check_sorted(ticks: Ticks) -> None:
    """Bars assume time-sorted ticks (the readers sort); a hand-built Ticks may not be."""
    if ticks.quotes.empty:
        raise DataError("no top-of-book quotes; bars need a book for the mid price")
    for kind, frame in (("quotes", ticks.quotes), ("trades", ticks.trades)):
        if (np.diff(frame["ts"].to_numpy()) < 0).any():
            raise DataError(f"{kind} are not sorted by ts (sort them, or use the read_* functions)")


def ticks_to_bars(
    ticks: Ticks,
    freq: str = "1s",
    *,
    ret_horizons: Sequence[int] = DEFAULT_RET_HORIZONS,
    rv_horizons: Sequence[int] = DEFAULT_RV_HORIZONS,
) -> pd.DataFrame:
    """Time bars of length ``freq`` indexed by their UTC CLOSE time (``close_time``).

    Columns: :func:`bar_columns` (see the module docstring for each one's definition).
    Vectorised: one sort-free pass of searchsorted/bincount over quotes and trades.
    """
    if any(k < 1 for k in (*ret_horizons, *rv_horizons)):
        raise ValueError(f"horizons must be >= 1 bar, got ret {ret_horizons} rv {rv_horizons}")
    _check_sorted(ticks)
    step = freq_ns(freq)
    edges = bar_edges(ticks, step)
    book = _book_columns(ticks.quotes, edges)
    trade = _trade_columns(ticks.trades, edges, book["mid"])
    frame = pd.DataFrame({**trade, **book}, index=pd.to_datetime(edges[1:], unit="ns", utc=True))
    frame.index.name = "close_time"
    log_mid = np.log(frame["mid"])
    one_bar = log_mid.diff()
    for k in ret_horizons:
        frame[f"ret_{k}"] = log_mid.diff(k)
    for k in rv_horizons:
        frame[f"rv_{k}"] = np.sqrt((one_bar**2).rolling(k, min_periods=k).sum())
    return frame[bar_columns(ret_horizons, rv_horizons)].astype(np.float64)


def bars_to_candles(bars: pd.DataFrame, freq: str) -> pd.DataFrame:
    """The bars as a validated candle frame: indexed by OPEN time (``timestamp``, the
    convention of :mod:`hmarl.data`; ``close_time = timestamp + freq``), warm-up dropped.

    Why drop the warm-up: candle files must hold finite values only, and the first bars'
    ``ret_{k}``/``rv_{k}`` are undefined (NaN), never guessed; so the frame starts at the
    first bar where every column is defined (the longest horizon).
    """
    defined = bars.notna().all(axis=1).to_numpy()
    first = int(np.argmax(defined)) if defined.any() else len(bars)
    if not defined[first:].all():
        row = first + int(np.argmin(defined[first:]))
        raise DataError(f"bars: row {row} ({bars.index[row]}) has NaN after the warm-up")
    if first == len(bars):
        raise DataError(f"bars: {len(bars)} bars, all inside the warm-up of the longest horizon")
    candles = bars.iloc[first:].copy()
    close_time = pd.DatetimeIndex(candles.index)
    candles.index = close_time - pd.Timedelta(freq_ns(freq), unit="ns")
    candles.index.name = "timestamp"
    return validate_candles(candles, name="tick bars", freq=freq)


def write_bars(bars: pd.DataFrame, path: str | Path, freq: str) -> pd.DataFrame:
    """Write :func:`bars_to_candles` of the bars to a Parquet, atomically; returns that frame.

    ``load_candles(path, fmt="parquet", extra_columns=BAR_EXTRA_COLUMNS)`` reads it back.
    """
    candles = bars_to_candles(bars, freq)
    write_parquet(path, candles)
    return candles
