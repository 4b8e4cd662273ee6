"""The quoting (market-making) environment: actions, inventory grid, the fill rule, settlement.

The task (``task=quote``): every decision step the agent posts at most one bid and one ask,
each either absent or at an offset of ``offsets[i]`` ticks behind that side's reference (the
mid in the Avellaneda-Stoikov market, the same side's best quote on a tick tape). The joint
action is the pair, ``a = bid_level * n_levels + ask_level`` with level 0 meaning "no quote".
A quote is one lot (the fixed quote size); inventory ``q`` lives on the grid ``-Q .. Q`` lots
(``max_inventory``), so it takes ``2Q + 1`` values and the factored rollout and the exact
estimators of the trading task carry over.

**Posting rule.** A quote that could breach the inventory limits is not posted: with ``q = Q``
the bid is withdrawn, with ``q = -Q`` the ask. Each quote lives for one decision step.

**The fill rule (the one place it is defined).** In step k a posted quote fills in full (one
lot) or not at all:

* Avellaneda-Stoikov market (:mod:`hmarl.market.avellaneda`): market orders hit a quote
  ``delta`` away from the mid as a Poisson process of rate ``A exp(-k delta)``, so the quote
  fills with probability ``p(delta) = 1 - exp(-A exp(-k delta) dt)``; the two sides are
  independent given the quotes. The generator draws one uniform per side and step, ``u``, and
  the quote fills iff ``u < p(delta)`` (the same uniforms for every action, so that the market
  path, not the agent, holds the randomness).
* A tick tape (:mod:`hmarl.data.ticks_synthetic`): a bid at price P fills from the step's sell
  market orders that print below P in full, and at P for the volume beyond the queue ahead
  (the displayed size at P when the step starts; 0 when the quote improves the best price).
  The quote fills iff that volume reaches the quote size; the ask mirrors it. Given the tape
  the fill is deterministic.

The market does not react to our quotes (no market impact): every report says so. Fills are
priced at the quote; the mid then moves by ``dmid`` over the step, and the inventory after
the step's fills carries that move.

**Reward** of step k, in price units x lots, every part logged on its own and weighted by the
config: ``w_mtm * q_{k+1} dmid_k`` (mark-to-market change) ``+ w_spread * (edge - fee)``
(realised spread against the step's starting mid, net of the maker fee per lot filled, which
may be negative: a rebate) ``- phi q_{k+1}^2`` (inventory penalty per step) ``-
no_quote_penalty x (sides the action leaves empty)``; after the last step the inventory is
liquidated: ``- alpha q_L^2 - liquidation_cost |q_L|`` (taker fee and half-spread per lot).
With unit weights the sum is the Cartea-Jaimungal objective: terminal wealth minus the running
and terminal inventory penalties.

Written once for numpy arrays and torch tensors (:func:`hmarl.market.env.array_module`): the
rollout settles tensors on its device, the baselines and the exact optimum numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import numpy as np

from hmarl.market.env import array_module

if TYPE_CHECKING:
    from torch import Tensor

Array = TypeVar("Array", "np.ndarray", "Tensor")

NO_QUOTE = 0
"""Level 0 of a side: no quote posted."""


@dataclass(frozen=True)
class QuoteParams:
    """The quoting environment's rules as plain values (price units and lots)."""

    offsets: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)  # ticks behind the side's reference
    tick: float = 0.01  # price units per tick
    max_inventory: int = 5  # Q: inventory stays in [-Q, Q] lots
    maker_fee: float = 0.0  # per lot filled, price units (negative: a rebate)
    phi: float = 0.0  # running inventory penalty per step per lot^2
    alpha: float = 0.0  # terminal inventory penalty per lot^2
    liquidation_cost: float = 0.0  # per lot liquidated at the end (taker fee + half spread)
    no_quote_penalty: float = 0.0  # per side the action leaves empty, per step
    w_mtm: float = 1.0  # weight of the mark-to-market change
    w_spread: float = 1.0  # weight of the realised spread net of fees

    def __post_init__(self) -> None:
        if self.max_inventory < 1:
            raise ValueError(f"max_inventory={self.max_inventory} must be >= 1 lot")
        if not self.offsets or any(o < 0 for o in self.offsets):
            raise ValueError(f"offsets={self.offsets} must be non-empty and >= 0 ticks")
        if self.tick <= 0:
            raise ValueError(f"tick={self.tick} must be > 0")

    @property
    def n_levels(self) -> int:
        """Choices per side: no quote plus one per offset."""
        return len(self.offsets) + 1

    @property
    def n_actions(self) -> int:
        return self.n_levels**2

    @property
    def n_states(self) -> int:
        return 2 * self.max_inventory + 1

    @property
    def start(self) -> int:
        """Grid index of the flat inventory."""
        return self.max_inventory

    def inventory(self) -> np.ndarray:
        """Inventory of each grid state, ``[S]`` int64, ``-Q .. Q``."""
        return np.arange(-self.max_inventory, self.max_inventory + 1, dtype=np.int64)

    def depths(self) -> np.ndarray:
        """Distance of each level from its reference in price units ``[n_levels]`` (NaN: none)."""
        return np.array([np.nan, *(o * self.tick for o in self.offsets)], dtype=np.float64)


