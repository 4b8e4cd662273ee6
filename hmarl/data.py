"""Candles: load, validate, resample, split and synthesise OHLCV bars.

Everything downstream (features, windows, the environment) trusts the frame this module
returns, so every check that can fail on real data happens here, once, with an error that
names the file and the row.

Timestamp convention: the index holds each bar's OPEN time in UTC (the Binance kline
convention). The bar stamped ``index[t]`` covers ``[index[t], index[t] + freq)``; its close,
high, low and volume are only known at ``index[t] + freq``. A decision "at bar t" is taken at
that moment, so features at t may use rows ``<= t`` only.

Output frame: a UTC ``DatetimeIndex`` named ``"timestamp"`` (nanosecond unit), sorted and
unique; float64 columns ``open high low close volume`` followed by any extra columns.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "CANDLE_COLUMNS",
    "TIMESTAMP_ALIASES",
    "DataError",
    "bar_spacing",
    "chronological_split",
    "data_fingerprint",
    "load_candles",
    "resample_candles",
    "synthetic_candles",
    "validate_candles",
]

CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
# Searched in this order (case-insensitively) when `columns` does not map "timestamp".
TIMESTAMP_ALIASES: tuple[str, ...] = (
    "timestamp",
    "time",
    "date",
    "datetime",
    "open_time",
    "open time",
)
# The 12 columns of a Binance public kline dump (data.binance.vision), in file order.
BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)

_FORMATS = ("auto", "csv", "parquet", "binance")
_TIMESTAMP_UNITS = ("auto", "iso", "s", "ms", "us", "ns")
_GAP_POLICIES = ("error", "ffill")
_EPOCH_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_EPOCH_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# An epoch's magnitude gives its unit: for dates from 1973 to 5138 it lies below 1e11 in
# seconds, in [1e11, 1e14) in milliseconds, [1e14, 1e17) in microseconds, above in ns.
_EPOCH_BOUNDS = (1e11, 1e14, 1e17)
EpochUnit = Literal["s", "ms", "us", "ns"]
_EPOCH_ORDER: tuple[EpochUnit, ...] = ("s", "ms", "us", "ns")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_DIRECTORY_SUFFIXES = (".csv", ".zip", *_PARQUET_SUFFIXES)
_SHOWN_GAPS = 3
# Larger magnitudes overflow the features' float64 sums of squares (1e100**2 * 1e6 rows is
# still finite); no real price or volume comes near it, so it is a corrupt cell.
MAX_ABS_VALUE = 1e100
# Binary formats a user may have renamed to .csv: their first bytes, and what to do instead.
_MAGIC = {
    b"PK\x03\x04": "a zip archive: rename it to .zip (a zip holding one CSV loads as it is)",
    b"PAR1": "a Parquet file: rename it to .parquet (or pass fmt='parquet' / data=parquet)",
}
# Aggregations whose result has the input's dtype (an int column stays int after "sum").
_TYPE_PRESERVING_AGGS = ("first", "last", "max", "min", "sum")
_DEFAULT_MIN_REASON = "the caller's minimum: typically the macro window plus the feature warm-up"

Log = Callable[[str], None] | None


class DataError(ValueError):
    """Bad candle data; the message names the file (or frame) and the first offending row."""


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class _Origin:
    """Where each row came from, so that an error can point at a file and a row.

    ``kinds`` per source: "text" (CSV: 1-based data row and its line number), "table"
    (Parquet: 1-based data row) or "frame" (an in-memory frame: 0-based iloc).
    """

    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    header_lines: tuple[int, ...]
    source: np.ndarray  # [n] index into labels
    row: np.ndarray  # [n] row number within its source

    @property
    def name(self) -> str:
        """One label for the whole frame, for errors that concern no single row."""
        if len(self.labels) == 1:
            return self.labels[0]
        return f"{self.labels[0]} (+{len(self.labels) - 1} more files)"

    def describe(self, i: int, ts: np.ndarray | None = None) -> str:
        """Row i as a reader would look it up: file, row (line) and timestamp."""
        k = int(self.source[i])
        row = int(self.row[i])
        if self.kinds[k] == "frame":
            text = f"{self.labels[k]} iloc {row}"
        elif self.kinds[k] == "text":
            text = f"{self.labels[k]} row {row} (line {row + self.header_lines[k]})"
        else:
            text = f"{self.labels[k]} row {row}"
        if ts is not None:
            text += f", timestamp {_stamp(int(ts[i]))}"
        return text

    def take(self, keep: np.ndarray) -> _Origin:
        """The origin of the rows selected by a boolean mask."""
        return _Origin(
            self.labels, self.kinds, self.header_lines, self.source[keep], self.row[keep]
        )


def _frame_origin(name: str, n: int) -> _Origin:
    return _Origin((name,), ("frame",), (0,), np.zeros(n, np.int64), np.arange(n))


def _span(ns: int) -> str:
    """A duration as pandas writes a frequency: "5min", "1h", "90min"."""
    text = str(to_offset(pd.Timedelta(int(ns))).freqstr)
    return text if text[:1].isdigit() else f"1{text}"


def _show(value: object) -> str:
    """A raw cell for a message: text quoted, numbers plain (no numpy reprs)."""
    return repr(value) if isinstance(value, str) else str(value)


def _stamp(ns: int) -> str:
    return str(pd.Timestamp(ns, unit="ns", tz="UTC"))


def _index_ns(frame: pd.DataFrame) -> np.ndarray:
    """A frame's DatetimeIndex as int64 nanoseconds."""
    return pd.DatetimeIndex(frame.index).as_unit("ns").asi8


def _emit(log: Log, message: str) -> None:
    if log is not None:
        log(message)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Part:
    """One file, parsed: int64 ns open times and float64 values with canonical names."""

    ts: np.ndarray  # [n] int64 ns, UTC, file order
    values: pd.DataFrame  # [n, 5 + extras] float64, RangeIndex
    origin: _Origin


