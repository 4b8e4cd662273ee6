"""Specialists under one MacroNet: the model, its schedule, gradient, gate, data and runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_identical, compose_config, full_and_resumed, tiny_overrides

from hmarl.agent.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.agent.expected import grid_rewards
from hmarl.agent.policy import HierarchicalPolicy, count_parameters
from hmarl.agent.reinforce import (
    GridModel,
    gate_bonus,
    own_advantages,
    solo_surrogate,
    visited_advantages,
)
from hmarl.agent.rollout import MarketTensors, collect, market_tensors, sample_starts
from hmarl.agent.specialists import (
    MixtureHead,
    SpecialistPolicy,
    build_policy,
    decision_parts,
    frozen_groups,
)
from hmarl.config import (
    Combine,
    ConfigError,
    GateInput,
    ModelConfig,
    SpecialistConfig,
    model_from_record,
    model_record,
)
from hmarl.market.env import EnvParams, cash_ratio, position_grid
from hmarl.market.groups import FEATURE_GROUPS, expand_groups
from hmarl.market.market_data import build_market
from hmarl.market.specialist_data import SpecialistInputs, market_for_model
from hmarl.steps import HOLD, gate_column
from hmarl.train.trainer import load_market, train

SPECS = [
    SpecialistConfig(name="a", features=["ret_1"], window=4, hidden=6, dim=3, head_hidden=5),
    SpecialistConfig(name="b", features=["rv_12"], window=6, hidden=4, dim=2, head_hidden=3),
    SpecialistConfig(name="c", features=["ret_1", "rsi_14"], window=4, hidden=5, dim=2),
]


def small_model(
    combine: str = "mixture", dropout: float = 0.0, gate_input: str = "macro"
) -> ModelConfig:
    return ModelConfig(
        macro_hidden=8,
        macro_dim=4,
        head_hidden=[6],
        dropout=dropout,
        specialists=[SpecialistConfig(**vars(s)) for s in SPECS],
        combine=Combine(combine),
        gate_hidden=5,
        gate_input=GateInput(gate_input),
    )


def specialists_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return tiny_overrides(tmp_path, "model=specialists", "+experiment=asym_1_10", *extra)


# ----------------------------------------------------------------------------- the model


def test_default_model_is_spec_bit_for_bit() -> None:
    """No specialists: SPEC's network (83,811 parameters at N=20), its three optimizer groups
    in order, and a checkpoint record with exactly SPEC's keys."""
    model = ModelConfig()
    policy = build_policy(20, model)
    assert type(policy) is HierarchicalPolicy and count_parameters(policy) == 83_811
    groups = policy.parameter_groups()
    assert list(groups) == ["macro", "micro", "head"]
    assert [p.data_ptr() for g in groups.values() for p in g] == [
        p.data_ptr() for p in policy.parameters()
    ]
    record = model_record(model)
    assert set(record) == {
        "macro_hidden",
        "macro_dim",
        "micro_hidden",
        "micro_dim",
        "head_hidden",
        "dropout",
    }
    assert model_from_record(record) == model
    torch.manual_seed(0)
    a = build_policy(20, model)
    torch.manual_seed(0)
    b = HierarchicalPolicy(20)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("combine", ["mixture", "concat"])
def test_parameter_groups_partition_the_policy(combine: str) -> None:
    policy = build_policy(3, small_model(combine), [1, 1, 2])
    groups = policy.parameter_groups()
    assert list(groups) == ["macro", "spec/a", "spec/b", "spec/c", "head"]
    ids = [id(p) for g in groups.values() for p in g]
    assert sorted(ids) == sorted(id(p) for p in policy.parameters())  # each exactly once
    record = model_record(small_model(combine))
    assert record["combine"] == combine and model_from_record(record) == small_model(combine)


def test_gate_input_all_reads_every_embedding_and_old_records_read_macro() -> None:
    """gate_input=all widens only the gate's first layer (macro + every specialist's dim + 2);
    a checkpoint record from before the key existed loads as the MacroNet-only gate."""
    widths = {}
    for gate_input in ("macro", "all"):
        head = build_policy(3, small_model(gate_input=gate_input), [1, 1, 2]).head
        assert isinstance(head, MixtureHead)
        widths[gate_input] = head.gate_in.in_features
        record = model_record(small_model(gate_input=gate_input))
        assert record["gate_input"] == gate_input
        assert model_from_record(record) == small_model(gate_input=gate_input)
    assert widths == {"macro": 4 + 2, "all": 4 + 3 + 2 + 2 + 2}
    old = model_record(small_model())
    del old["gate_input"]
    assert model_from_record(old).gate_input == GateInput.macro


