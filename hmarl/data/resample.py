"""Resampling: bars aggregated to a coarser spacing without inventing or mixing bars."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hmarl.data.candles import CANDLE_COLUMNS, DataError
from hmarl.data.timestamps import mode_step

# Aggregations whose result has the input's dtype (an int column stays int after "sum").
_TYPE_PRESERVING_AGGS = ("first", "last", "max", "min", "sum")


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
    source = pd.Timedelta(mode_step(index.as_unit("ns").asi8))
    if target < source or target % source != pd.Timedelta(0):
        raise DataError(
            f"resample rule {rule!r} is not a whole multiple of the source spacing {source}"
        )
