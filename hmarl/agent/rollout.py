"""The factored, batched rollout.

The market does not react to the agent, so MacroNet and MicroNet inputs do not depend on
actions; only the position (and the cash ratio derived from it) does, and it lives on a
small grid (:func:`hmarl.market.env.position_grid`). One episode batch therefore costs:

1. one batched pass of MacroNet and MicroNet over all ``B x L`` decision rows (with dropout
   masks drawn here and kept), and the DecisionHead's first-layer context from them;
2. one batched pass of the rest of the head for every grid position ``[S, B, L]``, with the
   same head masks, giving the action probabilities of every state the agent could be in;
3. a sequential loop that is only table look-ups: choose the action for the current state,
   move to the next state. No network runs inside the loop;
4. vectorised settlement of fees and rewards (:func:`hmarl.market.env.settle`).

The gradient pass (hmarl/agent/reinforce.py) recomputes log-probabilities of the visited states in
one batched pass from the kept context graph and masks, so the REINFORCE gradient is exactly
that of the sampled trajectory (``tests/test_rollout.py`` checks it against per-step autograd).

While MacroNet is frozen its embeddings need no graph: :class:`LazyMacroCache` computes them
in eval mode (no dropout), in fixed-size row chunks, only for the chunks an episode touches,
and keeps them until MacroNet steps. Why lazy: a cycle's frozen episodes visit a fraction of
a long train split, so an eager pass over the whole split (:func:`macro_cache`) would spend
MacroNet's forward on rows no episode reads. Why fixed-size chunks in eval mode: a chunk's
embeddings are then a deterministic function of the weights and of the chunk alone (the same
shapes, whichever episode asks first), so a run resumed mid-cycle, whose cache starts empty,
is bit-identical to an uninterrupted one.

The position walk (step 3) runs where the tensors live. On CUDA it is a parallel prefix
composition of the per-step transition maps (:func:`walk_scan`, ``log2(L)`` gathers, no host
round trip); on the CPU a short numpy loop is faster for batches (:func:`_walk`), the scan for
one long trajectory (validation). Both give identical states (``tests/test_device.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.policy import HierarchicalPolicy, draw_mask, grid_arguments
from hmarl.agent.specialists import MixtureHead, mixture_log_probs
from hmarl.market.env import EnvParams, Grid, Settlement, cash_ratio, settle
from hmarl.market.many import MarketsError

if TYPE_CHECKING:
    from hmarl.market.market_data import MarketData


class MarketTensors(NamedTuple):
    """A market's model inputs on the training device."""

    macro: Tensor  # [T, 3N] float32
    micro: Tensor  # [T, 3N] float32
    returns: Tensor  # [T] float64, next-bar return of each row