@pytest.mark.parametrize("combine", ["mixture", "concat"])
def test_hold_init_starts_every_policy_holding_and_changes_nothing_else(combine: str) -> None:
    """model.hold_init sets only the action layers' biases (own heads, or the DecisionHead's
    output): every other parameter, drawn from the same stream, is the same; the first policy
    mostly holds; a record keeps the key and one written before it existed reads 0."""
    torch.manual_seed(3)
    plain = build_policy(3, small_model(combine), [1, 1, 2]).double().eval()
    model = replace(small_model(combine), hold_init=0.9)
    torch.manual_seed(3)
    holding = build_policy(3, model, [1, 1, 2]).double().eval()
    head = holding.head
    outs = list(head.own_out) if isinstance(head, MixtureHead) else [head.out]
    biases = {id(layer.bias) for layer in outs}
    for (name, a), b in zip(plain.named_parameters(), holding.parameters(), strict=True):
        assert torch.equal(a, b) == (id(b) not in biases), name
    for layer in outs:
        probs = torch.softmax(layer.bias, -1)
        torch.testing.assert_close(probs, torch.tensor([0.9, 0.05, 0.05], dtype=torch.float64))
    macro_x, micro_x, state = _inputs()

    def p_hold(policy: SpecialistPolicy) -> torch.Tensor:
        ctx = policy.head.context(policy.macro(macro_x), policy.micro(micro_x))
        return policy.head.from_context(ctx, state[:, 0], state[:, 1]).exp()[:, HOLD]

    assert isinstance(plain, SpecialistPolicy) and isinstance(holding, SpecialistPolicy)
    with torch.no_grad():
        before, after = p_hold(plain), p_hold(holding)
    assert bool((after > before).all()) and float(after.min()) > 0.8
    record = model_record(model)
    assert record["hold_init"] == 0.9 and model_from_record(record) == model
    del record["hold_init"]
    assert model_from_record(record).hold_init == 0.0


def _plain_mixture(
    policy: SpecialistPolicy, macro_x: torch.Tensor, micro_x: torch.Tensor, state: torch.Tensor
) -> torch.Tensor:
    """pi(a|s) = sum_k g_k(s) pi_k(a|s_k), written out from the modules (no context split);
    the gate reads [macro, state], or [macro, every specialist's embedding, state]."""
    head = policy.head
    assert isinstance(head, MixtureHead)
    macro = policy.macro(macro_x)
    xs = micro_x.split(policy.micro.in_dims, -1)  # type: ignore[union-attr]
    embs = [enc(x) for enc, x in zip(policy.micro.encoders, xs, strict=True)]  # type: ignore[union-attr]
    seen = [macro, *embs] if head.gate_input == GateInput.all else [macro]
    gate = torch.softmax(head.gate_out(torch.relu(head.gate_in(torch.cat([*seen, state], -1)))), -1)
    mix = torch.zeros(*macro_x.shape[:-1], 3, dtype=macro_x.dtype)
    for k, (emb, own_in, own_out) in enumerate(zip(embs, head.own_in, head.own_out, strict=True)):
        pi_k = torch.softmax(own_out(torch.relu(own_in(torch.cat([emb, state], -1)))), -1)
        mix = mix + gate[..., k : k + 1] * pi_k
    return mix


