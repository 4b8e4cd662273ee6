"""The factored, batched rollout.

The market does not react to the agent, so MacroNet and MicroNet inputs do not depend on
actions; only the position (and the cash ratio derived from it) does, and it lives on a
small grid (:func:`hmarl.env.position_grid`). One episode batch therefore costs:

1. one batched pass of MacroNet and MicroNet over all ``B x L`` decision rows (with dropout
   masks drawn here and kept), and the DecisionHead's first-layer context from them;
2. one batched pass of the rest of the head for every grid position ``[S, B, L]``, with the
   same head masks, giving the action probabilities of every state the agent could be in;
3. a sequential loop that is only table look-ups: choose the action for the current state,
   move to the next state. No network runs inside the loop;
4. vectorised settlement of fees and rewards (:func:`hmarl.env.settle`).

The gradient pass (hmarl/reinforce.py) recomputes log-probabilities of the visited states in
one batched pass from the kept context graph and masks, so the REINFORCE gradient is exactly
that of the sampled trajectory (``tests/test_rollout.py`` checks it against per-step autograd).

While MacroNet is frozen its embeddings need no graph: :class:`MacroCache` computes them once
per cycle for the whole train split in eval mode (no dropout) and is dropped when MacroNet
steps. Eval mode makes the cache a deterministic function of the weights, which also makes
a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.env import EnvParams, Grid, Settlement, cash_ratio, settle
from hmarl.policy import HierarchicalPolicy, draw_mask


class MarketTensors(NamedTuple):
    """A market's model inputs on the training device."""

    macro: Tensor  # [T, 3N] float32
    micro: Tensor  # [T, 3N] float32
    returns: Tensor  # [T] float64, next-bar return of each row


class MacroCache(NamedTuple):
    """Eval-mode MacroNet embeddings of rows ``[offset, offset + len(emb))``."""

    offset: int
    emb: Tensor  # [R, macro_dim]


class Trajectory(NamedTuple):
    rows: Tensor  # [B, L] candle row of each decision
    actions: Tensor  # [B, L] int64
    positions: Tensor  # [B, L] float32, position held before the decision (policy input)
    cash: Tensor  # [B, L] float32, cash ratio before the decision (policy input)
    held: Tensor  # [B, L] float64, position chosen at the decision
    probs: Tensor  # [B, L, 3] action probabilities used to act (no graph)
    ctx: Tensor  # [B, L, H1] head context; carries the graph of the modules being trained
    macro_mask: Tensor | None  # [B, L, macro_hidden]
    micro_mask: Tensor | None  # [B, L, micro_hidden]
    head_masks: list[Tensor | None]  # [B, L, H_i] per head hidden layer
    settlement: Settlement


@torch.no_grad()
def macro_cache(policy: HierarchicalPolicy, macro_x: Tensor, lo: int, hi: int) -> MacroCache:
    """Embeddings of rows [lo, hi) with MacroNet in eval mode (see module docstring)."""
    was_training = policy.macro.training
    policy.macro.eval()
    try:
        emb = policy.macro(macro_x[lo:hi])
    finally:
        policy.macro.train(was_training)
    return MacroCache(lo, emb)


def sample_starts(lo: int, hi: int, length: int, n: int, generator: torch.Generator) -> Tensor:
    """Uniform episode starts so that all ``length`` decisions fall in rows [lo, hi)."""
    span = hi - lo - length
    if span < 0:
        raise ValueError(
            f"episode_len={length} does not fit in the split's {hi - lo} decision rows; "
            "lower trainer.episode_len or use more data"
        )
    return lo + torch.randint(0, span + 1, (n,), generator=generator, device=generator.device)


