"""One `compute_stats()` for every report: trainer validation, backtests, baselines.

Why one function: trading code that re-implements Sharpe in several places ends up with
several annualisation factors, and then no two numbers in a report are comparable. Here
every figure comes from one "steps" frame (one row per decision bar t, the schema of the
backtest's ``steps.csv``) and one annualisation rule derived from the bar spacing and a
trading calendar (24/7 crypto is not 252 days a year).

Timing (the contract with the environment): at the close of bar t the policy chooses an
action, the position it leads to is held over bar t -> t+1, the fee of that trade is paid
at t, and ``equity`` is the equity at the close of bar t+1. Equity before the first row
is 1.0, so the per-row strategy return is ``equity[i] / equity[i-1] - 1``.

Undefined ratios (zero volatility, no downside, no drawdown, no trades, fewer than two
returns) are reported as 0.0, never NaN: validation metrics are logged to MLflow and
checkpoints are picked by ``argmax(val/sharpe)``, and a NaN there either crashes or
silently wins. 0.0 means "no evidence either way"; read it next to "Volatility (Ann.)
[%]" and "# Trades" to tell "undefined" from "zero".

Every statistic, its definition (STAT_DEFINITIONS) and the outcome flags stay in this one
module, banner-separated, so no report can define one twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from hmarl.steps import (
    ACTIONS,
    PROB_COLUMNS,
    Steps,
    check_steps,
    drawdown,
    equity_points,
    own_prob_column,
)

__all__ = [
    "CRYPTO",
    "EXCHANGE",
    "GATE_PREFIX",
    "STAT_DEFINITIONS",
    "TRADE_SHARE_PREFIX",
    "Calendar",
    "bootstrap_sharpe_ci",
    "compute_stats",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "flag_sentences",
    "max_drawdown",
    "metric_keys",
    "null_percentile",
    "outcome_flags",
    "periods_per_year",
    "probabilistic_sharpe_ratio",
    "sharpe_ratio",
    "short_key",
    "sortino_ratio",
    "stat_definition",
    "stats_table",
    "trades",
]

Stats = dict[str, float | int | str]
GATE_PREFIX = "Mean Gate "  # + a specialist's name (model=specialists with a gate)
TRADE_SHARE_PREFIX = "Trade Share "  # + a specialist's name
FloatArray = npt.NDArray[np.float64]

DAYS_PER_YEAR = 365.25
SECONDS_PER_DAY = 86_400.0
# Per-bar return standard deviations below this are float noise (a constant return
# recomputed from a compounded equity curve), not risk; they count as zero volatility.
ZERO_VOL = 1e-12
_NORMAL = NormalDist()
_EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class Calendar:
    """How many bars make a year on a market.

    Annualisation must follow the market's clock: 5-minute bars trade 288 times a day on
    a 24/7 crypto venue but 78 times a day in a 6.5-hour equity session, and a crypto
    year has 365.25 trading days, not 252. Examples: ``Calendar("exchange", 252, 6.5)``
    for a US equity exchange, ``Calendar("b3", 249, 9.0)`` for B3 futures.
    """

    name: str = "crypto"
    trading_days_per_year: float = 365.25
    session_hours: float = 24.0

    def __post_init__(self) -> None:
        if not self.trading_days_per_year > 0:
            raise ValueError(
                f"Calendar {self.name!r}: trading_days_per_year must be > 0, "
                f"got {self.trading_days_per_year}"
            )
        if not 0 < self.session_hours <= 24:
            raise ValueError(
                f"Calendar {self.name!r}: session_hours must be in (0, 24], "
                f"got {self.session_hours}"
            )


CRYPTO = Calendar()
EXCHANGE = Calendar("exchange", 252.0, 6.5)


# ----------------------------------------------------------------------------- annualisation


def _median_spacing_seconds(index: pd.DatetimeIndex) -> float:
    """Median bar spacing; the median ignores weekend and overnight gaps of exchange data."""
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(f"expected a DatetimeIndex, got {type(index).__name__}")
    if len(index) < 2:
        raise ValueError(
            f"cannot infer the bar spacing from {len(index)} timestamp(s); "
            "pass periods= (bars per year) explicitly"
        )
    seconds = np.diff(index.asi8) / 1e9 * _unit_scale(index)
    spacing = float(np.median(seconds))
    if not spacing > 0:
        raise ValueError(
            f"median bar spacing is {spacing} s: the index has duplicate or unsorted timestamps"
        )
    return spacing


def _unit_scale(index: pd.DatetimeIndex) -> float:
    """Factor from ``index.asi8`` units to nanoseconds (pandas 2+ allows s/ms/us/ns units)."""
    unit = getattr(index, "unit", "ns")
    return {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}[unit]


def periods_per_year(index: pd.DatetimeIndex, calendar: Calendar = CRYPTO) -> float:
    """Bars per year, from the median bar spacing and the market's calendar.

    - intraday bars (spacing < 1 day): ``max(1, session_hours * 3600 / spacing) *
      trading_days_per_year`` (at least one bar per session);
      5-minute 24/7 bars give 288 * 365.25 = 105,192, hourly exchange bars 6.5 * 252.
    - daily bars (1 day <= spacing < 1.5 days; the median skips weekends): one bar per
      trading day, ``trading_days_per_year`` (252 on an exchange, 365.25 for crypto).
    - longer bars: calendar time, ``365.25 / spacing_days`` (a weekly bar is a calendar
      week on any market: about 52.18).
    """
    spacing = _median_spacing_seconds(index)
    days = spacing / SECONDS_PER_DAY
    if days < 1.0:
        bars_per_day = max(1.0, calendar.session_hours * 3600.0 / spacing)
        return bars_per_day * calendar.trading_days_per_year
    if days < 1.5:
        return calendar.trading_days_per_year
    return DAYS_PER_YEAR / days


# ----------------------------------------------------------------------------- return ratios


def _finite_1d(values: npt.ArrayLike, name: str = "returns") -> FloatArray:
    """Float64 1-D copy of a series; NaN would poison every statistic, so refuse it."""
    r = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(r)):
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"{name}[{bad}] = {r[bad]} is not finite")
    return r


def sharpe_ratio(returns: npt.ArrayLike, periods: float) -> float:
    """Annualised Sharpe ratio with a zero risk-free rate.

    ``mean(r) / std(r, ddof=1) * sqrt(periods)`` over per-bar simple returns r. The
    risk-free rate is 0 because bars are minutes long and the comparison that matters is
    against buy & hold, reported beside it. Fewer than two returns or zero volatility
    (std <= 1e-12) give 0.0 (see the module docstring).
    """
    r = _finite_1d(returns)
    if r.size < 2:
        return 0.0
    std = float(np.std(r, ddof=1))
    if std <= ZERO_VOL:
        return 0.0
    return float(np.mean(r)) / std * math.sqrt(periods)


def sortino_ratio(returns: npt.ArrayLike, periods: float) -> float:
    """Annualised Sortino ratio: ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods)``.

    The downside deviation is taken around 0 (the target return) over all bars, so that
    bars without losses count as zero downside rather than being dropped. No downside at
    all gives 0.0 (undefined, see the module docstring).
    """
    r = _finite_1d(returns)
    if r.size == 0:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside <= ZERO_VOL:
        return 0.0
    return float(np.mean(r)) / downside * math.sqrt(periods)


def annualised_return(final_equity: float, bars: int, periods: float) -> float:
    """Geometric annual return ``final_equity ** (periods / bars) - 1`` (initial equity 1).

    Geometric, because compounding is what an account experiences. Beware: a short
    validation window with many bars per year extrapolates enormously (float inf beyond
    about 1e308).
    """
    if bars <= 0:
        return 0.0
    if final_equity <= 0:
        return -1.0
    exponent = periods / bars * math.log(final_equity)
    return math.expm1(exponent) if exponent < 709.0 else math.inf


def _longest_run(mask: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """(start, length) of the first longest run of True in ``mask``; (0, 0) if none."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    lengths = np.flatnonzero(edges == -1) - starts
    if lengths.size == 0:
        return 0, 0
    k = int(np.argmax(lengths))
    return int(starts[k]), int(lengths[k])


