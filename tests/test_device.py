"""The same behaviour on every device: ``cpu`` always, ``cuda`` when present (else skipped).

``device=auto`` crashed on every GPU because a dropout mask was drawn on the CPU with a CUDA
generator; nothing saw it because no test ran on CUDA. These tests run the rollout's gradient,
the walk, settlement, training, resume and a backtest of a device-trained checkpoint on each
device (``scripts/gpu_check.sh`` runs them on a GPU machine). The CPU-only audit at the end
catches that class of bug without a GPU: every tensor hmarl creates must name its device.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_identical, compose_config, full_and_resumed, tiny_overrides
from hydra import compose, initialize_config_dir
from test_rollout import grads, per_step_logp, tiny_market, tiny_policy
from torch.overrides import TorchFunctionMode

import hmarl.agent.rollout as rollout
from hmarl.agent.checkpoint import load_checkpoint
from hmarl.agent.reinforce import discounted_returns, normalise
from hmarl.agent.rollout import (
    LazyMacroCache,
    MarketTensors,
    _walk,
    collect,
    evaluate,
    log_probs,
    macro_cache,
    sample_starts,
    walk_scan,
)
from hmarl.backtest.run import backtest
from hmarl.config import conf_dir, register_backtest_configs, to_backtest_config
from hmarl.market.env import EnvParams, position_grid, settle
from hmarl.train.trainer import train

NO_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device on this machine (scripts/gpu_check.sh runs these on a GPU)",
)
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=NO_CUDA)]
ENVS = [
    EnvParams(),
    EnvParams(allow_short=False),
    EnvParams(action_mode="increment", increment=0.25),
]


def on(market: MarketTensors, device: str, dtype: torch.dtype | None = None) -> MarketTensors:
    macro, micro = (t.to(device, dtype or t.dtype) for t in (market.macro, market.micro))
    return MarketTensors(macro, micro, market.returns.to(device))


@contextmanager
def matmul_precision(value: str) -> Iterator[None]:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def factored_and_reference_grads(
    device: str, dtype: torch.dtype, env: EnvParams
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients of one REINFORCE loss: the factored rollout's, and per-step autograd's."""
    market = on(tiny_market(), device, dtype)
    policy = tiny_policy().to(device, dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    starts = sample_starts(0, 290, 40, 5, gen)
    traj = collect(policy, market, starts, 40, position_grid(env), env, generator=gen)
    assert traj.macro_mask is not None and traj.macro_mask.device.type == device
    adv = normalise(discounted_returns(traj.settlement.reward, 0.99)).to(dtype)
    logp, _ = log_probs(policy, traj)
    (-(logp * adv).sum(1).mean()).backward()
    factored = grads(policy)
    policy.zero_grad(set_to_none=True)
    (-(per_step_logp(policy, market, traj) * adv).sum(1).mean()).backward()
    return factored, grads(policy)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("env", ENVS[::2], ids=["target", "increment"])
def test_factored_gradient_equals_per_step_autograd(device: str, env: EnvParams) -> None:
    factored, reference = factored_and_reference_grads(device, torch.float64, env)
    assert factored.keys() == reference.keys() and len(factored) == 14
    for name, g in reference.items():
        assert g.abs().max() > 0 and g.device.type == device, name
        torch.testing.assert_close(factored[name], g, rtol=1e-5, atol=1e-12, msg=name)


# float32 matmuls: full precision (TF32 off) agrees to ~1e-6 relative; TF32 rounds each
# matmul input to a 10-bit mantissa (2^-11 ~ 5e-4), so the two computations may differ by
# ~1e-3 relative. The bound is per parameter tensor, on the L2 norm.
PRECISION_TOL = {"highest": 1e-4, "high": 1e-2}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", sorted(PRECISION_TOL))
def test_float32_gradient_at_each_matmul_precision(device: str, precision: str) -> None:
    with matmul_precision(precision):
        factored, reference = factored_and_reference_grads(device, torch.float32, EnvParams())
    for name, g in reference.items():
        rel = float((factored[name] - g).norm() / g.norm())
        assert rel < PRECISION_TOL[precision], (name, rel)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("env", ENVS, ids=["target", "long_only", "increment"])
@pytest.mark.parametrize("n_env,length", [(1, 1), (1, 300), (7, 33), (64, 256)])
def test_device_walk_equals_the_host_loop(
    device: str, env: EnvParams, n_env: int, length: int
) -> None:
    grid = position_grid(env)
    g = torch.Generator().manual_seed(n_env * 1000 + length)
    choice = torch.randint(0, 3, (len(grid.positions), n_env, length), generator=g)
    states, actions = _walk(grid.next_state, grid.start, choice.numpy())
    next_flat = torch.as_tensor(grid.next_state.reshape(-1), device=device)
    d_states, d_actions = walk_scan(next_flat, grid.start, choice.to(device))
    assert d_states.device.type == device
    np.testing.assert_array_equal(d_states.cpu().numpy(), states)
    np.testing.assert_array_equal(d_actions.cpu().numpy(), actions)
    # the host loop itself follows the rule: the next state is next_state[state, action]
    np.testing.assert_array_equal(states[:, 1:], grid.next_state[states, actions][:, :-1])
    assert (states[:, 0] == grid.start).all()


@pytest.mark.parametrize("device", DEVICES)
def test_settlement_and_greedy_rollout_match_the_cpu(device: str) -> None:
    g = torch.Generator().manual_seed(0)
    held = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=torch.float64)[
        torch.randint(0, 4, (6, 50), generator=g)
    ]
    returns = 0.01 * torch.randn(6, 50, generator=g, dtype=torch.float64)
    env = EnvParams(commission=0.001, slippage_bps=2.0)
    expected = settle(held, returns, env)
    actual = settle(held.to(device), returns.to(device), env)
    for name, a, e in zip(expected._fields, actual, expected, strict=True):
        assert a.device.type == device, name
        torch.testing.assert_close(a.cpu(), e, rtol=1e-12, atol=1e-15, msg=name)

    # the deterministic policy takes the same decisions on the device (float64: no ties)
    grid, market, policy = position_grid(env), tiny_market(), tiny_policy().double()
    market64 = on(market, "cpu", torch.float64)
    ref = evaluate(policy, market64, 5, 290, grid, env, generator=torch.Generator())
    dev = evaluate(
        policy.to(device),
        on(market, device, torch.float64),
        5,
        290,
        grid,
        env,
        generator=torch.Generator(device=device),
    )
    assert torch.equal(dev.actions.cpu(), ref.actions) and torch.equal(dev.held.cpu(), ref.held)
    torch.testing.assert_close(dev.settlement.reward.cpu(), ref.settlement.reward)


