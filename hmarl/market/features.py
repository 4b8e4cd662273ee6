"""Feature registry: named, causal indicators computed from a candle frame.

Every built-in feature is a short function here.

Every feature is a function of candles at or before t (the value at row t is known at the
close of bar t). Names carry their parameters (``ret_12``, ``macd_signal_12_26_9``) so that a
config list of strings fully defines the feature set; a small pattern table parses them.

Warm-up is explicit: feature ``f`` is NaN on rows ``< lookback(f)`` and is never back-filled
(a backward fill would copy the future into the past). On valid candles every built-in
feature is finite from its lookback on, zero-volume (gap-filled) bars included.

EMA-based features use ``ewm(adjust=False)`` seeded at the first value, a purely forward
recursion. The seed's weight after ``m`` steps is ``(1 - alpha)^m``, about ``exp(-2 m / span)``,
so the first ``EMA_WARMUP_SPANS * span`` rows (seed weight below ``exp(-6)``, 0.25%) are NaN.
Wilder smoothing (RSI, ATR) uses ``alpha = 1/n``, the same as ``span = 2n - 1``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from hmarl.data.candles import CANDLE_COLUMNS, is_number_column

EMA_WARMUP_SPANS = 3
"""EMA warm-up in spans: rows before ``3 * span`` are NaN (seed weight below exp(-6))."""

REL_EPS = 1e-9
"""A dispersion below ``REL_EPS * |level|`` counts as zero (flat prices, constant volume)."""

FeatureFn = Callable[..., "np.ndarray | pd.Series"]
F = TypeVar("F", bound=FeatureFn)
Param = int | str

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)(:str)?\}")


@dataclass(frozen=True)
class FeatureSpec:
    """One registry entry: a name pattern and how to compute, size and feed it."""

    pattern: str  # as shown to users, e.g. "ret_{h}"
    description: str
    regex: re.Pattern[str]
    params: tuple[tuple[str, bool], ...]  # (name, is_string) per placeholder, in order
    compute: FeatureFn  # compute(candles, **params) -> array [T]
    columns: Callable[..., Sequence[str]]  # columns(**params) -> input columns needed
    lookback: Callable[..., int]  # lookback(**params) -> first finite row
    check: Callable[..., str | None] | None  # check(**params) -> error text or None


_REGISTRY: dict[str, FeatureSpec] = {}


# ---------------------------------------------------------------- registry


def _compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, bool], ...], str]:
    """Turn ``ret_{h}`` / ``col:{column:str}`` into a regex, its parameters and a display form."""
    parts: list[str] = []
    params: list[tuple[str, bool]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        is_str = m.group(2) is not None
        parts.append(r"(.+)" if is_str else r"(\d+)")
        params.append((m.group(1), is_str))
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    display = _PLACEHOLDER.sub(r"{\1}", pattern)
    return re.compile("".join(parts)), tuple(params), display


def register_feature(
    pattern: str,
    description: str,
    *,
    columns: Sequence[str] | Callable[..., Sequence[str]],
    lookback: int | Callable[..., int] = 0,
    check: Callable[..., str | None] | None = None,
) -> Callable[[F], F]:
    """Decorator adding ``compute(candles, **params)`` to the registry under ``pattern``.

    Placeholders ``{p}`` match positive integers and ``{p:str}`` any text; they arrive as
    keyword arguments of ``compute``, ``columns``, ``lookback`` and ``check``. This is how
    other modules (tick-bar microstructure features) add names without editing this file.
    ``lookback`` must be the first row from which the feature is finite on valid input:
    the registry sets every earlier row to NaN.
    """
    regex, params, display = _compile_pattern(pattern)
    if display in _REGISTRY:
        raise ValueError(f"feature pattern {display!r} is already registered")
    columns_fn = columns if callable(columns) else (lambda fixed=tuple(columns), **_: fixed)
    lookback_fn = lookback if callable(lookback) else (lambda fixed=lookback, **_: fixed)

    def add(fn: F) -> F:
        _REGISTRY[display] = FeatureSpec(
            display, description, regex, params, fn, columns_fn, lookback_fn, check
        )
        return fn

    return add


def available_features() -> dict[str, str]:
    """Pattern -> one-line description of every registered feature (README, error messages)."""
    return {pattern: spec.description for pattern, spec in _REGISTRY.items()}


def _unknown(name: str, why: str) -> ValueError:
    listing = ", ".join(_REGISTRY)
    return ValueError(f"feature {name!r}: {why}. Available patterns: {listing}")


def _resolve(name: str) -> tuple[FeatureSpec, dict[str, Param]]:
    """Parse one feature name into its registry entry and checked parameters."""
    if not isinstance(name, str):
        raise _unknown(repr(name), "feature names must be strings")
    hits = [spec for spec in _REGISTRY.values() if spec.regex.fullmatch(name)]
    if not hits:
        raise _unknown(name, "unknown feature name")
    if len(hits) > 1:
        raise _unknown(name, f"ambiguous, matches {[s.pattern for s in hits]}")
    spec = hits[0]
    match = spec.regex.fullmatch(name)
    assert match is not None
    params: dict[str, Param] = {}
    for (pname, is_str), text in zip(spec.params, match.groups(), strict=True):
        if not is_str and int(text) < 1:
            raise _unknown(name, f"parameter {pname} must be a positive integer, got {text}")
        params[pname] = text if is_str else int(text)
    problem = spec.check(**params) if spec.check is not None else None
    if problem:
        raise _unknown(name, f"bad parameters for {spec.pattern}: {problem}")
    return spec, params


def _resolve_all(names: Sequence[str]) -> list[tuple[FeatureSpec, dict[str, Param]]]:
    """Resolve a list of names, rejecting a bare string and duplicates before any work."""
    if isinstance(names, str):
        raise ValueError(f"names must be a list of feature names, got the string {names!r}")
    duplicated = sorted({n for n in names if list(names).count(n) > 1})
    if duplicated:
        raise ValueError(f"feature names repeat: {duplicated}")
    return [_resolve(name) for name in names]


def feature_lookback(names: Sequence[str]) -> int:
    """Warm-up rows of a feature set: the first row where every named feature is finite."""
    return max((spec.lookback(**p) for spec, p in _resolve_all(names)), default=0)


def required_columns(names: Sequence[str]) -> list[str]:
    """Input columns the named features read, in first-use order (a loader keeps these)."""
    needed: list[str] = []
    for spec, params in _resolve_all(names):
        needed.extend(c for c in spec.columns(**params) if c not in needed)
    return needed


# ---------------------------------------------------------------- building


def _check_candles(candles: pd.DataFrame, columns: Sequence[str]) -> None:
    """Fail early, naming the column and row, on input the features cannot use."""
    missing = [c for c in columns if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack columns {missing}; they have {list(candles.columns)}")
    for col in columns:
        series = candles[col]
        if not is_number_column(series):
            raise ValueError(f"candles column {col!r} must be numeric, got dtype {series.dtype}")
        if col not in CANDLE_COLUMNS:
            continue  # passthrough columns may carry their own NaN warm-up
        values = series.to_numpy(dtype=np.float64)
        floor_ok = values >= 0 if col == "volume" else values > 0
        bad = np.flatnonzero(~(np.isfinite(values) & floor_ok))
        if bad.size:
            row = int(bad[0])
            rule = "finite and >= 0" if col == "volume" else "finite and > 0"
            raise ValueError(
                f"candles column {col!r} must be {rule}: row {row} ({candles.index[row]}) "
                f"is {values[row]!r} ({bad.size} bad rows)"
            )


def build_features(candles: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compute the named features: float64, same index, columns in the given order.

    Rows before each feature's lookback are NaN (never filled), so ``feature_lookback``
    tells the first row a window may start from. ``None`` selects ``DEFAULT_FEATURES``.
    """
    chosen = DEFAULT_FEATURES if names is None else names
    resolved = _resolve_all(chosen)
    if not resolved:
        raise ValueError("no feature names given")
    _check_candles(candles, required_columns(chosen))
    out = np.empty((len(candles), len(chosen)), dtype=np.float64)
    for j, (spec, params) in enumerate(resolved):
        values = np.asarray(spec.compute(candles, **params), dtype=np.float64)
        if values.shape != (len(candles),):
            raise ValueError(f"feature {chosen[j]!r} returned shape {values.shape}")
        out[:, j] = values
        out[: spec.lookback(**params), j] = np.nan
    return pd.DataFrame(out, index=candles.index, columns=list(chosen))


