"""The quoting rollout and its estimators; the exact ones against Monte Carlo over actions and
fills, as tests/test_expected.py does for trading."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from hmarl.agent import quote_rollout
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_policy import quote_policy
from hmarl.agent.quote_rollout import (
    TAPE_FEATURES,
    QuoteBatch,
    as_batch,
    collect_quotes,
    collect_visited,
    sample_quotes,
    tape_batch,
)
from hmarl.agent.quote_update import quote_grid_values, quote_policy_loss, quote_update
from hmarl.agent.reinforce import discounted_returns, make_optimizers
from hmarl.data.ticks_synthetic import TickParams, generate_tape
from hmarl.market import avellaneda as av
from hmarl.market.quoting import (
    MOVES,
    QuoteParams,
    expected_rewards,
    outcomes,
    settle_quotes,
)
from hmarl.train import quote_tape as qt
from hmarl.train import quote_task, quoting
from hmarl.train.quoting import QuoteTraining, quote_episode, settings_update

MARKET = av.ASParams(steps=5, A=60.0, dt=0.02)
PARAMS = QuoteParams(offsets=(1, 3), tick=0.3, max_inventory=2, phi=0.05, alpha=0.2)
WINDOWS = {"macro_window": 4, "micro_window": 2}


def tiny_quote_policy(
    params: QuoteParams, seed: int, dropout: float = 0.2, n_features: int = 2
) -> HierarchicalPolicy:
    """A small quoting policy (the network's shape, few units) for fast exact checks."""
    torch.manual_seed(seed)
    sizes = {"macro_hidden": 8, "macro_dim": 4, "micro_hidden": 8, "micro_dim": 4}
    return quote_policy(n_features, params, head_hidden=(8,), dropout=dropout, **sizes)


def _setup(n_paths: int, seed: int = 0, steps: int = 5, kind: str = "as") -> tuple:
    """An Avellaneda-Stoikov batch (``kind="as"``) or episodes of a synthetic tick tape
    (``"tape"``: fills deterministic given the tape, so the exact estimators' expectation is
    over the agent's actions only)."""
    market = av.ASParams(steps=steps, A=MARKET.A, dt=MARKET.dt)
    if kind == "tape":
        policy = tiny_quote_policy(PARAMS, seed, n_features=len(TAPE_FEATURES)).double()
        tape = generate_tape(TickParams(steps=300, rate=1.5, queue_mean=1.5), seed)
        starts = 4 + 40 * np.arange(n_paths)
        batch = tape_batch(tape, PARAMS, 0.01, starts, steps, **WINDOWS)
    else:
        policy = tiny_quote_policy(PARAMS, seed).double()
        batch = as_batch(market, PARAMS, av.generate(market, n_paths, seed, history=4), **WINDOWS)
    batch = batch._replace(macro=batch.macro.double(), micro=batch.micro.double())
    return market, policy, batch


def test_the_rollout_follows_the_fills_and_settles_like_the_environment() -> None:
    _, policy, batch = _setup(6, steps=30)
    gen = torch.Generator().manual_seed(1)
    traj = collect_quotes(policy, batch, PARAMS, generator=gen)
    s, a = traj.states, traj.actions
    after = traj.settlement.inventory + PARAMS.max_inventory
    assert torch.equal(s[:, 1:].double(), after[:, :-1])  # each step starts where the last ended
    assert int(s.min()) >= 0 and int(s.max()) < PARAMS.n_states
    assert int((s - PARAMS.start).abs().max()) >= 1  # it did move
    ref = settle_quotes(
        PARAMS,
        s.numpy(),
        a.numpy(),
        batch.bid_fill.gather(-1, a[..., None])[..., 0].numpy(),
        batch.ask_fill.gather(-1, a[..., None])[..., 0].numpy(),
        batch.bid_edge.gather(-1, a[..., None])[..., 0].numpy(),
        batch.ask_edge.gather(-1, a[..., None])[..., 0].numpy(),
        batch.dmid.numpy(),
    )
    np.testing.assert_allclose(traj.settlement.reward.numpy(), ref.reward, rtol=1e-12)
    # the acting probabilities are those of the visited state
    idx = torch.arange(6).unsqueeze(1), torch.arange(30).unsqueeze(0)
    torch.testing.assert_close(traj.probs, traj.grid_probs[s, idx[0], idx[1]])


@pytest.mark.parametrize("kind", ["as", "tape"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("greedy", [False, True])
@pytest.mark.parametrize("block_rows", [2048, 20])
def test_the_sampling_only_rollout_walks_the_same_path_as_the_all_states_one(
    kind: str, training: bool, greedy: bool, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same generator gives the same masks, uniforms, states (limits included: the
    posting rule), actions, acting probabilities and settlement as collect_quotes, with the
    towers in one block or in blocks of 3 steps (the last one short)."""
    monkeypatch.setattr(quote_rollout, "BLOCK_ROWS", block_rows)
    _, policy, batch = _setup(6, seed=4, steps=35, kind=kind)
    policy.train(training)
    with torch.no_grad():
        ref = collect_quotes(
            policy, batch, PARAMS, generator=torch.Generator().manual_seed(5), greedy=greedy
        )
    out = sample_quotes(
        policy, batch, PARAMS, generator=torch.Generator().manual_seed(5), greedy=greedy
    )
    assert torch.equal(out.states, ref.states)
    assert torch.equal(out.actions, ref.actions)
    torch.testing.assert_close(out.probs, ref.probs, rtol=1e-12, atol=1e-12)
    for got, want in zip(out.settlement, ref.settlement, strict=True):
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.0)
    if not greedy:  # sampled paths reach the limits, where the posting rule withdraws a side
        assert int(ref.states.min()) == 0 or int(ref.states.max()) == PARAMS.n_states - 1


def _grad(policy: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return torch.cat([p.grad.reshape(-1) for p in policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("kind", ["as", "tape"])
def test_expected_gradient_is_the_mean_of_the_sampled_estimator_over_actions_and_fills(
    kind: str,
) -> None:
    """Monte Carlo over 300,000 paths of actions *and* fills (fresh fill uniforms, the mid's
    path and the dropout masks held fixed) converges to the exact expectation. On a tape the
    fill probabilities are 0 or 1: the paths differ by the agent's actions only."""
    gamma, n_mc = 0.9, 300_000
    _, policy, batch = _setup(2, seed=3, kind=kind)
    gen = torch.Generator().manual_seed(2)
    traj = collect_quotes(policy, batch, PARAMS, generator=gen, keep_grid_logits=True)
    unit = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)  # std 1: the loss unscaled
    loss = quote_policy_loss(policy, traj, batch, PARAMS, unit, "expected", gamma).loss
    exact = -_grad(policy, loss)  # the loss is minimised: its negative gradient is the ascent

    probs = torch.softmax(traj.grid_logits.detach(), -1).permute(1, 2, 0, 3).numpy()  # [B,L,S,A]
    rng = np.random.default_rng(0)
    n_env, length = batch.dmid.shape
    weights = np.zeros_like(probs)
    for b in range(n_env):
        s = np.full(n_mc, PARAMS.start)
        states, acts, fb, fa = [], [], [], []
        for k in range(length):
            cum = probs[b, k, s].cumsum(-1)
            a = np.minimum((rng.random(n_mc)[:, None] > cum).sum(-1), PARAMS.n_actions - 1)
            bf = rng.random(n_mc) < batch.p_bid[b, k].numpy()[a]
            af = rng.random(n_mc) < batch.p_ask[b, k].numpy()[a]
            states.append(s), acts.append(a), fb.append(bf), fa.append(af)
            out = settle_quotes(
                PARAMS,
                s[:, None],
                a[:, None],
                bf[:, None],
                af[:, None],
                np.zeros((n_mc, 1)),
                np.zeros((n_mc, 1)),
                np.zeros((n_mc, 1)),
            )
            s = out.inventory[:, 0].astype(np.int64) + PARAMS.max_inventory
        st, ac = np.stack(states, 1), np.stack(acts, 1)
        e_bid, e_ask = batch.bid_edge[b].numpy(), batch.ask_edge[b].numpy()  # [L, A]
        rew = settle_quotes(
            PARAMS,
            st,
            ac,
            np.stack(fb, 1),
            np.stack(fa, 1),
            e_bid[np.arange(length), ac],
            e_ask[np.arange(length), ac],
            np.broadcast_to(batch.dmid[b].numpy(), st.shape),
        ).reward
        g = discounted_returns(torch.as_tensor(rew), gamma).numpy()
        for k in range(length):
            np.add.at(weights[b, k], (st[:, k], ac[:, k]), g[:, k] / n_mc)
    logp = torch.log_softmax(traj.grid_logits, -1).permute(1, 2, 0, 3)
    mc = _grad(policy, (torch.as_tensor(weights) * logp).sum() / n_env)
    rel = float((mc - exact).norm() / exact.norm())
    assert exact.norm() > 0
    print(f"relative error {rel:.4f}")
    assert rel < 0.05, rel
    if kind == "tape":
        assert 0 < float(batch.p_bid.mean()) < 1  # some quotes fill and some do not
        return
    # and not close to a wrong answer: the values without the fills' randomness (all fill)
    wrong_batch = batch._replace(p_bid=(batch.p_bid > 0).double(), p_ask=(batch.p_ask > 0).double())
    wrong = -_grad(
        policy,
        quote_policy_loss(policy, traj, wrong_batch, PARAMS, unit, "expected", gamma).loss,
    )
    assert float((mc - wrong).norm() / exact.norm()) > 3 * rel


@pytest.mark.parametrize("kind", ["as", "tape"])
def test_all_actions_is_exact_in_expectation_over_the_visited_states(kind: str) -> None:
    """Enumerating every visited-state path of a 3-step episode (dropout off), each weighted by
    its probability under the policy and the fills, ``all_actions`` averages to ``expected``;
    one path alone does not."""
    gamma, length = 0.9, 3
    _, policy, batch = _setup(1, seed=5, steps=length, kind=kind)
    policy.eval()
    gen = torch.Generator().manual_seed(0)
    traj = collect_quotes(policy, batch, PARAMS, generator=gen)
    unit = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    exact = _grad(
        policy, quote_policy_loss(policy, traj, batch, PARAMS, unit, "expected", gamma).loss
    )
    probs = traj.grid_probs.permute(1, 2, 0, 3)[0].double()  # [L, S, A]
    model = expected_rewards(
        PARAMS,
        batch.p_bid[0],
        batch.p_ask[0],
        batch.bid_edge[0],
        batch.ask_edge[0],
        batch.dmid[0],
        torch.zeros(length, dtype=torch.float64),
    )  # [L, S, A, 3]
    step = torch.einsum("ksa,ksao->kso", probs, outcomes(model))  # P(move o | s) at step k
    inv = torch.as_tensor(PARAMS.inventory(), dtype=torch.float64) / PARAMS.max_inventory
    total, grads = torch.zeros_like(exact), []
    for moves in itertools.product(range(3), repeat=length - 1):
        states, prob, s = [PARAMS.start], 1.0, PARAMS.start
        for k, o in enumerate(moves):
            prob *= float(step[k, s, o])
            s = s + MOVES[o]
            states.append(s)
        if prob == 0.0:
            continue
        visited = torch.tensor([states])
        pos = inv[visited].to(traj.positions.dtype)
        path = traj._replace(states=visited, positions=pos, cash=1 - pos.abs())
        grad = _grad(
            policy, quote_policy_loss(policy, path, batch, PARAMS, unit, "all_actions", gamma).loss
        )
        total += prob * grad
        grads.append(grad)
    torch.testing.assert_close(total, exact, rtol=1e-9, atol=1e-12)
    assert min(float((g - exact).norm() / exact.norm()) for g in grads) > 1e-3


@pytest.mark.parametrize("estimator", ["reinforce", "baseline", "expected", "all_actions"])
def test_every_estimator_updates_the_trained_modules(estimator: str) -> None:
    _, policy, batch = _setup(4, steps=16)
    policy = policy.float()
    batch = batch._replace(macro=batch.macro.float(), micro=batch.micro.float())
    gen = torch.Generator().manual_seed(2)
    traj = collect_quotes(
        policy, batch, PARAMS, generator=gen, keep_grid_logits=estimator == "expected"
    )
    opts = make_optimizers(policy, lr_macro=1e-3, lr_micro=1e-3, lr_head=1e-3)
    metrics = quote_update(
        policy,
        opts,
        traj,
        batch,
        PARAMS,
        gamma=0.99,
        entropy_coef=0.01,
        grad_clip=1.0,
        update_macro=True,
        estimator=estimator,
    )
    for name in ("macro", "micro", "head"):
        assert metrics[f"param_delta/{name}"] > 0, name
    assert np.isfinite(metrics["loss/total"])
    assert 0 < metrics["entropy"] <= np.log(PARAMS.n_actions) + 1e-6


def test_a_frozen_macronet_does_not_move() -> None:
    _, policy, batch = _setup(4, steps=8)
    gen = torch.Generator().manual_seed(2)
    traj = collect_quotes(policy, batch, PARAMS, generator=gen, train_macro=False)
    opts = make_optimizers(policy, lr_macro=1e-3, lr_micro=1e-3, lr_head=1e-3)
    metrics = quote_update(
        policy,
        opts,
        traj,
        batch,
        PARAMS,
        gamma=0.99,
        entropy_coef=0.0,
        grad_clip=1.0,
        update_macro=False,
        estimator="reinforce",
    )
    assert metrics["param_delta/macro"] == 0.0 and metrics["param_delta/head"] > 0


def test_greedy_dp_policy_values_agree_with_the_exact_optimum() -> None:
    """quote_grid_values with the optimum's own (time, inventory) policy, the mark-to-market term
    out, is the optimum's value on every path: the two exact computations agree."""
    market, _, batch = _setup(3, steps=5)
    sol = av.optimum(market, PARAMS)
    probs = torch.as_tensor(sol.policy).unsqueeze(0).expand(3, -1, -1, -1)
    values = quote_grid_values(PARAMS, batch, probs, 1.0, with_mtm=False)
    want = torch.full((3,), sol.value(PARAMS), dtype=torch.float64)
    torch.testing.assert_close(values.v[:, 0, PARAMS.start], want, rtol=1e-10, atol=1e-12)
    assert isinstance(batch, QuoteBatch)


def test_on_a_tape_the_exact_values_of_a_greedy_policy_are_its_realised_rewards() -> None:
    """On a tape fills are deterministic given the quotes: the grid's values of the greedy
    policy (actions one-hot, fills 0 or 1) equal the settled total reward of its one path."""
    tape = generate_tape(TickParams(steps=400, rate=1.5), seed=2)
    params = QuoteParams(offsets=(0, 1, 2), tick=0.01, max_inventory=2, phi=1e-4, alpha=1e-3)
    batch = tape_batch(
        tape, params, 0.01, np.array([10, 100, 250]), 60, macro_window=8, micro_window=3
    )
    policy = tiny_quote_policy(params, 0, dropout=0.0, n_features=4).double().eval()
    batch = batch._replace(macro=batch.macro.double(), micro=batch.micro.double())
    traj = collect_quotes(policy, batch, params, generator=torch.Generator(), greedy=True)
    assert float(traj.settlement.bid_fill.sum() + traj.settlement.ask_fill.sum()) > 0
    greedy = torch.nn.functional.one_hot(traj.grid_probs.argmax(-1), params.n_actions)
    values = quote_grid_values(params, batch, greedy.permute(1, 2, 0, 3).double(), 1.0)
    torch.testing.assert_close(
        values.v[:, 0, params.start], traj.settlement.reward.sum(1), rtol=1e-10, atol=1e-12
    )


def _float32(kind: str) -> tuple[HierarchicalPolicy, QuoteBatch]:
    """A float32 policy in training mode (dropout on) and batch, as training runs them."""
    _, policy, batch = _setup(6, seed=7, steps=30, kind=kind)
    batch = batch._replace(macro=batch.macro.float(), micro=batch.micro.float())
    return policy.float().train(), batch


@pytest.mark.parametrize("kind", ["as", "tape"])
@pytest.mark.parametrize("estimator", ["reinforce", "baseline"])
@pytest.mark.parametrize("update_macro", [True, False])
def test_training_on_the_visited_states_updates_bit_for_bit_like_the_all_states_collection(
    kind: str, estimator: str, update_macro: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """quote_episode collects reinforce's and baseline's episodes without the all-states pass
    (collect_quotes is not called) and the trajectory, the update's metrics, the weights and the
    optimizers' state are those of collect_quotes then quote_update, bit for bit; the
    generator is left in the same state (the next episode draws the same masks)."""
    policy, batch = _float32(kind)
    twin = copy.deepcopy(policy)
    settings = QuoteTraining(estimator=estimator, entropy_coef=0.01)
    lrs = {"lr_macro": 1e-2, "lr_micro": 1e-2, "lr_head": 1e-2}
    opts, twin_opts = make_optimizers(policy, **lrs), make_optimizers(twin, **lrs)
    gen, twin_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)

    ref = collect_quotes(twin, batch, PARAMS, generator=twin_gen, train_macro=update_macro)
    got = collect_visited(
        policy, batch, PARAMS, generator=torch.Generator().manual_seed(3), train_macro=update_macro
    )
    assert got.ctx.requires_grad and got.grid_probs is None
    for name in ("states", "actions", "positions", "cash", "probs", "ctx"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert all(torch.equal(a, b) for a, b in zip(got.settlement, ref.settlement, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(got.head_masks, ref.head_masks, strict=True))
    assert int(ref.states.min()) == 0 or int(ref.states.max()) == PARAMS.n_states - 1

    def no_all_states(*args: object, **kwargs: object) -> None:
        raise AssertionError("the all-states collection ran")

    monkeypatch.setattr(quoting, "collect_quotes", no_all_states)
    metrics = quote_episode(policy, opts, batch, PARAMS, settings, update_macro, gen)
    want = settings_update(twin, twin_opts, ref, batch, PARAMS, settings, update_macro)
    assert metrics == want
    assert metrics["param_delta/head"] > 0 and (metrics["param_delta/macro"] > 0) == update_macro
    for (name, p), q in zip(policy.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    for key, opt in opts.items():
        state, twin_state = opt.state_dict()["state"], twin_opts[key].state_dict()["state"]
        for i, slots in state.items():
            assert all(torch.equal(v, twin_state[i][k]) for k, v in slots.items()), key
    assert torch.equal(gen.get_state(), twin_gen.get_state())


def test_a_visited_states_trajectory_has_no_grid_for_the_exact_estimators() -> None:
    """all_actions reads every state's probabilities: from collect_visited's trajectory it is
    refused with the collection to use, not run on a missing table."""
    policy, batch = _float32("as")
    traj = collect_visited(policy, batch, PARAMS, generator=torch.Generator().manual_seed(0))
    assert traj.grid_probs is None
    returns = discounted_returns(traj.settlement.reward, 1.0)
    with pytest.raises(ValueError, match="collect_quotes"):
        quote_policy_loss(policy, traj, batch, PARAMS, returns, "all_actions", 1.0)


@pytest.mark.parametrize("kind", ["as", "tape"])
def test_the_greedy_evaluations_walk_the_all_states_path(kind: str) -> None:
    """The evaluations that walk one greedy path per episode (the run's quote statistics, a
    tape's validation score) use sample_quotes: the same path, settlement and score as from
    collect_quotes and the choice table."""
    policy, batch = _float32(kind)
    with torch.no_grad():
        policy.eval()
        ref = collect_quotes(policy, batch, PARAMS, generator=torch.Generator(), greedy=True)
    policy.train()
    _, run = quote_task.evaluate(policy, batch, PARAMS, score=lambda p, b: 0.0)
    assert policy.training  # left as it was
    assert torch.equal(run.states, ref.states) and torch.equal(run.actions, ref.actions)
    assert all(torch.equal(a, b) for a, b in zip(run.settlement, ref.settlement, strict=True))
    assert quote_task.run_stats(PARAMS, run, 30) == quote_task.run_stats(PARAMS, ref, 30)
    tables = qt.score(PARAMS, batch, qt.greedy_choice(policy, batch, PARAMS))
    assert qt.greedy_score(policy, batch, PARAMS) == tables
    assert policy.training
