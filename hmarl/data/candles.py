"""The candle frame contract that every data job shares: columns, bounds, the error type.

Every job returns the same frame: a UTC ``DatetimeIndex`` named ``"timestamp"`` (nanosecond
unit), sorted and unique; float64 columns ``open high low close volume`` then any extras.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

CANDLE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
# Larger magnitudes overflow the features' float64 sums of squares (1e100**2 * 1e6 rows is
# still finite); no real price or volume comes near it, so it is a corrupt cell.
MAX_ABS_VALUE = 1e100


Log = Callable[[str], None] | None


class DataError(ValueError):
    """Bad candle data; the message names the file (or frame) and the first offending row."""


def first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def show(value: object) -> str:
    """A raw cell for a message: text quoted, numbers plain (no numpy reprs)."""
    return repr(value) if isinstance(value, str) else str(value)


def index_ns(frame: pd.DataFrame) -> np.ndarray:
    """A frame's DatetimeIndex as int64 nanoseconds."""
    return pd.DatetimeIndex(frame.index).as_unit("ns").asi8


def is_number_column(column: pd.Series) -> bool:
    """Numbers, not booleans: True/False in a price or timestamp column is a corrupt file."""
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def emit(log: Log, message: str) -> None:
    if log is not None:
        log(message)


def candle_frame(ts: np.ndarray, values: pd.DataFrame) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True), name="timestamp")
    out = values.set_axis(index.as_unit("ns"), axis=0)
    out.columns = pd.Index([str(c) for c in out.columns])
    return out


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {list(choices)}")
