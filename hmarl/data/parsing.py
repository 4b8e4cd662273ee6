"""Parsing: raw timestamp and value columns to int64 ns and float64, naming any bad row.

Why in one place: a timestamp column may hold datetimes, ISO 8601 text or epoch numbers in
any of four units, and a value column numbers or text; every candle file goes through these
rules, so a file reads the same whichever format it came in. Tick files have their own, more
lenient timestamp reader here too (:func:`timestamps_to_ns`), beside it so the two stay
comparable; both share the epoch-unit rule and the number-column test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from hmarl.data.candles import DataError, Log, emit, first_bad, is_number_column, show
from hmarl.data.timestamps import as_utc

if TYPE_CHECKING:
    from hmarl.data.provenance import Origin

_EPOCH_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_EPOCH_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# An epoch's magnitude gives its unit: for dates from 1973 to 5138 it lies below 1e11 in
# seconds, in [1e11, 1e14) in milliseconds, [1e14, 1e17) in microseconds, above in ns.
_EPOCH_BOUNDS = (1e11, 1e14, 1e17)
EpochUnit = Literal["s", "ms", "us", "ns"]
_EPOCH_ORDER: tuple[EpochUnit, ...] = ("s", "ms", "us", "ns")


def _epoch_ns(values: np.ndarray, unit: str) -> np.ndarray:
    """Epoch numbers in `unit` as int64 nanoseconds, exactly when the numbers are integral."""
    factor = _EPOCH_NS[unit]
    if np.issubdtype(values.dtype, np.integer) or np.all(values == np.floor(values)):
        return values.astype(np.int64) * factor
    return np.round(values.astype(np.float64) * factor).astype(np.int64)


def epoch_unit(magnitude: float) -> EpochUnit:
    """The unit ("s", "ms", "us" or "ns") of an epoch number of this magnitude."""
    return _EPOCH_ORDER[int(np.digitize(abs(magnitude), _EPOCH_BOUNDS))]


def _epoch_unit(values: np.ndarray, origin: Origin) -> str:
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


def unparsable(raw: pd.Series, bad: np.ndarray, origin: Origin, why: str) -> None:
    """Raise for the first timestamp that could not be read, if any."""
    i = first_bad(bad)
    if i is not None:
        raise DataError(f"{origin.describe(i)}: unparsable timestamp {show(raw.iloc[i])} ({why})")


def _parse_epochs(
    raw: pd.Series, numbers: pd.Series, unit: str, origin: Origin, log: Log
) -> np.ndarray:
    values = numbers.to_numpy(dtype=np.float64)
    unparsable(raw, ~np.isfinite(values), origin, "not an epoch number")
    if pd.api.types.is_integer_dtype(numbers):
        values = numbers.to_numpy(dtype=np.int64)
    how = "given"
    if unit == "auto":
        unit, how = _epoch_unit(values, origin), "detected"
    limit = np.iinfo(np.int64).max / _EPOCH_NS[unit]
    unparsable(raw, np.abs(values) > limit, origin, f"out of range for epoch {_EPOCH_NAMES[unit]}")
    emit(log, f"{origin.name}: timestamps: epoch {_EPOCH_NAMES[unit]} ({how})")
    return _epoch_ns(values, unit)


_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})\s*$"  # an ISO 8601 time zone designator at the end


def _parse_iso(raw: pd.Series, origin: Origin, log: Log) -> np.ndarray:
    parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    unparsable(raw, parsed.isna().to_numpy(), origin, "expected ISO 8601 text or epoch numbers")
    naive = int((~raw.str.contains(_UTC_OFFSET, regex=True)).sum())
    how = f"{naive} without a UTC offset, read as UTC" if naive else "with UTC offsets"
    emit(log, f"{origin.name}: timestamps: ISO 8601 text ({how})")
    return pd.DatetimeIndex(parsed).as_unit("ns").asi8


def parse_timestamps(raw: pd.Series, unit: str, origin: Origin, log: Log) -> np.ndarray:
    """Open times as int64 UTC nanoseconds: datetimes, ISO text or epoch numbers."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw):
        index = pd.DatetimeIndex(raw)
        unparsable(raw, np.asarray(index.isna()), origin, "missing")
        index = as_utc(index)
        emit(log, f"{origin.name}: timestamps: datetime column")
        return index.as_unit("ns").asi8
    if unit == "iso":
        return _parse_iso(raw.astype(str), origin, log)
    if is_number_column(raw):
        return _parse_epochs(raw, raw, unit, origin, log)
    numbers = pd.to_numeric(raw, errors="coerce")
    if unit != "auto" or numbers.notna().mean() > 0.5:  # mostly numbers: epochs with a bad row
        return _parse_epochs(raw, numbers, unit, origin, log)
    return _parse_iso(raw.astype(str), origin, log)


def to_float(raw: pd.Series, column: str, origin: Origin, ts: np.ndarray) -> np.ndarray:
    """A value column as float64; text that is not a number is an error, not a NaN."""
    if is_number_column(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    numbers = pd.to_numeric(raw, errors="coerce")
    i = first_bad((numbers.isna() & raw.notna()).to_numpy())
    if i is not None:
        raise DataError(
            f"{origin.describe(i, ts)}: non-numeric value {show(raw.iloc[i])} in {column!r}"
        )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def timestamps_to_ns(values: pd.Series, where: str) -> np.ndarray:
    """UTC nanoseconds since epoch from datetimes, date strings or epoch numbers.

    Epoch numbers take their unit (s, ms, us, ns) from their magnitude, so an export in
    milliseconds and a capture in nanoseconds both read without a flag. Naive dates are UTC.

    The tick files' reader (:mod:`hmarl.sources.ticks`). It differs from
    :func:`parse_timestamps` on purpose: one unit per column from the median magnitude (a
    capture never mixes units), any date text pandas reads, and errors that name the data
    row without a provenance table.
    """
    if is_number_column(values):
        numbers = values.to_numpy(dtype=np.float64)
        if not np.isfinite(numbers).all():
            row = int(np.flatnonzero(~np.isfinite(numbers))[0]) + 1
            raise DataError(f"{where}: data row {row}, column ts: missing or non-finite timestamp")
        stamps = pd.to_datetime(
            values,
            unit=epoch_unit(float(np.median(np.abs(numbers)))) if len(numbers) else "s",
            utc=True,
        )
    else:
        try:
            stamps = pd.to_datetime(values, utc=True)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: column ts is not a date or epoch number ({exc})") from exc
        if stamps.isna().any():
            row = int(np.flatnonzero(stamps.isna().to_numpy())[0]) + 1
            raise DataError(f"{where}: data row {row}, column ts: missing timestamp")
    return stamps.dt.as_unit("ns").astype(np.int64).to_numpy()