@pytest.mark.parametrize("device", DEVICES)
def test_lazy_cache_equals_the_eager_cache(device: str) -> None:
    """Chunks computed on first use hold exactly the eval-mode embeddings of those rows."""
    market, policy = on(tiny_market(rows=1000), device), tiny_policy().to(device)
    eager = macro_cache(policy, market.macro, 10, 990)
    lazy = LazyMacroCache.empty(policy, market.macro, 10, 990, chunk=64)
    starts = torch.tensor([10, 500, 958], device=device)
    # rows - offset: [0, 32) in chunk 0, [490, 522) in 7 and 8, [948, 980) in 14 and 15
    assert lazy.fill(policy, market.macro, starts, 32) == 5
    assert lazy.fill(policy, market.macro, starts, 32) == 0  # nothing new to compute
    assert list(np.flatnonzero(lazy.done)) == [0, 7, 8, 14, 15]
    for c in np.flatnonzero(lazy.done):
        rows = slice(c * 64, min((c + 1) * 64, 980))
        torch.testing.assert_close(lazy.emb[rows], eager.emb[rows], rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="outside the cached range"):
        lazy.fill(policy, market.macro, torch.tensor([970], device=device), 32)


def device_overrides(tmp_path: Path, device: str, *extra: str) -> list[str]:
    return tiny_overrides(tmp_path, f"device={device}", "+experiment=asym_1_10", *extra)


@pytest.mark.parametrize("device", DEVICES)
def test_short_training_run(tmp_path: Path, device: str) -> None:
    seen: list[dict[str, float]] = []

    def watch(ep: int, metrics: dict[str, float], policy: Any, optimizers: Any) -> None:
        assert next(policy.parameters()).device.type == device
        seen.append(metrics)

    cfg = compose_config(*device_overrides(tmp_path, device, "trainer.episodes=13"))
    result = train(cfg, tmp_path / "run", progress=False, on_episode=watch)
    assert result.state.episode == 13 and result.state.macro_steps == 2
    assert [m["update/macro"] for m in seen] == [float(ep % 11 == 0) for ep in range(13)]
    assert all(np.isfinite(v) for m in seen for v in m.values())
    assert "val/sharpe" in seen[-1] and np.isfinite(seen[-1]["val/sharpe"])
    ckpt = load_checkpoint(result.last_checkpoint)  # map_location=cpu
    assert all(t.device.type == "cpu" for t in ckpt["policy"].values())


