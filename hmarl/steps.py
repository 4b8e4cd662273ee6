"""The steps table: one row per decision bar, the contract between everything that reports.

Rollouts (validation, backtests), baselines, random-timing policies, metrics, plots, the HTML
report and the backtest's ``steps.csv`` all read or write this one table, so its action
codes, column names, construction and validation live here and nowhere else: readers use
these names (``steps[EQUITY]``, ``action == HOLD``), never a string literal or a bare code.
This module needs numpy and pandas only, so a rule-based baseline can build a table without
importing the policy, the rollout or torch.

Schema (index ``time``: the decision bar t, a strictly increasing UTC DatetimeIndex):

- ``price``, ``next_price``: closes of bars t and t+1 (the fill price and the next mark);
- ``action``: 0 HOLD, 1 BUY, 2 SELL (SPEC's codes, :data:`ACTIONS` names them);
- ``p_hold``, ``p_buy``, ``p_sell``: the action probabilities (policy runs only);
- ``position``: the exposure in [-1, 1] chosen at t and held over t -> t+1;
- ``turnover``, ``fee``: notional traded and cost paid at t, fractions of equity at t;
- ``equity``: equity at the close of t+1 (1.0 before the first row), net of costs;
- ``reward``: log equity growth over t -> t+1 (what the trainer maximises).

Optional, specialists with a gate only (hmarl/agent/specialists.py): ``g_<name>``, the gate
weight of each specialist (they sum to 1 per row), and ``<name>_p_hold`` / ``_p_buy`` /
``_p_sell``, that specialist's own action probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

# ----------------------------------------------------------------------------- actions

HOLD, BUY, SELL = 0, 1, 2
ACTIONS = ("HOLD", "BUY", "SELL")  # ACTIONS[code] is the action's name

# ----------------------------------------------------------------------------- columns

TIME = "time"  # the index: decision bar t
PRICE = "price"
NEXT_PRICE = "next_price"
ACTION = "action"
P_HOLD, P_BUY, P_SELL = "p_hold", "p_buy", "p_sell"
POSITION = "position"
TURNOVER = "turnover"
FEE = "fee"
EQUITY = "equity"
REWARD = "reward"

PROB_COLUMNS = (P_HOLD, P_BUY, P_SELL)  # PROB_COLUMNS[code]: probability of that action
REQUIRED_COLUMNS = (ACTION, POSITION, TURNOVER, FEE, EQUITY)  # what compute_stats needs
PRICE_COLUMNS = (PRICE, NEXT_PRICE)  # needed for the benchmark (Beta) only
SETTLEMENT_COLUMNS = (TURNOVER, FEE, EQUITY, REWARD)  # from hmarl.market.env.settle, in table order


def prob_column(code: int) -> str:
    """The probability column of an action code (``p_hold`` for HOLD)."""
    return PROB_COLUMNS[code]


GATE_PREFIX = "g_"


def gate_column(name: str) -> str:
    """The gate-weight column of a specialist (``g_tape``)."""
    return GATE_PREFIX + name


def own_prob_column(name: str, code: int) -> str:
    """A specialist's own probability of an action (``tape_p_buy``)."""
    return f"{name}_{PROB_COLUMNS[code]}"


def gate_names(steps: pd.DataFrame) -> list[str]:
    """The specialists whose gate weights the table carries, in column order."""
    return [str(c)[len(GATE_PREFIX) :] for c in steps.columns if str(c).startswith(GATE_PREFIX)]


# ----------------------------------------------------------------------------- construction


def steps_table(
    index: pd.DatetimeIndex,
    close: FloatArray,
    rows: npt.NDArray[np.int64],
    actions: npt.ArrayLike,
    positions: npt.ArrayLike,
    settled: Mapping[str, npt.ArrayLike],
    probs: FloatArray | None = None,
    extra: Mapping[str, npt.ArrayLike] | None = None,
) -> pd.DataFrame:
    """The table of decisions at candle rows ``rows`` of a market (``index``, ``close``).

    ``settled`` maps each of :data:`SETTLEMENT_COLUMNS` to its per-row values (what
    :func:`hmarl.market.env.settle` computed for these positions); ``probs`` is ``[rows, 3]`` in
    action-code order, or None for rule-based runs (no probability columns then);
    ``extra`` holds the optional gate and specialist columns (appended last).
    """
    columns: dict[str, np.ndarray] = {
        PRICE: close[rows],
        NEXT_PRICE: close[rows + 1],
        ACTION: np.asarray(actions),
    }
    if probs is not None:
        columns.update({name: probs[:, code] for code, name in enumerate(PROB_COLUMNS)})
    columns[POSITION] = np.asarray(positions, dtype=np.float64)
    for name in SETTLEMENT_COLUMNS:
        columns[name] = np.asarray(settled[name], dtype=np.float64)
    for name, values in (extra or {}).items():
        columns[name] = np.asarray(values, dtype=np.float64)
    frame = pd.DataFrame(columns, index=index[rows])
    frame.index.name = TIME
    return frame


