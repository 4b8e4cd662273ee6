"""Time: UTC dates and bar spacings.

Why one module: the loader, the splits, the synthetic market and the validation rules all
read dates and bar spacings, and each must read them the same way (a naive date means UTC).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from hmarl.data.candles import DataError

Stamps = TypeVar("Stamps", pd.Timestamp, pd.DatetimeIndex)


def as_utc(stamps: Stamps) -> Stamps:
    """The same instants in UTC; naive timestamps mean UTC (the project's one convention).

    Why one helper: bar open times, date bounds and split dates all arrive naive or aware,
    and every reader must read a naive one the same way.
    """
    return stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")


def utc(date: str | pd.Timestamp) -> pd.Timestamp:
    """A date bound as a UTC timestamp; naive dates are UTC."""
    return as_utc(pd.Timestamp(date))


def span(ns: int) -> str:
    """A duration as pandas writes a frequency: "5min", "1h", "90min"."""
    text = str(to_offset(pd.Timedelta(int(ns))).freqstr)
    return text if text[:1].isdigit() else f"1{text}"


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


def mode_step(ts: np.ndarray) -> int:
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    return int(steps[np.argmax(counts)])


def bar_spacing(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The most common difference between consecutive bars (e.g. for annualisation)."""
    if len(index) < 2:
        raise DataError(f"bar spacing needs at least 2 bars, got {len(index)}")
    return pd.Timedelta(mode_step(index.as_unit("ns").asi8))