def _inputs(n: int = 7, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    macro_x = torch.randn(n, 9, generator=g, dtype=torch.float64)
    micro_x = torch.randn(n, 12, generator=g, dtype=torch.float64)  # 3 * (1 + 1 + 2)
    pos = torch.tensor([-1.0, 0.0, 1.0, 0.5, -0.5, 0.0, 1.0], dtype=torch.float64)[:n]
    state = torch.stack([pos, 1.0 - pos.abs()], -1)
    return macro_x, micro_x, state


@pytest.mark.parametrize("gate_input", ["macro", "all"])
def test_mixture_equals_the_written_out_formula_and_gates_sum_to_one(gate_input: str) -> None:
    torch.manual_seed(1)
    policy = build_policy(3, small_model(gate_input=gate_input), [1, 1, 2]).double().eval()
    assert isinstance(policy, SpecialistPolicy)
    macro_x, micro_x, state = _inputs()
    ctx = policy.head.context(policy.macro(macro_x), policy.micro(micro_x))
    logits = policy.head.from_context(ctx, state[:, 0], state[:, 1])
    want = _plain_mixture(policy, macro_x, micro_x, state)
    torch.testing.assert_close(logits.exp(), want, rtol=1e-12, atol=1e-12)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(len(state), dtype=torch.float64))
    parts = decision_parts(policy, ctx, state[:, 0], state[:, 1])
    assert parts is not None
    gate, own = parts
    assert gate.shape == (7, 3) and own.shape == (7, 3, 3)
    torch.testing.assert_close(gate.sum(-1), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close((gate.unsqueeze(-1) * own).sum(1), want)
    # every grid state at once gives what each state gives alone
    grid = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    every = policy.head.all_states(ctx, grid)
    for s, p in enumerate(grid):
        alone = policy.head.from_context(ctx, p.expand(7), (1.0 - p.abs()).expand(7))
        torch.testing.assert_close(every[s], alone)


@pytest.mark.parametrize("gate_input", ["macro", "all"])
def test_mixture_gradient_matches_finite_differences(gate_input: str) -> None:
    """d/dtheta of sum_t w_t . log pi(.|s_t) by autograd equals central differences (float64),
    for parameters of the MacroNet, the gate, a specialist's encoder and its own head (with
    gate_input=all the encoder's gradient also flows through the gate)."""
    torch.manual_seed(2)
    policy = build_policy(3, small_model(gate_input=gate_input), [1, 1, 2]).double().eval()
    macro_x, micro_x, state = _inputs(seed=3)
    weights = torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def objective() -> torch.Tensor:
        ctx = policy.head.context(policy.macro(macro_x), policy.micro(micro_x))
        return (weights * policy.head.from_context(ctx, state[:, 0], state[:, 1])).sum()

    policy.zero_grad()
    objective().backward()
    named = dict(policy.named_parameters())
    checked = 0
    for name in (
        "macro.fc1.weight",
        "head.gate_in.weight",
        "head.gate_out.bias",
        "micro.encoders.1.fc1.weight",
        "head.own_out.2.weight",
        "head.own_in.0.bias",
    ):
        param = named[name]
        assert param.grad is not None
        flat, grad = param.data.view(-1), param.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 4)):
            eps, old = 1e-6, float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                up = float(objective())
                flat[i] = old - eps
                down = float(objective())
                flat[i] = old
            assert abs((up - down) / (2 * eps) - float(grad[i])) < 1e-7, (name, i)
            checked += 1
    assert checked >= 20


def test_solo_term_is_each_specialists_own_loss_and_spares_the_gate() -> None:
    """model.solo_coef's term: -sum_k sum_a pi_k(a|s) w(s, a) (summed over steps, mean over
    trajectories), written out from each specialist's own head; its gradient reaches every
    specialist's encoder and own head, never the gate or the MacroNet (even when the gate reads
    the specialists' embeddings)."""
    torch.manual_seed(5)
    policy = build_policy(3, small_model(gate_input="all"), [1, 1, 2]).double().eval()
    assert isinstance(policy, SpecialistPolicy) and isinstance(policy.head, MixtureHead)
    macro_x, micro_x, state = _inputs(seed=6)
    ctx = policy.head.context(policy.macro(macro_x), policy.micro(micro_x))
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)  # 2 trajectories x 7 steps
    traj = SimpleNamespace(
        ctx=ctx.expand(2, -1, -1),
        positions=state[:, 0].expand(2, -1),
        cash=state[:, 1].expand(2, -1),
        head_masks=None,
    )
    loss = solo_surrogate(policy, traj, weight)  # type: ignore[arg-type]
    head, bank = policy.head, policy.micro
    embs = [enc(x) for enc, x in zip(bank.encoders, micro_x.split(bank.in_dims, -1), strict=True)]  # type: ignore[union-attr]
    want = torch.zeros((), dtype=torch.float64)
    for emb, own_in, own_out in zip(embs, head.own_in, head.own_out, strict=True):
        pi_k = torch.softmax(own_out(torch.relu(own_in(torch.cat([emb, state], -1)))), -1)
        want = want - (weight * pi_k).sum() / 2
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    policy.zero_grad()
    loss.backward()
    for name, params in policy.parameter_groups().items():
        moved = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
        assert moved == name.startswith("spec/"), name


def _specialists_rollout(
    specs: list[SpecialistConfig], length: int = 5, keep_grid_own: bool = False
) -> tuple[Any, ...]:
    """A float64 mixture of ``specs`` (dropout off) and two collected trajectories on random
    market tensors, with the grid model the exact advantages need."""
    model = small_model(gate_input="all")
    model.specialists = [SpecialistConfig(**vars(s)) for s in specs]
    n_in = [len(s.features) for s in specs]
    torch.manual_seed(11)
    policy = build_policy(3, model, n_in).double().eval()
    g = torch.Generator().manual_seed(12)
    market = MarketTensors(
        macro=torch.randn(200, 9, generator=g, dtype=torch.float64),
        micro=torch.randn(200, 3 * sum(n_in), generator=g, dtype=torch.float64),
        returns=0.02 * torch.randn(200, generator=g, dtype=torch.float64),
    )
    env = EnvParams()
    grid = position_grid(env)
    starts = sample_starts(1, 190, length, 2, g)
    traj = collect(
        policy, market, starts, length, grid, env, generator=g, keep_grid_own=keep_grid_own
    )
    return policy, GridModel(grid, env, market.returns), traj