def _underwater(equity: FloatArray) -> tuple[float, int, int]:
    """(depth <= 0, first point, length) of the deepest fall and of the longest underwater run."""
    dd = drawdown(equity)
    depth = min(float(np.min(dd)), 0.0)
    start, length = _longest_run(dd < 0.0)
    return depth, start, length


def max_drawdown(equity: npt.ArrayLike) -> tuple[float, int]:
    """(depth, duration_bars) of an equity curve; pass the curve with its initial value.

    depth = ``min(equity / running_peak - 1)``, a fraction <= 0 (-0.25 is a 25% fall).
    duration_bars = the longest stretch of consecutive points strictly below an earlier
    peak, counted in bars (an unrecovered stretch at the end counts up to the last bar).
    The two may come from different drawdowns: the deepest is not always the longest.
    """
    e = _finite_1d(equity, "equity")
    if e.size == 0:
        return 0.0, 0
    depth, _, length = _underwater(e)
    return depth, length


# ----------------------------------------------------------------------------- significance


def _skew_kurtosis(r: FloatArray) -> tuple[float, float]:
    """Population skewness and (non-excess) kurtosis; a normal law gives (0, 3).

    Degenerate samples (fewer than two points, zero variance) return the normal values,
    which leaves the PSR variance term at its Gaussian form.
    """
    if r.size < 2:
        return 0.0, 3.0
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    if m2 <= ZERO_VOL**2:
        return 0.0, 3.0
    return float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2


def _psr_from_moments(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurt: float
) -> float:
    """PSR from per-bar moments: Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2))."""
    if n_obs < 2:
        return 0.0
    variance = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    numerator = (sr - sr_benchmark) * math.sqrt(n_obs - 1)
    if variance <= 0.0:  # only for two-point laws (Pearson: kurt >= skew^2 + 1)
        return 1.0 if numerator > 0 else 0.0
    return _NORMAL.cdf(numerator / math.sqrt(variance))