# ---------------------------------------------------------------- numeric helpers


def _col(candles: pd.DataFrame, name: str) -> np.ndarray:
    return candles[name].to_numpy(dtype=np.float64)


def _diff(x: np.ndarray, lag: int = 1) -> np.ndarray:
    """``x[t] - x[t-lag]`` with NaN where ``t - lag`` is before the first row."""
    out = np.full_like(x, np.nan)
    if lag < len(x):
        out[lag:] = x[lag:] - x[:-lag]
    return out


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Forward EMA (adjust=False) seeded at the first non-NaN value: causal by construction."""
    return pd.Series(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()


def _rolling(x: np.ndarray, n: int) -> pd.api.typing.Rolling:
    """A full-window rolling view: a window holding any NaN yields NaN."""
    return pd.Series(x).rolling(n, min_periods=n)


def _safe_div(num: np.ndarray, den: np.ndarray, fill: float, floor: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den > floor``, ``fill`` where the divisor is degenerate, NaN kept."""
    out = np.full_like(num, fill)
    np.divide(num, den, out=out, where=den > floor)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


def _window_warmup(n: int) -> int:
    """An n-bar rolling statistic of a series finite from row 0 is first full at row n - 1."""
    return n - 1


def _ema_rows(span: int) -> int:
    return EMA_WARMUP_SPANS * span