def _walk(grid: Grid, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow the position grid: ``choice[s, b, k]`` is the action taken in state s.

    Returns the state before each decision and the action taken, both ``[B, L]``.
    """
    _, n_env, length = choice.shape
    states = np.empty((n_env, length), dtype=np.int64)
    actions = np.empty((n_env, length), dtype=np.int64)
    s = np.full(n_env, grid.start, dtype=np.int64)
    envs = np.arange(n_env)
    for k in range(length):
        a = choice[s, envs, k]
        states[:, k] = s
        actions[:, k] = a
        s = grid.next_state[s, a]
    return states, actions


def collect(
    policy: HierarchicalPolicy,
    market: MarketTensors,
    starts: Tensor,
    length: int,
    grid: Grid,
    env: EnvParams,
    *,
    generator: torch.Generator,
    greedy: bool = False,
    cache: MacroCache | None = None,
    train_macro: bool = True,
) -> Trajectory:
    """Run ``len(starts)`` episodes of ``length`` decisions.

    Dropout is active iff ``policy.training``; actions are sampled unless ``greedy``
    (argmax). ``cache`` replaces the MacroNet pass; ``train_macro=False`` keeps MacroNet's
    pass out of the graph.
    """
    device = market.macro.device
    n_env = starts.shape[0]
    rows = starts.unsqueeze(1) + torch.arange(length, device=device)  # [B, L]
    lead = (n_env, length)
    p_drop = policy.head.p if policy.training else 0.0

    # ---- context: MacroNet and MicroNet, batched over every decision row ----
    macro_mask = None
    if cache is not None:
        macro_emb = cache.emb[rows - cache.offset]  # [B, L, D_macro], no graph
    else:
        macro_mask = _mask(
            policy.macro.mask_shape(lead), policy.macro.p, policy.training, generator
        )
        with torch.set_grad_enabled(train_macro and torch.is_grad_enabled()):
            macro_emb = policy.macro(market.macro[rows], macro_mask)
    micro_mask = _mask(policy.micro.mask_shape(lead), policy.micro.p, policy.training, generator)
    micro_emb = policy.micro(market.micro[rows], micro_mask)  # [B, L, D_micro]
    ctx = policy.head.context(macro_emb, micro_emb)  # [B, L, H1]
    head_masks = [
        _mask(shape, p_drop, policy.training, generator) for shape in policy.head.mask_shapes(lead)
    ]

    # ---- action probabilities of every grid state, then the look-up loop ----
    with torch.no_grad():
        grid_pos = torch.as_tensor(grid.positions, dtype=torch.float32, device=device)
        shape = (-1, 1, 1)
        probs_all = torch.softmax(
            policy.head.from_context(
                ctx.detach().unsqueeze(0),
                grid_pos.view(shape),
                cash_ratio(grid_pos).view(shape),
                [None if m is None else m.unsqueeze(0) for m in head_masks],
            ),
            dim=-1,
        )  # [S, B, L, 3]
        if greedy:
            choice = probs_all.argmax(dim=-1)
        else:
            u = torch.rand(lead, generator=generator, device=device).unsqueeze(0).unsqueeze(-1)
            cum = probs_all.cumsum(dim=-1)[..., :-1]  # [S, B, L, 2]
            choice = (u > cum).sum(dim=-1)  # inverse-CDF sampling, same uniforms for all states
    states_np, actions_np = _walk(grid, choice.cpu().numpy())

    states = torch.from_numpy(states_np).to(device)
    actions = torch.from_numpy(actions_np).to(device)
    grid_pos64 = torch.as_tensor(grid.positions, dtype=torch.float64, device=device)
    held = grid_pos64[torch.from_numpy(grid.next_state[states_np, actions_np]).to(device)]
    positions = grid_pos[states]
    b_idx = torch.arange(n_env, device=device).unsqueeze(1)
    probs = probs_all[states, b_idx, torch.arange(length, device=device)]  # [B, L, 3]
    return Trajectory(
        rows=rows,
        actions=actions,
        positions=positions,
        cash=cash_ratio(positions),
        held=held,
        probs=probs,
        ctx=ctx,
        macro_mask=macro_mask,
        micro_mask=micro_mask,
        head_masks=head_masks,
        settlement=settle(held, market.returns[rows], env),
    )


def _mask(
    shape: tuple[int, ...], p: float, training: bool, generator: torch.Generator
) -> Tensor | None:
    if not training:
        return None
    mask = draw_mask(shape, p, generator)
    return None if mask is None else mask.to(generator.device)


def log_probs(policy: HierarchicalPolicy, traj: Trajectory) -> tuple[Tensor, Tensor]:
    """Log pi(a_t | s_t) ``[B, L]`` and entropy ``[B, L]`` of the visited states, with graph."""
    logits = policy.head.from_context(traj.ctx, traj.positions, traj.cash, traj.head_masks)
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, L, 3]
    logp = logp_all.gather(-1, traj.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def evaluate(
    policy: HierarchicalPolicy,
    market: MarketTensors,
    lo: int,
    hi: int,
    grid: Grid,
    env: EnvParams,
    *,
    generator: torch.Generator,
    greedy: bool = True,
) -> Trajectory:
    """One trajectory over decision rows [lo, hi), dropout off, starting flat."""
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            start = torch.tensor([lo], device=market.macro.device)
            return collect(
                policy, market, start, hi - lo, grid, env, generator=generator, greedy=greedy
            )
    finally:
        policy.train(was_training)