def action_levels(params: QuoteParams) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask level of every joint action, ``[A]`` each (0: that side not quoted)."""
    a = np.arange(params.n_actions)
    return a // params.n_levels, a % params.n_levels


def joint_action(params: QuoteParams, bid_level: int, ask_level: int) -> int:
    """The joint action index of a bid level and an ask level."""
    return bid_level * params.n_levels + ask_level


def posted(params: QuoteParams, states: Array, actions: Array) -> tuple[Array, Array]:
    """Whether the bid and the ask of ``actions`` are posted in grid ``states`` (same shape).

    The posting rule: a side is posted iff the action quotes it and one more fill on it would
    keep the inventory within ``[-Q, Q]``.
    """
    bid_lv, ask_lv = _levels_like(params, actions)
    bid = (bid_lv[actions] != NO_QUOTE) & (states < params.n_states - 1)
    ask = (ask_lv[actions] != NO_QUOTE) & (states > 0)
    return bid, ask


def _like(values: np.ndarray, like: Array) -> Array:
    """``values`` as an array of ``like``'s library (and device, for a tensor)."""
    if isinstance(like, np.ndarray):
        return values
    return array_module(like).as_tensor(values, device=like.device)


def _levels_like(params: QuoteParams, like: Array) -> tuple[Array, Array]:
    bid, ask = action_levels(params)
    return _like(bid, like), _like(ask, like)


class QuoteSettlement(NamedTuple, Generic[Array]):
    """Every step's parts ``[B, L]`` (float64, price units x lots) and inventories."""

    inventory: Array  # [B, L] lots held after the step's fills (over the mid move)
    bid_fill: Array  # [B, L] 1.0 where the bid filled
    ask_fill: Array  # [B, L] 1.0 where the ask filled
    spread: Array  # [B, L] realised spread against the step's starting mid, before fees
    fee: Array  # [B, L] maker fees paid (negative: rebates received)
    mtm: Array  # [B, L] mark-to-market change of the inventory over the mid move
    inventory_penalty: Array  # [B, L] phi q^2
    no_quote: Array  # [B, L] the no-quote penalty
    terminal: Array  # [B, L] liquidation penalty, non-zero at the last step only
    reward: Array  # [B, L] the weighted sum


def _float(mask: Array) -> Array:
    return mask.astype(np.float64) if isinstance(mask, np.ndarray) else mask.double()


