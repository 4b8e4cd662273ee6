"""The PPO baseline of the quoting task: Stable-Baselines3 on the gymnasium wrapper.

What a newcomer would try first (and the user's earlier market maker): PPO stepping
:class:`hmarl.market.quote_env.QuoteEnv` one env at a time, for the same number of env-steps
as the hierarchical agent. Its greedy policy is then scored exactly like the agent's
(:func:`hmarl.agent.quote_update.exact_objective`): its action in every inventory state at
every step of the evaluation paths, then the expected objective over the fills on the grid.
On a tape market (:func:`tape_env`) the episodes are the agent's (random starts of the train
tape) and PPO's greedy policy is played on the test episodes like every other policy
(:func:`hmarl.train.quote_tape.score`). Needs the ``[mm]`` extra (``stable-baselines3``,
``gymnasium``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.quote_rollout import QuoteBatch, TapeTables, table_batch
from hmarl.agent.quote_update import exact_objective
from hmarl.market import avellaneda as av
from hmarl.market.quote_env import Episode, EpisodeEnv, QuoteEnv, as_gymnasium
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
    env = QuoteEnv(market, params, macro_window=macro_window, micro_window=micro_window, seed=seed)
    return learn(env, env_steps, seed)


def learn(env: EpisodeEnv, env_steps: int, seed: int) -> tuple[Any, float]:
    """SB3's PPO (defaults, one env, CPU) on ``env`` for ``env_steps`` steps, and its seconds."""
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", as_gymnasium(env), seed=seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=env_steps)
    return model, time.perf_counter() - start


def tape_env(tables: TapeTables, params: QuoteParams, episode_steps: int, seed: int) -> EpisodeEnv:
    """The train tape's episodes at uniformly drawn starts, one at a time (the agent's
    :func:`hmarl.train.quote_tape.train_batch`, one episode per reset)."""
    last = len(tables.dmid) - episode_steps

    def draw(rng: np.random.Generator) -> Episode:
        start = int(rng.integers(tables.warmup, last + 1))
        b = table_batch(tables, params, np.array([start]), episode_steps)
        inputs = torch.cat([b.macro, b.micro], -1)[0].numpy()
        return Episode(
            inputs.astype(np.float32),
            *(x[0].numpy() for x in (b.bid_fill, b.ask_fill, b.bid_edge, b.ask_edge, b.dmid)),
        )

    return EpisodeEnv(params, draw, tables.macro.shape[1] + tables.micro.shape[1] + 2, seed=seed)


@torch.no_grad()
def ppo_choice(model: Any, batch: QuoteBatch, params: QuoteParams) -> Tensor:
    """PPO's greedy action in every inventory state at every step ``[S, B, L]``."""
    n_env, length = batch.dmid.shape
    x = torch.as_tensor(params.inventory(), dtype=torch.float32) / params.max_inventory
    state = torch.stack([x, 1.0 - x.abs()], -1)  # [S, 2]
    inputs = torch.cat([batch.macro, batch.micro], -1).float()  # [B, L, 3N + 3N]
    obs = torch.cat(
        [
            inputs.unsqueeze(2).expand(-1, -1, params.n_states, -1),
            state.expand(n_env, length, -1, -1),
        ],
        -1,
    ).reshape(-1, inputs.shape[-1] + 2)
    actions, _ = model.predict(obs.numpy(), deterministic=True)
    out = torch.as_tensor(np.asarray(actions).reshape(n_env, length, params.n_states))
    return out.permute(2, 0, 1).long()


def ppo_objective(model: Any, batch: QuoteBatch, params: QuoteParams) -> float:
    """Mean exact objective of PPO's greedy policy over the batch's paths (Avellaneda-Stoikov)."""
    choice = ppo_choice(model, batch, params).permute(1, 2, 0)  # [B, L, S]
    greedy = torch.nn.functional.one_hot(choice, params.n_actions).double()
    return exact_objective(params, batch, greedy)
