"""Batched trading environment on precomputed bars.

Timing rule (the one place it is defined):

* The agent decides at the close of bar t, seeing features of bars <= t only.
* The order fills at bar t's close (the price the agent just observed) plus
  ``slippage_bps`` of adverse cost; say so in every report. Commission and slippage are
  charged on the notional actually traded (see "The fee" below).
* The position chosen at t is held over bar t+1 and earns ``r_{t+1} = close_{t+1}/close_t - 1``.
  Equity: ``E_{t+1} = E_t * (1 - fee_t) * (1 + p_t * r_{t+1})``; reward = log of that growth.

Position ``p`` is the exposure as a signed fraction of equity in [-1, 1]; the cash ratio is the
share of equity not held in the position, ``1 - |p|``. A position drifts with the price
(``q_{t+1} = p_t (1 + r) / (1 + p_t r)``: a full long stays at 1, a short or a partial
position does not); HOLD restores the held target and pays the fee on that small rebalance,
so the costs are exactly those of holding a constant exposure.

The fee, exactly as charged. With equity ``E`` before the trade, exposure ``q`` held just before
it and cost rate ``c = commission + slippage_bps / 1e4``, the target ``p`` is a fraction of the
equity *after* the fee, ``E (1 - f)``: the position's value goes from ``q E`` to ``p E (1 - f)``,
so the notional traded is ``E |p (1 - f) - q|`` and the fee (a fraction ``f`` of ``E``) solves

    f = c |p (1 - f) - q|.

Buying (``p (1 - f) >= q``): ``f = c (p - q) - c p f``, so ``f = c (p - q) / (1 + c p)``.
Selling (``p (1 - f) < q``): ``f = c (q - p) + c p f``, so ``f = c (q - p) / (1 - c p)``.
Which case applies is the sign of ``p - q`` itself: substituting back,
``p (1 - f) - q = (p - q) / (1 + s c p)`` with ``s = sign(p - q)``, and ``1 + s c p > 0``
whenever ``c |p| < 1`` (always: ``|p| <= 1`` and a cost rate below 100%). Hence, in one line,

    turnover = |p - q| / (1 + s c p),   fee = c * turnover,

``turnover`` being the notional actually traded as a fraction of ``E``. Edge cases: closing
(``p = 0``) trades ``|q|`` and pays ``c |q|``; a long-to-short flip (``q > 0 > p``) sells
``q + |p| (1 - f)``, i.e. ``(q - p) / (1 - c p)`` with ``1 - c p > 1``; no trade (``p = q``)
pays nothing. Charging ``c |p - q|`` instead (on the target measured before the fee) overcharges
by about ``c^2 |p|`` per unit traded. :func:`traded` holds this formula once, for
:func:`settle` and the exact estimator's grid rewards (:mod:`hmarl.agent.expected`).

Short convention: a short, like any position, is a constant *fraction of equity*, rebalanced
every bar (HOLD restores the target). Engines that hold a fixed number of units between trades
(e.g. backtesting.py) let a short's exposure grow as the price rises and shrink as it falls;
the difference is measured in ``docs/backtests.md``.

The settlement is written once for numpy arrays and torch tensors alike (:func:`settle`): the
rollout settles on the device of its tensors, while the baselines and the random-timing null
(:mod:`hmarl.stats`, which imports no torch) settle numpy arrays with the same lines.

Because BUY, SELL and HOLD move the position on a finite grid (three values in target mode,
``2 * max_position / increment + 1`` in increment mode), the policy's state-dependent input
takes few values; :func:`position_grid` enumerates them for the factored rollout.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import numpy as np

from hmarl.config import EnvConfig
from hmarl.steps import BUY, HOLD, SELL

if TYPE_CHECKING:
    from torch import Tensor

Array = TypeVar("Array", "np.ndarray", "Tensor")


@dataclass(frozen=True)
class EnvParams:
    """Execution parameters as plain values: ``EnvConfig``'s fields, and its defaults.

    Why a second class: a checkpoint stores these as a plain dict (the action mode as text),
    and the environment must not depend on Hydra's enums; the defaults are ``EnvConfig``'s
    so that they are stated once.
    """

    commission: float = EnvConfig.commission
    slippage_bps: float = EnvConfig.slippage_bps
    max_position: float = EnvConfig.max_position
    allow_short: bool = EnvConfig.allow_short
    action_mode: str = EnvConfig.action_mode.value  # target | increment
    increment: float = EnvConfig.increment

    @classmethod
    def from_config(cls, env: EnvConfig) -> EnvParams:
        """The typed config's values, by name (the action mode as its plain text)."""
        return cls(**{**asdict(env), "action_mode": env.action_mode.value})

    @property
    def cost_rate(self) -> float:
        """Cost per unit of notional traded (commission plus slippage)."""
        return self.commission + self.slippage_bps * 1e-4


class Grid(NamedTuple):
    """The reachable positions and the transition table ``next[state, action]``."""

    positions: np.ndarray  # [S] float64, sorted
    next_state: np.ndarray  # [S, 3] int64
    start: int  # index of the flat position 0


