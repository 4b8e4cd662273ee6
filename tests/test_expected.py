"""The exact expected policy gradient over the position grid (hmarl/agent/expected.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from test_rollout import tiny_market, tiny_policy

from hmarl.agent.expected import (
    _recursions_loop,
    _recursions_scan,
    expected_surrogate,
    grid_rewards,
    grid_values,
    scan_products,
)
from hmarl.agent.reinforce import (
    GridModel,
    discounted_returns,
    exploration_bonus,
    leave_one_out,
    make_optimizers,
    normalise,
    policy_loss,
    reinforce_update,
)
from hmarl.agent.rollout import MarketTensors, collect, grid_tensors, log_probs, sample_starts
from hmarl.market.env import EnvParams, cash_ratio, position_grid

ENVS = [
    EnvParams(),
    EnvParams(allow_short=False, commission=0.002),
    EnvParams(action_mode="increment", increment=0.5, slippage_bps=3.0),
]


def _double_setup(env: EnvParams, length: int, n: int, seed: int = 0):
    market = tiny_market(seed=seed)
    market = MarketTensors(market.macro.double(), market.micro.double(), 3 * market.returns)
    policy = tiny_policy(seed).double()
    gen = torch.Generator().manual_seed(seed + 7)
    grid = position_grid(env)
    traj = collect(
        policy, market, sample_starts(1, 290, length, n, gen), length, grid, env, generator=gen
    )
    return market, policy, grid, traj


def _all_states(policy, traj, grid) -> torch.Tensor:
    """Head logits of every grid state ``[S, B, L, 3]`` with the rollout's context and masks."""
    positions = torch.as_tensor(grid.positions)
    return policy.head.all_states(traj.ctx, positions, traj.head_masks)


def _rewards(market: MarketTensors, grid, env: EnvParams, rows: torch.Tensor) -> torch.Tensor:
    return grid_rewards(grid, env, market.returns[rows - 1], market.returns[rows])


def test_scan_products_match_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 13, 4, 4, generator=g, dtype=torch.float64)
    prefix, suffix = scan_products(m), scan_products(m, reverse=True)
    for k in range(13):
        p = m[:, 0]
        for j in range(1, k + 1):
            p = p @ m[:, j]
        torch.testing.assert_close(prefix[:, k], p)
        s = m[:, k]
        for j in range(k + 1, 13):
            s = s @ m[:, j]
        torch.testing.assert_close(suffix[:, k], s)


