"""Baselines on the strategy's bars and costs: buy & hold, flat, momentum, random timing.

Why: a trading policy's figures mean nothing alone. A Sharpe of 2 on a period where buy &
hold made 3, or a "skilful" policy whose trades earn as much at random times, is the usual
way trading-RL results fool their authors. Every baseline here is settled by
:func:`hmarl.market.env.settle` (on numpy arrays) with the same
:class:`~hmarl.market.env.EnvParams` (commission, slippage, fill rule) over the same
decision rows, and tabulated in the steps schema of :func:`hmarl.steps.steps_table`, so
:func:`hmarl.stats.metrics.compute_stats` treats them exactly like the strategy.

- ``buy_and_hold``: fully long (exposure 1.0) from the first decision, entry fee paid: the
  report's one buy & hold figure, after the strategy's costs.
- ``flat``: never trades (the zero line, net of nothing).
- ``momentum``: a trend rule that is fair to trend following: long while the past-N-bar
  return ``close[t] / close[t-N] - 1`` last left the band ``[-b, +b]`` upwards, short (flat
  when shorting is off) while it last left it downwards, flat before either. The band
  ``b`` is one round trip's cost, ``2 * (commission + slippage)``: a move that does not pay
  for its own trade does not flip the position (hysteresis). N is chosen on the validation
  split from :data:`MOMENTUM_LOOKBACKS` by Sharpe (:func:`choose_momentum_lookback`).

The random policy is :mod:`hmarl.stats.random_timing`: the strategy's own trades at random times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from hmarl.market.env import EnvParams, settle
from hmarl.stats.metrics import CRYPTO, Calendar, compute_stats
from hmarl.steps import BUY, HOLD, SELL, SETTLEMENT_COLUMNS, steps_table

if TYPE_CHECKING:
    from hmarl.market.market_data import MarketData

BASELINES = ("buy_and_hold", "flat", "momentum")
BASELINE_DEFINITIONS = {  # stats.json meta: what each column is (all after the strategy's costs)
    "buy_and_hold": "long 1.0 from the first decision bar to the last, entry fee (commission + "
    "slippage) paid on the first bar: the report's one buy & hold, after the strategy's costs",
    "flat": "never trades: equity 1.0 throughout",
    "momentum": "long (short, or flat without shorting) once the past-N-bar return leaves the "
    "band +-b upwards (downwards), kept until it leaves the band the other way; b = one round "
    "trip's cost 2 * (commission + slippage); N chosen on the validation split by Sharpe",
}
# Lookbacks tried on validation, in bars (5-minute bars: 1 h, 4 h, 12 h, 1 day, 2 days).
MOMENTUM_LOOKBACKS = (12, 48, 144, 288, 576)
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def actions_from_positions(positions: FloatArray) -> IntArray:
    """BUY where the target exposure rises, SELL where it falls, HOLD elsewhere (from flat)."""
    step = np.diff(np.asarray(positions, dtype=np.float64), prepend=0.0)
    return np.where(step > 0, BUY, np.where(step < 0, SELL, HOLD)).astype(np.int64)


def settled_frame(
    market: MarketData, lo: int, hi: int, positions: FloatArray, env: EnvParams
) -> pd.DataFrame:
    """Settle fixed positions over decision rows [lo, hi): the steps schema, no probabilities."""
    rows = np.arange(lo, hi)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != rows.shape:
        raise ValueError(f"{rows.size} decision rows but {positions.shape} positions")
    s = settle(positions[None, :], market.returns[rows][None, :], env)
    settled = {name: getattr(s, name)[0] for name in SETTLEMENT_COLUMNS}
    actions = actions_from_positions(positions)
    return steps_table(market.index, market.close, rows, actions, positions, settled)


# ----------------------------------------------------------------------------- momentum


def momentum_positions(
    close: FloatArray, rows: IntArray, lookback: int, band: float, env: EnvParams
) -> FloatArray:
    """Positions of the momentum rule with hysteresis band ``band`` at decision rows ``rows``.

    Row t reads ``close[t]`` and ``close[t - lookback]`` only (causal); rows with less
    history, and every row before the return first leaves the band, are flat. Long is
    ``+max_position``, short ``-max_position`` (0 when ``allow_short`` is off).
    """
    if lookback < 1:
        raise ValueError(f"momentum lookback must be >= 1 bar, got {lookback}")
    if not band >= 0:
        raise ValueError(f"momentum band must be >= 0, got {band}")
    rows = np.asarray(rows, dtype=np.int64)
    past = rows - lookback
    ok = past >= 0
    mom = np.zeros(rows.size, dtype=np.float64)
    mom[ok] = close[rows[ok]] / close[past[ok]] - 1.0
    signal = np.where(ok & (mom > band), 1, np.where(ok & (mom < -band), -1, 0))
    last = np.maximum.accumulate(np.where(signal != 0, np.arange(rows.size), -1))
    side = np.where(last >= 0, signal[np.maximum(last, 0)], 0)
    short = -env.max_position if env.allow_short else 0.0
    return np.where(side > 0, env.max_position, np.where(side < 0, short, 0.0))


def momentum_band(env: EnvParams) -> float:
    """The momentum rule's hysteresis band: one round trip's cost (enter and exit)."""
    return 2.0 * env.cost_rate


def choose_momentum_lookback(
    market: MarketData,
    env: EnvParams,
    lookbacks: Sequence[int] = MOMENTUM_LOOKBACKS,
    split: str = "val",
    calendar: Calendar = CRYPTO,
) -> tuple[int, dict[int, float]]:
    """The lookback with the best Sharpe on ``split`` (first in grid order on ties).

    Returns it with each lookback's Sharpe there. Choosing on validation, never on the bars
    being reported, gives momentum the same model selection the policy had.
    """
    if not lookbacks:
        raise ValueError("the momentum lookback grid is empty")
    lo, hi = market.splits[split]
    rows = np.arange(lo, hi)
    band = momentum_band(env)
    sharpe: dict[int, float] = {}
    for n in lookbacks:
        frame = settled_frame(
            market, lo, hi, momentum_positions(market.close, rows, n, band, env), env
        )
        sharpe[int(n)] = float(
            compute_stats(frame, calendar=calendar, n_bootstrap=0)["Sharpe Ratio"]
        )
    best = max(sharpe, key=lambda n: sharpe[n])
    return best, sharpe


# ----------------------------------------------------------------------------- the columns


def baseline_positions(
    name: str, market: MarketData, lo: int, hi: int, env: EnvParams, momentum_bars: int
) -> FloatArray:
    """A baseline's exposure at each decision row [lo, hi)."""
    n = hi - lo
    if name == "buy_and_hold":
        return np.ones(n, dtype=np.float64)
    if name == "flat":
        return np.zeros(n, dtype=np.float64)
    if name == "momentum":
        rows = np.arange(lo, hi)
        return momentum_positions(market.close, rows, momentum_bars, momentum_band(env), env)
    raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")


def baseline_steps(
    market: MarketData,
    lo: int,
    hi: int,
    env: EnvParams,
    *,
    momentum_bars: int = MOMENTUM_LOOKBACKS[0],
    names: Sequence[str] = BASELINES,
) -> dict[str, pd.DataFrame]:
    """Steps frames of the baselines over decision rows [lo, hi), settled with ``env``."""
    return {
        name: settled_frame(
            market, lo, hi, baseline_positions(name, market, lo, hi, env, momentum_bars), env
        )
        for name in names
    }


def buy_and_hold_return(market: MarketData, lo: int, hi: int, env: EnvParams) -> float:
    """Buy & hold's return over decision rows [lo, hi), after the same costs (in %)."""
    steps = baseline_steps(market, lo, hi, env, names=("buy_and_hold",))["buy_and_hold"]
    return float(compute_stats(steps, n_bootstrap=0, benchmark=False)["Return [%]"])