def position_grid(params: EnvParams) -> Grid:
    """Enumerate reachable positions from flat under the action rule.

    Target mode: BUY -> +max, SELL -> -max (flat when shorting is off), HOLD keeps.
    Increment mode: BUY/SELL move by ``increment`` within [-max, max] (or [0, max]); the
    increment must divide ``max_position`` so the grid stays finite and exact.
    """
    m = params.max_position
    lo = -m if params.allow_short else 0.0
    if params.action_mode == "target":
        values = sorted({0.0, m, lo})
        step = {BUY: lambda p: m, SELL: lambda p: lo}
    elif params.action_mode == "increment":
        k = m / params.increment
        if params.increment <= 0 or abs(k - round(k)) > 1e-9 or round(k) > 10:
            raise ValueError(
                f"env.increment={params.increment} must divide env.max_position={m} "
                "(at most 10 steps each way) so positions stay on a finite grid"
            )
        n = round(k)
        values = [i * params.increment for i in range(-n if params.allow_short else 0, n + 1)]
        inc = params.increment
        step = {BUY: lambda p: min(p + inc, m), SELL: lambda p: max(p - inc, lo)}
    else:
        raise ValueError(
            f"env.action_mode must be 'target' or 'increment', got {params.action_mode!r}"
        )
    pos = np.asarray(values, dtype=np.float64)

    def index(v: float) -> int:
        return int(np.argmin(np.abs(pos - v)))

    table = np.empty((len(pos), 3), dtype=np.int64)
    for s, p in enumerate(pos):
        table[s, HOLD] = s
        table[s, BUY] = index(step[BUY](p))
        table[s, SELL] = index(step[SELL](p))
    return Grid(pos, table, index(0.0))


def array_module(x: np.ndarray | Tensor) -> ModuleType:
    """numpy for a numpy array, torch for a tensor (loaded already if a tensor exists).

    Why not ``import torch`` here: the statistics settle numpy arrays and must not load torch.
    """
    if isinstance(x, np.ndarray):
        return np
    return importlib.import_module(type(x).__module__.split(".")[0])


def cash_ratio(position: Array) -> Array:
    """Share of equity not held in the position."""
    return 1.0 - abs(position)


class Settlement(NamedTuple, Generic[Array]):
    turnover: Array  # [B, L] notional traded at t, fraction of equity
    fee: Array  # [B, L] cost paid at t, fraction of equity
    reward: Array  # [B, L] log equity growth over t -> t+1, net of the fee at t
    equity: Array  # [B, L] equity at the close of t+1 (1.0 before the first decision)


def traded(target: Array, before: Array, cost_rate: float) -> tuple[Array, Array]:
    """Notional traded and fee, as fractions of equity before the trade, moving exposure
    ``before`` to ``target`` of the equity left after the fee (module docstring: "The fee").

    Why not ``cost_rate * |target - before|``: that fee is measured on the equity before it is
    paid, while the position held is a fraction of the equity after it; this solves
    ``fee = cost_rate * |target (1 - fee) - before|`` exactly. Elementwise, broadcasting, for
    numpy arrays and torch tensors alike (no gradient flows: positions come from actions).
    """
    xp = array_module(target)
    step = target - before
    turnover = xp.abs(step) / (1.0 + cost_rate * xp.sign(step) * target)
    return turnover, cost_rate * turnover


def settle(positions: Array, returns: Array, params: EnvParams) -> Settlement[Array]:
    """Costs, rewards and equity of held positions, vectorised over a whole episode.

    ``positions[b, k]``: exposure chosen at decision k (held over the next bar);
    ``returns[b, k]``: that next bar's simple return. Only positions depend on actions, so
    everything here runs after the action loop, in float64, with the array library of the
    inputs (numpy arrays or torch tensors, on their device).
    """
    xp = array_module(positions)
    p = xp.asarray(positions, dtype=xp.float64)
    r = xp.asarray(returns, dtype=xp.float64)
    growth_asset = xp.clip(1.0 + p * r, 1e-12, None)
    drifted = p * (1.0 + r) / growth_asset  # exposure after the bar, before the next trade
    before = xp.concatenate([xp.zeros_like(p[:, :1]), drifted[:, :-1]], axis=1)
    turnover, fee = traded(p, before, params.cost_rate)
    growth = (1.0 - fee) * growth_asset
    reward = xp.log(growth)
    equity = xp.exp(xp.cumsum(reward, axis=1))
    return Settlement(turnover, fee, reward, equity)


def positions_from_actions(actions: Array, params: EnvParams) -> Array:
    """Positions held after each action of fixed action sequences ``[B, L]`` (baselines)."""
    grid = position_grid(params)
    acts = actions if isinstance(actions, np.ndarray) else actions.cpu().numpy()
    states = np.empty(acts.shape, dtype=np.int64)
    s = np.full(acts.shape[0], grid.start, dtype=np.int64)
    for k in range(acts.shape[1]):
        s = grid.next_state[s, acts[:, k]]
        states[:, k] = s
    held = grid.positions[states]
    if isinstance(actions, np.ndarray):
        return held
    return array_module(actions).from_numpy(held).to(actions.device)


def bar_returns(close: np.ndarray) -> np.ndarray:
    """``r[t] = close[t+1] / close[t] - 1`` (the return earned by a decision at t); last is 0."""
    c = np.asarray(close, dtype=np.float64)
    r = np.zeros_like(c)
    r[:-1] = c[1:] / c[:-1] - 1.0
    return r
