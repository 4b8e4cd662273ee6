"""The factored rollout: exact gradients, correct sampling and states, the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.reinforce import discounted_returns, make_optimizers, normalise, reinforce_update
from hmarl.agent.rollout import (
    MarketTensors,
    Trajectory,
    collect,
    evaluate,
    log_probs,
    macro_cache,
    sample_starts,
)
from hmarl.market.env import EnvParams, position_grid
from hmarl.steps import BUY, HOLD, SELL

N_FEAT = 4


def tiny_market(rows: int = 300, seed: int = 0) -> MarketTensors:
    g = torch.Generator().manual_seed(seed)
    return MarketTensors(
        macro=torch.randn(rows, 3 * N_FEAT, generator=g),
        micro=torch.randn(rows, 3 * N_FEAT, generator=g),
        returns=0.01 * torch.randn(rows, generator=g, dtype=torch.float64),
    )


def tiny_policy(seed: int = 0, dropout: float = 0.2) -> HierarchicalPolicy:
    torch.manual_seed(seed)
    return HierarchicalPolicy(
        N_FEAT,
        macro_hidden=16,
        macro_dim=8,
        micro_hidden=8,
        micro_dim=4,
        head_hidden=(12, 6),
        dropout=dropout,
    )


def per_step_logp(
    policy: HierarchicalPolicy, market: MarketTensors, traj: Trajectory
) -> torch.Tensor:
    """The plain way: the whole model forward per step, one step at a time, same masks."""
    out = []
    for k in range(traj.rows.shape[1]):
        rows = traj.rows[:, k]
        mm = None if traj.macro_mask is None else traj.macro_mask[:, k]
        um = None if traj.micro_mask is None else traj.micro_mask[:, k]
        hm = [None if m is None else m[:, k] for m in traj.head_masks]
        logits = policy.head(
            policy.macro(market.macro[rows], mm),
            policy.micro(market.micro[rows], um),
            traj.positions[:, k],
            traj.cash[:, k],
            hm,
        )
        out.append(torch.log_softmax(logits, -1).gather(-1, traj.actions[:, k : k + 1]).squeeze(-1))
    return torch.stack(out, dim=1)


def grads(policy: HierarchicalPolicy) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode,short", [("target", True), ("target", False), ("increment", True)])
def test_factored_gradient_equals_per_step_autograd(mode: str, short: bool) -> None:
    market = tiny_market()
    policy = tiny_policy().double()
    market = MarketTensors(market.macro.double(), market.micro.double(), market.returns)
    env = EnvParams(action_mode=mode, allow_short=short, increment=0.5)
    gen = torch.Generator().manual_seed(1)
    starts = sample_starts(0, 290, 40, 5, gen)
    traj = collect(policy, market, starts, 40, position_grid(env), env, generator=gen)
    assert traj.macro_mask is not None and traj.head_masks[0] is not None  # dropout really on
    adv = normalise(discounted_returns(traj.settlement.reward, 0.99))

    logp, _ = log_probs(policy, traj)
    (-(logp * adv).sum(1).mean()).backward()
    factored = grads(policy)
    policy.zero_grad(set_to_none=True)

    ref_logp = per_step_logp(policy, market, traj)
    (-(ref_logp * adv).sum(1).mean()).backward()
    reference = grads(policy)

    assert factored.keys() == reference.keys() and len(factored) == 14
    for name, g in reference.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(factored[name], g, rtol=1e-5, atol=1e-12, msg=name)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-10, atol=1e-12)


def test_states_follow_the_action_rule() -> None:
    market = tiny_market()
    policy = tiny_policy()
    env = EnvParams()
    gen = torch.Generator().manual_seed(3)
    traj = collect(
        policy,
        market,
        sample_starts(0, 290, 50, 8, gen),
        50,
        position_grid(env),
        env,
        generator=gen,
    )
    a, pos, held = traj.actions, traj.positions.double(), traj.held
    assert torch.all(pos[:, 0] == 0)  # every episode starts flat
    assert torch.all(held[a == BUY] == 1.0) and torch.all(held[a == SELL] == -1.0)
    assert torch.equal(held[a == HOLD], pos[a == HOLD])
    assert torch.equal(pos[:, 1:], held[:, :-1])  # the state is the previous decision's position
    torch.testing.assert_close(traj.cash, 1 - traj.positions.abs())
    torch.testing.assert_close(traj.probs.sum(-1), torch.ones(8, 50))


def test_sampling_matches_the_probabilities() -> None:
    """Inverse-CDF sampling over precomputed grid states reproduces the policy's law."""
    market = tiny_market(rows=2100)
    policy = tiny_policy(dropout=0.0)
    with torch.no_grad():  # make the policy strongly prefer SELL regardless of input
        policy.head.out.bias.copy_(torch.tensor([0.0, 0.5, 1.5]))
    env = EnvParams()
    gen = torch.Generator().manual_seed(5)
    starts = torch.arange(40) * 30
    traj = collect(policy, market, starts, 500, position_grid(env), env, generator=gen)
    freq = torch.bincount(traj.actions.reshape(-1), minlength=3).double() / traj.actions.numel()
    expected = traj.probs.reshape(-1, 3).double().mean(0)
    # 20,000 draws: the standard error of each frequency is below 0.0035; allow ~4 of them
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_greedy_evaluation_is_deterministic_and_uses_argmax() -> None:
    market = tiny_market()
    policy = tiny_policy()
    env = EnvParams()
    grid = position_grid(env)
    t1 = evaluate(policy, market, 10, 250, grid, env, generator=torch.Generator().manual_seed(0))
    t2 = evaluate(policy, market, 10, 250, grid, env, generator=torch.Generator().manual_seed(9))
    assert torch.equal(t1.actions, t2.actions)
    assert torch.equal(t1.actions, t1.probs.argmax(-1))
    assert policy.training  # evaluate restores the mode