def _fast_below_slow(fast: int, slow: int, **_: int) -> str | None:
    return None if fast < slow else f"fast span {fast} must be below slow span {slow}"


def _utc_seconds(candles: pd.DataFrame) -> np.ndarray:
    """Bar open times as float seconds since the epoch (UTC); requires a tz-aware index."""
    idx = candles.index
    if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
        raise ValueError(
            "time features need a tz-aware (UTC) DatetimeIndex of bar open times, "
            f"got {type(idx).__name__} with tz={getattr(idx, 'tz', None)}"
        )
    return idx.tz_convert("UTC").as_unit("ns").asi8.astype(np.float64) / 1e9


def _day_fraction(candles: pd.DataFrame) -> np.ndarray:
    return np.mod(_utc_seconds(candles), 86400.0) / 86400.0


def _week_fraction(candles: pd.DataFrame) -> np.ndarray:
    """Monday 00:00 UTC = 0; the epoch (1970-01-01) was a Thursday, 3 days after Monday."""
    days = _utc_seconds(candles) / 86400.0
    return np.mod(days + 3.0, 7.0) / 7.0


def _range_position(candles: pd.DataFrame, n: int) -> np.ndarray:
    """Close position in the n-bar high-low range, 0 = at the low, 1 = at the high."""
    hh = _rolling(_col(candles, "high"), n).max().to_numpy()
    ll = _rolling(_col(candles, "low"), n).min().to_numpy()
    close = _col(candles, "close")
    return _safe_div(close - ll, hh - ll, 0.5, REL_EPS * close)


# ---------------------------------------------------------------- built-in features


@register_feature(
    "ret_{h}", "log return of close over h bars", columns=("close",), lookback=lambda h: h
)
def _ret(candles: pd.DataFrame, h: int) -> np.ndarray:
    return _diff(np.log(_col(candles, "close")), h)


@register_feature(
    "rv_{n}",
    "realised volatility: std (ddof=0) of 1-bar log returns over n bars",
    columns=("close",),
    lookback=lambda n: n,
)
def _rv(candles: pd.DataFrame, n: int) -> np.ndarray:
    return _rolling(_diff(np.log(_col(candles, "close"))), n).std(ddof=0).to_numpy()


@register_feature(
    "rsi_{n}",
    "Wilder RSI over n bars, 0..100 (50 when flat)",
    columns=("close",),
    lookback=lambda n: 1 + _ema_rows(2 * n - 1),
)
def _rsi(candles: pd.DataFrame, n: int) -> np.ndarray:
    change = _diff(_col(candles, "close"))
    gain = _ema(np.maximum(change, 0.0), 1.0 / n)
    loss = _ema(np.maximum(-change, 0.0), 1.0 / n)
    return 100.0 * _safe_div(gain, gain + loss, 0.5, np.zeros_like(gain))


def _fast_slow_ema(candles: pd.DataFrame, fast: int, slow: int) -> tuple[np.ndarray, ...]:
    """Close and its fast and slow EMAs (span convention: alpha = 2 / (span + 1))."""
    close = _col(candles, "close")
    return close, _ema(close, 2.0 / (fast + 1)), _ema(close, 2.0 / (slow + 1))


def _slow_warmup(fast: int, slow: int) -> int:
    return _ema_rows(slow)


def _macd_line(candles: pd.DataFrame, fast: int, slow: int) -> np.ndarray:
    close, fast_ema, slow_ema = _fast_slow_ema(candles, fast, slow)
    return (fast_ema - slow_ema) / close


@register_feature(
    "macd_{fast}_{slow}",
    "MACD line (EMA fast - EMA slow) divided by close",
    columns=("close",),
    lookback=_slow_warmup,
    check=_fast_below_slow,
)
def _macd(candles: pd.DataFrame, fast: int, slow: int) -> np.ndarray:
    return _macd_line(candles, fast, slow)