def probabilistic_sharpe_ratio(returns: npt.ArrayLike, sr_benchmark: float = 0.0) -> float:
    """Probability that the true Sharpe exceeds ``sr_benchmark`` (Bailey & López de Prado 2012).

    ``PSR = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))`` with
    SR the NON-annualised per-bar Sharpe (mean / std, ddof=1), SR* in the same per-bar
    units, n the number of returns, g3 the skewness and g4 the (non-excess) kurtosis of
    the per-bar returns. Fat tails and negative skew widen the Sharpe's error, which a
    plain t-test ignores. Zero volatility or fewer than two returns give 0.0.
    """
    r = _finite_1d(returns)
    sr = sharpe_ratio(r, 1.0)
    if sr == 0.0 and (r.size < 2 or float(np.std(r, ddof=1)) <= ZERO_VOL):
        return 0.0
    skew, kurt = _skew_kurtosis(r)
    return _psr_from_moments(sr, sr_benchmark, r.size, skew, kurt)


def expected_max_sharpe(n_trials: int, var_trials: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios whose true value is 0.

    ``sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))``, gamma the
    Euler-Mascheroni constant (Bailey & López de Prado 2014): the Sharpe that the best of
    N skill-less trials reaches by luck alone. One trial has no selection bias: 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if var_trials < 0:
        raise ValueError(f"var_trials must be >= 0, got {var_trials}")
    if n_trials == 1:
        return 0.0
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(var_trials) * ((1.0 - _EULER_GAMMA) * z1 + _EULER_GAMMA * z2)


def deflated_sharpe_ratio(
    sr: float, n_trials: int, var_trials: float, n_obs: int, skew: float, kurt: float
) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014): PSR against the luck benchmark.

    A sweep that tries N configurations and keeps the best inflates its Sharpe; DSR is
    the PSR of ``sr`` against ``expected_max_sharpe(n_trials, var_trials)``. All Sharpe
    figures are per bar (divide an annualised Sharpe by sqrt(periods)); ``var_trials`` is
    the variance of the per-bar Sharpe across the trials; ``skew`` and ``kurt``
    (non-excess) describe the chosen strategy's per-bar returns over ``n_obs`` bars.
    """
    sr0 = expected_max_sharpe(n_trials, var_trials)
    return _psr_from_moments(sr, sr0, n_obs, skew, kurt)


def sharpe_rows(samples: FloatArray, periods: float) -> FloatArray:
    """Row-wise annualised Sharpe with the same zero-volatility rule as `sharpe_ratio`."""
    std = samples.std(axis=1, ddof=1)
    safe = np.where(std > ZERO_VOL, std, 1.0)
    return np.where(std > ZERO_VOL, samples.mean(axis=1) / safe * math.sqrt(periods), 0.0)


def bootstrap_sharpe_ci(
    returns: npt.ArrayLike, periods: float, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the annualised Sharpe.

    Resamples per-bar returns i.i.d. with replacement ``n`` times (numpy Generator seeded
    with ``seed``, so the interval is reproducible). I.i.d. resampling ignores
    autocorrelation; read the interval as a lower bound on the uncertainty. Cost is
    O(n * bars); work is chunked to keep memory near 32 MB. With fewer than two returns
    or ``n < 1`` the interval collapses to the point Sharpe.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r = _finite_1d(returns)
    if r.size < 2 or n < 1:
        point = sharpe_ratio(r, periods)
        return point, point
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // r.size)
    draws = [
        sharpe_rows(r[rng.integers(0, r.size, size=(min(chunk, n - start), r.size))], periods)
        for start in range(0, n, chunk)
    ]
    lo, hi = np.quantile(np.concatenate(draws), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- trades


def _trade_runs(position: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first row, last row) of each maximal run of non-zero position with constant sign."""
    sign = np.sign(position)
    change = np.flatnonzero(np.diff(sign) != 0) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change - 1, [position.size - 1]))
    keep = sign[starts] != 0
    return starts[keep], ends[keep]


def _flip_entry_part(fee: FloatArray, turnover: FloatArray, target: FloatArray) -> FloatArray:
    """Part of a flip bar's fee (fraction of equity before it) that opened the new position.

    A flip from exposure ``q`` to ``p`` sells ``|q|`` and opens ``|p|`` of the equity left
    after the fee (hmarl/market/env.py, "The fee"): ``turnover = |q| + |p| (1 - fee)`` and the
    fee is linear in it, so the opening part is ``fee * |p| (1 - fee) / turnover`` and the rest,
    ``cost_rate * |q|``, closed the previous trade. A flip into or out of flat is not a flip:
    callers give the whole fee to the one trade.
    """
    opened = np.abs(target) * (1.0 - fee)
    share = np.divide(opened, turnover, out=np.ones_like(fee), where=turnover > 0)
    return fee * np.minimum(share, 1.0)


