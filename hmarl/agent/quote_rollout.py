"""The factored rollout of the quoting task.

As in trading (hmarl/agent/rollout.py), the market does not react to the agent: the towers'
inputs are fixed per episode batch and only the inventory depends on actions. One batch costs

1. one batched pass of MacroNet and MicroNet over every ``B x L`` step, dropout masks kept;
2. the head for every inventory-grid state ``[S, B, L, A]`` with the same masks (without
   gradients in row blocks, :func:`grid_choice`, so that the activations stay in cache);
3. a look-up loop: the action of the current state, then the next state from the step's fills
   (the market's verdict for each action, drawn before the loop: in the Avellaneda-Stoikov
   market from the step's uniforms, on a tape from the tape), with the posting rule;
4. vectorised settlement (:func:`hmarl.market.quoting.settle_quotes`).

:func:`collect_quotes` does that (what training with the exact estimators needs: they read
every state's probabilities). :func:`sample_quotes` is the sampling-only rollout for a
collection without gradients: the same towers, batched, and the head at the visited inventory
only, one step at a time (:func:`visit`), which walks the same path for the same generator.
:func:`collect_visited` is training's collection for the estimators that read the visited
states only (``reinforce``, ``baseline``): the towers with gradient as in
:func:`collect_quotes`, the path walked as in :func:`sample_quotes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.policy import HierarchicalPolicy, draw_mask
from hmarl.agent.quote_policy import inventory_inputs
from hmarl.data.ticks_synthetic import Tape
from hmarl.market.avellaneda import ASParams, ASPaths, action_tables, features
from hmarl.market.env import cash_ratio
from hmarl.market.quoting import (
    NO_QUOTE,
    QuoteParams,
    QuoteSettlement,
    action_levels,
    posted,
    settle_quotes,
    tape_fills,
)
from hmarl.market.windows import window_stats


class QuoteBatch(NamedTuple):
    """The market side of ``B`` episodes of ``L`` steps, on one device."""

    macro: Tensor  # [B, L, 3N] float32, the long window's summaries
    micro: Tensor  # [B, L, 3N] float32, the short window's
    p_bid: Tensor  # [B, L, A] float64, probability that each action's bid would fill
    p_ask: Tensor  # [B, L, A] float64
    bid_fill: Tensor  # [B, L, A] bool, whether it does on this path
    ask_fill: Tensor  # [B, L, A] bool
    bid_edge: Tensor  # [B, L, A] float64, mid - bid price (0 where not quoted)
    ask_edge: Tensor  # [B, L, A] float64, ask price - mid
    dmid: Tensor  # [B, L] float64, the mid's move over each step


class QuoteTrajectory(NamedTuple):
    states: Tensor  # [B, L] inventory-grid state before each step
    actions: Tensor  # [B, L] joint quote actions
    positions: Tensor  # [B, L] float32, the head's inventory input q / Q before the step
    cash: Tensor  # [B, L] float32, 1 - |q / Q|
    probs: Tensor  # [B, L, A] probabilities used to act (no graph)
    ctx: Tensor  # [B, L, H1] head context, with the graph of the modules being trained
    head_masks: list[Tensor | None]
    settlement: QuoteSettlement
    grid_probs: Tensor | None  # [S, B, L, A] every state's probabilities, no graph (None:
    # collect_visited's, which runs the head at the visited states only)
    grid_logits: Tensor | None = None  # [S, B, L, A] with graph (keep_grid_logits)

    def every_state(self) -> Tensor:
        """:attr:`grid_probs`, or an error naming the collection that has every state's."""
        if self.grid_probs is None:
            raise ValueError(
                "this trajectory has the visited states' probabilities only "
                "(collect_visited): collect it with collect_quotes for every state's"
            )
        return self.grid_probs


