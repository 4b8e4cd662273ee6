"""Validation: the rules every candle frame must meet, checked once with file and row named.

Why here, before anything else: features, windows and the environment trust the frame, so
a bad price or a missing bar must fail now, with its row, not later as a NaN in a gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from hmarl.data.candles import (
    CANDLE_COLUMNS,
    MAX_ABS_VALUE,
    PRICE_COLUMNS,
    DataError,
    Log,
    candle_frame,
    check_choice,
    emit,
    first_bad,
    index_ns,
)
from hmarl.data.parsing import unparsable
from hmarl.data.provenance import Origin, frame_origin
from hmarl.data.timestamps import as_utc, freq_ns, mode_step, span

GAP_POLICIES = ("error", "ffill")


_SHOWN_GAPS = 3


DEFAULT_MIN_REASON = "the caller's minimum: typically the macro window plus the feature warm-up"


def check_order(ts: np.ndarray, origin: Origin) -> None:
    """Open times must strictly increase: report the first duplicate or step backwards."""
    steps = np.diff(ts)
    i = first_bad(steps <= 0)
    if i is None:
        return
    here, before = origin.describe(i + 1, ts), origin.describe(i, ts)
    if steps[i] == 0:
        raise DataError(f"{here}: duplicate timestamp (same as {before})")
    raise DataError(f"{here}: timestamps not sorted (earlier than the previous row, {before})")


def _check_prices(frame: pd.DataFrame, origin: Origin, ts: np.ndarray) -> None:
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(prices) | (prices <= 0) | (prices > MAX_ABS_VALUE)
    i = first_bad(bad.any(axis=1))
    if i is not None:
        col = PRICE_COLUMNS[int(np.argmax(bad[i]))]
        raise DataError(
            f"{origin.describe(i, ts)}: bad price {col}={prices[i, PRICE_COLUMNS.index(col)]} "
            f"(prices must be finite, > 0 and <= {MAX_ABS_VALUE:g})"
        )


def _check_volume(frame: pd.DataFrame, origin: Origin, ts: np.ndarray) -> None:
    volume = frame["volume"].to_numpy(dtype=np.float64)
    i = first_bad(~np.isfinite(volume) | (volume < 0) | (volume > MAX_ABS_VALUE))
    if i is not None:
        raise DataError(
            f"{origin.describe(i, ts)}: bad volume {volume[i]} "
            f"(volume must be finite, >= 0 and <= {MAX_ABS_VALUE:g})"
        )


def _check_ranges(frame: pd.DataFrame, origin: Origin, ts: np.ndarray) -> None:
    """High and low must bracket open and close: otherwise the bar is corrupt."""
    o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in PRICE_COLUMNS)
    rules = (
        (h < lo, "high < low"),
        (h < np.maximum(o, c), "high < max(open, close)"),
        (lo > np.minimum(o, c), "low > min(open, close)"),
    )
    for mask, what in rules:
        i = first_bad(mask)
        if i is not None:
            raise DataError(
                f"{origin.describe(i, ts)}: inconsistent candle, {what} "
                f"(open={o[i]}, high={h[i]}, low={lo[i]}, close={c[i]})"
            )


def _check_extras(frame: pd.DataFrame, origin: Origin, ts: np.ndarray) -> None:
    for col in frame.columns[len(CANDLE_COLUMNS) :]:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            raise DataError(
                f"{origin.name}: extra column {col!r} is not numeric ({frame[col].dtype})"
            )
        values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
        i = first_bad(~np.isfinite(values) | (np.abs(values) > MAX_ABS_VALUE))
        if i is not None:
            what = "non-finite" if not np.isfinite(values[i]) else "huge"
            raise DataError(
                f"{origin.describe(i, ts)}: {what} {values[i]} in extra column {col!r} "
                f"(values must be finite with |x| <= {MAX_ABS_VALUE:g})"
            )


def _resolve_step(ts: np.ndarray, freq: str | None, origin: Origin, log: Log) -> int | None:
    """Bar spacing in ns: the given freq, or the most common difference (None below 2 rows)."""
    if freq is not None:
        return freq_ns(freq)
    if len(ts) < 2:
        return None
    step = mode_step(ts)
    emit(log, f"{origin.name}: bar spacing {span(step)} (inferred: most common)")
    return step


def _gap_report(ts: np.ndarray, gaps: np.ndarray, step: int, origin: Origin) -> str:
    steps = np.diff(ts)
    missing = int(((steps[gaps] // step) - 1).sum())
    shown = "; ".join(
        f"after {origin.describe(int(i), ts)}: gap {span(int(steps[i]))} "
        f"({int(steps[i] // step) - 1} missing bar(s))"
        for i in gaps[:_SHOWN_GAPS]
    )
    more = f"; ... {len(gaps) - _SHOWN_GAPS} more" if len(gaps) > _SHOWN_GAPS else ""
    return f"{len(gaps)} gap(s) in {span(step)} bars, {missing} missing bar(s): {shown}{more}"


def _find_gaps(ts: np.ndarray, step: int, origin: Origin) -> np.ndarray:
    """Positions i where bar i+1 is more than one step after bar i; off-grid spacing raises."""
    steps = np.diff(ts)
    i = first_bad((steps < step) | (steps % step != 0))
    if i is not None:
        count = int(((steps < step) | (steps % step != 0)).sum())
        raise DataError(
            f"{origin.describe(i + 1, ts)}: irregular spacing, {span(int(steps[i]))} after "
            f"the previous bar is not a multiple of the {span(step)} bar spacing "
            f"({count} such bar(s)); gap filling cannot repair off-grid bars: resample first"
        )
    return np.flatnonzero(steps > step)


def _fill_gaps(frame: pd.DataFrame, step: int) -> tuple[pd.DataFrame, int]:
    """Insert missing bars as flat, zero-volume bars at the LAST close.

    Each grid time takes the last real bar at or before it (searchsorted right - 1), so no
    value ever moves backwards in time. Extra columns are 0 on inserted bars: they usually
    count trading activity, and none happened.
    """
    ts = index_ns(frame)
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


def check_and_fill(
    frame: pd.DataFrame,
    origin: Origin,
    gap_policy: str,
    freq: str | None,
    min_candles: int,
    min_reason: str,
    log: Log,
) -> pd.DataFrame:
    """Value checks, spacing (raise or fill) and the minimum length, on a sorted frame."""
    ts = index_ns(frame)
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
        emit(log, f"{origin.name}: gap_policy='ffill' inserted {count} bar(s) at the last close")
    if step is not None:  # regular from here on: record the spacing, as pd.date_range does
        frame = frame.set_axis(pd.DatetimeIndex(frame.index, freq=to_offset(span(step))), axis=0)
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
    min_reason: str = DEFAULT_MIN_REASON,
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
    check_choice("gap_policy", gap_policy, GAP_POLICIES)
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
    index = as_utc(df.index)
    origin = frame_origin(name, len(df))
    ts = index.as_unit("ns").asi8
    check_order(ts, origin)
    unparsable(pd.Series(index), np.asarray(index.isna()), origin, "missing")
    extras = [c for c in df.columns if c not in CANDLE_COLUMNS]
    values = df[[*CANDLE_COLUMNS, *extras]].reset_index(drop=True)
    values = values.astype(dict.fromkeys(CANDLE_COLUMNS, np.float64))
    return check_and_fill(
        candle_frame(ts, values), origin, gap_policy, freq, min_candles, min_reason, log
    )