# ----------------------------------------------------------------------------- validation


class Steps(NamedTuple):
    """Validated columns of a steps table as float64 arrays (prices None without benchmark)."""

    times: pd.DatetimeIndex
    action: npt.NDArray[np.int64]
    position: FloatArray
    turnover: FloatArray
    fee: FloatArray
    equity: FloatArray
    price: FloatArray | None
    next_price: FloatArray | None
    probs: dict[str, FloatArray]
    gates: dict[str, FloatArray]  # specialist name -> gate weight per row (gated policies only)
    own: dict[str, FloatArray]  # own_prob_column(name, code) -> that specialist's probability


def _column(steps: pd.DataFrame, name: str, allow_inf: bool = False) -> FloatArray:
    """Column as finite float64 (``allow_inf``: +inf too), naming the first bad row and its
    timestamp."""
    try:
        values = steps[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError(f"steps column {name!r} is not numeric: {err}") from err
    finite = np.isfinite(values) | (allow_inf & (values == np.inf))
    if not finite.all():
        _fail(steps, name, values, ~finite, "is not finite")
    return values


def _fail(
    steps: pd.DataFrame, name: str, values: FloatArray, bad: npt.NDArray[np.bool_], what: str
) -> None:
    """Raise ValueError naming the first offending row (position and timestamp)."""
    row = int(np.flatnonzero(bad)[0])
    raise ValueError(
        f"steps column {name!r}, row {row} ({steps.index[row]}): value {values[row]!r} {what}"
    )


def _check_index(steps: pd.DataFrame) -> pd.DatetimeIndex:
    """The index must be a strictly increasing DatetimeIndex: stats are time-ordered."""
    index = steps.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(
            f"steps index must be a DatetimeIndex (decision bar times), got {type(index).__name__}"
        )
    if len(index) > 1:
        steps_ns = np.diff(index.asi8)
        if (steps_ns <= 0).any():
            row = int(np.flatnonzero(steps_ns <= 0)[0]) + 1
            raise ValueError(
                f"steps index must be strictly increasing: row {row} ({index[row]}) "
                f"does not come after row {row - 1} ({index[row - 1]})"
            )
    return index


EQUITY_RANGE = (1e-300, 1e300)
"""The equity the statistics carry: a record that leaves it is clipped (see :func:`clip_equity`)."""


def clip_equity(equity: FloatArray, steps: pd.DataFrame | None = None) -> FloatArray:
    """Equity clipped to :data:`EQUITY_RANGE`, with a warning naming the first row outside it.

    Why: equity is ``exp`` of the summed log growth, which leaves float64's range on very long
    records: a losing policy's fees over a million bars underflow it to 0 (ruin), a strong
    edge over ten million bars overflows it to inf. Clipped, the ruin bar's return is -100%
    (or the overflow bar's gain stops at the ceiling), the later returns read as 0 and every
    statistic stays finite; the warning says from which row the figures stop meaning anything.
    """
    lo, hi = EQUITY_RANGE
    out = (equity < lo) | (equity > hi)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        where = f"row {row}" + (f" ({steps.index[row]})" if steps is not None else "")
        warnings.warn(
            f"equity left [{lo:g}, {hi:g}] at {where} (value {equity[row]:.3g}): the record is "
            "clipped there and its later returns read as 0; back-test a shorter span "
            "(start= / end=) for figures past that row",
            RuntimeWarning,
            stacklevel=3,
        )
    return np.clip(equity, lo, hi)


def check_steps(steps: pd.DataFrame, need_prices: bool) -> Steps:
    """Validate a steps table once so every statistic can trust its arrays.

    An equity of 0 or +inf is not bad input but a record longer than float64 can carry (a
    ruined account, or a strong edge over millions of bars): it is clipped, with a warning
    (:func:`clip_equity`). A negative equity is refused.
    """
    if not isinstance(steps, pd.DataFrame):
        raise TypeError(f"steps must be a pandas DataFrame, got {type(steps).__name__}")
    if len(steps) == 0:
        raise ValueError("steps frame is empty: no decision bars to evaluate")
    required = REQUIRED_COLUMNS + (PRICE_COLUMNS if need_prices else ())
    missing = [c for c in required if c not in steps.columns]
    if missing:
        raise ValueError(f"steps frame lacks column(s) {missing}; it has {list(steps.columns)}")
    index = _check_index(steps)
    cols = {name: _column(steps, name, allow_inf=name == EQUITY) for name in required}
    checks = (
        (ACTION, ~np.isin(cols[ACTION], (HOLD, BUY, SELL)), "is not 0 (HOLD), 1 (BUY) or 2 (SELL)"),
        (POSITION, np.abs(cols[POSITION]) > 1.0 + 1e-9, "is outside [-1, 1]"),
        (TURNOVER, cols[TURNOVER] < 0.0, "is negative"),
        (FEE, (cols[FEE] < 0.0) | (cols[FEE] >= 1.0), "is outside [0, 1)"),
        (EQUITY, cols[EQUITY] < 0.0, "is negative"),
    )
    for name, bad, what in checks:
        if bad.any():
            _fail(steps, name, cols[name], bad, what)
    for name in PRICE_COLUMNS if need_prices else ():
        if (cols[name] <= 0.0).any():
            _fail(steps, name, cols[name], cols[name] <= 0.0, "is not positive")
    probs = {c: _column(steps, c) for c in PROB_COLUMNS if c in steps.columns}
    names = gate_names(steps)
    own_columns = [own_prob_column(n, code) for n in names for code in range(len(ACTIONS))]
    return Steps(
        times=index,
        action=cols[ACTION].astype(np.int64),
        position=cols[POSITION],
        turnover=cols[TURNOVER],
        fee=cols[FEE],
        equity=clip_equity(cols[EQUITY], steps),
        price=cols.get(PRICE),
        next_price=cols.get(NEXT_PRICE),
        probs=probs,
        gates={n: _column(steps, gate_column(n)) for n in names},
        own={c: _column(steps, c) for c in own_columns if c in steps.columns},
    )


# ----------------------------------------------------------------------------- equity


def equity_points(equity: FloatArray) -> FloatArray:
    """Equity points with the initial 1.0: point k is the equity before row k's fee."""
    return np.concatenate(([1.0], equity))


def drawdown(points: FloatArray) -> FloatArray:
    """Fall of each equity point from its running peak, a fraction <= 0 (-0.25: 25% below).

    ``points`` must start with the initial equity (see :func:`equity_points`), so that a
    loss on the first bar counts as a drawdown from 1.0.
    """
    return points / np.maximum.accumulate(points) - 1.0


class Curves(NamedTuple):
    """A run's equity and drawdown at each decision bar (the time of the row, mark at t+1)."""

    equity: pd.Series  # x initial equity, net of costs
    drawdown_pct: pd.Series  # from the running peak (the initial 1.0 counts), in %


def curves(steps: pd.DataFrame) -> Curves:
    """Equity and drawdown of a steps table: the one computation plots and reports draw."""
    equity = steps[EQUITY].astype(np.float64)
    dd = drawdown(equity_points(np.asarray(equity, dtype=np.float64)))[1:] * 100.0
    return Curves(equity, pd.Series(dd, index=steps.index))


# ----------------------------------------------------------------- records laid end to end


def chain(segments: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Steps frames one after the other, equity compounded across them (the columns all
    segments share).

    Refuses segments that are empty or out of time order (the stitched index must increase).
    """
    if not segments:
        raise ValueError("nothing to stitch: no test segment")
    parts, carry = [], 1.0
    # columns every segment has: a baseline's segment has no action probabilities
    common = [c for c in segments[0].columns if all(c in s.columns for s in segments)]
    for k, seg in enumerate(segments):
        if seg.empty:
            raise ValueError(f"test segment {k} has no rows")
        part = seg[common].copy()
        part[EQUITY] = part[EQUITY].to_numpy(dtype=np.float64) * carry
        carry = float(part[EQUITY].iloc[-1])
        parts.append(part)
    out = pd.concat(parts)
    if not out.index.is_monotonic_increasing or out.index.has_duplicates:
        raise ValueError("test segments overlap or are out of order; they cannot be stitched")
    return out


def end_to_end(segments: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Segments that may overlap in time (several markets' validation or test splits) laid one
    after another, equity compounded across them (:func:`chain`): the pooled record of a
    many-market run, as if the markets had been traded in turn.

    Why shift the times: a record's index must increase, and two markets' splits cover the same
    dates (or months apart: a gap would count as time in the annualised figures). Each segment
    is moved by whole days, forward or back, so that it starts at least one bar and less than a
    day after the previous one ends: the bar spacing and each bar's time of day are kept, so
    annualisation and daily figures read the pooled record as one market's.
    """
    shifted, end = [], None
    day = pd.Timedelta(days=1)
    for seg in segments:
        index = pd.DatetimeIndex(seg.index)
        if end is not None and len(index):
            spacing = pd.Timedelta(np.median(np.diff(index.asi8)) if len(index) > 1 else day)
            gap = end + spacing - index[0]  # negative: a later market, moved back
            index = index + day * int(np.ceil(gap / day))
        part = seg.copy()
        part.index = index.rename(seg.index.name)
        shifted.append(part)
        if len(index):
            end = index[-1]
    return chain(shifted)


def market_returns(steps: pd.DataFrame) -> FloatArray:
    """The return of the bar after each decision (what a random-timing null settles on)."""
    return steps[NEXT_PRICE].to_numpy(np.float64) / steps[PRICE].to_numpy(np.float64) - 1.0