@register_feature(
    "macd_signal_{fast}_{slow}_{signal}",
    "EMA(signal) of the close-normalised MACD line",
    columns=("close",),
    lookback=lambda fast, slow, signal: _ema_rows(slow) + _ema_rows(signal),
    check=_fast_below_slow,
)
def _macd_signal(candles: pd.DataFrame, fast: int, slow: int, signal: int) -> np.ndarray:
    return _ema(_macd_line(candles, fast, slow), 2.0 / (signal + 1))


def _bollinger(candles: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close = _col(candles, "close")
    window = _rolling(close, n)
    return close, window.mean().to_numpy(), window.std(ddof=0).to_numpy()


@register_feature(
    "bb_pctb_{n}",
    "Bollinger %B (n bars, 2 std, ddof=0): 0 = lower band, 1 = upper, 0.5 when flat",
    columns=("close",),
    lookback=_window_warmup,
)
def _bb_pctb(candles: pd.DataFrame, n: int) -> np.ndarray:
    close, mid, std = _bollinger(candles, n)
    return 0.5 + _safe_div(close - mid, 4.0 * std, 0.0, REL_EPS * mid)


@register_feature(
    "bb_width_{n}",
    "Bollinger band width (4 std) divided by the n-bar mean close",
    columns=("close",),
    lookback=_window_warmup,
)
def _bb_width(candles: pd.DataFrame, n: int) -> np.ndarray:
    _, mid, std = _bollinger(candles, n)
    return 4.0 * std / mid


@register_feature(
    "atr_{n}",
    "Wilder average true range over n bars divided by close",
    columns=("high", "low", "close"),
    lookback=lambda n: _ema_rows(2 * n - 1),
)
def _atr(candles: pd.DataFrame, n: int) -> np.ndarray:
    high, low, close = (_col(candles, c) for c in ("high", "low", "close"))
    prev = np.roll(close, 1)
    prev[0] = np.nan  # the first bar has no previous close: its range is high - low
    true_range = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    return _ema(true_range, 1.0 / n) / close


@register_feature(
    "stoch_k_{n}",
    "stochastic %K: close position in the n-bar high-low range, 0..100 (50 when flat)",
    columns=("high", "low", "close"),
    lookback=_window_warmup,
)
def _stoch_k(candles: pd.DataFrame, n: int) -> np.ndarray:
    return 100.0 * _range_position(candles, n)


@register_feature(
    "range_pos_{n}",
    "close position in the n-bar high-low range, 0..1 (0.5 when flat)",
    columns=("high", "low", "close"),
    lookback=_window_warmup,
)
def _range_pos(candles: pd.DataFrame, n: int) -> np.ndarray:
    return _range_position(candles, n)


@register_feature(
    "vol_z_{n}",
    "volume z-score over n bars (ddof=0; 0 when volume is constant or zero)",
    columns=("volume",),
    lookback=_window_warmup,
)
def _vol_z(candles: pd.DataFrame, n: int) -> np.ndarray:
    volume = _col(candles, "volume")
    window = _rolling(volume, n)
    mean, std = window.mean().to_numpy(), window.std(ddof=0).to_numpy()
    return _safe_div(volume - mean, std, 0.0, REL_EPS * np.abs(mean))


@register_feature(
    "logvol_chg",
    "log1p(volume) minus its previous value (finite with zero volume)",
    columns=("volume",),
    lookback=1,
)
def _logvol_chg(candles: pd.DataFrame) -> np.ndarray:
    return _diff(np.log1p(_col(candles, "volume")))


@register_feature(
    "obv_slope_{n}",
    "OBV change over n bars divided by the volume of those bars, -1..1 (0 without volume)",
    columns=("close", "volume"),
    lookback=lambda n: n,
)
def _obv_slope(candles: pd.DataFrame, n: int) -> np.ndarray:
    volume = _col(candles, "volume")
    flow = np.sign(_diff(_col(candles, "close"))) * volume
    net = _rolling(flow, n).sum().to_numpy()
    total = _rolling(volume, n).sum().to_numpy()
    return np.clip(_safe_div(net, total, 0.0, np.zeros_like(total)), -1.0, 1.0)


@register_feature(
    "ema_ratio_{fast}_{slow}",
    "log(EMA fast / EMA slow) of close",
    columns=("close",),
    lookback=_slow_warmup,
    check=_fast_below_slow,
)
def _ema_ratio(candles: pd.DataFrame, fast: int, slow: int) -> np.ndarray:
    _, fast_ema, slow_ema = _fast_slow_ema(candles, fast, slow)
    return np.log(fast_ema / slow_ema)


@register_feature("tod_sin", "sin of UTC time of day of the bar open", columns=())
def _tod_sin(candles: pd.DataFrame) -> np.ndarray:
    return np.sin(2.0 * np.pi * _day_fraction(candles))


@register_feature("tod_cos", "cos of UTC time of day of the bar open", columns=())
def _tod_cos(candles: pd.DataFrame) -> np.ndarray:
    return np.cos(2.0 * np.pi * _day_fraction(candles))


@register_feature(
    "dow_sin", "sin of UTC time of week (Monday 00:00 = 0) of the bar open", columns=()
)
def _dow_sin(candles: pd.DataFrame) -> np.ndarray:
    return np.sin(2.0 * np.pi * _week_fraction(candles))


@register_feature(
    "dow_cos", "cos of UTC time of week (Monday 00:00 = 0) of the bar open", columns=()
)
def _dow_cos(candles: pd.DataFrame) -> np.ndarray:
    return np.cos(2.0 * np.pi * _week_fraction(candles))


@register_feature(
    "col:{column:str}",
    "an existing numeric column as is (tick-bar microstructure); its own NaNs pass through",
    columns=lambda column: (column,),
)
def _passthrough(candles: pd.DataFrame, column: str) -> np.ndarray:
    return _col(candles, column)


# ---------------------------------------------------------------- tape (Binance kline columns)
# Public kline dumps carry, per bar, the trade count and the taker-buy base volume (the volume
# of trades whose aggressor bought); hmarl.data.reading keeps them as `trades` and
# `taker_buy_base`. A file without them is refused by the loader, naming the missing columns.


@register_feature(
    "taker_buy_share",
    "taker-buy base volume / volume, 0..1 (0.5 without volume): who crossed the spread",
    columns=("volume", "taker_buy_base"),
)
def _taker_buy_share(candles: pd.DataFrame) -> np.ndarray:
    volume = _col(candles, "volume")
    return _safe_div(_col(candles, "taker_buy_base"), volume, 0.5, np.zeros_like(volume))


@register_feature(
    "log_trades",
    "log1p(number of trades in the bar): the tape's pace",
    columns=("trades",),
)
def _log_trades(candles: pd.DataFrame) -> np.ndarray:
    return np.log1p(np.maximum(_col(candles, "trades"), 0.0))


@register_feature(
    "signed_vol_{n}",
    "(taker buys - taker sells) over the mean volume of the last n bars (0 without volume)",
    columns=("volume", "taker_buy_base"),
    lookback=_window_warmup,
)
def _signed_vol(candles: pd.DataFrame, n: int) -> np.ndarray:
    volume = _col(candles, "volume")
    signed = 2.0 * _col(candles, "taker_buy_base") - volume
    mean = _rolling(volume, n).mean().to_numpy()
    return _safe_div(signed, mean, 0.0, np.zeros_like(volume))


@register_feature(
    "col_chg:{column:str}",
    "a raw column's change since the previous bar (e.g. an imbalance's change: order flow)",
    columns=lambda column: (column,),
    lookback=1,
)
def _column_change(candles: pd.DataFrame, column: str) -> np.ndarray:
    return _diff(_col(candles, column))


@register_feature(
    "col_ema{span}:{column:str}",
    "exponential moving average of a raw column (alpha 2 / (span + 1)): a smoothed reading of a "
    "noisy flow; NaN where the column is",
    columns=lambda column, **_: (column,),
    lookback=lambda span, **_: _ema_rows(span),
)
def _column_ema(candles: pd.DataFrame, span: int, column: str) -> np.ndarray:
    # Why beside a specialist's window mean: a mean over n bars weighs the bar n-1 back as much
    # as the last one, so after a change in what the column reveals it lags by n/2 bars; an EMA
    # weighs the recent bars most at the same smoothing (a flow reader's usual filter).
    raw = _col(candles, column)
    return np.where(np.isnan(raw), np.nan, _ema(raw, 2.0 / (span + 1)))


DEFAULT_FEATURES: tuple[str, ...] = (
    "ret_1",
    "ret_12",
    "rv_12",
    "rv_48",
    "rsi_14",
    "macd_12_26",
    "macd_signal_12_26_9",
    "bb_pctb_20",
    "bb_width_20",
    "atr_14",
    "stoch_k_14",
    "range_pos_48",
    "vol_z_48",
    "logvol_chg",
    "obv_slope_48",
    "ema_ratio_12_48",
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
)
"""The reference N = 20 of the spec (its 83,811 parameters assume exactly 20 features)."""
