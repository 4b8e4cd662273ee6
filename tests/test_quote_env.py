"""The one-step quoting environment (what a gym loop and PPO step) agrees with the factored
rollout's settlement; the gymnasium wrapper and the PPO baseline (the ``[mm]`` extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_quote_update import tiny_quote_policy

from hmarl.agent.quote_rollout import as_batch, collect_quotes
from hmarl.market import avellaneda as av
from hmarl.market.quote_env import QuoteEnv
from hmarl.market.quoting import QuoteParams

MARKET = av.ASParams(steps=30)
PARAMS = QuoteParams(offsets=(1, 2, 4), tick=0.3, max_inventory=2, phi=0.02, alpha=0.3)
WINDOWS = {"macro_window": 8, "micro_window": 3}


def test_stepping_one_env_gives_the_rollouts_rewards_for_the_same_actions() -> None:
    """The gym loop and the factored rollout on the same path and the same actions (the
    rollout's greedy ones, replayed): the same inventories, rewards and observations."""
    env = QuoteEnv(MARKET, PARAMS, **WINDOWS, seed=0)
    obs, _ = env.reset(seed=5)
    assert env.paths is not None
    policy = tiny_quote_policy(PARAMS, 0, dropout=0.0).eval()
    batch = as_batch(MARKET, PARAMS, env.paths, **WINDOWS)
    traj = collect_quotes(policy, batch, PARAMS, generator=torch.Generator(), greedy=True)
    rewards, inventory = [], []
    for k in range(MARKET.steps):
        np.testing.assert_allclose(obs[:-2], torch.cat([batch.macro, batch.micro], -1)[0, k])
        x = float(traj.positions[0, k])
        np.testing.assert_allclose(obs[-2:], [x, 1 - abs(x)], rtol=1e-6)
        obs, reward, done, truncated, info = env.step(int(traj.actions[0, k]))
        rewards.append(reward)
        inventory.append(info["inventory"])
        assert done == (k == MARKET.steps - 1) and not truncated
    np.testing.assert_allclose(rewards, traj.settlement.reward[0].numpy(), rtol=1e-12)
    np.testing.assert_array_equal(inventory, traj.settlement.inventory[0].numpy())


def test_the_env_is_seeded_and_refuses_a_step_before_reset() -> None:
    env = QuoteEnv(MARKET, PARAMS, **WINDOWS)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    a, _ = env.reset(seed=3)
    b, _ = QuoteEnv(MARKET, PARAMS, **WINDOWS).reset(seed=3)
    np.testing.assert_array_equal(a, b)


def test_the_gymnasium_wrapper_passes_the_env_checker() -> None:
    pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from hmarl.market.quote_env import as_gymnasium

    env = as_gymnasium(QuoteEnv(MARKET, PARAMS, **WINDOWS))
    check_env(env, skip_render_check=True)
    assert env.action_space.n == PARAMS.n_actions


def test_ppo_trains_on_the_wrapper_and_is_scored_exactly() -> None:
    pytest.importorskip("stable_baselines3")
    from hmarl.train.quote_ppo import ppo_objective, train_ppo

    model, seconds = train_ppo(MARKET, PARAMS, env_steps=128, seed=0, **WINDOWS)
    assert seconds > 0
    batch = as_batch(MARKET, PARAMS, av.generate(MARKET, 4, 1, history=8), **WINDOWS)
    score = ppo_objective(model, batch, PARAMS)
    assert np.isfinite(score)
    # fills do not depend on the mid, so no causal policy beats the optimum on any path
    assert score <= av.optimum(MARKET, PARAMS).value(PARAMS) + 1e-9