def test_own_advantages_of_a_lone_specialist_are_the_mixtures() -> None:
    """With one specialist the gate's softmax is 1 and the mixture is that specialist's
    policy: its own advantages (model.solo_values=own) are the mixture's, which the rollout's
    grid probabilities give through another path."""
    policy, model, traj = _specialists_rollout(SPECS[:1])
    own = own_advantages(policy, model, traj, 0.9, 2.0)
    assert own.shape == (2, 5, 1, 3)
    torch.testing.assert_close(own[:, :, 0], visited_advantages(model, traj, 0.9, 2.0))


def test_own_advantages_are_each_specialists_values_by_brute_force() -> None:
    """A_k(s_t, a) = R(s_t, a) + gamma V_k(t + 1, s') - V_k(t, s_t), with V_k written out as a
    plain backward loop over the grid under pi_k alone; and not the mixture's advantages."""
    gamma, length = 0.9, 4
    policy, model, traj = _specialists_rollout(SPECS, length)
    own = own_advantages(policy, model, traj, gamma, 1.0)
    grid, positions = model.grid, torch.as_tensor(model.grid.positions)
    rows = traj.rows
    rewards = grid_rewards(grid, model.env, model.returns[rows - 1], model.returns[rows])
    with torch.no_grad():
        for b in range(2):
            for k in range(len(SPECS)):
                v = torch.zeros(length + 1, len(positions), dtype=torch.float64)
                q = torch.zeros(length, len(positions), 3, dtype=torch.float64)
                for t in reversed(range(length)):
                    for s, pos in enumerate(positions):
                        p = pos.reshape(1).double()
                        _, logp = policy.head.parts_from_context(traj.ctx[b, t], p, cash_ratio(p))
                        pi = logp[0, k].exp()
                        for a in range(3):
                            nxt = int(grid.next_state[s, a])
                            q[t, s, a] = rewards[b, t, s, a] + gamma * v[t + 1, nxt]
                        v[t, s] = (pi * q[t, s]).sum()
                for t in range(length):
                    s_t = int(traj.states[b, t])
                    torch.testing.assert_close(own[b, t, k], q[t, s_t] - v[t, s_t])
    mixture = visited_advantages(model, traj, gamma, 1.0)
    assert not torch.allclose(own[:, :, 0], mixture, atol=1e-6)


def test_rollout_keeps_the_own_grid_pass_without_changing_the_episode() -> None:
    """collect(keep_grid_own=True) (model.solo_values=own) keeps each specialist's grid
    log-probabilities from the pass it runs anyway: the same episode bit for bit, and the same
    own advantages as the update computing them again."""
    _, _, plain = _specialists_rollout(SPECS, 6)
    policy, model, kept = _specialists_rollout(SPECS, 6, keep_grid_own=True)
    assert plain.grid_own is None and kept.grid_own is not None
    assert kept.grid_own.shape == (3, 2, 6, len(SPECS), 3)
    for field in ("actions", "states", "probs", "grid_probs"):
        assert torch.equal(getattr(plain, field), getattr(kept, field)), field
    again = own_advantages(policy, model, plain, 0.9, 1.0)
    torch.testing.assert_close(own_advantages(policy, model, kept, 0.9, 1.0), again)