def next_states(params: QuoteParams, batch: QuoteBatch, choice: Tensor) -> Tensor:
    """``f[s, b, k]``: the state after step k from state s taking ``choice[s, b, k]``."""
    s = torch.arange(params.n_states, device=choice.device).view(-1, 1, 1)
    post_bid, post_ask = posted(params, s, choice)  # the posting rule, [S, B, L]
    idx = choice.permute(1, 2, 0)  # [B, L, S]
    fb = batch.bid_fill.gather(-1, idx).permute(2, 0, 1) & post_bid
    fa = batch.ask_fill.gather(-1, idx).permute(2, 0, 1) & post_ask
    return s + fb.long() - fa.long()


def walk_states(params: QuoteParams, f: Tensor) -> Tensor:
    """States ``[B, L]`` before each step, following ``f [S, B, L]`` from flat (host loop)."""
    n_states, n_env, length = f.shape
    table = np.ascontiguousarray(f.cpu().numpy().transpose(2, 1, 0)).reshape(length, -1)
    base = np.arange(n_env) * n_states
    out = np.empty((length, n_env), dtype=np.int64)
    s = np.full(n_env, params.start, dtype=np.int64)
    for k in range(length):
        out[k] = s
        s = table[k].take(base + s)
    return torch.from_numpy(np.ascontiguousarray(out.T)).to(f.device)


def follow(
    params: QuoteParams, batch: QuoteBatch, choice: Tensor
) -> tuple[Tensor, Tensor, QuoteSettlement]:
    """Play a choice table ``choice[s, b, k]`` (the action in every inventory state) from flat:
    the visited states and actions ``[B, L]`` and their settlement. Any (time, inventory)
    policy (the agent's draws, a fixed quote, closed-form quotes) is played this one way."""
    n_env, length = batch.dmid.shape
    states = walk_states(params, next_states(params, batch, choice))
    b_idx = torch.arange(n_env, device=choice.device).unsqueeze(1)
    k_idx = torch.arange(length, device=choice.device).unsqueeze(0)
    actions = choice[states, b_idx, k_idx]
    return states, actions, settle_visited(params, batch, states, actions)


def settle_visited(
    params: QuoteParams, batch: QuoteBatch, states: Tensor, actions: Tensor
) -> QuoteSettlement:
    """Settle the visited ``states`` and ``actions`` ``[B, L]`` on the batch's market."""
    a = actions.unsqueeze(-1)
    return settle_quotes(
        params,
        states,
        actions,
        batch.bid_fill.gather(-1, a).squeeze(-1),
        batch.ask_fill.gather(-1, a).squeeze(-1),
        batch.bid_edge.gather(-1, a).squeeze(-1),
        batch.ask_edge.gather(-1, a).squeeze(-1),
        batch.dmid,
    )


class RolloutMasks(NamedTuple):
    """A batch's dropout masks ``[B, L, ...]`` (``None`` in eval mode or at p = 0)."""

    macro: Tensor | None
    micro: Tensor | None
    head: list[Tensor | None]


def rollout_masks(
    policy: HierarchicalPolicy, lead: tuple[int, int], generator: torch.Generator
) -> RolloutMasks:
    """The masks of a batch ``lead = (B, L)``, drawn iff ``policy.training``, in the order every
    quoting rollout draws them (MacroNet's, MicroNet's, the head's), so that rollouts given the
    same generator apply the same dropout."""

    def mask(shape: tuple[int, ...], p: float) -> Tensor | None:
        return draw_mask(shape, p, generator) if policy.training else None

    macro = mask(policy.macro.mask_shape(lead), policy.macro.p)
    micro = mask(policy.micro.mask_shape(lead), policy.micro.p)
    head = [mask(shape, policy.head.p) for shape in policy.head.mask_shapes(lead)]
    return RolloutMasks(macro, micro, head)


def tower_context(
    policy: HierarchicalPolicy,
    macro_x: Tensor,
    micro_x: Tensor,
    masks: RolloutMasks,
    train_macro: bool,
) -> Tensor:
    """MacroNet and MicroNet over rows of inputs (MacroNet's pass in the graph iff
    ``train_macro``) and the head's context from them: the part of a rollout that does not
    depend on the inventory."""
    with torch.set_grad_enabled(train_macro and torch.is_grad_enabled()):
        macro_emb = policy.macro(macro_x, masks.macro)
    return policy.head.context(macro_emb, policy.micro(micro_x, masks.micro))