@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
def test_grid_rewards_equal_settlement_along_the_sampled_path(env: EnvParams) -> None:
    market, _, grid, traj = _double_setup(env, 40, 6)
    r = _rewards(market, grid, env, traj.rows)
    states = torch.as_tensor(np.searchsorted(grid.positions, traj.positions.double().numpy()))
    along = r.gather(2, states[..., None, None].expand(-1, -1, 1, 3)).squeeze(2)
    along = along.gather(-1, traj.actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(along, traj.settlement.reward, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
def test_occupancy_and_values_match_a_plain_loop(env: EnvParams) -> None:
    market, policy, grid, traj = _double_setup(env, 30, 4)
    with torch.no_grad():
        probs = torch.softmax(_all_states(policy, traj, grid), -1)
    probs = probs.permute(1, 2, 0, 3)  # [B, L, S, 3]
    rewards = _rewards(market, grid, env, traj.rows)
    gamma = 0.97
    got = grid_values(grid, probs, rewards, gamma)

    b, length, s, _ = probs.shape
    nxt = torch.as_tensor(grid.next_state)
    d = torch.zeros(b, s, dtype=torch.float64)
    d[:, grid.start] = 1.0
    for k in range(length):
        torch.testing.assert_close(got.occupancy[:, k], d)
        new = torch.zeros_like(d)
        for a in range(3):
            new.index_add_(1, nxt[:, a], d * probs[:, k, :, a])
        d = new
    v = torch.zeros(b, s, dtype=torch.float64)
    for k in reversed(range(length)):
        q = rewards[:, k] + gamma * v[:, nxt]
        torch.testing.assert_close(got.q[:, k], q)
        v = (probs[:, k] * q).sum(-1)
        torch.testing.assert_close(got.v[:, k], v)
    torch.testing.assert_close(got.occupancy.sum(-1), torch.ones(b, length, dtype=torch.float64))


def test_the_scan_and_the_loop_agree() -> None:
    """Accelerators take the prefix-scan recursions, the CPU the numpy loop: same numbers."""
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(3, 37, 3, 3, generator=g, dtype=torch.float64), -1)
    nxt = torch.as_tensor(position_grid(EnvParams()).next_state)
    trans = torch.einsum("bksa,sat->bkst", probs, torch.nn.functional.one_hot(nxt, 3).double())
    c = torch.randn(3, 37, 3, generator=g, dtype=torch.float64)
    scan, loop = _recursions_scan(trans, c, 1, 0.97), _recursions_loop(trans, c, 1, 0.97)
    for got, want in zip(scan, loop, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # without the forward recursion (all_actions): the same values, and no occupancy to misuse
    for values_only in (
        _recursions_scan(trans, c, 1, 0.97, False),
        _recursions_loop(trans, c, 1, 0.97, False),
    ):
        torch.testing.assert_close(values_only[1], loop[1], rtol=1e-12, atol=1e-14)
        assert bool(values_only[0].isnan().all())


def _grad(policy: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return torch.cat([p.grad.reshape(-1) for p in policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("env", ENVS[:2], ids=["target", "long_only"])
def test_expected_gradient_is_the_mean_of_the_sampled_estimator(env: EnvParams) -> None:
    """A Monte-Carlo average of grad sum_k log pi(a_k|s_k) G_k over 400,000 action paths, on the
    same market paths and dropout masks, converges to the exact expectation."""
    length, n_env, n_mc, gamma = 6, 2, 400_000, 0.9
    market, policy, grid, traj = _double_setup(env, length, n_env, seed=3)
    logits = _all_states(policy, traj, grid)  # [S, B, L, 3]
    rewards = _rewards(market, grid, env, traj.rows)
    probs = torch.softmax(logits.detach(), -1).permute(1, 2, 0, 3)
    values = grid_values(grid, probs, rewards, gamma)
    loss, _ = expected_surrogate(logits, values, scale=1.0)
    exact = -_grad(policy, loss.sum())

    # Monte Carlo in numpy: W[b,k,s,a] = mean_n 1[s_k = s, a_k = a] G_k
    rng = np.random.default_rng(0)
    p_np, r_np = probs.numpy(), rewards.numpy()
    weights = np.zeros_like(p_np)
    for b in range(n_env):
        s = np.full(n_mc, grid.start)
        states, acts, rews = [], [], []
        for k in range(length):
            cum = p_np[b, k, s].cumsum(-1)
            a = (rng.random(n_mc)[:, None] > cum[:, :-1]).sum(-1)
            states.append(s)
            acts.append(a)
            rews.append(r_np[b, k, s, a])
            s = grid.next_state[s, a]
        g = discounted_returns(torch.as_tensor(np.stack(rews, 1)), gamma).numpy()
        for k in range(length):
            np.add.at(weights[b, k], (states[k], acts[k]), g[:, k] / n_mc)
    logp = torch.log_softmax(logits, -1).permute(1, 2, 0, 3)
    mc = _grad(policy, (torch.as_tensor(weights) * logp).sum())

    rel = float((mc - exact).norm() / exact.norm())
    assert exact.norm() > 0
    print(f"relative error {rel:.4f}")
    assert rel < 0.05, rel
    # and the estimate is not close to a wrong answer (the gradient without occupancy weights)
    wrong = -_grad(
        policy,
        expected_surrogate(
            logits, values._replace(occupancy=torch.ones_like(values.occupancy)), 1.0
        )[0].sum(),
    )
    assert float((mc - wrong).norm() / exact.norm()) > 5 * rel


@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
def test_all_actions_is_exact_in_expectation_over_the_visited_states(env: EnvParams) -> None:
    """``all_actions`` is exact over each step's action and samples the visited state. Summed
    over every action path, each weighted by its probability (dropout off, so every path has the
    same all-state probabilities), its gradient is exactly ``expected``'s; one path's is not."""
    length, gamma = 4, 0.9
    market, policy, grid, _ = _double_setup(env, length, 1, seed=5)
    policy.eval()
    model = GridModel(grid, env, market.returns)
    gen = torch.Generator().manual_seed(0)
    traj = collect(policy, market, torch.tensor([60]), length, grid, env, generator=gen)
    assert traj.grid_probs is not None
    unit = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)  # std 1: the losses unscaled
    exact = _grad(policy, policy_loss(policy, traj, unit, "expected", model, gamma).loss)
    grid_pos = grid_tensors(grid, "cpu")[1]
    total, paths = torch.zeros_like(exact), []
    for actions in itertools.product(range(3), repeat=length):
        state, states, prob = grid.start, [], 1.0
        for k, a in enumerate(actions):
            states.append(state)
            prob *= float(traj.grid_probs[state, 0, k, a])
            state = int(grid.next_state[state, a])
        visited = torch.tensor([states])
        positions = grid_pos[visited].to(traj.positions.dtype)
        path = traj._replace(states=visited, positions=positions, cash=cash_ratio(positions))
        grad = _grad(policy, policy_loss(policy, path, unit, "all_actions", model, gamma).loss)
        total += prob * grad
        paths.append(grad)
    torch.testing.assert_close(total, exact, rtol=1e-9, atol=1e-12)
    assert min(float((g - exact).norm() / exact.norm()) for g in paths) > 1e-3


def test_reinforce_estimator_is_exactly_the_spec_loss() -> None:
    env = EnvParams()
    _, policy, _, traj = _double_setup(env, 20, 5)
    returns = discounted_returns(traj.settlement.reward, 0.99)
    loss, entropy, bonus = policy_loss(policy, traj, returns, "reinforce")
    logp, ent = log_probs(policy, traj)
    spec = -(logp * normalise(returns)).sum(dim=1).mean()
    assert loss.item() == spec.item()
    torch.testing.assert_close(entropy, ent, rtol=0, atol=0)
    assert bonus is entropy  # the default exploration term is the entropy itself
    assert torch.allclose(_grad(policy, loss), _grad(policy, spec), rtol=0, atol=0)


def test_leave_one_out_baseline_excludes_the_trajectory() -> None:
    g = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], dtype=torch.float64)
    adv = leave_one_out(g)
    centred = torch.tensor([[1 - 4.0, 2 - 3.5], [3 - 3.0, 6 - 1.5], [5 - 2.0, 1 - 4.0]])
    torch.testing.assert_close(adv, (centred / centred.std()).double())
    with pytest.raises(ValueError, match="n_envs >= 2"):
        leave_one_out(g[:1])


@pytest.mark.parametrize("estimator", ["reinforce", "baseline", "expected", "all_actions"])
def test_every_estimator_updates_the_trained_modules(estimator: str) -> None:
    env = EnvParams()
    market, policy, grid, traj = _double_setup(env, 16, 4)
    policy = policy.float()
    market = tiny_market()
    gen = torch.Generator().manual_seed(2)
    traj = collect(policy, market, sample_starts(1, 290, 16, 4, gen), 16, grid, env, generator=gen)
    opts = make_optimizers(policy, lr_macro=1e-3, lr_micro=1e-3, lr_head=1e-3)
    metrics = reinforce_update(
        policy,
        opts,
        traj,
        gamma=0.99,
        entropy_coef=0.01,
        grad_clip=1.0,
        update_macro=True,
        estimator=estimator,
        model=GridModel(grid, env, market.returns),
    )
    for name in ("macro", "micro", "head"):
        assert metrics[f"param_delta/{name}"] > 0, name
    assert np.isfinite(metrics["loss/total"]) and 0 < metrics["entropy"] <= np.log(3) + 1e-6


def test_unknown_estimator_is_refused() -> None:
    env = EnvParams()
    _, policy, _, traj = _double_setup(env, 8, 2)
    with pytest.raises(ValueError, match=r"trainer\.estimator must be one of"):
        policy_loss(policy, traj, discounted_returns(traj.settlement.reward, 0.9), "ppo")


@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
def test_kept_grid_logits_give_the_same_actions_and_gradient(env: EnvParams) -> None:
    """``collect(keep_grid_logits=True)`` runs the all-states pass once, with autograd, for the
    ``expected`` estimator: the same actions, and the same loss and gradient as recomputing it."""
    market = tiny_market(seed=3)
    policy, grid = tiny_policy(3), position_grid(env)

    def run(keep: bool):
        gen = torch.Generator().manual_seed(11)
        starts = sample_starts(1, 290, 24, 5, gen)
        return collect(policy, market, starts, 24, grid, env, generator=gen, keep_grid_logits=keep)

    kept, plain = run(True), run(False)
    assert kept.grid_logits is not None and kept.grid_logits.requires_grad
    assert plain.grid_logits is None
    assert torch.equal(kept.actions, plain.actions) and torch.equal(kept.probs, plain.probs)
    model = GridModel(grid, env, market.returns)
    returns = discounted_returns(kept.settlement.reward, 0.99)
    loss_kept, ent_kept, _ = policy_loss(policy, kept, returns, "expected", model)
    loss_plain, ent_plain, _ = policy_loss(policy, plain, returns, "expected", model)
    torch.testing.assert_close(loss_kept, loss_plain, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ent_kept, ent_plain, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(_grad(policy, loss_kept), _grad(policy, loss_plain))
    # without autograd (validation) nothing is kept
    with torch.no_grad():
        assert run(True).grid_logits is None


NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device on this machine (scripts/gpu_check.sh runs these on a GPU)",
)


@pytest.mark.parametrize(
    "device", [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=NO_CUDA)]
)
@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
def test_grid_values_on_the_device_equal_the_cpu_loop(device: str, env: EnvParams) -> None:
    """An accelerator takes the prefix-scan recursions, the CPU the numpy loop: on a rollout's
    probabilities over 256 steps (the default episode) both give the same occupancy, values,
    rewards and surrogate loss."""
    market, policy, grid, traj = _double_setup(env, 256, 6, seed=4)
    logits = _all_states(policy, traj, grid).detach()
    probs = torch.softmax(logits, -1).permute(1, 2, 0, 3)
    rows = traj.rows
    cpu = grid_values(grid, probs, _rewards(market, grid, env, rows), 0.99)
    dev_rewards = grid_rewards(
        grid, env, market.returns[rows - 1].to(device), market.returns[rows].to(device)
    )
    dev = grid_values(grid, probs.to(device), dev_rewards, 0.99)
    for name, got, want in zip(cpu._fields, dev, cpu, strict=True):
        assert got.device.type == device, name
        torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-12, msg=name)
    loss_cpu, _ = expected_surrogate(logits, cpu, 0.01)
    loss_dev, _ = expected_surrogate(logits.to(device), dev, 0.01)
    torch.testing.assert_close(loss_dev.cpu(), loss_cpu, rtol=1e-9, atol=1e-12)