def _expand_sources(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """Files to read: a file, every candle file of a directory (sorted), or a list of either."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise DataError("no candle source given: pass a file, a directory or a list of files")
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _DIRECTORY_SUFFIXES)
            if not found:
                raise DataError(f"{path}: directory holds no *.csv, *.zip or *.parquet files")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such file or directory")
    return paths


def _open_text(path: Path) -> tuple[str, Path | io.BytesIO, str]:
    """(label, readable CSV source, first line); a .zip must hold exactly one CSV."""
    if path.suffix.lower() != ".zip":
        with path.open("rb") as handle:
            head = handle.read(4)
        if not head:
            raise DataError(f"{path}: the file is empty (0 bytes: no header, no rows)")
        for magic, what in _MAGIC.items():
            if head.startswith(magic):
                raise DataError(f"{path}: not CSV text but {what}")
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return str(path), path, handle.readline()
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
        if len(members) != 1:
            raise DataError(f"{path}: a zip must hold exactly one .csv file, found {members}")
        blob = archive.read(members[0])
    first = blob.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return f"{path}:{members[0]}", io.BytesIO(blob), first


def _binance_header(first_line: str) -> Literal["headerless", "header"] | None:
    """Whether a first line looks like a Binance kline dump, with or without a header row."""
    fields = [f.strip() for f in first_line.strip().split(",")]
    if len(fields) != len(BINANCE_KLINE_COLUMNS):
        return None
    if fields[0].lower() in ("open_time", "open time"):
        return "header"
    try:
        [float(f) for f in fields]
    except ValueError:
        return None
    return "headerless"


def _read_binance(label: str, src: Path | io.BytesIO, first: str) -> tuple[pd.DataFrame, int]:
    """A kline dump: 12 columns, no header (newer files carry one; it is skipped)."""
    layout = _binance_header(first)
    if layout is None:
        found = len(first.strip().split(","))
        raise DataError(
            f"{label} line 1: expected a Binance kline dump (12 comma-separated columns: "
            f"{', '.join(BINANCE_KLINE_COLUMNS)}), found {found} columns"
        )
    skip = 1 if layout == "header" else 0
    raw = pd.read_csv(src, header=None, names=list(BINANCE_KLINE_COLUMNS), skiprows=skip)
    return raw, skip


def _read_raw(path: Path, fmt: str, log: Log) -> tuple[pd.DataFrame, str, str, int]:
    """(raw table, label, kind, header lines) for one file, the format chosen or detected."""
    if fmt == "parquet" or (fmt == "auto" and path.suffix.lower() in _PARQUET_SUFFIXES):
        raw = pd.read_parquet(path)
        if not isinstance(raw.index, pd.RangeIndex):
            raw = raw.reset_index()  # a frame saved by pandas keeps its timestamps in the index
        _emit(log, f"{path}: parquet, {len(raw)} rows")
        return raw, str(path), "table", 0
    label, src, first = _open_text(path)
    if fmt == "binance" or (fmt == "auto" and _binance_header(first) is not None):
        raw, header = _read_binance(label, src, first)
        _emit(log, f"{label}: Binance kline dump ({'header skipped' if header else 'no header'})")
        return raw, label, "text", header
    raw = pd.read_csv(src)
    _emit(log, f"{label}: csv with header, {len(raw)} rows")
    return raw, label, "text", 1


def _select_columns(
    raw: pd.DataFrame, label: str, columns: Mapping[str, str], extra: Sequence[str]
) -> pd.DataFrame:
    """The raw columns under canonical names: timestamp, open..volume, extras."""
    wanted = ("timestamp", *CANDLE_COLUMNS, *extra)
    unknown = sorted(set(columns) - set(wanted))
    if unknown:
        raise DataError(f"{label}: columns= maps unknown names {unknown}; known: {list(wanted)}")
    lookup: dict[str, str] = {}
    for col in map(str, raw.columns):
        key = col.strip().lower()
        if key in lookup:
            raise DataError(f"{label}: columns {lookup[key]!r} and {col!r} differ only in case")
        lookup[key] = col
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for canon in wanted:
        if canon in columns:
            candidates: tuple[str, ...] = (columns[canon],)
        elif canon == "timestamp":
            candidates = TIMESTAMP_ALIASES
        else:
            candidates = (canon,)
        hit = next(
            (lookup[c.strip().lower()] for c in candidates if c.strip().lower() in lookup), None
        )
        if hit is None:
            missing.append(
                canon if candidates == (canon,) else f"{canon} (looked for {list(candidates)})"
            )
        else:
            chosen[canon] = hit
    if missing:
        raise DataError(
            f"{label}: missing column(s) {missing}; found {[str(c) for c in raw.columns]}. "
            "Map them with columns={'<canonical name>': '<column in file>'}."
        )
    return pd.DataFrame({canon: raw[col].reset_index(drop=True) for canon, col in chosen.items()})


def _epoch_ns(values: np.ndarray, unit: str) -> np.ndarray:
    """Epoch numbers in `unit` as int64 nanoseconds, exactly when the numbers are integral."""
    factor = _EPOCH_NS[unit]
    if np.issubdtype(values.dtype, np.integer) or np.all(values == np.floor(values)):
        return values.astype(np.int64) * factor
    return np.round(values.astype(np.float64) * factor).astype(np.int64)


def epoch_unit(magnitude: float) -> EpochUnit:
    """The unit ("s", "ms", "us" or "ns") of an epoch number of this magnitude."""
    return _EPOCH_ORDER[int(np.digitize(abs(magnitude), _EPOCH_BOUNDS))]


def _epoch_unit(values: np.ndarray, origin: _Origin) -> str:
    """The unit that a column of epoch numbers is in, from their magnitude (one unit per file)."""
    classes = np.digitize(np.abs(values), _EPOCH_BOUNDS)
    odd = np.flatnonzero(classes != classes[0])
    if odd.size:
        i = int(odd[0])
        raise DataError(
            f"{origin.describe(i)}: mixed epoch units in one file: row 1 looks like epoch "
            f"{_EPOCH_NAMES[_EPOCH_ORDER[classes[0]]]} but this row ({values[i]}) like "
            f"{_EPOCH_NAMES[_EPOCH_ORDER[classes[i]]]}; pass timestamp_unit= to force one"
        )
    return epoch_unit(float(values[0]))


def _first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _unparsable(raw: pd.Series, bad: np.ndarray, origin: _Origin, why: str) -> None:
    """Raise for the first timestamp that could not be read, if any."""
    i = _first_bad(bad)
    if i is not None:
        raise DataError(f"{origin.describe(i)}: unparsable timestamp {_show(raw.iloc[i])} ({why})")


def _parse_epochs(
    raw: pd.Series, numbers: pd.Series, unit: str, origin: _Origin, log: Log
) -> np.ndarray:
    values = numbers.to_numpy(dtype=np.float64)
    _unparsable(raw, ~np.isfinite(values), origin, "not an epoch number")
    if pd.api.types.is_integer_dtype(numbers):
        values = numbers.to_numpy(dtype=np.int64)
    how = "given"
    if unit == "auto":
        unit, how = _epoch_unit(values, origin), "detected"
    limit = np.iinfo(np.int64).max / _EPOCH_NS[unit]
    _unparsable(raw, np.abs(values) > limit, origin, f"out of range for epoch {_EPOCH_NAMES[unit]}")
    _emit(log, f"{origin.name}: timestamps: epoch {_EPOCH_NAMES[unit]} ({how})")
    return _epoch_ns(values, unit)


_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})\s*$"  # an ISO 8601 time zone designator at the end


def _parse_iso(raw: pd.Series, origin: _Origin, log: Log) -> np.ndarray:
    parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    _unparsable(raw, parsed.isna().to_numpy(), origin, "expected ISO 8601 text or epoch numbers")
    naive = int((~raw.str.contains(_UTC_OFFSET, regex=True)).sum())
    how = f"{naive} without a UTC offset, read as UTC" if naive else "with UTC offsets"
    _emit(log, f"{origin.name}: timestamps: ISO 8601 text ({how})")
    return pd.DatetimeIndex(parsed).as_unit("ns").asi8


def _parse_timestamps(raw: pd.Series, unit: str, origin: _Origin, log: Log) -> np.ndarray:
    """Open times as int64 UTC nanoseconds: datetimes, ISO text or epoch numbers."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        index = pd.DatetimeIndex(raw)
        _unparsable(raw, np.asarray(index.isna()), origin, "missing")
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        _emit(log, f"{origin.name}: timestamps: datetime column")
        return index.as_unit("ns").asi8
    if unit == "iso":
        return _parse_iso(raw.astype(str), origin, log)
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return _parse_epochs(raw, raw, unit, origin, log)
    numbers = pd.to_numeric(raw, errors="coerce")
    if unit != "auto" or numbers.notna().mean() > 0.5:  # mostly numbers: epochs with a bad row
        return _parse_epochs(raw, numbers, unit, origin, log)
    return _parse_iso(raw.astype(str), origin, log)


def _to_float(raw: pd.Series, column: str, origin: _Origin, ts: np.ndarray) -> np.ndarray:
    """A value column as float64; text that is not a number is an error, not a NaN."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(raw, errors="coerce")
    i = _first_bad((numbers.isna() & raw.notna()).to_numpy())
    if i is not None:
        raise DataError(
            f"{origin.describe(i, ts)}: non-numeric value {_show(raw.iloc[i])} in {column!r}"
        )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def _first_non_utf8(blob: bytes) -> str:
    """Where the first byte that is not UTF-8 sits: ``byte 0xff at line 3, offset 120``."""
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        return f"byte 0x{blob[exc.start]:02x} at line {line} (file offset {exc.start})"
    return "a byte that is not UTF-8"


def _unreadable(path: Path, fmt: str, exc: Exception) -> DataError:
    """A reader's raw exception as a DataError naming the file, the problem and the fix."""
    if isinstance(exc, UnicodeDecodeError):
        if path.suffix.lower() == ".zip":
            where = "a byte that is not UTF-8"
        else:
            where = _first_non_utf8(path.read_bytes())
        return DataError(f"{path}: not UTF-8 text ({where}); re-save the file as UTF-8")
    if isinstance(exc, pd.errors.EmptyDataError):
        return DataError(f"{path}: no columns to read (an empty or blank file)")
    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)):
        return DataError(f"{path}: a damaged zip archive ({exc}); download or copy the file again")
    what = "Parquet" if fmt == "parquet" or path.suffix.lower() in _PARQUET_SUFFIXES else "CSV"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return DataError(f"{path}: cannot be read as {what} ({type(exc).__name__}: {reason})")


