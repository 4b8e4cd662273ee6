"""The PPO baseline of the quoting task: Stable-Baselines3 on the gymnasium wrapper.

What a newcomer would try first (and the user's earlier market maker): PPO stepping
:class:`hmarl.market.quote_env.QuoteEnv` one env at a time, for the same number of env-steps
as the hierarchical agent. Its greedy policy is then scored exactly like the agent's
(:func:`hmarl.agent.quote_update.exact_objective`): its action in every inventory state at
every step of the evaluation paths, then the expected objective over the fills on the grid.
Needs the ``[mm]`` extra (``stable-baselines3``, ``gymnasium``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from hmarl.agent.quote_rollout import QuoteBatch
from hmarl.agent.quote_update import exact_objective
from hmarl.market import avellaneda as av
from hmarl.market.quote_env import QuoteEnv, as_gymnasium
from hmarl.market.quoting import QuoteParams


def train_ppo(
    market: av.ASParams,
    params: QuoteParams,
    *,
    env_steps: int,
    macro_window: int,
    micro_window: int,
    seed: int = 0,
) -> tuple[Any, float]:
    """A PPO model trained for ``env_steps`` steps (SB3 defaults, one env) and its seconds."""
    from stable_baselines3 import PPO

    env = as_gymnasium(
        QuoteEnv(market, params, macro_window=macro_window, micro_window=micro_window, seed=seed)
    )
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    return model, time.perf_counter() - start


@torch.no_grad()
def ppo_objective(model: Any, batch: QuoteBatch, params: QuoteParams) -> float:
    """Mean exact objective of PPO's greedy policy over the batch's paths."""
    n_env, length = batch.dmid.shape
    x = torch.as_tensor(params.inventory(), dtype=torch.float32) / params.max_inventory
    state = torch.stack([x, 1.0 - x.abs()], -1)  # [S, 2]
    inputs = torch.cat([batch.macro, batch.micro], -1)  # [B, L, 12]
    obs = torch.cat(
        [
            inputs.unsqueeze(2).expand(-1, -1, params.n_states, -1),
            state.expand(n_env, length, -1, -1),
        ],
        -1,
    ).reshape(-1, inputs.shape[-1] + 2)
    actions, _ = model.predict(obs.numpy(), deterministic=True)
    greedy = np.eye(params.n_actions)[np.asarray(actions).reshape(n_env, length, params.n_states)]
    return exact_objective(params, batch, torch.as_tensor(greedy, dtype=torch.float64))