def test_macro_cache_equals_eval_mode_forward() -> None:
    market = tiny_market()
    policy = tiny_policy()
    cache = macro_cache(policy, market.macro, 20, 200)
    policy.eval()
    torch.testing.assert_close(cache.emb, policy.macro(market.macro[20:200]))
    env = EnvParams()
    gen = torch.Generator().manual_seed(2)
    policy.train()
    traj = collect(
        policy,
        market,
        sample_starts(20, 200, 30, 4, gen),
        30,
        position_grid(env),
        env,
        generator=gen,
        cache=cache,
    )
    assert traj.macro_mask is None
    logp, _ = log_probs(policy, traj)
    logp.sum().backward()
    assert all(p.grad is None for p in policy.macro.parameters())  # the cache carries no graph
    assert all(p.grad is not None for p in policy.micro.parameters())


def test_discounted_returns_match_the_definition() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    g = discounted_returns(r, 0.9)
    expected = torch.tensor(
        [[1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0], [0.5 - 0.9, -1.0, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(g, expected)


def test_reinforce_update_steps_only_scheduled_modules() -> None:
    market = tiny_market()
    policy = tiny_policy()
    opts = make_optimizers(policy, lr_macro=1e-3, lr_micro=1e-3, lr_head=1e-3)
    env = EnvParams()
    gen = torch.Generator().manual_seed(4)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    traj = collect(
        policy,
        market,
        sample_starts(0, 290, 30, 4, gen),
        30,
        position_grid(env),
        env,
        generator=gen,
        train_macro=False,
    )
    m = reinforce_update(
        policy, opts, traj, gamma=0.99, entropy_coef=0.0, grad_clip=1.0, update_macro=False
    )
    for n, p in policy.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == (not n.startswith("macro.")), n
    assert m["update/macro"] == 0.0 and m["param_delta/macro"] == 0.0 and m["param_delta/head"] > 0
    assert "step" not in str(opts["macro"].state_dict()["state"])  # Adam never stepped
    assert np.isfinite(m["loss/policy"])