def test_the_log_barrier_keeps_a_ruled_out_action_alive() -> None:
    """Entropy's pull on an action's logit vanishes with its probability; the log barrier's
    (``-KL(uniform || pi)``) tends to ``1/A``. Both are 0-gradient at uniform."""
    logits = torch.tensor([[0.0, 0.0, 0.0], [12.0, 12.0, -12.0]], requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    barrier = exploration_bonus(logp, "log_barrier")
    torch.testing.assert_close(barrier[0], torch.tensor(0.0))  # -KL is 0 at uniform
    assert barrier[1] < -7.0  # and very negative for a ruled-out action
    (g_barrier,) = torch.autograd.grad(barrier.sum(), logits, retain_graph=True)
    (g_entropy,) = torch.autograd.grad(exploration_bonus(logp, "entropy").sum(), logits)
    torch.testing.assert_close(g_barrier[0], torch.zeros(3))
    torch.testing.assert_close(g_entropy[0], torch.zeros(3))
    p_sell = float(torch.softmax(logits[1].detach(), -1)[2])
    assert p_sell < 1e-10
    torch.testing.assert_close(g_barrier[1, 2], torch.tensor(1 / 3 - p_sell))
    assert 0 < g_entropy[1, 2] < 1e-8  # entropy: all but no pull back to SELL
    with pytest.raises(ValueError, match=r"trainer\.exploration must be one of"):
        exploration_bonus(logp, "curiosity")


@pytest.mark.parametrize("estimator", ["reinforce", "expected", "all_actions"])
def test_the_exploration_term_is_what_entropy_coef_weighs(estimator: str) -> None:
    """``exploration=log_barrier`` changes only the bonus: same policy loss, same entropy."""
    env = EnvParams()
    market, policy, grid, traj = _double_setup(env, 16, 4)
    returns = discounted_returns(traj.settlement.reward, 0.99)
    model = GridModel(grid, env, market.returns)
    plain = policy_loss(policy, traj, returns, estimator, model, exploration="entropy")
    barrier = policy_loss(policy, traj, returns, estimator, model, exploration="log_barrier")
    assert plain.loss.item() == barrier.loss.item()
    torch.testing.assert_close(plain.entropy, barrier.entropy, rtol=0, atol=0)
    assert plain.bonus is plain.entropy
    assert barrier.bonus.shape == plain.entropy.shape and bool((barrier.bonus <= 1e-12).all())
    assert not torch.allclose(barrier.bonus, plain.entropy)