def _read_part(
    path: Path,
    fmt: str,
    columns: Mapping[str, str],
    extra: Sequence[str],
    unit: str,
    log: Log,
) -> _Part:
    """One file as a _Part; errors name the file and the row."""
    try:
        raw, label, kind, header = _read_raw(path, fmt, log)
    except DataError:
        raise
    except Exception as exc:  # pandas, pyarrow, zipfile: each would name neither file nor fix
        raise _unreadable(path, fmt, exc) from exc
    if len(raw) == 0:
        raise DataError(f"{label}: no data rows")
    table = _select_columns(raw, label, columns, extra)
    n = len(table)
    origin = _Origin((label,), (kind,), (header,), np.zeros(n, np.int64), np.arange(1, n + 1))
    ts = _parse_timestamps(table["timestamp"], unit, origin, log)
    values = {c: _to_float(table[c], c, origin, ts) for c in (*CANDLE_COLUMNS, *extra)}
    return _Part(ts, pd.DataFrame(values), origin)


def _combine(parts: list[_Part]) -> tuple[np.ndarray, pd.DataFrame, _Origin]:
    """Files concatenated in time order (by their first open time), with row provenance."""
    parts = sorted(parts, key=lambda p: int(p.ts[0]))
    origin = _Origin(
        labels=tuple(p.origin.labels[0] for p in parts),
        kinds=tuple(p.origin.kinds[0] for p in parts),
        header_lines=tuple(p.origin.header_lines[0] for p in parts),
        source=np.concatenate([np.full(len(p.ts), k, np.int64) for k, p in enumerate(parts)]),
        row=np.concatenate([p.origin.row for p in parts]),
    )
    ts = np.concatenate([p.ts for p in parts])
    values = pd.concat([p.values for p in parts], ignore_index=True)
    return ts, values, origin