def market_tensors(market: MarketData, device: torch.device | str = "cpu") -> MarketTensors:
    """A market's macro and micro windows and bar returns as tensors on ``device``.

    On the CPU the window tensors share the market's arrays: from the cache those are
    read-only memory maps, so episodes gather their rows from the mapping and no copy of the
    whole market is made (nothing writes into these tensors; torch's warning about
    non-writable arrays is silenced for that reason).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return MarketTensors(
            macro=torch.from_numpy(market.macro).to(device),
            micro=torch.from_numpy(market.micro).to(device),
            returns=torch.from_numpy(market.returns).to(device),
        )


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
    # [S, B, L, 3] logits of every grid state, with graph; only when collected with
    # keep_grid_logits (the `expected` estimator's input, so it need not run the pass again)
    grid_logits: Tensor | None = None
    states: Tensor | None = None  # [B, L] grid state index before each decision
    grid_probs: Tensor | None = None  # [S, B, L, 3] every grid state's probabilities, no graph
    # [S, B, L, K, 3] each specialist's own log-probabilities at every grid state, no graph; only
    # when collected with keep_grid_own (model.solo_values=own: its values need them)
    grid_own: Tensor | None = None


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


@dataclass
class LazyMacroCache:
    """Eval-mode MacroNet embeddings of rows ``[offset, offset + len(emb))``, computed on demand.

    Chunk ``c`` covers rows ``[offset + c * chunk, offset + (c + 1) * chunk)`` (the last one is
    computed as the final ``chunk`` rows of the range, so every forward has the same shape);
    ``done[c]`` says whether it holds valid embeddings. Drop the cache when MacroNet steps.
    """

    offset: int
    emb: Tensor  # [R, macro_dim]; rows of chunks not yet done are uninitialised
    chunk: int
    done: np.ndarray  # [n_chunks] bool, host side (the bookkeeping needs no device sync)

    @classmethod
    def empty(
        cls, policy: HierarchicalPolicy, macro_x: Tensor, lo: int, hi: int, chunk: int = 256
    ) -> LazyMacroCache:
        """An empty cache of rows [lo, hi); ``chunk <= 0`` or past the range: one chunk."""
        n_rows = hi - lo
        if n_rows < 1:
            raise ValueError(f"empty MacroNet cache range [{lo}, {hi})")
        size = n_rows if chunk <= 0 else min(chunk, n_rows)
        emb = torch.empty(
            (n_rows, policy.macro.out_dim), dtype=macro_x.dtype, device=macro_x.device
        )
        return cls(lo, emb, size, np.zeros(-(-n_rows // size), dtype=bool))

    def fill(self, policy: HierarchicalPolicy, macro_x: Tensor, starts: Tensor, length: int) -> int:
        """Compute the chunks that rows ``[start, start + length)`` need; returns how many."""
        lo = starts.cpu().numpy() - self.offset  # one small device-to-host copy: [B] ints
        first, last = lo // self.chunk, (lo + length - 1) // self.chunk
        if lo.min() < 0 or lo.max() + length > len(self.emb):
            raise IndexError(
                f"episode rows outside the cached range [{self.offset}, "
                f"{self.offset + len(self.emb)})"
            )
        marks = np.zeros(len(self.done) + 1, dtype=np.int64)
        np.add.at(marks, first, 1)
        np.add.at(marks, last + 1, -1)
        missing = np.flatnonzero((np.cumsum(marks[:-1]) > 0) & ~self.done)
        if len(missing):
            self._compute(policy, macro_x, missing)
        return len(missing)

    @torch.no_grad()
    def _compute(self, policy: HierarchicalPolicy, macro_x: Tensor, chunks: np.ndarray) -> None:
        n_rows, was_training = len(self.emb), policy.macro.training
        policy.macro.eval()
        try:
            for c in chunks.tolist():
                a, b = c * self.chunk, min((c + 1) * self.chunk, n_rows)
                w = b - self.chunk  # window start: always `chunk` rows, ending at b
                out = policy.macro(macro_x[self.offset + w : self.offset + b])
                self.emb[a:b] = out[a - w :]
        finally:
            policy.macro.train(was_training)
        self.done[chunks] = True


def sample_starts(lo: int, hi: int, length: int, n: int, generator: torch.Generator) -> Tensor:
    """Uniform episode starts so that all ``length`` decisions fall in rows [lo, hi)."""
    span = hi - lo - length
    if span < 0:
        raise ValueError(
            f"episode_len={length} does not fit in the split's {hi - lo} decision rows; "
            "lower trainer.episode_len or use more data"
        )
    return lo + torch.randint(0, span + 1, (n,), generator=generator, device=generator.device)


def sample_market_starts(
    ranges: Sequence[tuple[int, int]], length: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Episode starts across markets: each environment of the batch picks a market with
    probability proportional to its number of possible starts (its train decision rows less
    the episode length, plus one), then a uniform start in it; so every train row of every
    market is about equally likely to be visited, as if the train splits were one market, and
    no episode leaves its market."""
    lo = torch.tensor([a for a, _ in ranges], dtype=torch.int64, device=generator.device)
    span = torch.tensor([b - a - length for a, b in ranges], dtype=torch.int64)
    if int(span.min()) < 0:
        raise MarketsError(
            f"trainer.episode_len={length} does not fit in a market's train split "
            f"({[b - a for a, b in ranges]} decision rows); lower trainer.episode_len"
        )
    count = (span + 1).to(generator.device)
    pick = torch.multinomial(count.double(), n, replacement=True, generator=generator)
    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    offset = torch.minimum((u * count[pick]).long(), count[pick] - 1)
    return lo[pick] + offset