GRID_BLOCK_ROWS = 256
"""Rows (env steps) per block of the no-gradient all-states pass, each for every state: the
block's activations stay in cache (measured on the shared CPU, one thread, 256 envs x 100
steps x 11 states: the head 197 ms in one pass, 96 ms in blocks of 256 rows, bit-identical)."""


def choose(probs: Tensor, u: Tensor | None) -> Tensor:
    """The action drawn from ``probs [..., A]`` with the uniforms ``u [...]`` by inverse CDF,
    the number of cumulative probabilities below ``u`` (the last action takes any rounding
    shortfall of the sum); the argmax when ``u`` is None (greedy)."""
    if u is None:
        return probs.argmax(-1)
    cum = probs.cumsum(-1)
    index = torch.searchsorted(cum, u.unsqueeze(-1).contiguous()).squeeze(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def grid_choice(
    policy: HierarchicalPolicy,
    ctx: Tensor,
    inv: Tensor,
    head_masks: list[Tensor | None],
    u: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Every inventory state's probabilities ``[S, B, L, A]`` and drawn action ``[S, B, L]``
    (:func:`choose`; ``u [B, L]``, the same for every state), without gradients, in blocks
    of :data:`GRID_BLOCK_ROWS` rows of the context."""
    n_states, lead = inv.shape[0], ctx.shape[:-1]
    rows = ctx.reshape(-1, ctx.shape[-1])
    masks = [None if m is None else m.reshape(-1, m.shape[-1]) for m in head_masks]
    flat_u = None if u is None else u.reshape(-1)
    probs_all: Tensor | None = None
    choice = torch.empty((n_states, rows.shape[0]), dtype=torch.int64, device=ctx.device)
    for a in range(0, rows.shape[0], GRID_BLOCK_ROWS):
        b = a + GRID_BLOCK_ROWS
        logits = policy.head.all_states(
            rows[a:b], inv, [None if m is None else m[a:b] for m in masks]
        )
        probs = torch.softmax(logits, dim=-1)  # [S, rows, A]
        if probs_all is None:
            probs_all = probs.new_empty((n_states, rows.shape[0], probs.shape[-1]))
        probs_all[:, a:b] = probs
        block_u = None if flat_u is None else flat_u[a:b].expand(n_states, -1)
        choice[:, a:b] = choose(probs, block_u)
    assert probs_all is not None  # a batch has at least one row
    return probs_all.view(n_states, *lead, -1), choice.view(n_states, *lead)


def collect_quotes(
    policy: HierarchicalPolicy,
    batch: QuoteBatch,
    params: QuoteParams,
    *,
    generator: torch.Generator,
    greedy: bool = False,
    train_macro: bool = True,
    keep_grid_logits: bool = False,
) -> QuoteTrajectory:
    """Run the batch's ``B`` episodes; dropout iff ``policy.training``, argmax iff ``greedy``."""
    n_env, length = batch.dmid.shape
    lead = (n_env, length)
    device = batch.macro.device
    masks = rollout_masks(policy, lead, generator)
    ctx = tower_context(policy, batch.macro, batch.micro, masks, train_macro)  # [B, L, H1]
    head_masks = masks.head

    # ---- every inventory state's quote probabilities, then the look-up loop ----
    inv = inventory_inputs(params, device)
    grid_logits = None
    if keep_grid_logits and torch.is_grad_enabled():
        grid_logits = policy.head.all_states(ctx, inv, head_masks)  # [S, B, L, A]
    with torch.no_grad():
        u = None
        if not greedy:  # the same uniforms for every state
            u = torch.rand(lead, generator=generator, device=generator.device).to(device)
        if grid_logits is not None:
            probs_all = torch.softmax(grid_logits.detach(), dim=-1)
            choice = choose(probs_all, None if u is None else u.expand(probs_all.shape[:-1]))
        else:
            probs_all, choice = grid_choice(policy, ctx.detach(), inv, head_masks, u)
    states, actions, settlement = follow(params, batch, choice)
    b_idx = torch.arange(n_env, device=device).unsqueeze(1)
    k_idx = torch.arange(length, device=device).unsqueeze(0)
    positions = inv[states]
    return QuoteTrajectory(
        states=states,
        actions=actions,
        positions=positions,
        cash=cash_ratio(positions),
        probs=probs_all[states, b_idx, k_idx],
        ctx=ctx,
        head_masks=head_masks,
        settlement=settlement,
        grid_probs=probs_all,
        grid_logits=grid_logits,
    )


BLOCK_ROWS = 2048
"""Rows (envs x steps) of the towers' pass per block in :func:`sample_quotes`: the layers'
activations of a block stay in cache (measured on the shared CPU, one thread: 256 envs x 100
steps, towers 37 ms in one pass, 32 ms in blocks of 2,048 rows; 1,024 envs, 252 ms and 144 ms)."""


class QuoteSample(NamedTuple):
    """What a sampling-only rollout (:func:`sample_quotes`) returns: the visited path only."""

    states: Tensor  # [B, L] inventory-grid state before each step
    actions: Tensor  # [B, L] joint quote actions
    probs: Tensor  # [B, L, A] the probabilities the actions were drawn from
    settlement: QuoteSettlement


@torch.no_grad()
def sample_quotes(
    policy: HierarchicalPolicy,
    batch: QuoteBatch,
    params: QuoteParams,
    *,
    generator: torch.Generator,
    greedy: bool = False,
) -> QuoteSample:
    """The batch's ``B`` episodes without gradients, the head run at the visited inventory only.

    Why: :func:`collect_quotes` runs the head for all ``S`` inventory states because the exact
    estimators and the choice tables need every state's probabilities; a collection that
    needs only the path (evaluation, a throughput comparison) then pays ``S`` head passes per
    step for one. Here the towers and the head's context still run batched over all ``B``
    episodes and a block of steps at a time (:func:`tower_context`, the factored part), and
    a loop over the block's steps runs the rest of the head on ``B`` rows at a time, at each
    episode's current inventory (:func:`visit`). The generator draws the same masks and
    uniforms in the same order as :func:`collect_quotes`, and the same inverse-CDF rule picks
    the action, so both give the same path (up to float rounding of the products on other
    shapes; ``tests/test_quote_update.py`` checks it)."""
    n_env, length = batch.dmid.shape
    masks, u = _masks_and_uniforms(policy, (n_env, length), generator, greedy, batch)
    macro_x, micro_x = (x.transpose(0, 1).contiguous() for x in (batch.macro, batch.micro))
    macro_m, micro_m = (_steps(m) for m in masks[:2])
    block = max(1, BLOCK_ROWS // n_env)

    def contexts() -> Iterator[tuple[int, Tensor]]:
        """The head's context of each block of steps, step-major ``[k1 - k0, B, H1]``."""
        for k0 in range(0, length, block):
            k1 = min(k0 + block, length)
            part = RolloutMasks(
                None if macro_m is None else macro_m[k0:k1],
                None if micro_m is None else micro_m[k0:k1],
                [],
            )
            yield k0, tower_context(policy, macro_x[k0:k1], micro_x[k0:k1], part, False)

    states, actions, probs = visit(policy, batch, params, contexts(), masks.head, u)
    return QuoteSample(states, actions, probs, settle_visited(params, batch, states, actions))


def collect_visited(
    policy: HierarchicalPolicy,
    batch: QuoteBatch,
    params: QuoteParams,
    *,
    generator: torch.Generator,
    train_macro: bool = True,
) -> QuoteTrajectory:
    """:func:`collect_quotes` for the estimators that read the visited states only
    (``reinforce``, ``baseline``): the same trajectory without every state's probabilities
    (``grid_probs`` is None), at a fraction of the cost.

    Why: those estimators' loss is log pi at the visited (state, action) pairs, which
    :func:`hmarl.agent.quote_update.quote_policy_loss` computes in one batched head pass with
    gradient from the trajectory's context; the all-states head pass of :func:`collect_quotes`
    (``S`` head passes per step) would only serve to walk the path. Here the towers run once
    with gradient over every ``B x L`` step, as in :func:`collect_quotes` (the same context,
    the same graph), and the path is walked by :func:`visit` on that context, detached: the
    head at each episode's current inventory, without gradients. The generator draws the same
    masks and uniforms in the same order, so the path, the settlement and the update are
    those of :func:`collect_quotes` (bit for bit where the head's rows round the same on both
    shapes, which ``tests/test_quote_update.py`` checks, and the training runs of
    docs/market_making.md compared with the all-states collection)."""
    n_env, length = batch.dmid.shape
    masks, u = _masks_and_uniforms(policy, (n_env, length), generator, False, batch)
    ctx = tower_context(policy, batch.macro, batch.micro, masks, train_macro)  # [B, L, H1]
    contexts = iter([(0, ctx.detach().transpose(0, 1))])
    with torch.no_grad():
        states, actions, probs = visit(policy, batch, params, contexts, masks.head, u)
    positions = inventory_inputs(params, batch.macro.device)[states]
    return QuoteTrajectory(
        states=states,
        actions=actions,
        positions=positions,
        cash=cash_ratio(positions),
        probs=probs,
        ctx=ctx,
        head_masks=masks.head,
        settlement=settle_visited(params, batch, states, actions),
        grid_probs=None,
    )


def _masks_and_uniforms(
    policy: HierarchicalPolicy,
    lead: tuple[int, int],
    generator: torch.Generator,
    greedy: bool,
    batch: QuoteBatch,
) -> tuple[RolloutMasks, Tensor | None]:
    """The masks, then the uniforms ``[B, L]`` (None if ``greedy``) on the batch's device, drawn
    in :func:`collect_quotes`'s order."""
    masks = rollout_masks(policy, lead, generator)
    if greedy:
        return masks, None
    u = torch.rand(lead, generator=generator, device=generator.device)
    return masks, u.to(batch.macro.device)


def _steps(x: Tensor | None) -> Tensor | None:
    """A ``[B, L, ...]`` tensor as a step-major view ``[L, B, ...]``."""
    return None if x is None else x.transpose(0, 1)


def visit(
    policy: HierarchicalPolicy,
    batch: QuoteBatch,
    params: QuoteParams,
    contexts: Iterator[tuple[int, Tensor]],
    head_masks: list[Tensor | None],
    u: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Walk the batch's episodes from flat, the head at each episode's current inventory
    (without gradients): the visited states and actions ``[B, L]`` and the probabilities the
    actions were drawn from ``[B, L, A]``.

    ``contexts`` yields ``(k0, ctx)`` for consecutive blocks of steps, ``ctx`` the head's
    context step-major ``[n, B, H1]`` for steps ``k0 .. k0 + n - 1`` (so that the caller
    decides how the towers run: in blocks, or once with gradient); ``head_masks`` are the
    head's masks ``[B, L, H]``; ``u [B, L]`` the step's uniforms (None: argmax)."""
    n_env, length = batch.dmid.shape
    device = batch.dmid.device
    # each action's fills on the path, [L, B, A]: 1 the bid's, 2 the ask's, 3 both; the move
    # from state s is move[s, fills] (the posting rule: no bid at the top, no ask at the bottom)
    bid_lv, ask_lv = (torch.as_tensor(x, device=device) for x in action_levels(params))
    fills = (batch.bid_fill & (bid_lv != NO_QUOTE)).long() + 2 * (
        batch.ask_fill & (ask_lv != NO_QUOTE)
    ).long()
    fills = fills.transpose(0, 1).contiguous()
    grid = torch.arange(params.n_states, device=device).unsqueeze(1)
    code = torch.arange(4, device=device)
    move = (code % 2) * (grid < params.n_states - 1) - (code // 2) * (grid > 0)  # [S, 4]
    inv = inventory_inputs(params, device)
    cash = cash_ratio(inv)
    step_masks = [_steps(m) for m in head_masks]
    u_steps = None if u is None else u.t().contiguous()  # [L, B]
    states = torch.empty((length, n_env), dtype=torch.int64, device=device)
    actions = torch.empty_like(states)
    probs: Tensor | None = None
    s = torch.full((n_env,), params.start, dtype=torch.int64, device=device)
    for k0, ctx in contexts:
        for k in range(k0, k0 + ctx.shape[0]):
            masks = [None if m is None else m[k] for m in step_masks]
            logits = policy.head.from_context(ctx[k - k0], inv[s], cash[s], masks)
            p = torch.softmax(logits, -1)
            if probs is None:
                probs = p.new_empty((length, n_env, p.shape[-1]))
            a = choose(p, None if u_steps is None else u_steps[k])  # [B]
            states[k], actions[k], probs[k] = s, a, p
            s = s + move[s, fills[k].gather(1, a.unsqueeze(1)).squeeze(1)]
    assert probs is not None  # an episode has at least one step
    return states.t().contiguous(), actions.t().contiguous(), probs.transpose(0, 1)


def as_batch(
    market: ASParams,
    params: QuoteParams,
    paths: ASPaths,
    *,
    macro_window: int,
    micro_window: int,
    device: torch.device | str = "cpu",
) -> QuoteBatch:
    """An Avellaneda-Stoikov batch on ``device``: window features, every action's fill
    probability and, from the paths' uniforms, whether it fills (the same uniform for every
    action of a side: a deeper quote fills only when a shallower one would)."""
    p_bid, p_ask, e_bid, e_ask = (
        torch.as_tensor(x, dtype=torch.float64, device=device)
        for x in action_tables(market, params)
    )
    u_bid, u_ask, dmid = (
        torch.as_tensor(x, dtype=torch.float64, device=device)
        for x in (paths.u_bid, paths.u_ask, paths.dmid)
    )
    shape = (*dmid.shape, params.n_actions)

    def tensor(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=device)

    return QuoteBatch(
        macro=tensor(features(paths, market, macro_window)),
        micro=tensor(features(paths, market, micro_window)),
        p_bid=p_bid.expand(shape),
        p_ask=p_ask.expand(shape),
        bid_fill=u_bid.unsqueeze(-1) < p_bid,
        ask_fill=u_ask.unsqueeze(-1) < p_ask,
        bid_edge=e_bid.expand(shape),
        ask_edge=e_ask.expand(shape),
        dmid=dmid,
    )


TAPE_FEATURES = ("mid_change", "spread", "imbalance", "flow")
"""Per-step features of a tick tape, known when the step starts: the mid's last change and the
spread (ticks), the top-of-book imbalance, and the previous step's signed market-order flow."""


def tape_features(tape: Tape) -> np.ndarray:
    """:data:`TAPE_FEATURES` per step ``[L, 4]`` (causal: row k uses the book at k's start and
    trades before k)."""
    mid = (tape.bid + tape.ask) / 2.0
    change = np.concatenate([[0.0], np.diff(mid)])
    top_b, top_a = tape.bid_queue[:, 0], tape.ask_queue[:, 0]
    flow = tape.buy_volume.sum(1) - tape.sell_volume.sum(1)
    prev_flow = np.concatenate([[0.0], flow[:-1]])
    total = top_b + top_a  # 0 imbalance on an empty top (a real capture may show one)
    imbalance = np.where(total > 0, (top_b - top_a) / np.where(total > 0, total, 1.0), 0.0)
    return np.stack([change, tape.ask - tape.bid, imbalance, prev_flow], 1)


class TapeTables(NamedTuple):
    """A tape's per-step market tables ``[T, ...]``, computed once; episodes are row slices."""

    macro: np.ndarray  # [T, 3N] the long window's summaries (NaN in the warm-up)
    micro: np.ndarray  # [T, 3N]
    bid_fill: np.ndarray  # [T, n_levels] bool, whether a bid at each level would fill
    ask_fill: np.ndarray  # [T, n_levels]
    edge: np.ndarray  # [T, n_levels] a fill's edge against the mid, price units (0: no quote)
    dmid: np.ndarray  # [T] the mid's move over the step, price units
    warmup: int  # the first row with whole windows


def tape_tables(
    tape: Tape, params: QuoteParams, tick: float, *, macro_window: int, micro_window: int
) -> TapeTables:
    """Features, fills (:func:`hmarl.market.quoting.tape_fills`), edges and mid moves of every
    step of ``tape`` (prices in ticks of ``tick`` price units)."""
    x = tape_features(tape)
    fill_b, fill_a = tape_fills(
        params, tape.bid_queue, tape.sell_volume, tape.ask_queue, tape.buy_volume
    )
    depth = np.concatenate([[0.0], np.asarray(params.offsets, dtype=np.float64)])  # ticks
    half = (tape.ask - tape.bid) / 2.0
    edge = (half[:, None] + depth[None, :]) * tick * (np.arange(len(depth)) > 0)
    mid = (tape.bid + tape.ask) / 2.0 * tick
    dmid = np.concatenate([np.diff(mid), [0.0]])
    return TapeTables(
        window_stats(x, macro_window).astype(np.float32),
        window_stats(x, micro_window).astype(np.float32),
        fill_b,
        fill_a,
        edge,
        dmid,
        max(macro_window, micro_window) - 1,
    )


def table_batch(
    tables: TapeTables,
    params: QuoteParams,
    starts: np.ndarray,
    length: int,
    device: torch.device | str = "cpu",
) -> QuoteBatch:
    """Episodes of ``length`` steps from ``starts`` (rows of the tables): fills are
    deterministic given the tape, so the fill "probabilities" are 0 or 1 and the ``expected``
    estimator is exact over the agent's own actions only."""
    n_rows = len(tables.dmid)
    if starts.min() < tables.warmup or starts.max() + length > n_rows:
        raise ValueError(
            f"episodes must start at >= {tables.warmup} (the window's warm-up) and end "
            f"within the tape's {n_rows} steps"
        )
    rows = starts[:, None] + np.arange(length)  # [B, L]
    bid_lv, ask_lv = action_levels(params)

    def t64(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=torch.float64, device=device)

    bid_fill = torch.as_tensor(tables.bid_fill[rows][..., bid_lv], device=device)
    ask_fill = torch.as_tensor(tables.ask_fill[rows][..., ask_lv], device=device)
    return QuoteBatch(
        macro=torch.as_tensor(tables.macro[rows], device=device),
        micro=torch.as_tensor(tables.micro[rows], device=device),
        p_bid=bid_fill.double(),
        p_ask=ask_fill.double(),
        bid_fill=bid_fill,
        ask_fill=ask_fill,
        bid_edge=t64(tables.edge[rows][..., bid_lv]),
        ask_edge=t64(tables.edge[rows][..., ask_lv]),
        dmid=t64(tables.dmid[rows]),
    )


def tape_batch(
    tape: Tape,
    params: QuoteParams,
    tick: float,
    starts: np.ndarray,
    length: int,
    *,
    macro_window: int,
    micro_window: int,
    device: torch.device | str = "cpu",
) -> QuoteBatch:
    """Episodes of ``length`` steps from ``starts`` on a tape (:func:`tape_tables` then
    :func:`table_batch`)."""
    tables = tape_tables(tape, params, tick, macro_window=macro_window, micro_window=micro_window)
    return table_batch(tables, params, starts, length, device)
