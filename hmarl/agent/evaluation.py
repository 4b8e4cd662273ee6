"""Run a policy over one split and tabulate every decision (the steps table of hmarl.steps).

Used by the trainer's validation and by the backtest, so both report through the same
table and the same :func:`hmarl.stats.metrics.compute_stats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from hmarl.agent.rollout import MarketTensors, Trajectory, evaluate
from hmarl.agent.specialists import decision_parts
from hmarl.market.env import EnvParams, Grid, Settlement, position_grid, settle
from hmarl.market.market_data import release_rows
from hmarl.stats.metrics import compute_stats
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.steps import SETTLEMENT_COLUMNS, end_to_end, gate_column, own_prob_column
from hmarl.steps import steps_table as _table

if TYPE_CHECKING:
    from hmarl.agent.policy import HierarchicalPolicy
    from hmarl.market.market_data import MarketData

EVAL_BLOCK_ROWS = 32_768  # decision rows per forward pass of run_split (~130 MB of activations)
BLOCK_ALIGN = 64  # block starts are this many rows apart (see _blockwise)
VALIDATION_NULL_N = 30  # random-timing policies per validation (a backtest uses 1,000):
# on a 15,800-bar validation split (1 thread) 100 policies added ~0.7 s per validation, 30 ~0.1 s


def steps_table(
    market: MarketData,
    rows: np.ndarray,
    actions: np.ndarray,
    positions: np.ndarray,
    settlement: Settlement,
    probs: np.ndarray | None = None,
    env_index: int = 0,
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The steps table (:mod:`hmarl.steps`) of one environment of a settled batch."""
    settled = {
        name: to_float64(getattr(settlement, name)[env_index]) for name in SETTLEMENT_COLUMNS
    }
    return _table(market.index, market.close, rows, actions, positions, settled, probs, extra)


def steps_frame(
    traj: Trajectory,
    market: MarketData,
    env_index: int = 0,
    policy: HierarchicalPolicy | None = None,
) -> pd.DataFrame:
    """The steps table of one trajectory of a rollout (with ``policy``: its gate columns)."""
    return steps_table(
        market,
        traj.rows[env_index].cpu().numpy(),
        traj.actions[env_index].cpu().numpy(),
        to_float64(traj.held[env_index]),
        traj.settlement,
        probs=to_float64(traj.probs[env_index]),
        env_index=env_index,
        extra=None if policy is None else gate_columns(policy, traj, env_index),
    )


def gate_columns(
    policy: HierarchicalPolicy, traj: Trajectory, env_index: int = 0
) -> dict[str, np.ndarray] | None:
    """Gate weights ``g_<name>`` and each specialist's own probabilities at the visited states
    (steps.csv, report.html, the stats' ``Mean Gate``), or None for a policy without a gate."""
    i = env_index
    parts = decision_parts(policy, traj.ctx[i], traj.positions[i], traj.cash[i])
    names = getattr(policy, "names", None)
    if parts is None or names is None:
        return None
    gate, own = (to_float64(t) for t in parts)  # [L, K], [L, K, 3]
    out = {gate_column(n): gate[:, k] for k, n in enumerate(names)}
    for k, n in enumerate(names):
        out.update({own_prob_column(n, code): own[:, k, code] for code in range(own.shape[-1])})
    return out