def _utc(date: str | pd.Timestamp) -> pd.Timestamp:
    """A date bound as a UTC timestamp; naive dates are UTC."""
    stamp = pd.Timestamp(date)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _date_mask(ts: np.ndarray, start: str | None, end: str | None) -> np.ndarray:
    keep = np.ones(len(ts), dtype=bool)
    if start is not None:
        keep &= ts >= _utc(start).as_unit("ns").value
    if end is not None:
        keep &= ts < _utc(end).as_unit("ns").value
    return keep


def _frame(ts: np.ndarray, values: pd.DataFrame) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True), name="timestamp")
    out = values.set_axis(index.as_unit("ns"), axis=0)
    out.columns = pd.Index([str(c) for c in out.columns])
    return out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {list(choices)}")


def load_candles(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    fmt: str = "auto",
    columns: Mapping[str, str] | None = None,
    timestamp_unit: str = "auto",
    gap_policy: str = "error",
    freq: str | None = None,
    min_candles: int = 0,
    extra_columns: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
    log: Callable[[str], None] | None = print,
    min_reason: str = _DEFAULT_MIN_REASON,
) -> pd.DataFrame:
    """Read candles from CSV, Parquet or Binance kline dumps into one validated frame.

    Why one entry point: every later stage assumes sorted, unique, regularly spaced UTC bars
    with sane prices; checking here once, with file and row in the message, is cheaper than
    debugging a NaN in a gradient.

    Args:
        source: a file (.csv, .parquet, or .zip holding one CSV), a directory (all its
            .csv/.zip/.parquet files, sorted), or a list of either; files are concatenated in
            time order.
        fmt: "auto" (Parquet by suffix; a headerless 12-column CSV is a Binance dump; else a
            CSV with a header), "csv", "parquet" or "binance".
        columns: canonical name -> column name in the file, e.g. {"close": "Adj Close"}; names
            are otherwise matched case-insensitively, the timestamp among TIMESTAMP_ALIASES.
        timestamp_unit: "auto" (datetime columns, ISO text, or epochs whose unit s/ms/us/ns is
            detected per file from their magnitude and logged), "iso", "s", "ms", "us", "ns".
        gap_policy: "error" raises on missing bars; "ffill" inserts them (see validate_candles).
        freq: expected bar spacing such as "5min"; None infers the most common difference.
        min_candles: fewer candles (after date bounds and gap filling) raise DataError.
        extra_columns: further numeric columns to keep after OHLCV (checked finite; float64).
        start, end: optional UTC bounds, [start, end), applied before the value and spacing
            checks (rows outside are only checked for readable, sorted, unique timestamps).
        log: receives one line per decision (format, timestamp unit, spacing, fills); None
            silences it.
        min_reason: why min_candles is what it is, repeated in the error (e.g. "macro window
            492 + warm-up 100").

    Returns:
        The validated frame: UTC DatetimeIndex "timestamp" of bar open times, float64 columns
        open, high, low, close, volume, then extra_columns.
    """
    _check_choice("fmt", fmt, _FORMATS)
    _check_choice("timestamp_unit", timestamp_unit, _TIMESTAMP_UNITS)
    _check_choice("gap_policy", gap_policy, _GAP_POLICIES)
    paths = _expand_sources(source)
    parts = [_read_part(p, fmt, columns or {}, extra_columns, timestamp_unit, log) for p in paths]
    ts, values, origin = _combine(parts)
    _check_order(ts, origin)
    keep = _date_mask(ts, start, end)
    if not keep.any():
        raise DataError(f"{origin.name}: no candles in [{start}, {end})")
    frame = _frame(ts[keep], values.loc[keep].reset_index(drop=True))
    frame = _check_and_fill(
        frame, origin.take(keep), gap_policy, freq, min_candles, min_reason, log
    )
    _emit(log, f"{origin.name}: {len(frame)} candles, {frame.index[0]} .. {frame.index[-1]}")
    return frame


# --------------------------------------------------------------------------- validation


def _check_order(ts: np.ndarray, origin: _Origin) -> None:
    """Open times must strictly increase: report the first duplicate or step backwards."""
    steps = np.diff(ts)
    i = _first_bad(steps <= 0)
    if i is None:
        return
    here, before = origin.describe(i + 1, ts), origin.describe(i, ts)
    if steps[i] == 0:
        raise DataError(f"{here}: duplicate timestamp (same as {before})")
    raise DataError(f"{here}: timestamps not sorted (earlier than the previous row, {before})")


def _check_prices(frame: pd.DataFrame, origin: _Origin, ts: np.ndarray) -> None:
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(prices) | (prices <= 0) | (prices > MAX_ABS_VALUE)
    i = _first_bad(bad.any(axis=1))
    if i is not None:
        col = PRICE_COLUMNS[int(np.argmax(bad[i]))]
        raise DataError(
            f"{origin.describe(i, ts)}: bad price {col}={prices[i, PRICE_COLUMNS.index(col)]} "
            f"(prices must be finite, > 0 and <= {MAX_ABS_VALUE:g})"
        )