@pytest.mark.parametrize("device", DEVICES)
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path: Path, device: str) -> None:
    full, resumed = full_and_resumed(tmp_path, device_overrides(tmp_path, device), 14, 7)
    assert resumed.state.macro_steps == 2  # resumed mid-cycle, with an empty MacroNet cache
    assert_identical(full.last_checkpoint, resumed.last_checkpoint)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_trained_on_the_device_backtests_on_cpu(tmp_path: Path, device: str) -> None:
    cfg = compose_config(*device_overrides(tmp_path, device, "trainer.episodes=5"))
    trained = train(cfg, tmp_path / "run", progress=False)
    register_backtest_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        bt_cfg = to_backtest_config(
            compose(
                "backtest",
                overrides=[
                    f"checkpoint={trained.last_checkpoint}",
                    "split=val",
                    "device=cpu",
                    "tracking=none",
                    f"cache_dir={tmp_path}/cache",
                    "plots=false",
                    "report_html=false",  # the page is not what this checks (no bokeh needed)
                    "n_bootstrap=0",
                    "progress=false",
                ],
            )
        )
    report = backtest(bt_cfg, tmp_path / "bt")
    strategy = next(iter(report.stats.values()))
    # the trainer's last validation ran on `device` with the same weights and bars
    assert strategy["Return [%]"] == pytest.approx(trained.val["Return [%]"], rel=1e-6, abs=1e-9)
    assert len(report.steps) > 0 and report.meta["in_sample"]  # val selected the checkpoint


# ----------------------------------------------------------------------------- device audit

FACTORIES = frozenset(
    {
        torch.rand,
        torch.randn,
        torch.randint,
        torch.randperm,
        torch.arange,
        torch.zeros,
        torch.ones,
        torch.empty,
        torch.full,
        torch.tensor,
        torch.as_tensor,
        torch.linspace,
        torch.eye,
        torch.scalar_tensor,
    }
)
# (module, function) that create host tensors on purpose, and why
# (the baselines and the random-timing null settle numpy arrays: they create no tensors at all)
HOST_SIDE = {
    ("hmarl.agent.reinforce", "_discount_matrix"): "built once per (length, gamma, device)",
    ("hmarl.agent.rollout", "walk"): "the numpy walk's branch, taken only for CPU tensors",
    ("hmarl.agent.rollout", "market_tensors"): "numpy arrays moved with .to(device) at once",
    ("hmarl.agent.expected", "_recursions_loop"): "the CPU branch of grid_values (numpy loop)",
}


class DeviceAudit(TorchFunctionMode):
    """Records every tensor factory call from ``prefixes`` modules that names no device.

    Why: on the CPU a tensor made without ``device=`` lands on the right device by luck; on
    CUDA it is on the CPU and the next op (or a CUDA generator) fails. ``torch.from_numpy``
    cannot take a device and is not seen by torch-function modes: it is patched separately.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("hmarl.",)) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.violations: list[str] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        implicit = kwargs.get("device") is None and not (args and torch.is_tensor(args[0]))
        if func in FACTORIES and implicit:
            self.record(f"torch.{func.__name__}")
        return func(*args, **kwargs)

    def record(self, what: str) -> None:
        # the direct caller of the factory (torch's own calls, e.g. nn.Linear's, are not ours)
        frame = sys._getframe(2)
        module, function = frame.f_globals.get("__name__", ""), frame.f_code.co_name
        if module.startswith(self.prefixes) and (module, function) not in HOST_SIDE:
            self.violations.append(f"{module}.{function} line {frame.f_lineno}: {what} no device")


@contextmanager
def device_audit(
    monkeypatch: pytest.MonkeyPatch, prefixes: tuple[str, ...] = ("hmarl.",)
) -> Iterator[DeviceAudit]:
    audit = DeviceAudit(prefixes)
    from_numpy = torch.from_numpy

    def audited_from_numpy(array: np.ndarray) -> torch.Tensor:
        audit.record("torch.from_numpy")
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", audited_from_numpy)
    with audit:
        yield audit


def test_every_tensor_hmarl_creates_names_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training (both schedules' paths, the lazy cache), validation and resume, audited."""
    ov = tiny_overrides(tmp_path, "trainer.macro_every=3", "trainer.eval_every=2", "device=cpu")
    with device_audit(monkeypatch) as audit:
        part = train(compose_config(*ov, "trainer.episodes=4"), tmp_path / "a", progress=False)
        train(
            compose_config(*ov, "trainer.episodes=6", f"trainer.resume={part.last_checkpoint}"),
            tmp_path / "b",
            progress=False,
        )
    assert audit.violations == []


def _draw_mask_before_the_fix(shape: Any, p: float, generator: torch.Generator | None) -> Any:
    """hmarl.agent.policy.draw_mask as it was when device=auto crashed on every GPU."""
    return torch.rand(tuple(shape), generator=generator).ge_(p).mul_(1.0 / (1.0 - p))


def test_the_audit_catches_the_cuda_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit is not vacuous: the original bug, put back, is reported."""
    monkeypatch.setattr(rollout, "draw_mask", _draw_mask_before_the_fix)
    market, policy, env = tiny_market(), tiny_policy(), EnvParams()
    gen = torch.Generator().manual_seed(0)
    with device_audit(monkeypatch, prefixes=("hmarl.", __name__)) as audit:
        collect(policy, market, sample_starts(0, 290, 8, 2, gen), 8, position_grid(env), env,
                generator=gen)  # fmt: skip
    assert audit.violations and all("torch.rand no device" in v for v in audit.violations)
    assert f"{__name__}._draw_mask_before_the_fix" in audit.violations[0]