def _trade_returns(s: Steps) -> tuple[FloatArray, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Net round-trip return of each trade, with its first and last rows.

    Return = equity after the run's last row / equity just after the part of the entry bar's
    fee that closed the previous trade (all of the entry fee belongs to the trade unless the bar
    flips), with the exit fee (paid on the bar after the run) included: all of it on a close to
    flat, only the closing part on a flip. Split this way, a flip's two trades have exactly the
    returns of a close followed by a fresh entry at the same prices (tested in test_metrics.py).
    A trade still open at the last row has paid no exit fee yet.
    """
    starts, ends = _trade_runs(s.position)
    curve = equity_points(s.equity)
    n = s.position.size
    prev = np.where(starts > 0, s.position[np.maximum(starts - 1, 0)], 0.0)
    entry_flip = prev != 0.0
    opened = _flip_entry_part(s.fee[starts], s.turnover[starts], s.position[starts])
    closed_before = np.where(entry_flip, s.fee[starts] - opened, 0.0)
    growth = curve[ends + 1] / (curve[starts] * (1.0 - closed_before))
    closed = ends + 1 < n
    nxt = np.minimum(ends + 1, n - 1)
    exit_flip = s.position[nxt] != 0.0
    reopened = _flip_entry_part(s.fee[nxt], s.turnover[nxt], s.position[nxt])
    exit_fee = np.where(exit_flip, s.fee[nxt] - reopened, s.fee[nxt])
    growth = growth * (1.0 - np.where(closed, exit_fee, 0.0))
    return growth - 1.0, starts, ends


def trades(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per trade (a maximal run of non-zero position of one sign).

    Columns: ``entry`` and ``exit`` (timestamps of the run's first and last decision
    bars), ``side`` (+1 long, -1 short), ``bars`` (rows held), ``return`` (net round-trip
    return as a fraction, fees attributed as described in `compute_stats`), ``open``
    (True if still held at the last row).
    """
    s = check_steps(steps, need_prices=False)
    returns, starts, ends = _trade_returns(s)
    return pd.DataFrame(
        {
            "entry": s.times[starts],
            "exit": s.times[ends],
            "side": np.sign(s.position[starts]).astype(np.int64),
            "bars": (ends - starts + 1).astype(np.int64),
            "return": returns,
            "open": ends == s.position.size - 1,
        }
    )


# ----------------------------------------------------------------------------- stats sections


def _period_stats(s: Steps, periods: float) -> Stats:
    """Where and how long: timestamps as ISO strings so the dict stays JSON/CSV friendly."""
    span = (s.times[-1] - s.times[0]).total_seconds() / SECONDS_PER_DAY
    return {
        "Start": s.times[0].isoformat(),
        "End": s.times[-1].isoformat(),
        "Duration [days]": float(span),
        "Bars": int(s.equity.size),
        "Periods per Year": float(periods),
    }


def _return_stats(r: FloatArray, final_equity: float, periods: float) -> Stats:
    """Return, risk and risk-adjusted return of the per-bar strategy returns."""
    vol = float(np.std(r, ddof=1)) if r.size > 1 else 0.0
    skew, kurt = _skew_kurtosis(r)
    return {
        "Equity Final [x]": final_equity,
        "Return [%]": (final_equity - 1.0) * 100.0,
        "Return (Ann.) [%]": annualised_return(final_equity, r.size, periods) * 100.0,
        "Volatility (Ann.) [%]": (vol if vol > ZERO_VOL else 0.0) * math.sqrt(periods) * 100.0,
        "Sharpe Ratio": sharpe_ratio(r, periods),
        "Sortino Ratio": sortino_ratio(r, periods),
        "Skew": skew,
        "Kurtosis": kurt,
    }


def _drawdown_stats(s: Steps, periods: float) -> Stats:
    """Max drawdown depth and the longest underwater stretch, in bars and calendar days.

    Equity point k sits at time index[k] (the close of bar t_{k-1} + 1 is the next
    decision bar); the final point one median spacing after the last decision bar.
    """
    curve = equity_points(s.equity)
    depth, start, length = _underwater(curve)
    spacing = np.diff(s.times.asi8).astype(np.float64)
    last = s.times.asi8[-1] + (float(np.median(spacing)) if spacing.size else 0.0)
    times = np.concatenate((s.times.asi8.astype(np.float64), [last])) * _unit_scale(s.times)
    days = (times[start + length - 1] - times[start - 1]) / 1e9 / SECONDS_PER_DAY if length else 0.0
    annual = annualised_return(float(curve[-1]), s.equity.size, periods)
    return {
        "Max. Drawdown [%]": depth * 100.0,
        "Max. Drawdown Duration [bars]": length,
        "Max. Drawdown Duration [days]": float(days),
        "Calmar Ratio": annual / abs(depth) if depth < 0.0 else 0.0,
    }


def _trade_stats(s: Steps) -> Stats:
    """Round-trip trade counts and outcomes (no trades: zeros, see module docstring)."""
    returns, starts, ends = _trade_returns(s)
    n = int(returns.size)
    if n == 0:
        zero = {"Win Rate [%]": 0.0, "Best Trade [%]": 0.0, "Worst Trade [%]": 0.0}
        return {"# Trades": 0, **zero, "Avg. Trade [%]": 0.0, "Avg. Trade Duration [bars]": 0.0}
    return {
        "# Trades": n,
        "Win Rate [%]": float(np.mean(returns > 0.0)) * 100.0,
        "Best Trade [%]": float(returns.max()) * 100.0,
        "Worst Trade [%]": float(returns.min()) * 100.0,
        "Avg. Trade [%]": float(returns.mean()) * 100.0,
        "Avg. Trade Duration [bars]": float(np.mean(ends - starts + 1)),
    }


def _activity_stats(s: Steps, periods: float) -> Stats:
    """Exposure, turnover, fees and the action / probability mix of the policy.

    Fees Paid is compounding-aware: each fee (a fraction of equity at t) is multiplied by
    the equity before that trade, then summed, as a percentage of the initial equity.
    """
    before = equity_points(s.equity)[:-1]
    out: Stats = {
        "Exposure Time [%]": float(np.mean(s.position != 0.0)) * 100.0,
        "Long Exposure Time [%]": float(np.mean(s.position > 0.0)) * 100.0,
        "Short Exposure Time [%]": float(np.mean(s.position < 0.0)) * 100.0,
        "Turnover [x]": float(s.turnover.sum()),
        "Turnover (Ann.) [x]": float(s.turnover.mean()) * periods,
        "Fees Paid [%]": float(np.sum(s.fee * before)) * 100.0,
    }
    for code, name in enumerate(ACTIONS):
        out[f"Action {name} [%]"] = float(np.mean(s.action == code)) * 100.0
    for code, column in enumerate(PROB_COLUMNS):
        if column in s.probs:
            out[f"Mean P({ACTIONS[code]})"] = float(s.probs[column].mean())
    for name, weights in s.gates.items():  # specialists: who decides, and what each wants
        out[f"{GATE_PREFIX}{name}"] = float(weights.mean())
        for code, action in enumerate(ACTIONS):
            own = s.own.get(own_prob_column(name, code))
            if own is not None:
                out[f"Mean P({action}) of {name}"] = float(own.mean())
    out.update(_trade_shares(s))
    return out


def _trade_shares(s: Steps) -> Stats:
    """Each specialist's share of the mixture's trading probability, sum_t g_k (P_k(BUY) +
    P_k(SELL)) over the same sum for all k.

    Why beside the mean gate: a mixture can give a large weight to a specialist whose own
    policy always HOLDs (a brake on trading) while another one makes every BUY and SELL; the
    gate weight then understates who decides the trades, this share does not.
    """
    buy, sell = ACTIONS.index("BUY"), ACTIONS.index("SELL")
    intent: dict[str, float] = {}
    for name, weights in s.gates.items():
        p_buy = s.own.get(own_prob_column(name, buy))
        p_sell = s.own.get(own_prob_column(name, sell))
        if p_buy is not None and p_sell is not None:
            intent[name] = float(np.sum(weights * (p_buy + p_sell)))
    total = sum(intent.values())
    return {f"{TRADE_SHARE_PREFIX}{k}": v / total if total > 0 else 0.0 for k, v in intent.items()}


def _benchmark_stats(s: Steps, r: FloatArray) -> Stats:
    """The strategy's Beta to the price: cov(r, r_price) / var(r_price), r_price = next / price - 1.

    Only a regression coefficient: the report's buy & hold figures are the ``buy_and_hold``
    baseline's (:mod:`hmarl.stats.baselines`), settled with the strategy's costs, so there is one
    buy & hold definition, not a second one before fees.
    """
    if s.price is None or s.next_price is None:
        raise ValueError("Beta needs the price and next_price columns")
    rb = s.next_price / s.price - 1.0
    var_b = float(np.var(rb, ddof=1)) if rb.size > 1 else 0.0
    cov = float(np.cov(r, rb, ddof=1)[0, 1]) if rb.size > 1 else 0.0
    return {"Beta": cov / var_b if var_b > ZERO_VOL**2 else 0.0}


def _significance_stats(r: FloatArray, periods: float, n_bootstrap: int, seed: int) -> Stats:
    """PSR against a zero Sharpe, and a bootstrap interval unless ``n_bootstrap`` is 0."""
    out: Stats = {"Probabilistic Sharpe Ratio": probabilistic_sharpe_ratio(r, 0.0)}
    if n_bootstrap > 0:
        lo, hi = bootstrap_sharpe_ci(r, periods, n_bootstrap, seed, alpha=0.05)
        out["Sharpe 95% CI Low"] = lo
        out["Sharpe 95% CI High"] = hi
    return out


def compute_stats(
    steps: pd.DataFrame,
    *,
    calendar: Calendar = CRYPTO,
    periods: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    benchmark: bool = True,
) -> Stats:
    """Every statistic of a run, keyed with units like backtesting.py (``Return [%]``).

    ``steps``: one row per decision bar t, DatetimeIndex (UTC) strictly increasing, with
    columns ``action`` (0 HOLD, 1 BUY, 2 SELL), ``position`` (in [-1, 1], held over
    t -> t+1), ``turnover`` and ``fee`` (fractions of equity at t), ``equity`` (at the
    close of t+1; 1.0 before the first row), ``price``/``next_price`` (closes of t and t+1;
    needed only when ``benchmark``), optional ``p_hold``/``p_buy``/``p_sell``.
    ``periods``: bars per year; by default `periods_per_year(steps.index, calendar)`,
    which needs at least two rows. ``n_bootstrap=0`` skips the (O(n * bars)) Sharpe CI,
    useful for frequent validation.

    Definitions (r = per-bar strategy returns equity[i] / equity[i-1] - 1, P = periods):
    - Sharpe = mean(r) / std(r, ddof=1) * sqrt(P), rf = 0; Sortino = mean(r) /
      sqrt(mean(min(r, 0)^2)) * sqrt(P); Volatility (Ann.) = std(r, ddof=1) * sqrt(P).
    - Return (Ann.) = final_equity ** (P / bars) - 1 (geometric); Calmar = Return (Ann.)
      / |Max. Drawdown|.
    - Max. Drawdown on the equity curve including the initial 1.0 (negative, in %);
      its duration = the longest stretch of bars strictly below an earlier peak, in bars
      and in calendar days between the peak and the last underwater point.
    - A trade is a maximal run of non-zero position with one sign (a flip closes one
      and opens another); its return compounds equity over the run, net of its entry
      fee and of its exit fee (paid on the next bar; a flip's fee is split into the part
      that sold the old position, c |q|, and the rest, so the two trades' returns equal
      a close followed by a fresh entry at the same prices); Win Rate counts closed and open
      trades; Avg. Trade is the arithmetic mean of trade returns.
    - Turnover [x] = sum of turnover (1.0 = one equity's worth traded); Turnover (Ann.)
      = mean turnover per bar * P. Fees Paid = sum(fee_t * equity before t), % of 1.0.
    - Exposure Time = % of bars with a non-zero position; Action X = % of bars choosing
      X; Mean P(X) = average probability (only if the column exists).
    - Probabilistic Sharpe Ratio: `probabilistic_sharpe_ratio` of r against SR* = 0;
      Skew / Kurtosis (non-excess) of r feed `deflated_sharpe_ratio` across a sweep.
    - Sharpe 95% CI Low/High: `bootstrap_sharpe_ci` with ``n_bootstrap`` and ``seed``.
    - Long / Short Exposure Time = % of bars with a position > 0 / < 0.
    - Beta (if ``benchmark``): cov(r, r_price) / var(r_price) with r_price = next_price /
      price - 1 over the same bars. Buy & hold itself is a baseline column (one
      definition, after the same costs), see :mod:`hmarl.stats.baselines`.
    Undefined ratios are 0.0, never NaN (see the module docstring).
    """
    s = check_steps(steps, need_prices=benchmark)
    if periods is None:
        periods = periods_per_year(s.times, calendar)
    if not (math.isfinite(periods) and periods > 0):
        raise ValueError(f"periods (bars per year) must be a positive number, got {periods}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    r = s.equity / equity_points(s.equity)[:-1] - 1.0
    stats: Stats = {}
    stats.update(_period_stats(s, periods))
    stats.update(_return_stats(r, float(s.equity[-1]), periods))
    stats.update(_drawdown_stats(s, periods))
    stats.update(_trade_stats(s))
    stats.update(_activity_stats(s, periods))
    if benchmark:
        stats.update(_benchmark_stats(s, r))
    stats.update(_significance_stats(r, periods, n_bootstrap, seed))
    return stats


# ----------------------------------------------------------------------------- definitions

_NET = "after costs (commission + slippage on traded notional)"
# Every figure a report shows, defined once: its unit and how costs enter. stats.json
# carries the entries of the keys it reports (tests check that none is missing).
STAT_DEFINITIONS: dict[str, str] = {
    "Start": "first decision bar (UTC ISO time)",
    "End": "last decision bar (UTC ISO time)",
    "Duration [days]": "calendar days from the first to the last decision bar",
    "Bars": "decision bars (count)",
    "Periods per Year": "bars per year P from the median bar spacing and the calendar",
    "Equity Final [x]": f"equity after the last bar, x the initial 1.0, {_NET}",
    "Return [%]": f"(Equity Final - 1) * 100, {_NET}",
    "Return (Ann.) [%]": f"(Equity Final ** (P / bars) - 1) * 100, geometric, {_NET}",
    "Volatility (Ann.) [%]": f"std(r, ddof 1) * sqrt(P) * 100, r per-bar equity returns {_NET}",
    "Sharpe Ratio": f"mean(r) / std(r, ddof 1) * sqrt(P), rf 0, {_NET}; 0 if std is 0",
    "Sortino Ratio": f"mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(P), {_NET}; 0 if no downside",
    "Skew": f"population skewness of r ({_NET}); 0 when r has no variance (undefined)",
    "Kurtosis": f"non-excess kurtosis of r ({_NET}); 3 when r has no variance (undefined)",
    "Max. Drawdown [%]": f"min(equity / running peak - 1) * 100 incl. the initial 1.0, {_NET}",
    "Max. Drawdown Duration [bars]": "longest run of bars strictly below an earlier peak",
    "Max. Drawdown Duration [days]": "that run in calendar days, from the peak",
    "Calmar Ratio": "Return (Ann.) / |Max. Drawdown| (fractions); 0 without a drawdown",
    "# Trades": "runs of non-zero position of one sign (a flip ends one, starts one)",
    "Win Rate [%]": f"share of trades (closed and open) with a return > 0, {_NET}",
    "Best Trade [%]": f"highest trade return, entry and exit fees included, {_NET}",
    "Worst Trade [%]": f"lowest trade return, entry and exit fees included, {_NET}",
    "Avg. Trade [%]": f"arithmetic mean of trade returns, {_NET}",
    "Avg. Trade Duration [bars]": "mean bars held per trade",
    "Exposure Time [%]": "share of bars with a non-zero position",
    "Long Exposure Time [%]": "share of bars with a position > 0",
    "Short Exposure Time [%]": "share of bars with a position < 0",
    "Turnover [x]": "sum of |traded notional| / equity (1 = one equity's worth), before costs",
    "Turnover (Ann.) [x]": "mean turnover per bar * P",
    "Fees Paid [%]": "sum of each bar's cost x the equity before it, % of the initial equity",
    "Action HOLD [%]": "share of bars choosing HOLD",
    "Action BUY [%]": "share of bars choosing BUY",
    "Action SELL [%]": "share of bars choosing SELL",
    "Mean P(HOLD)": "mean probability of HOLD (policy runs only)",
    "Mean P(BUY)": "mean probability of BUY (policy runs only)",
    "Mean P(SELL)": "mean probability of SELL (policy runs only)",
    "Beta": f"cov(r, r_price) / var(r_price), r_price = next close / close - 1; r {_NET}",
    "Probabilistic Sharpe Ratio": f"P(true per-bar Sharpe > 0) (Bailey & Lopez de Prado), {_NET}",
    "Sharpe 95% CI Low": f"2.5% quantile of the i.i.d. bootstrap Sharpe, {_NET}",
    "Sharpe 95% CI High": f"97.5% quantile of the i.i.d. bootstrap Sharpe, {_NET}",
    "Random-Timing Policies": "N random-timing policies (the strategy's trades at random times)",
    "Random-Timing Median Return [%]": f"median Return [%] of the random-timing policies, {_NET}",
    "Random-Timing Return p05 [%]": f"5% quantile of their Return [%], {_NET}",
    "Random-Timing Return p95 [%]": f"95% quantile of their Return [%], {_NET}",
    "Random-Timing Median Sharpe": f"median Sharpe Ratio of the random-timing policies, {_NET}",
    "Random-Timing Percentile [%]": "share of them whose return the strategy beats, ties half",
    "Random-Timing p-value": "(1 + #random-timing returns >= the strategy's) / (N + 1)",
}


def stat_definition(key: str) -> str | None:
    """The definition of one figure: STAT_DEFINITIONS', or, for the keys named after a
    specialist (``Mean Gate <name>``, ``Mean P(<action>) of <name>``), the pattern's; None for
    a key nothing defines."""
    if key in STAT_DEFINITIONS:
        return STAT_DEFINITIONS[key]
    if key.startswith(GATE_PREFIX):
        name = key.removeprefix(GATE_PREFIX)
        return (
            f"mean gate weight g_{name} over the decision bars: the share of the mixture "
            f"pi = sum_k g_k pi_k given to specialist {name} (the gates sum to 1 on each bar)"
        )
    if key.startswith(TRADE_SHARE_PREFIX):
        name = key.removeprefix(TRADE_SHARE_PREFIX)
        return (
            f"specialist {name}'s share of the mixture's trading probability: sum_t g_{name} "
            f"(P_{name}(BUY) + P_{name}(SELL)) / the same summed over all specialists (0 to 1)"
        )
    for action in ACTIONS:
        head = f"Mean P({action}) of "
        if key.startswith(head):
            name = key.removeprefix(head)
            return (
                f"mean probability specialist {name}'s own policy pi_{name} gives {action} "
                "(what it would do alone; the mixture weighs it by its gate)"
            )
    return None


# ----------------------------------------------------------------------------- what happened

SAME_AS_BUY_AND_HOLD_LONG_PCT = 95.0  # long on at least this % of bars: buy & hold in effect
FLAGS = ("no_trades", "few_trades", "same_as_buy_and_hold", "no_edge_found_in_training")


def outcome_flags(stats: Mapping[str, Any], min_trades: int) -> list[str]:
    """Flags that say when a run's figures cannot show skill, from its `compute_stats` dict.

    - ``no_trades``: ``# Trades`` is 0 (the policy stayed flat: nothing was learned that
      pays these costs);
    - ``few_trades``: 0 < ``# Trades`` < ``min_trades`` (a ratio resting on a handful of
      trades is luck until shown otherwise);
    - ``same_as_buy_and_hold``: long on >= 95% of bars (``Long Exposure Time [%]``): the
      result is the market's, not the policy's timing.
    Why flags and not silence: a flat policy has Sharpe 0 and a buy-once policy the market's
    Sharpe, and both read like normal results in a table.
    """
    n = int(stats["# Trades"])
    flags = []
    if n == 0:
        flags.append("no_trades")
    elif n < min_trades:
        flags.append("few_trades")
    if float(stats.get("Long Exposure Time [%]", 0.0)) >= SAME_AS_BUY_AND_HOLD_LONG_PCT:
        flags.append("same_as_buy_and_hold")
    return flags


def flag_sentences(stats: Mapping[str, Any], flags: Sequence[str], where: str) -> list[str]:
    """One plain sentence per flag, ``where`` naming the bars (e.g. "validation", "test")."""
    n = int(stats["# Trades"])
    said = {
        "no_trades": f"no trade on {where}: no edge found at these costs",
        "few_trades": f"selection rests on {n} trade{'s' if n != 1 else ''} ({where})",
        "same_as_buy_and_hold": (
            f"long on {float(stats['Long Exposure Time [%]']):.1f}% of {where} bars: "
            "indistinguishable from buy & hold"
        ),
        # set by the backtest from the checkpoint (its training run's selection), not by stats
        "no_edge_found_in_training": (
            "the training run found no edge on validation: its advice is to stay flat rather "
            "than trade this policy"
        ),
    }
    return [said[f] for f in flags]


def null_percentile(null: npt.ArrayLike, observed: float, rel: float = 1e-9) -> tuple[float, float]:
    """(percentile in %, permutation p-value) of ``observed`` among the ``null`` outcomes.

    Percentile = 100 * (#below + #tied / 2) / N (mid-rank: a strategy identical to every
    null outcome sits at 50%). p-value = (1 + #at-least-as-good) / (N + 1), the permutation
    test's "how often does the null do this well", never 0. Values within ``rel`` (relative)
    of ``observed`` count as tied: equal paths settled in another batch differ by rounding.
    """
    v = _finite_1d(null, "null outcomes")
    if v.size == 0:
        raise ValueError("no null outcomes to rank against")
    tol = rel * max(1.0, abs(observed))
    below = int(np.sum(v < observed - tol))
    tied = int(np.sum(np.abs(v - observed) <= tol))
    percentile = 100.0 * (below + 0.5 * tied) / v.size
    p_value = (1.0 + (v.size - below)) / (v.size + 1.0)
    return percentile, p_value


# ----------------------------------------------------------------------------- reporting


def short_key(key: str) -> str:
    """Machine-friendly name of a stats key, safe for MLflow (``[a-z0-9_]`` only).

    Lowercase; ``%`` -> ``pct``; ``#`` -> ``n``; ``|x|`` -> ``abs_x``; brackets, dots, ``&``
    and spaces -> single underscores; a trailing ``_ratio`` is dropped. Examples: "Sharpe
    Ratio" -> "sharpe", "Return [%]" -> "return_pct", "Max. Drawdown [%]" ->
    "max_drawdown_pct", "# Trades" -> "n_trades", "Mean P(HOLD)" -> "mean_p_hold",
    "Inventory |mean| [lots]" -> "inventory_abs_mean_lots" (not "inventory_mean_lots", the
    name of "Inventory mean [lots]").
    """
    name = re.sub(r"\|([^|]+)\|", r"abs_\1", key.lower())
    name = name.replace("%", "pct").replace("#", "n")
    name = re.sub(r"[^a-z0-9]+", "_", name).strip("_")
    return name.removesuffix("_ratio")


def metric_keys(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric entries under `short_key` names, e.g. ``{"val/sharpe": 1.3}`` with prefix "val/".

    Strings (Start, End) and booleans are left out: MLflow metrics are numbers. Two keys
    mapping to one name would silently overwrite a metric, so that raises.
    """
    out: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            continue
        name = prefix + short_key(key)
        if name in out:
            raise ValueError(f"stats keys collide on metric name {name!r} (from {key!r})")
        out[name] = float(value)
    return out


def stats_table(stats_by_name: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Strategy and baselines side by side: rows = stats keys, columns = run names.

    Row order is the order of first appearance across runs, so the table reads like one
    `compute_stats` dict; a key missing from a run (say no probability columns) is NaN.
    """
    keys: dict[str, None] = {}
    for stats in stats_by_name.values():
        keys.update(dict.fromkeys(stats))
    columns = {
        name: pd.Series([stats.get(k, np.nan) for k in keys], index=list(keys), dtype=object)
        for name, stats in stats_by_name.items()
    }
    return pd.DataFrame(columns, index=list(keys), dtype=object)