def _check_volume(frame: pd.DataFrame, origin: _Origin, ts: np.ndarray) -> None:
    volume = frame["volume"].to_numpy(dtype=np.float64)
    i = _first_bad(~np.isfinite(volume) | (volume < 0) | (volume > MAX_ABS_VALUE))
    if i is not None:
        raise DataError(
            f"{origin.describe(i, ts)}: bad volume {volume[i]} "
            f"(volume must be finite, >= 0 and <= {MAX_ABS_VALUE:g})"
        )


def _check_ranges(frame: pd.DataFrame, origin: _Origin, ts: np.ndarray) -> None:
    """High and low must bracket open and close: otherwise the bar is corrupt."""
    o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in PRICE_COLUMNS)
    rules = (
        (h < lo, "high < low"),
        (h < np.maximum(o, c), "high < max(open, close)"),
        (lo > np.minimum(o, c), "low > min(open, close)"),
    )
    for mask, what in rules:
        i = _first_bad(mask)
        if i is not None:
            raise DataError(
                f"{origin.describe(i, ts)}: inconsistent candle, {what} "
                f"(open={o[i]}, high={h[i]}, low={lo[i]}, close={c[i]})"
            )


def _check_extras(frame: pd.DataFrame, origin: _Origin, ts: np.ndarray) -> None:
    for col in frame.columns[len(CANDLE_COLUMNS) :]:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            raise DataError(
                f"{origin.name}: extra column {col!r} is not numeric ({frame[col].dtype})"
            )
        values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        i = _first_bad(~np.isfinite(values) | (np.abs(values) > MAX_ABS_VALUE))
        if i is not None:
            what = "non-finite" if not np.isfinite(values[i]) else "huge"
            raise DataError(
                f"{origin.describe(i, ts)}: {what} {values[i]} in extra column {col!r} "
                f"(values must be finite with |x| <= {MAX_ABS_VALUE:g})"
            )


def freq_ns(freq: str) -> int:
    """A fixed bar spacing such as "5min" in nanoseconds; ValueError for anything else."""
    try:
        step = pd.Timedelta(freq)
    except ValueError as err:
        raise ValueError(
            f"freq={freq!r} is not a fixed bar spacing such as '5min' or '1h'"
        ) from err
    if step <= pd.Timedelta(0):
        raise ValueError(f"freq={freq!r} must be positive")
    return int(step.as_unit("ns").value)


def _mode_step(ts: np.ndarray) -> int:
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    return int(steps[np.argmax(counts)])


def _resolve_step(ts: np.ndarray, freq: str | None, origin: _Origin, log: Log) -> int | None:
    """Bar spacing in ns: the given freq, or the most common difference (None below 2 rows)."""
    if freq is not None:
        return freq_ns(freq)
    if len(ts) < 2:
        return None
    step = _mode_step(ts)
    _emit(log, f"{origin.name}: bar spacing {_span(step)} (inferred: most common)")
    return step