@pytest.fixture(scope="module")
def plain_episode(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The first episode's metrics of the tiny specialists run, without the mixture's terms."""
    return _first_episode(tmp_path_factory.mktemp("plain"))


def _first_episode(tmp_path: Path, *extra: str) -> dict[str, float]:
    cfg = compose_config(*specialists_overrides(tmp_path, "trainer.episodes=1", *extra))
    seen: list[dict[str, float]] = []
    train(cfg, tmp_path / "run", progress=False, on_episode=lambda e, m, p, o: seen.append(m))
    return seen[0]


@pytest.mark.parametrize(
    ("estimator", "values"),
    [("all_actions", "mixture"), ("expected", "mixture"), ("all_actions", "own")],
)
def test_solo_coef_moves_the_specialists_not_the_gate(
    tmp_path: Path, plain_episode: dict[str, float], estimator: str, values: str
) -> None:
    """One episode from the same seed with and without model.solo_coef: the same rollout, so
    the gate and the MacroNet get the same gradient and step; each specialist's differs (with
    `expected` too: the term takes the grid's exact advantages at the visited states; with
    `solo_values=own`, each specialist's own values: a gradient of its own again)."""
    extra = f"trainer.estimator={estimator}"
    plain = plain_episode if estimator == "all_actions" else _first_episode(tmp_path / "p", extra)
    solo = _first_episode(
        tmp_path / "solo", "model.solo_coef=0.5", f"model.solo_values={values}", extra
    )
    if values == "own":
        team = _first_episode(
            tmp_path / "team", "model.solo_coef=0.5", "model.solo_values=mixture", extra
        )
        for name in ("price", "fast", "volume"):
            key = f"grad_norm/spec/{name}"
            assert solo[key] != pytest.approx(team[key], rel=1e-3), name
    assert solo["reward/mean"] == plain["reward/mean"]
    for key in ("grad_norm/head", "grad_norm/macro", "param_delta/head", "param_delta/macro"):
        assert solo[key] == pytest.approx(plain[key], rel=1e-6), key
    for name in ("price", "fast", "volume"):
        assert solo[f"grad_norm/spec/{name}"] != pytest.approx(
            plain[f"grad_norm/spec/{name}"], rel=1e-3
        ), name


def test_gate_barrier_is_the_gates_log_barrier_on_the_exploration_schedule(
    tmp_path: Path, plain_episode: dict[str, float]
) -> None:
    """gate_bonus = mean_k log g_k + log K at the visited states (0 at a uniform gate, < 0
    otherwise); model.gate_barrier weighs it by the exploration weight of the episode, so it
    changes the gate's step while trainer.entropy_coef > 0 and nothing when it is 0."""
    torch.manual_seed(8)
    policy = build_policy(3, small_model(gate_input="all"), [1, 1, 2]).double().eval()
    assert isinstance(policy.head, MixtureHead)
    macro_x, micro_x, state = _inputs(seed=9)
    ctx = policy.head.context(policy.macro(macro_x), policy.micro(micro_x))
    traj = SimpleNamespace(ctx=ctx, positions=state[:, 0], cash=state[:, 1], head_masks=None)
    parts = decision_parts(policy, ctx, state[:, 0], state[:, 1])
    assert parts is not None
    want = parts[0].log().mean(-1) + np.log(3)
    bonus = gate_bonus(policy, traj)  # type: ignore[arg-type]
    torch.testing.assert_close(bonus, want)
    assert bool((bonus < 0).all())
    with torch.no_grad():
        policy.head.gate_out.weight.zero_()
        policy.head.gate_out.bias.zero_()
    assert float(gate_bonus(policy, traj).detach().abs().max()) < 1e-12  # type: ignore[arg-type]

    plain = plain_episode
    barrier = _first_episode(tmp_path / "barrier", "model.gate_barrier=10")
    assert barrier["reward/mean"] == plain["reward/mean"]
    assert barrier["grad_norm/head"] != pytest.approx(plain["grad_norm/head"], rel=1e-3)
    no_explore = ("trainer.entropy_coef=0", "trainer.entropy_coef_final=0")
    plain0 = _first_episode(tmp_path / "plain0", *no_explore)
    barrier0 = _first_episode(tmp_path / "barrier0", "model.gate_barrier=10", *no_explore)
    assert barrier0["grad_norm/head"] == plain0["grad_norm/head"]


def test_mixture_terms_need_specialists_and_concat_ignores_them(tmp_path: Path) -> None:
    """SPEC's model refuses model.solo_coef / gate_barrier / hold_init (its initialisation is
    the specification's; the first two have nothing to act on); concat has no
    gate or own policies either and trains as without them (as it ignores gate_input)."""
    with pytest.raises(ConfigError, match=r"model.solo_coef=0.5 .* needs model=specialists"):
        compose_config("model.solo_coef=0.5")
    with pytest.raises(ConfigError, match=r"model.gate_barrier=1.0 .* needs model=specialists"):
        compose_config("model.gate_barrier=1")
    with pytest.raises(ConfigError, match=r"model.solo_coef must be"):
        compose_config("model=specialists", "model.solo_coef=-1")
    with pytest.raises(ConfigError, match=r"model.hold_init=0.9 .* needs model=specialists"):
        compose_config("model.hold_init=0.9")
    with pytest.raises(ConfigError, match=r"model.hold_init must be"):
        compose_config("model=specialists", "model.hold_init=1")
    concat = ("model.combine=concat", "model.solo_coef=0", "model.gate_barrier=0")
    plain = _first_episode(tmp_path / "plain", *concat)
    terms = _first_episode(
        tmp_path / "terms", "model.combine=concat", "model.solo_coef=1", "model.gate_barrier=1"
    )
    assert terms["loss/total"] == plain["loss/total"]
    assert terms["grad_norm/head"] == plain["grad_norm/head"]


# ----------------------------------------------------------------------------- data


def test_feature_groups_expand_and_unknown_group_is_named() -> None:
    assert expand_groups(["group:price", "ret_1"]) == list(FEATURE_GROUPS["price"])
    assert expand_groups(["group:volume", "col:x"])[-1] == "col:x"
    with pytest.raises(ValueError, match=r"unknown feature group 'group:nope'; known: group:price"):
        expand_groups(["group:nope"])


def test_specialist_windows_equal_each_pair_built_alone(tmp_path: Path) -> None:
    """Each specialist's slice of the context tensor is its own (features, window) market's
    scaled window, and decision rows start where every window is complete."""
    cfg = compose_config(*specialists_overrides(tmp_path))
    market = load_market(cfg, log=None)
    assert [s["window"] for s in market.specialists] == [60, 12, 60]
    from hmarl.market.market_data import load_market_candles

    candles = load_market_candles(cfg.data, log=None)
    col = 0
    for spec in market.specialists:
        alone = build_market(
            candles,
            feature_names=spec["names"],
            macro_window=spec["window"],
            micro_window=2,
            train_frac=cfg.data.train_frac,
            val_frac=cfg.data.val_frac,
        )
        width = 3 * len(spec["names"])
        lo, hi = market.splits["train"][0], market.splits["test"][1]
        np.testing.assert_array_equal(market.micro[lo:hi, col : col + width], alone.macro[lo:hi])
        assert np.isfinite(alone.macro[lo]).all()
        col += width
    assert col == market.micro.shape[1]
    # the checkpoint's scalers rebuild the same tensors (a backtest's path)
    again = market_for_model(
        cfg.data,
        feature_names=cfg.features.names,
        macro_window=cfg.features.macro_window,
        micro_window=cfg.features.micro_window,
        specialists=[SpecialistInputs(tuple(s["names"]), s["window"]) for s in market.specialists],
        cache_dir=None,
        scalers=market.scalers,
        log=None,
    )
    np.testing.assert_array_equal(again.micro, market.micro)
    assert again.splits == market.splits


def test_col_features_and_extra_columns(tmp_path: Path) -> None:
    """A specialist may read a raw column (`col:<name>`); data.extra_columns keeps columns and
    a missing one is named; tape features name the kline columns a file lacks."""
    n = 3000
    idx = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    frame = pd.DataFrame(
        {
            "timestamp": idx,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": rng.uniform(1, 2, n),
            "flow": rng.normal(size=n),
        }
    )
    path = tmp_path / "c.csv"
    frame.to_csv(path, index=False)
    base = ["data=csv", f"data.path={path}", "features.macro_window=48", "tracking=none"]
    cfg = compose_config(*base, "model=specialists", f"cache_dir={tmp_path}/cache")
    cfg.model.specialists[2].features = ["col:flow"]
    market = load_market(cfg, log=None)
    assert market.specialists[2]["names"] == ["col:flow"]
    lo, hi = market.splits["train"]
    last = market.micro[lo:hi, -1]  # the last column: flow's last value, train-scaled
    assert abs(float(np.mean(last))) < 0.05 and abs(float(np.std(last)) - 1) < 0.05
    cfg.model.specialists[2].features = ["group:tape"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['taker_buy_base', 'trades'\]"):
        load_market(cfg, log=None)
    cfg2 = compose_config(*base, f"cache_dir={tmp_path}/cache", "data.extra_columns=[nope]")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['nope'\]"):
        load_market(cfg2, log=None)


def test_bad_specialist_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.specialists\[1\].every must be"):
        compose_config("model=specialists", "model.specialists.1.every=0")
    with pytest.raises(ConfigError, match=r"names repeat: \['price'\]"):
        compose_config("model=specialists", "model.specialists.1.name=price")


# ----------------------------------------------------------------------------- training


def _flat(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def test_schedule_each_module_on_its_own_clock(tmp_path: Path) -> None:
    """Over 12 episodes under asym_1_10: MacroNet steps at 0 and 11, specialist `price` every
    episode, `fast` every 3rd, `volume` every 2nd, the gate every episode; a frozen group's
    weights and Adam step count do not move."""
    cfg = compose_config(*specialists_overrides(tmp_path, "trainer.episodes=12"))
    cfg.model.specialists[1].every = 3
    every = {"macro": 11, "spec/price": 1, "spec/fast": 3, "spec/volume": 2, "head": 1}
    moved: dict[str, set[int]] = {k: set() for k in every}
    clocks: dict[str, list[int]] = {k: [] for k in every}
    before: dict[str, torch.Tensor] = {}

    def watch(ep: int, metrics: dict[str, float], policy: Any, optimizers: Any) -> None:
        for name, params in policy.parameter_groups().items():
            now = _flat(params)
            if name in before and not torch.equal(before[name], now):
                moved[name].add(ep)
            before[name] = now
            state = optimizers[name].state_dict()["state"]
            clocks[name].append(int(state[0]["step"]) if state else 0)
        assert sorted(frozen_groups(cfg.model, ep)) == sorted(
            k for k, e in every.items() if k.startswith("spec/") and ep % e
        )

    torch.manual_seed(cfg.seed)
    market = load_market(cfg, log=None)
    init = build_policy(market.n_features, cfg.model, [len(s["names"]) for s in market.specialists])
    before = {k: _flat(v) for k, v in init.parameter_groups().items()}
    train(cfg, tmp_path / "run", progress=False, on_episode=watch)
    for name, period in every.items():
        steps = {e for e in range(12) if e % period == 0}
        assert moved[name] == steps, name
        assert clocks[name] == [sum(1 for s in steps if s <= e) for e in range(12)], name


# the layer above: the gate on the MacroNet, the gate on every embedding, SPEC's DecisionHead
HEADS = [("mixture", "macro"), ("mixture", "all"), ("concat", "macro")]


@pytest.mark.parametrize("estimator", ["reinforce", "baseline", "expected", "all_actions"])
@pytest.mark.parametrize(("combine", "gate_input"), HEADS)
def test_both_combines_train_with_every_estimator(
    tmp_path: Path, estimator: str, combine: str, gate_input: str
) -> None:
    cfg = compose_config(
        *specialists_overrides(
            tmp_path,
            "trainer.episodes=2",
            "trainer.eval_every=2",
            f"trainer.estimator={estimator}",
            f"model.combine={combine}",
            f"model.gate_input={gate_input}",
        )
    )
    seen: list[dict[str, float]] = []
    result = train(
        cfg, tmp_path / "run", progress=False, on_episode=lambda e, m, p, o: seen.append(m)
    )
    assert len(seen) == 2 and all(np.isfinite(m["loss/policy"]) for m in seen)
    assert all(seen[0][f"param_delta/spec/{s}"] > 0 for s in ("price", "fast", "volume"))
    gates = {k: v for k, v in seen[-1].items() if k.startswith("val/gate/")}
    if combine == "mixture":
        assert sorted(gates) == ["val/gate/fast", "val/gate/price", "val/gate/volume"]
        assert abs(sum(gates.values()) - 1.0) < 1e-6
    else:
        assert not gates
    ckpt = load_checkpoint(result.last_checkpoint)
    policy = policy_from_checkpoint(ckpt)
    assert isinstance(policy, SpecialistPolicy) and policy.names == ["price", "fast", "volume"]
    if combine == "mixture":
        assert isinstance(policy.head, MixtureHead)
        assert policy.head.gate_input == GateInput(gate_input)


def test_validation_steps_carry_gate_columns_and_stats(tmp_path: Path) -> None:
    from hmarl.agent.evaluation import run_split
    from hmarl.stats.metrics import compute_stats
    from hmarl.train.trainer import env_params

    cfg = compose_config(*specialists_overrides(tmp_path))
    market = load_market(cfg, log=None)
    policy = build_policy(
        market.n_features, cfg.model, [len(s["names"]) for s in market.specialists]
    )
    steps = run_split(policy, market, market_tensors(market), "val", env_params(cfg))
    cols = [gate_column(n) for n in ("price", "fast", "volume")]
    np.testing.assert_allclose(steps[cols].sum(axis=1), 1.0, atol=1e-6)
    own = steps[["price_p_hold", "price_p_buy", "price_p_sell"]].sum(axis=1)
    np.testing.assert_allclose(own, 1.0, atol=1e-6)
    stats = compute_stats(steps, n_bootstrap=0)
    assert stats["Mean Gate price"] == pytest.approx(float(steps["g_price"].mean()))
    assert stats["Mean P(BUY) of fast"] == pytest.approx(float(steps["fast_p_buy"].mean()))
    # who decides the trades: g_k (P_k(BUY) + P_k(SELL)) summed, as a share over specialists
    intent = {
        n: float((steps[f"g_{n}"] * (steps[f"{n}_p_buy"] + steps[f"{n}_p_sell"])).sum())
        for n in ("price", "fast", "volume")
    }
    for n, v in intent.items():
        assert stats[f"Trade Share {n}"] == pytest.approx(v / sum(intent.values()))
    assert sum(stats[f"Trade Share {n}"] for n in intent) == pytest.approx(1.0)


@pytest.mark.parametrize(("combine", "gate_input"), HEADS)
def test_resumed_specialists_run_equals_uninterrupted(
    tmp_path: Path, combine: str, gate_input: str
) -> None:
    """Stopped after episode 7 (mid-cycle: MacroNet frozen, `volume` off its period) and
    resumed: bit-identical weights, optimizer states and generator to a run in one go."""
    ov = specialists_overrides(
        tmp_path, f"model.combine={combine}", f"model.gate_input={gate_input}"
    )
    full, resumed = full_and_resumed(tmp_path, ov, 13, 7)
    assert resumed.state.episode == 13 and resumed.state.macro_steps == 2
    assert_identical(full.last_checkpoint, resumed.last_checkpoint)


def test_backtest_of_a_specialists_checkpoint_shows_who_decides(tmp_path: Path) -> None:
    """python -m hmarl.backtest on a specialists checkpoint: the market is rebuilt with the
    checkpoint's scalers, steps.csv carries g_<name>, stats.json each specialist's gate and own
    action shares, and report.html the gate band under the price."""
    import json

    from helpers import run_cli

    cfg = compose_config(
        *specialists_overrides(tmp_path, "trainer.episodes=2", "trainer.eval_every=1")
    )
    result = train(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "bt"
    proc = run_cli(
        "hmarl.backtest",
        f"checkpoint={result.last_checkpoint}",
        f"cache_dir={tmp_path}/cache",
        f"out={out}",
        "tracking=none",
        "n_bootstrap=0",
        "random_timing=0",
        "fee_multipliers=[1.0]",
        "progress=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = pd.read_csv(out / "steps.csv")
    gates = steps[["g_price", "g_fast", "g_volume"]]
    np.testing.assert_allclose(gates.sum(axis=1), 1.0, atol=1e-6)
    doc = json.loads((out / "stats.json").read_text())
    text = json.dumps(doc)
    for name in ("price", "fast", "volume"):
        assert f"Mean Gate {name}" in text and f"Mean P(BUY) of {name}" in text
    # every figure is defined in stats.json, the specialists' keys too
    shown = {k for run in doc["stats"].values() for k in run}
    assert shown <= set(doc["definitions"])
    assert "specialist fast" in doc["definitions"]["Mean Gate fast"]
    assert "SELL" in doc["definitions"]["Mean P(SELL) of volume"]
    assert "trading probability" in doc["definitions"]["Trade Share price"]
    page = (out / "report.html").read_text()
    assert '"name":"gates"' in page.replace(" ", "") or "gate weight" in page


def test_tape_specialist_on_real_binance_klines(tmp_path: Path, shared_data: Path) -> None:
    """model=specialists_tape reads the kline dump's trade count and taker-buy volume."""
    from hmarl.market.features import build_features
    from hmarl.market.market_data import load_market_candles

    path = shared_data / "BTCUSDT-5m-klines.csv"
    cfg = compose_config(
        "data=binance",
        f"data.path={path}",
        "model=specialists_tape",
        "features.macro_window=48",
        "tracking=none",
        f"cache_dir={tmp_path}/cache",
    )
    market = load_market(cfg, log=None)
    tape = next(s for s in market.specialists if "taker_buy_share" in s["names"])
    assert tape["names"] == list(FEATURE_GROUPS["tape"])
    lo, hi = market.splits["train"][0], market.splits["test"][1]
    assert np.isfinite(market.micro[lo:hi]).all()
    candles = load_market_candles(cfg.data, extra_columns=["trades", "taker_buy_base"], log=None)
    share = build_features(candles, ["taker_buy_share"])["taker_buy_share"]
    assert share.between(0.0, 1.0).all() and 0.3 < share.mean() < 0.7


def test_planted_flow_leads_the_next_bars_return() -> None:
    """plant_flow: short regimes (30-60 bars on average) in the prices, and a column that
    reveals the next bar's regime with noise (the same seed gives the same market)."""
    from hmarl.data.synthetic import synthetic_candles
    from hmarl.market.planted import FLOW_COLUMN, plant_flow

    candles = synthetic_candles(20_000, 0, trend_drift=0.0)
    out, regime = plant_flow(candles, 3, drift=3e-4)
    again, _ = plant_flow(candles, 3, drift=3e-4)
    pd.testing.assert_frame_equal(out, again)
    lengths = np.diff(np.flatnonzero(np.diff(regime) != 0))
    assert 30 <= lengths.mean() <= 60
    flow = out[FLOW_COLUMN].to_numpy()
    lead = np.corrcoef(flow[:-1], regime[1:])[0, 1]
    assert lead > 0.5  # revealed with noise: about 1 / sqrt(1 + 1.5) for unit noise
    moved = np.log(out["close"].to_numpy() / candles["close"].to_numpy())
    np.testing.assert_allclose(np.diff(moved), 3e-4 * regime[1:], atol=1e-12)