def to_float64(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 numpy array (detached, on the CPU), for tables."""
    return t.detach().cpu().numpy().astype(np.float64)


def run_split(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    split: str | tuple[int, int],
    env: EnvParams,
    *,
    greedy: bool = True,
    seed: int = 0,
    block: int = EVAL_BLOCK_ROWS,
) -> pd.DataFrame:
    """The policy's steps over a split (deterministic argmax unless ``greedy=False``).

    A split longer than ``block`` decision rows runs ``block`` rows at a time
    (:func:`_blockwise`): the activations of one pass (~4 KB a row: the window rows gathered,
    MacroNet's and MicroNet's hidden layers, the head's context and every grid state's
    probabilities) then stay bounded however long the split, and only the steps table is
    full length.

    Sampled actions draw their uniforms from a CPU generator seeded with ``seed`` whatever the
    device: a checkpoint's sampled validation on a GPU is then the same trajectory as its
    backtest on a CPU (a CUDA generator would draw another stream).
    """
    lo, hi = market.splits[split] if isinstance(split, str) else split
    gen = torch.Generator().manual_seed(seed)
    grid = position_grid(env)
    if hi - lo <= block:
        traj = evaluate(policy, tensors, lo, hi, grid, env, generator=gen, greedy=greedy)
        return steps_frame(traj, market, policy=policy)
    actions, held, probs, extra = _blockwise(
        policy, market, tensors, (lo, hi), grid, env, gen, greedy, block
    )
    return settled_steps(market, tensors, (lo, hi), actions, held, probs, env, extra)


def settled_steps(
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    actions: np.ndarray,
    held: np.ndarray,
    probs: np.ndarray | None,
    env: EnvParams,
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The steps table of positions ``held`` chosen at decision rows [lo, hi), settled anew.

    Settled as a rollout settles (:func:`hmarl.market.env.settle` on the market's tensors, on
    their device), so the figures are the bits a single pass gives; a backtest re-settles the
    strategy's positions under other costs with it (the policy never sees costs).
    """
    lo, hi = rows
    device = tensors.returns.device
    # a copy: `held` may be a steps frame's read-only column
    positions = torch.tensor(held, dtype=torch.float64, device=device)[None]
    settlement = settle(positions, tensors.returns[None, lo:hi], env)
    index = np.arange(lo, hi, dtype=np.int64)
    p64 = None if probs is None else np.asarray(probs, dtype=np.float64)
    return steps_table(market, index, actions, held, settlement, p64, extra=extra)


def _blockwise(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    grid: Grid,
    env: EnvParams,
    gen: torch.Generator,
    greedy: bool,
    block: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    """Actions, held positions, action probabilities (and a specialists policy's gate columns,
    :func:`gate_columns`) of rows [lo, hi), ``block`` at a time.

    Each block starts in the grid state the previous one ended in and draws its uniforms from
    the same generator, so the trajectory is the one a single pass gives, bit for bit. Why the
    blocks start every ``block`` rows (a multiple of :data:`BLOCK_ALIGN`) and the last one takes
    the rest (``block`` to ``2 * block - 1`` rows): torch's CPU matrix products sum a row in an
    order that depends on the row's place in the kernel's panels and on small products taking
    another path, so a row must sit at the same place modulo the panel size as in the single
    pass, and no block may be small (measured with a 6 -> 8 layer: blocks starting 591 rows
    apart, or of 97 rows, round some sums differently in the last bit; 64-row aligned blocks of
    64 rows and more do not). Only the compact per-row results of a block outlive it, and its
    rows of a memory-mapped cache leave the process's memory once it is done
    (:func:`hmarl.market.market_data.release_rows`).
    """
    lo, hi = rows
    actions = np.empty(hi - lo, dtype=np.int64)
    held = np.empty(hi - lo, dtype=np.float64)
    probs = np.empty((hi - lo, 3), dtype=np.float32)
    parts: list[dict[str, np.ndarray]] = []
    state = grid.start
    size = max(BLOCK_ALIGN, block - block % BLOCK_ALIGN)
    starts = range(lo, hi - size, size)[: max(1, (hi - lo) // size)]  # the last takes the rest
    edges = [*starts, hi]
    for a, b in pairwise(edges):
        traj = evaluate(
            policy, tensors, a, b, grid._replace(start=state), env, generator=gen, greedy=greedy
        )
        actions[a - lo : b - lo] = traj.actions[0].cpu().numpy()
        held[a - lo : b - lo] = traj.held[0].cpu().numpy()
        probs[a - lo : b - lo] = traj.probs[0].cpu().numpy()
        gates = gate_columns(policy, traj)
        if gates is not None:
            parts.append(gates)
        assert traj.states is not None  # collect records them
        state = int(grid.next_state[int(traj.states[0, -1]), int(actions[b - lo - 1])])
        for windows in (market.macro, market.micro):  # this block's pages of the cache's map
            release_rows(windows, a, b)
    extra = {k: np.concatenate([g[k] for g in parts]) for k in parts[0]} if parts else None
    return actions, held, probs, extra


def policy_stats(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    env: EnvParams,
    split: str = "val",
    *,
    greedy: bool = True,
    null_n: int = VALIDATION_NULL_N,
    seed: int = 0,
) -> dict[str, Any]:
    """Stats of the policy on a split, with its rank in a random-timing null (the trainer's
    validation; named for what it returns, apart from the data checks ``validate_candles``).

    Argmax actions unless ``greedy=False`` (then sampled with ``seed``). No bootstrap and a
    smaller null (``null_n`` policies, 0 skips it) than a backtest's: this runs every
    ``trainer.eval_every`` episodes.
    """
    lo, hi = market.splits[split]
    steps = run_split(policy, market, tensors, (lo, hi), env, greedy=greedy, seed=seed)
    stats = compute_stats(steps, n_bootstrap=0)
    if null_n > 0:
        null = random_timing(steps, market.returns[lo:hi], env, n=null_n, seed=seed)
        stats.update(random_timing_stats(null))
    return stats


def pooled_policy_stats(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    env: EnvParams,
    ranges: Mapping[str, tuple[int, int]],
    *,
    greedy: bool = True,
    null_n: int = VALIDATION_NULL_N,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """:func:`policy_stats` of a many-market run (:mod:`hmarl.market.many`): the stats of the
    pooled record and each market's own, ``ranges`` being each market's decision rows.

    Each market's split runs on its own, starting flat; the pooled record lays them end to end
    (:func:`hmarl.steps.end_to_end`, equity compounded across markets), and its random-timing
    null is settled on the same bars in the same order. Selection reads the pooled stats:
    a policy kept for one market's luck would have to pay for it on the others.
    """
    steps = {
        name: run_split(policy, market, tensors, rows, env, greedy=greedy, seed=seed)
        for name, rows in ranges.items()
    }
    own = {name: compute_stats(s, n_bootstrap=0) for name, s in steps.items()}
    pooled = end_to_end(list(steps.values()))
    stats = compute_stats(pooled, n_bootstrap=0)
    if null_n > 0:
        returns = np.concatenate([market.returns[lo:hi] for lo, hi in ranges.values()])
        null = random_timing(pooled, returns, env, n=null_n, seed=seed)
        stats.update(random_timing_stats(null))
    return stats, own
