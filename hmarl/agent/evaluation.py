"""Run a policy over one split and tabulate every decision (the steps table of hmarl.steps).

Used by the trainer's validation and by the backtest, so both report through the same
table and the same :func:`hmarl.stats.metrics.compute_stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from hmarl.agent.rollout import MarketTensors, Trajectory, evaluate
from hmarl.agent.specialists import decision_parts
from hmarl.market.env import EnvParams, Settlement, position_grid
from hmarl.stats.metrics import compute_stats
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.steps import SETTLEMENT_COLUMNS, gate_column, own_prob_column
from hmarl.steps import steps_table as _table

if TYPE_CHECKING:
    from hmarl.agent.policy import HierarchicalPolicy
    from hmarl.market.market_data import MarketData

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
) -> pd.DataFrame:
    """The policy's steps over a split (deterministic argmax unless ``greedy=False``).

    Sampled actions draw their uniforms from a CPU generator seeded with ``seed`` whatever the
    device: a checkpoint's sampled validation on a GPU is then the same trajectory as its
    backtest on a CPU (a CUDA generator would draw another stream).
    """
    lo, hi = market.splits[split] if isinstance(split, str) else split
    gen = torch.Generator().manual_seed(seed)
    traj = evaluate(policy, tensors, lo, hi, position_grid(env), env, generator=gen, greedy=greedy)
    return steps_frame(traj, market, policy=policy)


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
