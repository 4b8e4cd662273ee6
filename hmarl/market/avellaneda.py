"""The Avellaneda-Stoikov market: a seeded generator, its exact optimum, and closed-form quotes.

The market (Avellaneda and Stoikov 2008, in the discrete form of the quoting task,
:mod:`hmarl.market.quoting`): the mid is a Brownian motion, ``dS = sigma sqrt(dt) Z``; market
orders reach a quote ``delta`` away from the mid as a Poisson process of rate ``A exp(-k delta)``,
so over a step of length ``dt`` a one-lot quote fills with probability
``1 - exp(-A exp(-k delta) dt)``, each side independently.

**The objective** is the Cartea-Jaimungal one: expected terminal wealth (cash plus the
inventory liquidated at the mid) minus a running penalty ``phi q^2`` per step and a terminal one
``alpha q^2`` (plus ``liquidation_cost |q|``). The mid is a martingale independent of the fills,
so the expected value of any policy that looks only at (time, inventory) splits into
``cash + q * mid + h(k, q)``: the mid's moves add zero in expectation and ``h`` obeys

    h_L(q) = -alpha q^2 - c |q|,
    h_k(q) = max_a E[spread - fees - phi q'^2] + E[h_{k+1}(q')],  q' = q + bid fill - ask fill,

over the discrete joint actions. :func:`optimum` solves it by backward induction over the
``L x (2Q + 1)`` grid: this is the exact optimum of the task as posed (the limit any agent can
reach), and :func:`policy_value` evaluates any (time, inventory) policy the same way.

**Closed-form quotes** (the Avellaneda-Stoikov baseline): Gueant's asymptotic approximation
("Optimal market making", Applied Mathematical Finance 2017; Gueant, Lehalle and
Fernandez-Tapia 2013) for the risk-neutral objective with running penalty, in the limit of a
long horizon:

    delta_bid(q) = fee + 1/k + (2q + 1)/2 * sqrt(phi_rate e / (k A)),
    delta_ask(q) = fee + 1/k - (2q - 1)/2 * sqrt(phi_rate e / (k A)),

with ``phi_rate = phi / dt`` (the penalty per unit time) and one-lot quotes; each is rounded to
the nearest available offset. It ignores the horizon, the terminal penalty and the tick grid:
that is what the exact optimum measures it against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hmarl.market.quoting import (
    NO_QUOTE,
    QuoteParams,
    StepModel,
    action_levels,
    continuation,
    expected_rewards,
    joint_action,
    liquidation_penalty,
    posted,
    settle_quotes,
)
from hmarl.market.windows import window_stats


@dataclass(frozen=True)
class ASParams:
    """An Avellaneda-Stoikov market (units: price, lots, and the market's time unit)."""

    sigma: float = 2.0  # mid volatility per unit time (price units)
    A: float = 140.0  # arrival rate of market orders at the mid, per unit time
    k: float = 1.5  # decay of the arrival rate with the distance from the mid, per price unit
    dt: float = 0.005  # one decision step, in time units
    steps: int = 200  # decisions per episode (the horizon T = steps * dt)
    mid0: float = 100.0

    def __post_init__(self) -> None:
        for name in ("sigma", "A", "k", "dt"):
            if getattr(self, name) <= 0:
                raise ValueError(f"avellaneda {name}={getattr(self, name)} must be > 0")
        if self.steps < 1:
            raise ValueError(f"avellaneda steps={self.steps} must be >= 1")


def fill_probability(market: ASParams, delta: np.ndarray) -> np.ndarray:
    """``1 - exp(-A exp(-k delta) dt)``: a one-step quote ``delta`` from the mid fills."""
    return -np.expm1(
        -market.A * np.exp(-market.k * np.asarray(delta, dtype=np.float64)) * market.dt
    )


def action_tables(market: ASParams, params: QuoteParams) -> tuple[np.ndarray, ...]:
    """Per joint action ``[A]``: bid and ask fill probabilities and edges (0 where unquoted)."""
    depths = params.depths()
    p_level = np.where(np.isnan(depths), 0.0, fill_probability(market, np.nan_to_num(depths)))
    edge_level = np.nan_to_num(depths)
    bid, ask = action_levels(params)
    return p_level[bid], p_level[ask], edge_level[bid], edge_level[ask]


class ASPaths(NamedTuple):
    """Sampled market paths ``[B, L]`` (float64): the mid's moves and the fill uniforms."""

    history: np.ndarray  # [B, H] the mid's moves before the episode (the windows' warm-up)
    mid: np.ndarray  # [B, L + 1] mid at the start of each step, and the last
    dmid: np.ndarray  # [B, L] mid move over each step
    u_bid: np.ndarray  # [B, L] the bid fills iff u_bid < p(delta_bid)
    u_ask: np.ndarray  # [B, L]


def generate(
    market: ASParams, n_paths: int, seed: int | np.random.Generator, history: int = 0
) -> ASPaths:
    """``n_paths`` seeded episodes of the market (the same seed: the same paths), each with
    ``history`` earlier mid moves for the feature windows."""
    rng = np.random.default_rng(seed)
    shape = (n_paths, market.steps)
    scale = market.sigma * math.sqrt(market.dt)
    past = scale * rng.standard_normal((n_paths, history))
    dmid = scale * rng.standard_normal(shape)
    mid = market.mid0 + np.concatenate([np.zeros((n_paths, 1)), dmid.cumsum(1)], axis=1)
    return ASPaths(past, mid, dmid, rng.random(shape), rng.random(shape))


FEATURES = ("move", "time_left")
"""The per-step features of the Avellaneda-Stoikov market: the mid's last move over its
standard deviation, and the share of the episode left (the optimum depends on both time and
inventory, so a policy that is to reach it must see the time)."""


def features(paths: ASPaths, market: ASParams, window: int) -> np.ndarray:
    """Trailing ``[mean | std | last]`` of :data:`FEATURES` over ``window`` steps, ``[B, L, 6]``.

    Row k sees the moves before step k only (causal); ``paths`` needs ``window`` steps of history.
    """
    n_paths, n = paths.dmid.shape
    hist = paths.history.shape[1]
    if hist < window:
        raise ValueError(f"window={window} needs >= {window} steps of history, got {hist}")
    moves = np.concatenate([paths.history, paths.dmid], 1) / (market.sigma * math.sqrt(market.dt))
    last_move = np.concatenate([np.zeros((n_paths, 1)), moves[:, :-1]], 1)  # seen at row r
    k = np.arange(hist + n) - hist
    time_left = np.broadcast_to(1.0 - np.clip(k, 0, None) / n, (n_paths, hist + n))
    x = np.stack([last_move, time_left], -1)  # [B, H + L, 2]
    cols = x.transpose(1, 0, 2).reshape(hist + n, -1)  # [T, B * 2]: columns are independent
    stats = window_stats(cols, window).reshape(hist + n, 3, n_paths, len(FEATURES))
    return stats.transpose(2, 0, 1, 3).reshape(n_paths, hist + n, -1)[:, hist:]


class Solution(NamedTuple):
    """Values ``h [L + 1, S]`` and the (greedy, when optimised) policy ``[L, S, A]``."""

    h: np.ndarray
    policy: np.ndarray

    def value(self, params: QuoteParams) -> float:
        """The objective from flat at the start (wealth's expected change)."""
        return float(self.h[0, params.start])


def _step_model(market: ASParams, params: QuoteParams) -> StepModel[np.ndarray]:
    """One step's expected reward and moves ``[S, A]`` (the mid's moves left out: they add 0 in
    expectation); time-invariant in this market."""
    p_bid, p_ask, e_bid, e_ask = action_tables(market, params)
    return expected_rewards(params, p_bid, p_ask, e_bid, e_ask, np.zeros(()), np.zeros(()))


def _terminal(params: QuoteParams) -> np.ndarray:
    return -liquidation_penalty(params, params.inventory().astype(np.float64))


def optimum(market: ASParams, params: QuoteParams) -> Solution:
    """The exact optimal (time, inventory) policy and its values by backward induction."""
    model = _step_model(market, params)
    n, s, a = market.steps, params.n_states, params.n_actions
    h = np.empty((n + 1, s))
    h[n] = _terminal(params)
    policy = np.zeros((n, s, a))
    for k in range(n - 1, -1, -1):
        q = model.reward + continuation(model, h[k + 1])
        best = q.argmax(-1)
        policy[k, np.arange(s), best] = 1.0
        h[k] = q.max(-1)
    return Solution(h, policy)


def policy_value(market: ASParams, params: QuoteParams, policy: np.ndarray) -> Solution:
    """The exact value of a (time, inventory) policy ``[L, S, A]`` (or ``[S, A]``, stationary)."""
    model = _step_model(market, params)
    n = market.steps
    pi = np.broadcast_to(policy, (n, params.n_states, params.n_actions))
    h = np.empty((n + 1, params.n_states))
    h[n] = _terminal(params)
    for k in range(n - 1, -1, -1):
        h[k] = (pi[k] * (model.reward + continuation(model, h[k + 1]))).sum(-1)
    return Solution(h, np.array(pi))


def fixed_quote_policy(params: QuoteParams, level: int) -> np.ndarray:
    """Both sides at ``level`` (1-based offset index) in every state: ``[S, A]`` one-hot."""
    pi = np.zeros((params.n_states, params.n_actions))
    pi[:, joint_action(params, level, level)] = 1.0
    return pi


def no_quote_policy(params: QuoteParams) -> np.ndarray:
    return fixed_quote_policy(params, NO_QUOTE)


def best_fixed_quote(market: ASParams, params: QuoteParams) -> tuple[int, float]:
    """The symmetric level with the highest exact objective, and that objective."""
    values = [
        policy_value(market, params, fixed_quote_policy(params, lv)).value(params)
        for lv in range(1, params.n_levels)
    ]
    best = int(np.argmax(values))
    return best + 1, values[best]


def closed_form_depths(market: ASParams, params: QuoteParams) -> tuple[np.ndarray, np.ndarray]:
    """Gueant's approximate optimal bid and ask depths (price units) per inventory ``[S]``."""
    q = params.inventory().astype(np.float64)
    phi_rate = params.phi / market.dt
    slope = math.sqrt(phi_rate * math.e / (market.k * market.A))
    base = params.maker_fee + 1.0 / market.k
    return base + (2 * q + 1) / 2 * slope, base - (2 * q - 1) / 2 * slope


def closed_form_policy(market: ASParams, params: QuoteParams) -> np.ndarray:
    """The closed-form depths rounded to the nearest offset level: ``[S, A]`` one-hot."""
    levels = params.depths()[1:]
    bid_d, ask_d = closed_form_depths(market, params)
    bid = 1 + np.abs(bid_d[:, None] - levels[None, :]).argmin(-1)
    ask = 1 + np.abs(ask_d[:, None] - levels[None, :]).argmin(-1)
    pi = np.zeros((params.n_states, params.n_actions))
    pi[np.arange(params.n_states), bid * params.n_levels + ask] = 1.0
    return pi


def monte_carlo_value(
    market: ASParams, params: QuoteParams, policy: np.ndarray, paths: ASPaths, seed: int = 0
) -> np.ndarray:
    """Total reward of each sampled path ``[B]`` under a (time, inventory) policy, by settling
    the sampled fills step by step (the check of :func:`policy_value`)."""
    rng = np.random.default_rng(seed)
    n_paths, n = paths.dmid.shape
    pi = np.broadcast_to(policy, (n, params.n_states, params.n_actions))
    p_bid, p_ask, e_bid, e_ask = action_tables(market, params)
    states = np.empty((n_paths, n), dtype=np.int64)
    actions = np.empty((n_paths, n), dtype=np.int64)
    s = np.full(n_paths, params.start)
    for k in range(n):
        cum = pi[k, s].cumsum(-1)
        a = np.minimum((rng.random((n_paths, 1)) > cum).sum(-1), params.n_actions - 1)
        states[:, k], actions[:, k] = s, a
        post_bid, post_ask = posted(params, s, a)
        fb = (paths.u_bid[:, k] < p_bid[a]) & post_bid
        fa = (paths.u_ask[:, k] < p_ask[a]) & post_ask
        s = s + fb.astype(np.int64) - fa.astype(np.int64)
    out = settle_quotes(
        params,
        states,
        actions,
        paths.u_bid < p_bid[actions],
        paths.u_ask < p_ask[actions],
        e_bid[actions],
        e_ask[actions],
        paths.dmid,
    )
    return out.reward.sum(1)