def _gap_report(ts: np.ndarray, gaps: np.ndarray, step: int, origin: _Origin) -> str:
    steps = np.diff(ts)
    missing = int(((steps[gaps] // step) - 1).sum())
    shown = "; ".join(
        f"after {origin.describe(int(i), ts)}: gap {_span(int(steps[i]))} "
        f"({int(steps[i] // step) - 1} missing bar(s))"
        for i in gaps[:_SHOWN_GAPS]
    )
    more = f"; ... {len(gaps) - _SHOWN_GAPS} more" if len(gaps) > _SHOWN_GAPS else ""
    return f"{len(gaps)} gap(s) in {_span(step)} bars, {missing} missing bar(s): {shown}{more}"


def _find_gaps(ts: np.ndarray, step: int, origin: _Origin) -> np.ndarray:
    """Positions i where bar i+1 is more than one step after bar i; off-grid spacing raises."""
    steps = np.diff(ts)
    i = _first_bad((steps < step) | (steps % step != 0))
    if i is not None:
        count = int(((steps < step) | (steps % step != 0)).sum())
        raise DataError(
            f"{origin.describe(i + 1, ts)}: irregular spacing, {_span(int(steps[i]))} after "
            f"the previous bar is not a multiple of the {_span(step)} bar spacing "
            f"({count} such bar(s)); gap filling cannot repair off-grid bars: resample first"
        )
    return np.flatnonzero(steps > step)


def _fill_gaps(frame: pd.DataFrame, step: int) -> tuple[pd.DataFrame, int]:
    """Insert missing bars as flat, zero-volume bars at the LAST close.

    Each grid time takes the last real bar at or before it (searchsorted right - 1), so no
    value ever moves backwards in time. Extra columns are 0 on inserted bars: they usually
    count trading activity, and none happened.
    """
    ts = _index_ns(frame)
    grid = np.arange(ts[0], ts[-1] + 1, step, dtype=np.int64)
    src = np.searchsorted(ts, grid, side="right") - 1
    inserted = grid != ts[src]
    out = frame.iloc[src].copy()
    close = out["close"].to_numpy(dtype=np.float64)
    for col in ("open", "high", "low"):
        out[col] = np.where(inserted, close, out[col].to_numpy(dtype=np.float64))
    for col in (c for c in out.columns if c not in PRICE_COLUMNS):
        values = out[col].to_numpy()
        out[col] = np.where(inserted, np.zeros_like(values), values)
    index = pd.DatetimeIndex(pd.to_datetime(grid, unit="ns", utc=True), name="timestamp")
    return out.set_axis(index.as_unit("ns"), axis=0), int(inserted.sum())


def _check_and_fill(
    frame: pd.DataFrame,
    origin: _Origin,
    gap_policy: str,
    freq: str | None,
    min_candles: int,
    min_reason: str,
    log: Log,
) -> pd.DataFrame:
    """Value checks, spacing (raise or fill) and the minimum length, on a sorted frame."""
    ts = _index_ns(frame)
    _check_prices(frame, origin, ts)
    _check_volume(frame, origin, ts)
    _check_ranges(frame, origin, ts)
    _check_extras(frame, origin, ts)
    step = _resolve_step(ts, freq, origin, log)
    gaps = _find_gaps(ts, step, origin) if step is not None else np.empty(0, np.int64)
    if gaps.size and gap_policy == "error":
        raise DataError(
            f"irregular spacing: {_gap_report(ts, gaps, step or 1, origin)}. "
            "Pass gap_policy='ffill' to insert flat zero-volume bars at the last close."
        )
    if gaps.size:
        frame, count = _fill_gaps(frame, step or 1)
        _emit(log, f"{origin.name}: gap_policy='ffill' inserted {count} bar(s) at the last close")
    if step is not None:  # regular from here on: record the spacing, as pd.date_range does
        frame = frame.set_axis(pd.DatetimeIndex(frame.index, freq=to_offset(_span(step))), axis=0)
    if len(frame) < min_candles:
        raise DataError(
            f"{origin.name}: {len(frame)} candles, fewer than min_candles={min_candles} "
            f"({min_reason}); load a longer range or use smaller windows"
        )
    return frame


def validate_candles(
    df: pd.DataFrame,
    *,
    name: str = "<frame>",
    gap_policy: str = "error",
    freq: str | None = None,
    min_candles: int = 0,
    min_reason: str = _DEFAULT_MIN_REASON,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Check an in-memory candle frame with the same rules as load_candles.

    Why: frames built elsewhere (resampled, synthetic, tick bars) must meet the same
    contract before features trust them. Errors name `name` and the row as its iloc.

    Rules: a DatetimeIndex of open times (naive = UTC), strictly increasing; open, high, low,
    close finite and > 0; volume finite and >= 0; low <= min(open, close) and
    high >= max(open, close); other columns numeric and finite; bars exactly `freq` apart
    (None: the most common difference). With gap_policy "ffill", missing bars are inserted
    as open=high=low=close=last close, volume 0 and extra columns 0 (only ever filled
    forward); off-grid bars always raise.

    Returns:
        A new frame: UTC index "timestamp" (ns), OHLCV as float64 first, other columns after.
    """
    _check_choice("gap_policy", gap_policy, _GAP_POLICIES)
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(
            f"{name}: the index must be a DatetimeIndex of bar open times, got "
            f"{type(df.index).__name__} (use df.set_index('timestamp'))"
        )
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{name}: missing column(s) {missing}; found {[str(c) for c in df.columns]}"
        )
    if len(df) == 0:
        raise DataError(f"{name}: no candles")
    index = df.index.tz_localize("UTC") if df.index.tz is None else df.index.tz_convert("UTC")
    origin = _frame_origin(name, len(df))
    ts = index.as_unit("ns").asi8
    _check_order(ts, origin)
    _unparsable(pd.Series(index), np.asarray(index.isna()), origin, "missing")
    extras = [c for c in df.columns if c not in CANDLE_COLUMNS]
    values = df[[*CANDLE_COLUMNS, *extras]].reset_index(drop=True)
    values = values.astype(dict.fromkeys(CANDLE_COLUMNS, np.float64))
    return _check_and_fill(
        _frame(ts, values), origin, gap_policy, freq, min_candles, min_reason, log
    )


def bar_spacing(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common difference between consecutive bars (e.g. for annualisation)."""
    if len(index) < 2:
        raise DataError(f"bar spacing needs at least 2 bars, got {len(index)}")
    return pd.Timedelta(_mode_step(index.as_unit("ns").asi8))


# --------------------------------------------------------------------------- resampling


def resample_candles(
    df: pd.DataFrame, rule: str, *, extra_agg: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Aggregate bars to a coarser spacing: first open, max high, min low, last close, sum volume.

    Bins are labelled by their open time and closed on the left (the Binance convention, as
    for the input). A bin with no source bars is dropped, never invented; a partly filled bin
    (e.g. a trailing 3 of 5 minutes) is kept, so drop it yourself when completeness matters.
    Extra columns take their last value unless `extra_agg` names another pandas aggregation
    ("sum" for counts).
    """
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError("resample_candles needs a DatetimeIndex of bar open times")
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"resample_candles: missing column(s) {missing}")
    _check_rule(df.index, rule)
    agg: dict[str, str] = {
        "open": "first",
        "high": "max",
        "low": "min",
        "close": "last",
        "volume": "sum",
    }
    for col in df.columns:
        if col not in agg:
            agg[str(col)] = (extra_agg or {}).get(str(col), "last")
    bins = df.resample(rule, label="left", closed="left")
    out = bins.agg(agg)
    filled = bins["close"].count().to_numpy() > 0
    if not filled.all():  # drop empty bins; the index is no longer regular
        kept = pd.DatetimeIndex(out.index[filled]).as_unit("ns")
        irregular = pd.to_datetime(kept.asi8, unit="ns", utc=True).tz_convert(kept.tz)
        out = out.loc[filled].set_axis(irregular.rename("timestamp"), axis=0)
    out.index.name = "timestamp"
    keeps_type = {c: df[c].dtype for c, how in agg.items() if how in _TYPE_PRESERVING_AGGS}
    return out.astype(keeps_type)[list(agg)]


def _check_rule(index: pd.DatetimeIndex, rule: str) -> None:
    """A fixed-length rule must be a whole multiple of the source spacing, else bins mix bars."""
    try:
        target = pd.Timedelta(rule)
    except ValueError:
        return  # calendar rules ("1W", "ME") have no fixed length to compare
    if len(index) < 2:
        return
    source = pd.Timedelta(_mode_step(index.as_unit("ns").asi8))
    if target < source or target % source != pd.Timedelta(0):
        raise DataError(
            f"resample rule {rule!r} is not a whole multiple of the source spacing {source}"
        )


# --------------------------------------------------------------------------- synthetic market


def _regime_durations(rng: np.random.Generator, mean_bars: float, min_bars: int) -> np.ndarray:
    """Regime lengths: gamma(shape 2), so typically hundreds to thousands of bars."""
    draws = rng.gamma(2.0, mean_bars / 2.0, size=4096)
    return np.maximum(min_bars, np.round(draws)).astype(np.int64)


def _next_regime(rng: np.random.Generator, current: int, log_ratio: float, pull: float) -> int:
    """Any state but the current one; up/down weighted against the distance from the anchor.

    The pull keeps a year of trends near a BTC-like price level instead of a random walk of
    regimes wandering to 0 or 10^6.
    """
    states = np.array([-1, 0, 1])
    weights = np.exp(-pull * log_ratio * states)
    weights[states == current] = 0.0
    return int(rng.choice(states, p=weights / weights.sum()))


def _smooth_noise(rng: np.random.Generator, n: int, halflife: float) -> np.ndarray:
    """Stationary AR(1)-like unit-variance noise (an exponential filter of white noise)."""
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    white = rng.standard_normal(n)
    stationary_std = np.sqrt(alpha / (2.0 - alpha))
    white[0] *= stationary_std  # start the filter in its stationary distribution
    smooth = pd.Series(white).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return smooth / stationary_std


def _intraday(index: pd.DatetimeIndex, amplitude: float) -> np.ndarray:
    """Activity by UTC hour: mean 1, peak at 15:00 (Europe/US overlap), trough at 03:00."""
    hours = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    return 1.0 + amplitude * np.cos(2.0 * np.pi * (hours - 15.0) / 24.0)


def _regime_path(
    rng: np.random.Generator,
    shocks: np.ndarray,
    drift: float,
    mean_bars: float,
    min_bars: int,
    pull: float,
    flat_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(regime [n] in {-1, 0, 1}, log returns [n]): the regime's drift plus shocks.

    Sequential per regime (a few dozen a year), because the next regime depends on the
    price the previous ones produced.
    """
    n = len(shocks)
    regime = np.zeros(n, dtype=np.int64)
    returns = np.empty(n, dtype=np.float64)
    durations = _regime_durations(rng, mean_bars, min_bars)
    state, pos, log_ratio, k = _next_regime(rng, 2, 0.0, pull), 0, 0.0, 0
    while pos < n:
        if k == len(durations):
            durations, k = _regime_durations(rng, mean_bars, min_bars), 0
        stop = min(n, pos + int(durations[k]))
        regime[pos:stop] = state
        returns[pos:stop] = drift * state + shocks[pos:stop] * (flat_scale if state == 0 else 1.0)
        log_ratio += float(returns[pos:stop].sum())
        state, pos, k = _next_regime(rng, state, log_ratio, pull), stop, k + 1
    return regime, returns


def synthetic_candles(
    n: int = 105_120,
    seed: int = 0,
    *,
    freq: str = "5min",
    start: str = "2023-01-01",
    with_regime: bool = False,
    start_price: float = 30_000.0,
    bar_vol: float = 0.0015,
    trend_drift: float = 1e-4,
    mean_regime_bars: float = 1_440.0,
    min_regime_bars: int = 144,
    anchor_pull: float = 2.0,
    flat_vol_scale: float = 0.8,
    vol_of_vol: float = 0.35,
    vol_halflife_bars: float = 288.0,
    intraday_amplitude: float = 0.3,
    tail_df: float = 4.0,
    wick_scale: float = 0.5,
    base_volume: float = 120.0,
    volume_vol_elasticity: float = 1.5,
) -> pd.DataFrame:
    """The project's built-in market: regime-switching BTC-like candles, seeded, no downloads.

    Why: tests, examples and smoke training need data with KNOWN, learnable structure. The
    market alternates persistent up / flat / down trend regimes lasting days; a rule that
    knows the regime earns a clearly positive return after 0.1% fees, a coin flip loses, so
    a learner that beats the coin flip has found something real.

    Model, per bar t: log return r_t = trend_drift * regime_t + sigma_t * eps_t with eps_t
    Student-t (unit variance), sigma_t = bar_vol * intraday(hour) * exp(stochastic vol)
    (* flat_vol_scale in flat regimes). open_t = close_{t-1}; high/low extend beyond the
    body by half-normal wicks; volume grows with intraday activity, sigma_t and |eps_t|.
    Regimes last a gamma(2)-distributed number of bars; the next one is any other state,
    up/down weighted against the log-distance from start_price.

    Args:
        n: number of bars; default one year of 5-minute bars (105,120).
        seed: numpy Generator seed; the same seed gives the same frame.
        freq: bar spacing of the index (default "5min"); the dynamics are per bar.
        start: open time of the first bar, UTC (default "2023-01-01").
        with_regime: add an int64 column "regime" (-1 down, 0 flat, +1 up): the ground truth
            that a learned policy can be compared with.
        start_price: first open and the anchor level the regimes lean back to (default
            30,000, BTC-like).
        bar_vol: base per-bar log-return std (default 0.0015 = 0.15%, BTC 5-minute scale).
        trend_drift: per-bar log drift in up (+) and down (-) regimes (default 1e-4: about
            +-14% over a 5-day regime, under 7% of sigma per bar, so the trend is hidden in
            single bars but visible over a 492-bar window, where it is ~1.5 noise std).
        mean_regime_bars: mean regime length in bars (default 1,440 = 5 days of 5-min bars).
        min_regime_bars: shortest regime (default 144 = 12 h), so that trading on a regime
            can pay for the fees of switching into it.
        anchor_pull: how strongly the next regime leans back toward start_price: up/down
            weights exp(-/+ anchor_pull * log(price / start_price)) (default 2.0: at +50%
            a down regime is ~5x likelier than an up one; a year stayed within 13k..78k
            over seeds 0-19, BTC-like, instead of a random walk of trends).
        flat_vol_scale: volatility multiplier in flat regimes (default 0.8; quiet ranges).
        vol_of_vol: std of the log of the stochastic volatility factor (default 0.35:
            volatility clustering, calm and busy days).
        vol_halflife_bars: persistence of the volatility factor (default 288 = one day).
        intraday_amplitude: strength of the daily activity cycle for volatility and volume
            (default 0.3: +-30% around the mean, peak 15:00 UTC).
        tail_df: Student-t degrees of freedom of the shocks (default 4: fat tails like
            crypto returns; must be > 2).
        wick_scale: wick length in units of sigma_t (default 0.5: high/low range ~0.2% as on
            BTC 5-minute bars).
        base_volume: mean volume per bar in base units (default 120 BTC per 5 minutes).
        volume_vol_elasticity: volume ~ (sigma_t / bar_vol) ** elasticity (default 1.5:
            volume and volatility move together as on real exchanges).

    Returns:
        A frame in the load_candles format (plus "regime" if asked); prices rounded to 0.01,
        volume to 1e-5.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one bar")
    if tail_df <= 2:
        raise ValueError(f"tail_df={tail_df}: must be > 2 for a finite variance")
    rng = np.random.default_rng(seed)
    index = pd.date_range(_utc(start), periods=n, freq=freq, name="timestamp").as_unit("ns")
    activity = _intraday(index, intraday_amplitude)
    stoch = np.exp(vol_of_vol * _smooth_noise(rng, n, vol_halflife_bars) - vol_of_vol**2 / 2)
    eps = rng.standard_t(tail_df, size=n) * np.sqrt((tail_df - 2.0) / tail_df)
    sigma = bar_vol * activity * stoch
    regime, returns = _regime_path(
        rng,
        sigma * eps,
        trend_drift,
        mean_regime_bars,
        min_regime_bars,
        anchor_pull,
        flat_vol_scale,
    )
    sigma = sigma * np.where(regime == 0, flat_vol_scale, 1.0)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[start_price], close[:-1]])
    wicks = wick_scale * sigma[:, None] * np.abs(rng.standard_normal((n, 2)))
    high = np.maximum(open_, close) * np.exp(wicks[:, 0])
    low = np.minimum(open_, close) * np.exp(-wicks[:, 1])
    volume = (
        base_volume
        * activity
        * (sigma / bar_vol) ** volume_vol_elasticity
        * (0.5 + 0.5 * np.abs(eps))
        * rng.lognormal(-0.125, 0.5, size=n)
    )
    frame = pd.DataFrame(
        {
            "open": np.round(open_, 2),
            "high": np.round(high, 2),
            "low": np.round(low, 2),
            "close": np.round(close, 2),
            "volume": np.round(volume, 5),
        },
        index=index,
    )
    if with_regime:
        frame["regime"] = regime
    return frame


# --------------------------------------------------------------------------- splits, fingerprint


def _date_row(index: pd.DatetimeIndex, date: str, what: str) -> int:
    """First row at or after `date` (UTC; naive dates are UTC)."""
    try:
        stamp = _utc(date)
    except ValueError as err:
        raise ValueError(f"{what}={date!r} is not a date") from err
    if index.tz is None:
        stamp = stamp.tz_localize(None)
    return int(index.searchsorted(stamp, side="left"))


def _split_fractions(train: float, val: float) -> None:
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ValueError(
            f"train={train}, val={val}: need 0 < train, 0 < val and train + val < 1 "
            "(the rest is the test split)"
        )


def chronological_split(
    index: pd.DatetimeIndex | int,
    *,
    train: float = 0.7,
    val: float = 0.15,
    val_start: str | None = None,
    test_start: str | None = None,
) -> dict[str, tuple[int, int]]:
    """Train / val / test as half-open row ranges in time order: never shuffled, never mixed.

    Why: a random split leaks the future into training. Fractions cut at round(n * train)
    and round(n * (train + val)). Dates override fractions: val_start / test_start cut at the
    first row at or after the date (UTC). With only test_start, the rows before it are split
    train:val in the given ratio; with only val_start, the rows after it val:test.

    Returns:
        {"train": (0, a), "val": (a, b), "test": (b, n)}; raises ValueError if any split
        would be empty or the dates are out of order.
    """
    _split_fractions(train, val)
    dated = val_start is not None or test_start is not None
    if dated and not isinstance(index, pd.DatetimeIndex):
        raise ValueError("val_start / test_start need a DatetimeIndex, not a row count")
    n = len(index) if isinstance(index, pd.DatetimeIndex) else int(index)
    a, b = round(n * train), round(n * (train + val))
    if isinstance(index, pd.DatetimeIndex) and val_start is not None and test_start is not None:
        if _utc(val_start) >= _utc(test_start):
            raise ValueError(f"val_start={val_start!r} must be before test_start={test_start!r}")
        a, b = _date_row(index, val_start, "val_start"), _date_row(index, test_start, "test_start")
    elif isinstance(index, pd.DatetimeIndex) and test_start is not None:
        b = _date_row(index, test_start, "test_start")
        a = round(b * train / (train + val))
    elif isinstance(index, pd.DatetimeIndex) and val_start is not None:
        a = _date_row(index, val_start, "val_start")
        b = a + round((n - a) * val / (1.0 - train))
    splits = {"train": (0, a), "val": (a, b), "test": (b, n)}
    empty = [k for k, (lo, hi) in splits.items() if hi <= lo]
    if empty:
        raise ValueError(f"empty split(s) {empty} from rows {splits} of {n}; check fractions/dates")
    return splits


def data_fingerprint(df: pd.DataFrame) -> str:
    """sha256 over the index (int64 UTC ns), column names and float64 values.

    Why: a checkpoint records which candles it was trained on; the same data gives the same
    hex digest in any process or run (explicit little-endian bytes, NaNs canonicalised).
    """
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError("data_fingerprint needs a DatetimeIndex")
    index = df.index if df.index.tz is None else df.index.tz_convert("UTC")
    values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.where(np.isnan(values), np.nan, values)
    digest = hashlib.sha256(b"hmarl-candles-v1\0")
    digest.update(np.asarray(values.shape, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(index.as_unit("ns").asi8, dtype="<i8").tobytes())
    digest.update("\0".join(str(c) for c in df.columns).encode("utf-8"))
    digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()
