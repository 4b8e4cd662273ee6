"""Markets of a walk-forward: their liquidity, and the tables aggregated by market and bucket.

Liquidity is the median daily traded value: close x volume summed over each UTC day, the
median over days (in the quote currency: USDT for BTCUSDT). Buckets (edges in
:data:`BUCKET_EDGES`): ``thin`` below 1e6 a day, ``mid`` from 1e6 to 1e8, ``deep`` from 1e8
(Binance's BTCUSDT spot trades ~1e9 a day).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

BUCKET_EDGES = ((1e6, "thin"), (1e8, "mid"))  # (upper edge, name); at or above the last: deep
TOP_BUCKET = "deep"


def median_daily_value(candles: pd.DataFrame) -> float:
    """Median over UTC days of the day's summed close x volume (NaN without volume)."""
    if "volume" not in candles or candles.empty:
        return math.nan
    value = candles["close"].astype(np.float64) * candles["volume"].astype(np.float64)
    daily = value.groupby(pd.DatetimeIndex(candles.index).floor("D")).sum()
    return float(daily.median())


def liquidity_bucket(value: float) -> str:
    """The bucket of a median daily traded value (``unknown`` when not finite)."""
    if not math.isfinite(value):
        return "unknown"
    for edge, name in BUCKET_EDGES:
        if value < edge:
            return name
    return TOP_BUCKET


def aggregate(folds: pd.DataFrame, by: str, unit: str = "folds") -> pd.DataFrame:
    """Per group of ``by`` (and ``pooled`` over all rows): the rows (``unit``: a walk-forward's
    folds, a backtest's markets), edges found, the mean and median of every return column."""
    returns = [c for c in folds.columns if c.endswith("[%]")]

    def summary(group: pd.DataFrame) -> dict[str, float]:
        row: dict[str, float] = {unit: len(group), "edges": int(group["edge_found"].sum())}
        for c in returns:
            row[f"mean {c}"] = float(group[c].mean())
            row[f"median {c}"] = float(group[c].median())
        return row

    rows = {str(k): summary(g) for k, g in folds.groupby(by, sort=True)}
    rows["pooled"] = summary(folds)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = by
    return table