def settle_quotes(
    params: QuoteParams,
    states: Array,
    actions: Array,
    bid_fill: Array,
    ask_fill: Array,
    bid_edge: Array,
    ask_edge: Array,
    dmid: Array,
    *,
    liquidate: bool = True,
) -> QuoteSettlement[Array]:
    """Settle quote steps, vectorised over ``[B, L]``.

    ``states``: grid state before each step; ``actions``: joint actions; ``bid_fill`` and
    ``ask_fill``: whether the chosen quote *would* fill (the market's verdict, before the
    posting rule); ``bid_edge`` / ``ask_edge``: what a fill earns against the step's starting
    mid (``mid - bid``, ``ask - mid``); ``dmid``: the mid's move over the step.
    ``liquidate``: the last column is the episode's last step (a one-step caller that is not
    at the end passes False).
    """
    xp = array_module(dmid)
    post_bid, post_ask = posted(params, states, actions)
    fb, fa = _float(post_bid & (bid_fill != 0)), _float(post_ask & (ask_fill != 0))
    q_after = (states - params.max_inventory) + fb - fa
    spread = fb * bid_edge + fa * ask_edge
    fee = params.maker_fee * (fb + fa)
    mtm = q_after * dmid
    inv_pen = params.phi * q_after**2
    bid_lv, ask_lv = _levels_like(params, actions)
    empty = _float(bid_lv[actions] == NO_QUOTE) + _float(ask_lv[actions] == NO_QUOTE)
    no_quote = params.no_quote_penalty * empty
    terminal = xp.zeros_like(mtm)
    if liquidate:
        terminal[:, -1] = liquidation_penalty(params, q_after[:, -1])
    reward = params.w_mtm * mtm + params.w_spread * (spread - fee) - inv_pen - no_quote - terminal
    return QuoteSettlement(q_after, fb, fa, spread, fee, mtm, inv_pen, no_quote, terminal, reward)


def liquidation_penalty(params: QuoteParams, q: Array) -> Array:
    """What liquidating ``q`` lots at the end costs: ``alpha q^2 + liquidation_cost |q|``."""
    return params.alpha * q**2 + params.liquidation_cost * abs(q)


def posted_fill_probs(params: QuoteParams, p_bid: Array, p_ask: Array) -> tuple[Array, Array]:
    """Fill probabilities of every action's bid and ask in every state, ``[..., S, A]``.

    ``p_bid`` / ``p_ask`` ``[..., A]``: the probability that each action's bid / ask would
    fill (0 or 1 on a tape, where fills are deterministic given the tape); the posting rule
    zeroes a side at its limit.
    """
    s = params.n_states
    states = np.arange(s).reshape(-1, 1)
    bid_ok = _like(np.broadcast_to(states < s - 1, (s, params.n_actions)) * 1.0, p_bid)
    ask_ok = _like(np.broadcast_to(states > 0, (s, params.n_actions)) * 1.0, p_bid)
    return p_bid[..., None, :] * bid_ok, p_ask[..., None, :] * ask_ok


MOVES = (-1, 0, 1)
"""The inventory moves of one step, in the order of :func:`outcomes`' last axis."""


class StepModel(NamedTuple, Generic[Array]):
    """One step's expected reward and inventory moves given state and action, ``[..., S, A]``."""

    reward: Array  # expected reward over the fills
    down: Array  # probability that the inventory falls one lot (the ask alone fills)
    up: Array  # probability that it rises one lot (the bid alone fills)


def outcomes(model: StepModel[Array]) -> Array:
    """Probabilities of the moves in :data:`MOVES`, ``[..., S, A, 3]``."""
    xp = array_module(model.up)
    return xp.stack([model.down, 1.0 - model.up - model.down, model.up], -1)


