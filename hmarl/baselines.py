"""Baselines on the strategy's bars and costs: buy & hold, flat, random, momentum.

Why: a trading policy's figures mean nothing alone. A Sharpe of 2 on a period where buy &
hold made 3, or a "skilful" policy that a coin flip with the same action mix matches, is
the usual way trading-RL results fool their authors. Every baseline here is settled by
:func:`hmarl.env.settle` with the same :class:`~hmarl.env.EnvParams` (commission,
slippage, fill rule) over the same decision rows, and tabulated in the steps schema of
:func:`hmarl.evaluation.steps_frame`, so :func:`hmarl.metrics.compute_stats` treats them
exactly like the strategy.

- ``buy_and_hold``: fully long (exposure 1.0) from the first decision, entry fee paid.
- ``flat``: never trades (the zero line, net of nothing).
- ``random``: i.i.d. actions drawn with the agent's own action frequencies (seeded), played
  through the agent's action rule (:func:`hmarl.env.positions_from_actions`): what the
  policy's action mix earns without its timing.
- ``momentum``: BUY when the past-N-bar return ``close[t] / close[t-N] - 1`` is > 0, SELL
  when < 0 (short, or flat when shorting is off), HOLD when 0 or undefined; causal, it
  reads closes up to t only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from hmarl.dataset import MarketData
from hmarl.env import BUY, HOLD, SELL, EnvParams, positions_from_actions, settle
from hmarl.evaluation import steps_table

BASELINES = ("buy_and_hold", "flat", "random", "momentum")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def actions_from_positions(positions: FloatArray) -> IntArray:
    """BUY where the target exposure rises, SELL where it falls, HOLD elsewhere (from flat)."""
    step = np.diff(np.asarray(positions, dtype=np.float64), prepend=0.0)
    return np.where(step > 0, BUY, np.where(step < 0, SELL, HOLD)).astype(np.int64)


def action_frequencies(actions: npt.ArrayLike) -> FloatArray:
    """Share of HOLD, BUY, SELL in a sequence of action codes."""
    a = np.asarray(actions, dtype=np.int64)
    if a.size == 0:
        raise ValueError("no actions to take frequencies from")
    return np.bincount(a, minlength=3)[:3].astype(np.float64) / a.size


def random_actions(frequencies: npt.ArrayLike, n: int, seed: int) -> IntArray:
    """``n`` i.i.d. action codes drawn with ``frequencies`` (HOLD, BUY, SELL); seeded."""
    p = np.asarray(frequencies, dtype=np.float64)
    if p.shape != (3,) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise ValueError(f"action frequencies must be 3 non-negative numbers summing to 1, got {p}")
    return np.random.default_rng(seed).choice(3, size=n, p=p / p.sum()).astype(np.int64)


def momentum_actions(close: FloatArray, rows: IntArray, lookback: int) -> IntArray:
    """Sign of the past-``lookback``-bar return at each decision row, as action codes.

    Row t reads ``close[t]`` and ``close[t - lookback]`` only, so the rule never sees the
    bar it is paid on; rows with less history than ``lookback`` HOLD.
    """
    if lookback < 1:
        raise ValueError(f"momentum lookback must be >= 1 bar, got {lookback}")
    rows = np.asarray(rows, dtype=np.int64)
    past = rows - lookback
    ok = past >= 0
    mom = np.zeros(rows.size, dtype=np.float64)
    mom[ok] = close[rows[ok]] / close[past[ok]] - 1.0
    return np.where(mom > 0, BUY, np.where(mom < 0, SELL, HOLD)).astype(np.int64)


def positions_for(actions: IntArray, env: EnvParams) -> FloatArray:
    """Exposure after each action under the agent's action rule (target or increment mode)."""
    acts = torch.from_numpy(np.asarray(actions, dtype=np.int64)).unsqueeze(0)
    return positions_from_actions(acts, env)[0].cpu().numpy().astype(np.float64)


def settled_frame(
    market: MarketData, lo: int, hi: int, positions: FloatArray, actions: IntArray, env: EnvParams
) -> pd.DataFrame:
    """Settle fixed positions over decision rows [lo, hi): the steps schema, no probabilities."""
    rows = np.arange(lo, hi)
    if positions.shape != rows.shape or actions.shape != rows.shape:
        raise ValueError(
            f"{rows.size} decision rows but {positions.shape} positions, {actions.shape} actions"
        )
    held = torch.from_numpy(np.asarray(positions, dtype=np.float64)).unsqueeze(0)
    s = settle(held, torch.from_numpy(market.returns[rows]).unsqueeze(0), env)
    return steps_table(market, rows, actions, positions, s)


def baseline_actions(
    name: str,
    market: MarketData,
    lo: int,
    hi: int,
    *,
    agent_actions: npt.ArrayLike,
    momentum_bars: int,
    seed: int,
) -> tuple[FloatArray, IntArray] | IntArray:
    """A baseline's decisions: positions and actions (fixed exposure) or actions to play."""
    n = hi - lo
    if name == "buy_and_hold":
        held = np.ones(n, dtype=np.float64)
        return held, actions_from_positions(held)
    if name == "flat":
        return np.zeros(n, dtype=np.float64), np.full(n, HOLD, dtype=np.int64)
    if name == "random":
        return random_actions(action_frequencies(agent_actions), n, seed)
    if name == "momentum":
        return momentum_actions(market.close, np.arange(lo, hi), momentum_bars)
    raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")


def baseline_steps(
    market: MarketData,
    lo: int,
    hi: int,
    env: EnvParams,
    *,
    agent_actions: npt.ArrayLike,
    momentum_bars: int = 12,
    seed: int = 0,
    names: Sequence[str] = BASELINES,
) -> dict[str, pd.DataFrame]:
    """Steps frames of the baselines over decision rows [lo, hi), settled with ``env``."""
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        decided = baseline_actions(
            name,
            market,
            lo,
            hi,
            agent_actions=agent_actions,
            momentum_bars=momentum_bars,
            seed=seed,
        )
        if isinstance(decided, tuple):
            positions, actions = decided
        else:
            actions, positions = decided, positions_for(decided, env)
        out[name] = settled_frame(market, lo, hi, positions, actions, env)
    return out