def _walk(next_state: np.ndarray, start: int, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow the position grid in a host loop: ``choice[s, b, k]`` is the action in state s.

    Returns the state before each decision and the action taken, both ``[B, L]``.
    """
    n_states, n_env, length = choice.shape
    # f[k, b * S + s]: the state after decision k when in state s (one take per step)
    f = next_state[np.arange(n_states).reshape(-1, 1, 1), choice].transpose(2, 1, 0)
    f = np.ascontiguousarray(f).reshape(length, n_env * n_states)
    base = np.arange(n_env) * n_states
    states_t = np.empty((length, n_env), dtype=np.int64)
    s = np.full(n_env, start, dtype=np.int64)
    for k in range(length):
        states_t[k] = s
        s = f[k].take(base + s)
    states = np.ascontiguousarray(states_t.T)
    actions = choice[states, np.arange(n_env)[:, None], np.arange(length)[None, :]]
    return states, actions


def walk_scan(next_flat: Tensor, start: int, choice: Tensor) -> tuple[Tensor, Tensor]:
    """The walk of :func:`_walk` as ``log2(L)`` batched gathers on ``choice``'s device.

    Step k maps a state to the next one, ``f_k(s) = next[s, choice[s, b, k]]``; composing maps
    is associative, so the prefix compositions ``f_k o ... o f_0`` come from a Hillis-Steele
    scan (each round composes every map with the one ``d`` steps earlier) with no host loop
    and no host copy. ``next_flat`` is the grid's ``next_state`` flattened (``s * 3 + a``).
    """
    n_states, n_env, length = choice.shape
    state_ids = torch.arange(n_states, device=choice.device).view(-1, 1, 1)
    f = next_flat[state_ids * 3 + choice].permute(1, 2, 0).contiguous()  # [B, L, S]
    g = torch.empty_like(f)
    d = 1
    while d < length:  # after the round for d: f[:, k] = f_k o ... o f_{max(0, k-2d+1)}
        g[:, :d] = f[:, :d]
        torch.gather(f[:, d:], 2, f[:, :-d], out=g[:, d:])
        f, g = g, f
        d *= 2
    first = torch.full((n_env, 1), start, dtype=torch.int64, device=choice.device)
    states = torch.cat([first, f[:, :-1, start]], dim=1)  # [B, L] state before decision k
    actions = choice.permute(1, 2, 0).gather(2, states.unsqueeze(-1)).squeeze(-1)
    return states, actions


# On the CPU the host loop costs ~2 us per step plus ~0.02 us per trajectory, the scan
# ~0.005 us per trajectory, state and doubling round: the loop wins from a few trajectories
# (measured: 32 x 256, loop 0.6 ms, scan 1.2 ms; 1 x 15,000, loop 31 ms, scan 2.8 ms).
SCAN_MAX_ENVS_CPU = 4


def walk(grid: Grid, choice: Tensor) -> tuple[Tensor, Tensor]:
    """States ``[B, L]`` before each decision and actions taken, on ``choice``'s device."""
    next_flat, _ = grid_tensors(grid, choice.device)
    if choice.device.type != "cpu" or choice.shape[1] <= SCAN_MAX_ENVS_CPU:
        return walk_scan(next_flat, grid.start, choice)
    states, actions = _walk(grid.next_state, grid.start, choice.numpy())
    return torch.from_numpy(states), torch.from_numpy(actions)


def grid_tensors(grid: Grid, device: torch.device) -> tuple[Tensor, Tensor]:
    """``next_state`` flattened (int64) and the positions (float64) on ``device``, cached."""
    return _grid_tensors(
        tuple(grid.next_state.reshape(-1).tolist()), tuple(grid.positions.tolist()), str(device)
    )


@lru_cache(maxsize=32)
def _grid_tensors(
    next_flat: tuple[int, ...], positions: tuple[float, ...], device: str
) -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(next_flat, dtype=torch.int64, device=device),
        torch.tensor(positions, dtype=torch.float64, device=device),
    )


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
    cache: MacroCache | LazyMacroCache | None = None,
    train_macro: bool = True,
    keep_grid_logits: bool = False,
    keep_grid_own: bool = False,
) -> Trajectory:
    """Run ``len(starts)`` episodes of ``length`` decisions.

    Dropout is active iff ``policy.training``; actions are sampled unless ``greedy``
    (argmax). ``cache`` replaces the MacroNet pass (a lazy cache computes the chunks these
    episodes need first); ``train_macro=False`` keeps MacroNet's pass out of the graph.
    ``keep_grid_logits`` runs the all-states pass with autograd and keeps its logits (the
    ``expected`` estimator differentiates exactly that pass; the actions are the same).
    Every tensor is made on the market's device, and nothing returns to the host on the
    way (the lazy cache reads the ``B`` starts, and the CPU walk runs in numpy).
    """
    device = market.macro.device
    n_env = starts.shape[0]
    steps = torch.arange(length, device=device)
    rows = starts.unsqueeze(1) + steps  # [B, L]
    lead = (n_env, length)
    p_drop = policy.head.p if policy.training else 0.0

    # ---- context: MacroNet and MicroNet, batched over every decision row ----
    macro_mask = None
    if cache is not None:
        if isinstance(cache, LazyMacroCache):
            cache.fill(policy, market.macro, starts, length)
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
    grid_pos = grid_tensors(grid, device)[1]
    grid_logits = None
    if keep_grid_logits and torch.is_grad_enabled():
        grid_logits = policy.head.all_states(ctx, grid_pos, head_masks)  # [S, B, L, 3]
    grid_own = None
    with torch.no_grad():
        if keep_grid_own and isinstance(policy.head, MixtureHead):
            # the same pass, keeping its parts: the mixture is their log-sum-exp (from_context)
            log_gate, grid_own = policy.head.parts_from_context(
                *grid_arguments(ctx.detach(), grid_pos, head_masks)
            )
            logits_all = mixture_log_probs(log_gate, grid_own)
        else:
            logits_all = (
                grid_logits.detach()
                if grid_logits is not None
                else policy.head.all_states(ctx.detach(), grid_pos, head_masks)
            )
        probs_all = torch.softmax(logits_all, dim=-1)  # [S, B, L, 3]
        if greedy:
            choice = probs_all.argmax(dim=-1)
        else:
            # drawn where the generator lives (evaluation: a CPU generator on any device)
            u = torch.rand(lead, generator=generator, device=generator.device).to(device)
            u = u.unsqueeze(0).unsqueeze(-1)
            cum = probs_all.cumsum(dim=-1)[..., :-1]  # [S, B, L, 2]
            choice = (u > cum).sum(dim=-1)  # inverse-CDF sampling, same uniforms for all states
    states, actions = walk(grid, choice)  # [B, L] each

    next_flat, grid_pos64 = grid_tensors(grid, device)
    held = grid_pos64[next_flat[states * 3 + actions]]
    positions = grid_pos[states]
    b_idx = torch.arange(n_env, device=device).unsqueeze(1)
    probs = probs_all[states, b_idx, steps]  # [B, L, 3]
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
        grid_logits=grid_logits,
        states=states,
        grid_probs=probs_all,
        grid_own=grid_own,
    )


def _mask(
    shape: tuple[int, ...], p: float, training: bool, generator: torch.Generator
) -> Tensor | None:
    return draw_mask(shape, p, generator) if training else None  # on the generator's device


def visited_log_probs(policy: HierarchicalPolicy, traj: Trajectory) -> Tensor:
    """Log pi(. | s_t) ``[B, L, 3]`` of every action in the visited states, with graph."""
    logits = policy.head.from_context(traj.ctx, traj.positions, traj.cash, traj.head_masks)
    return torch.log_softmax(logits, dim=-1)


def entropy_of(logp: Tensor) -> Tensor:
    """Entropy (nats) over the last dimension of log-probabilities."""
    return -(logp.exp() * logp).sum(-1)


def log_probs(policy: HierarchicalPolicy, traj: Trajectory) -> tuple[Tensor, Tensor]:
    """Log pi(a_t | s_t) ``[B, L]`` and entropy ``[B, L]`` of the visited states, with graph."""
    logp_all = visited_log_probs(policy, traj)  # [B, L, 3]
    logp = logp_all.gather(-1, traj.actions.unsqueeze(-1)).squeeze(-1)
    return logp, entropy_of(logp_all)


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