def expected_rewards(
    params: QuoteParams,
    p_bid: Array,
    p_ask: Array,
    bid_edge: Array,
    ask_edge: Array,
    dmid: Array,
    last: Array,
) -> StepModel[Array]:
    """Expected reward over the fills and the move probabilities, ``[..., S, A]`` each.

    ``p_*``, ``*_edge``: ``[..., A]`` (an edge is 0 where the side is not quoted); ``dmid`` and
    ``last`` (1.0 at the episode's last step, where the liquidation is charged): ``[...]``.
    The exact expectation of :func:`settle_quotes`' reward given the step's market (tested
    against Monte Carlo): this is what makes the optimum and the ``expected`` estimator exact.
    With independent one-lot fills ``b``, ``a`` and ``q' = q + b - a``: ``E[q'] = q + pb - pa``,
    ``E[q'^2] = q^2 + 2q (pb - pa) + P(q' != q)``, and ``E|q'| = |E[q']|`` unless ``q = 0``,
    where it is ``P(q' != 0)``.
    """
    pb, pa = posted_fill_probs(params, p_bid, p_ask)  # [..., S, A]
    xp = array_module(pb)
    q = _like(params.inventory().astype(np.float64)[:, None], pb)  # [S, 1]
    moved = pb - pa
    mean_q = q + moved
    change = pb + pa - 2.0 * pb * pa  # P(q' != q)
    mean_q2 = q**2 + 2.0 * q * moved + change
    mean_abs = xp.where(q > 0, mean_q, xp.where(q < 0, -mean_q, change))
    liq = params.alpha * mean_q2 + params.liquidation_cost * mean_abs
    spread = pb * (bid_edge[..., None, :] - params.maker_fee) + pa * (
        ask_edge[..., None, :] - params.maker_fee
    )
    bid_lv, ask_lv = action_levels(params)
    empty = (bid_lv == NO_QUOTE) * 1.0 + (ask_lv == NO_QUOTE) * 1.0
    reward = (
        params.w_spread * spread
        + params.w_mtm * mean_q * dmid[..., None, None]
        - params.phi * mean_q2
        - params.no_quote_penalty * _like(empty, pb)
        - liq * last[..., None, None]
    )
    return StepModel(reward, pa * (1.0 - pb), pb * (1.0 - pa))


def continuation(model: StepModel[Array], v_next: Array) -> Array:
    """``E[v(q')]`` ``[..., S, A]`` for next-step values ``v_next [..., S]`` (the posting rule
    keeps every move on the grid, so the edge states' missing neighbours get weight 0)."""
    xp = array_module(v_next)
    v_up = xp.concatenate([v_next[..., 1:], v_next[..., -1:]], -1)
    v_down = xp.concatenate([v_next[..., :1], v_next[..., :-1]], -1)
    return (
        v_next[..., None]
        + model.down * (v_down - v_next)[..., None]
        + model.up * (v_up - v_next)[..., None]
    )


def tape_fills(
    params: QuoteParams,
    bid_queue: np.ndarray,
    sell_volume: np.ndarray,
    ask_queue: np.ndarray,
    buy_volume: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether a one-lot quote at each level would fill, ``[L, n_levels]`` per side (the tape
    rule of this module's docstring; level 0, no quote, never fills).

    ``*_queue[k, j]``: displayed lots ``j`` ticks behind the side's best quote when step k
    starts; ``sell_volume`` / ``buy_volume[k, j]``: lots market orders printed there in the
    step. A bid ``o`` ticks behind fills iff sells print deeper than ``o`` (through it), or at
    ``o`` beyond the queue ahead by at least the quote's lot. Offsets must be whole ticks
    within the tape's depth.
    """
    offsets = np.asarray(params.offsets)
    depth = bid_queue.shape[1]
    if np.any(offsets != np.round(offsets)) or offsets.max() >= depth:
        raise ValueError(
            f"offsets={params.offsets} must be whole ticks below the tape's depth ({depth})"
        )

    def side(queue: np.ndarray, volume: np.ndarray) -> np.ndarray:
        deeper = np.cumsum(volume[:, ::-1], axis=1)[:, ::-1]  # lots printed at level >= j
        through = np.concatenate([deeper[:, 1:], np.zeros_like(deeper[:, :1])], axis=1) > 0
        at = volume - queue >= 1
        fills = through | at  # [L, depth]
        levels = offsets.astype(np.int64)
        return np.concatenate([np.zeros((len(fills), 1), bool), fills[:, levels]], axis=1)

    return side(bid_queue, sell_volume), side(ask_queue, buy_volume)
