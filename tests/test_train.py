"""The trainer: the schedule, reproducibility, resume, MLflow runs and failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_identical, compose_config, full_and_resumed, run_cli, tiny_overrides
from mlflow.tracking import MlflowClient

import hmarl.train.trainer as train_mod
from hmarl.agent.checkpoint import load_checkpoint
from hmarl.train.trainer import train


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize(
    "experiment,macro_episodes",
    [
        ("asym_1_10", {0, 11}),
        ("asym_1_2", {0, 3, 6, 9, 12, 15, 18, 21}),
        ("sym_1_1", set(range(22))),
    ],
)
def test_schedule_over_22_episodes(
    tmp_path: Path, experiment: str, macro_episodes: set[int]
) -> None:
    cfg = compose_config(
        f"+experiment={experiment}", *tiny_overrides(tmp_path, "trainer.episodes=22")
    )
    seen: dict[str, set[int]] = {"macro": set(), "micro": set(), "head": set()}
    adam_steps: list[int] = []
    state = {}

    def watch(ep: int, metrics: dict[str, float], policy, optimizers) -> None:
        for name in seen:
            if name in state and changed(state[name], getattr(policy, name)):
                seen[name].add(ep)
            state[name] = snapshot(getattr(policy, name))
        st = optimizers["macro"].state_dict()["state"]
        adam_steps.append(int(st[0]["step"]) if st else 0)
        assert metrics["update/macro"] == float(ep in macro_episodes)
        assert (metrics["param_delta/macro"] > 0) == (ep in macro_episodes)

    # episode 0 compares against the initial weights: snapshot them before training starts
    torch.manual_seed(cfg.seed)
    from hmarl.agent.specialists import build_policy

    init = build_policy(20, cfg.model)
    for name in seen:
        state[name] = snapshot(getattr(init, name))
    train(cfg, tmp_path / "run", progress=False, on_episode=watch)

    assert seen["macro"] == macro_episodes
    assert seen["micro"] == seen["head"] == set(range(22))
    expected_steps = [sum(1 for e in macro_episodes if e <= ep) for ep in range(22)]
    assert adam_steps == expected_steps  # a frozen MacroNet's Adam clock does not advance


def test_same_seed_gives_identical_checkpoints(tmp_path: Path) -> None:
    ov = tiny_overrides(tmp_path, "+experiment=asym_1_10", "trainer.episodes=7")
    r1 = train(compose_config(*ov), tmp_path / "a", progress=False)
    r2 = train(compose_config(*ov), tmp_path / "b", progress=False)
    assert_identical(r1.last_checkpoint, r2.last_checkpoint)
    r3 = train(compose_config(*ov, "seed=1"), tmp_path / "c", progress=False)
    with pytest.raises(AssertionError):
        assert_identical(r1.last_checkpoint, r3.last_checkpoint)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    ov = tiny_overrides(tmp_path, "+experiment=asym_1_10")
    full, resumed = full_and_resumed(tmp_path, ov, 15, 7)
    assert resumed.state.episode == 15 and resumed.state.macro_steps == 2
    assert_identical(full.last_checkpoint, resumed.last_checkpoint)


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    ov = tiny_overrides(tmp_path, "trainer.episodes=2")
    part = train(compose_config(*ov), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="model differs"):
        train(
            compose_config(
                *ov,
                "trainer.episodes=4",
                "model.micro_dim=16",
                f"trainer.resume={part.last_checkpoint}",
            ),
            tmp_path / "b",
            progress=False,
        )


def test_command_leaves_a_finished_mlflow_run(tmp_path: Path) -> None:
    proc = run_cli(
        "hmarl.train",
        "+experiment=asym_1_10",
        "trainer.episodes=3",
        *tiny_overrides(tmp_path, tracking=True),
        f"hydra.run.dir={tmp_path}/out",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow run:" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("hmarl")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.macro_every"] == "11" and run.data.params["seed"] == "0"
    assert run.data.tags["experiment_name"] == "asym_1_10" and run.data.tags["data_fingerprint"]
    for key in [
        "reward/mean",
        "loss/policy",
        "entropy",
        "grad_norm/macro",
        "grad_norm/micro",
        "grad_norm/head",
        "update/macro",
        "param_delta/macro",
        "param_delta/micro",
        "param_delta/head",
        "perf/steps_per_s",
        "val/sharpe",
        "val/return_pct",
    ]:
        assert key in run.data.metrics, key
    updates = [m.value for m in client.get_metric_history(run.info.run_id, "update/macro")]
    assert updates == [1.0, 0.0, 0.0]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= artifacts
    config_artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert (
        "config/config_composed.yaml" in config_artifacts
        and "config/overrides.txt" in config_artifacts
    )


def test_injected_failure_leaves_failed_run_and_last_good_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=12", tracking=True))
    real = train_mod.reinforce_update
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint written at episode 5
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "reinforce_update", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        train(cfg, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(last)
    assert ck["train_state"]["episode"] == 5
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hmarl").experiment_id])
    assert run.info.status == "FAILED"


def test_interrupt_ends_the_run_killed(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=5", tracking=True))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "reinforce_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    client = MlflowClient(cfg.tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hmarl").experiment_id])
    assert run.info.status == "KILLED"


def test_excess_returns_pay_timing_not_the_training_drift(tmp_path: Path) -> None:
    """trainer.excess_returns: training episodes earn each bar's return less the training split's
    mean; validation and test (``tensors``) keep the true returns; off, nothing changes."""
    from hmarl.train.trainer import Trainer

    plain = Trainer(compose_config(*tiny_overrides(tmp_path)), tmp_path / "plain")
    assert plain.train_tensors is plain.tensors
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.excess_returns=true"))
    run = Trainer(cfg, tmp_path / "excess")
    lo, hi = run.market.splits["train"]
    got, true = run.train_tensors.returns, run.tensors.returns
    drift = true[lo:hi].mean()
    assert abs(float(drift)) > 1e-6  # the synthetic training split has a drift to remove
    assert torch.equal(got[lo:hi], true[lo:hi] - drift)
    assert abs(float(got[lo:hi].mean())) < 1e-15
    assert torch.equal(got[:lo], true[:lo]) and torch.equal(got[hi:], true[hi:])
    assert torch.equal(true, plain.tensors.returns)  # evaluation settles the true returns
    # the same first episode (same weights, same draws) is paid the drift-free rewards
    a, b = plain.episode(0), run.episode(0)
    assert a["entropy"] == b["entropy"] and a["reward/mean"] != b["reward/mean"]
