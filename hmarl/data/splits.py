"""Chronological train / val / test splits: row ranges in time order, never shuffled."""

from __future__ import annotations

import pandas as pd

from hmarl.data.timestamps import utc


def _date_row(index: pd.DatetimeIndex, date: str, what: str) -> int:
    """First row at or after `date` (UTC; naive dates are UTC)."""
    try:
        stamp = utc(date)
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
        if utc(val_start) >= utc(test_start):
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
