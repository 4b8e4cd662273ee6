"""Run a policy over one split and tabulate every decision (the backtest's steps.csv schema).

Used by the trainer's validation and by the backtest, so both report through the same
table and the same :func:`hmarl.metrics.compute_stats`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from hmarl.dataset import MarketData
from hmarl.env import EnvParams, position_grid
from hmarl.metrics import compute_stats
from hmarl.policy import HierarchicalPolicy
from hmarl.rollout import MarketTensors, Trajectory, evaluate


def market_tensors(market: MarketData, device: torch.device | str = "cpu") -> MarketTensors:
    return MarketTensors(
        macro=torch.from_numpy(market.macro).to(device),
        micro=torch.from_numpy(market.micro).to(device),
        returns=torch.from_numpy(market.returns).to(device),
    )


def steps_frame(traj: Trajectory, market: MarketData, env_index: int = 0) -> pd.DataFrame:
    """One row per decision bar t: prices, action, probabilities, position, costs, equity."""
    rows = traj.rows[env_index].cpu().numpy()
    probs = traj.probs[env_index].detach().cpu().numpy().astype(np.float64)
    s = traj.settlement
    frame = pd.DataFrame(
        {
            "price": market.close[rows],
            "next_price": market.close[rows + 1],
            "action": traj.actions[env_index].cpu().numpy(),
            "p_hold": probs[:, 0],
            "p_buy": probs[:, 1],
            "p_sell": probs[:, 2],
            "position": s_np(traj.held[env_index]),
            "turnover": s_np(s.turnover[env_index]),
            "fee": s_np(s.fee[env_index]),
            "equity": s_np(s.equity[env_index]),
            "reward": s_np(s.reward[env_index]),
        },
        index=market.index[rows],
    )
    frame.index.name = "time"
    return frame


def s_np(t: torch.Tensor) -> np.ndarray:
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
    """The policy's steps over a split (deterministic argmax unless ``greedy=False``)."""
    lo, hi = market.splits[split] if isinstance(split, str) else split
    gen = torch.Generator(device=tensors.macro.device).manual_seed(seed)
    traj = evaluate(policy, tensors, lo, hi, position_grid(env), env, generator=gen, greedy=greedy)
    return steps_frame(traj, market)


def validate(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    env: EnvParams,
    split: str = "val",
) -> dict[str, Any]:
    """Stats of the deterministic policy on a split (no bootstrap: this runs often)."""
    return compute_stats(run_split(policy, market, tensors, split, env), n_bootstrap=0)
