"""Training entry point: ``python -m hmarl.train +experiment=asym_1_10``.

Only :func:`main` sees Hydra's config; it converts it to :class:`hmarl.config.Config` and
calls :func:`train` with plain values, which tests call directly too.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hmarl.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from hmarl.cli import reported_errors, run_cli
from hmarl.config import Config, conf_dir, flatten, register_configs, to_config
from hmarl.dataset import MarketData, market_for_config
from hmarl.env import EnvParams, position_grid
from hmarl.evaluation import market_tensors, validate
from hmarl.io import atomic_write, write_text
from hmarl.metrics import metric_keys
from hmarl.policy import HierarchicalPolicy
from hmarl.reinforce import macro_steps_at, make_optimizers, reinforce_update
from hmarl.rollout import MacroCache, collect, macro_cache, sample_starts
from hmarl.tracking import MlflowTracker, Tracker, git_commit, ui_command


@dataclass
class TrainState:
    """Everything besides weights, optimizers and RNGs that a resumed run must continue."""

    episode: int = 0  # next episode to run
    macro_steps: int = 0
    best_value: float | None = None
    best_episode: int = -1
    evals_without_improvement: int = 0
    run_id: str | None = None


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    run_id: str | None
    state: TrainState
    val: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name} requested but CUDA is not available; use device=auto or cpu"
        )
    return device


def env_params(cfg: Config) -> EnvParams:
    e = cfg.env
    return EnvParams(
        e.commission,
        e.slippage_bps,
        e.max_position,
        e.allow_short,
        e.action_mode.value,
        e.increment,
    )


def load_market(cfg: Config, log: Callable[[str], None] | None = print) -> MarketData:
    """The market a training config describes (features and windows from the cache if built)."""
    return market_for_config(
        cfg.data,
        feature_names=cfg.features.names,
        macro_window=cfg.features.macro_window,
        micro_window=cfg.features.micro_window,
        cache_dir=cfg.cache_dir,
        log=log,
    )


def config_dict(cfg: Config) -> dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(node, dict)
    return {str(k): v for k, v in node.items()}


def _check_resume(ckpt: dict[str, Any], cfg: Config, market: MarketData) -> None:
    """A resumed run must train the same model on the same inputs."""
    problems = []
    if ckpt["model"] != asdict(cfg.model):
        problems.append(f"model differs: checkpoint {ckpt['model']} vs config {asdict(cfg.model)}")
    spec = market.feature_spec()
    for key in ("names", "macro_window", "micro_window"):
        if ckpt["feature_spec"][key] != spec[key]:
            problems.append(f"features.{key} differs: {ckpt['feature_spec'][key]} vs {spec[key]}")
    if ckpt["data_fingerprint"] != market.fingerprint:
        problems.append(
            "the data differs from the data the checkpoint was trained on (fingerprint)"
        )
    if problems:
        raise CheckpointError("cannot resume from this checkpoint: " + "; ".join(problems))


CHECKPOINT_NAMES = ("last.pt", "best.pt")


def _check_output_dir(checkpoints: Path, resume: str | None) -> None:
    """Refuse an output folder holding another run's checkpoints (they would be reported).

    Why: a run that never improves writes no ``best.pt``; a stale one left in a reused
    folder would then be reported, logged and backtested as this run's. Resuming from a
    checkpoint of that same folder continues its run, so its files belong to it.
    """
    found = [n for n in CHECKPOINT_NAMES if (checkpoints / n).exists()]
    if not found or (resume is not None and Path(resume).resolve().parent == checkpoints.resolve()):
        return
    raise CheckpointError(
        f"output folder {checkpoints.parent} already holds {', '.join(found)} of an earlier "
        f"run: choose a new folder (hydra.run.dir=...) or continue that run with "
        f"trainer.resume={checkpoints / 'last.pt'}"
    )


def _start_tracker(
    cfg: Config, market: MarketData, overrides: Sequence[str], run_id: str | None
) -> Tracker:
    if not cfg.tracking.enabled:
        return Tracker()
    name = cfg.tracking.run_name or " ".join([cfg.experiment_name, *overrides]).strip() or "train"
    tags = {
        "experiment_name": cfg.experiment_name,
        "git_commit": git_commit(),
        "data_fingerprint": market.fingerprint,
        "hydra_overrides": " ".join(overrides),
        "kind": "train",
    }
    return MlflowTracker(
        cfg.tracking.uri, cfg.tracking.experiment, run_name=name[:250], tags=tags, run_id=run_id
    )


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


EpisodeHook = Callable[
    [int, dict[str, float], HierarchicalPolicy, dict[str, torch.optim.Adam]], None
]


class Trainer:
    """One training run: set-up, the episode loop, validation and checkpoints."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike[str]) -> None:
        self.cfg, tc = cfg, cfg.trainer
        self.out = Path(out_dir)
        self.last_path = self.out / "checkpoints" / "last.pt"
        self.best_path = self.out / "checkpoints" / "best.pt"
        _check_output_dir(self.last_path.parent, tc.resume)
        self.last_path.parent.mkdir(parents=True, exist_ok=True)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        device = resolve_device(cfg.device)

        # ---- data: candles -> features -> windows (cached) ----
        self.market = load_market(cfg)
        self.tensors = market_tensors(self.market, device)

        # ---- model, optimizers, RNG, state (fresh or resumed) ----
        self.policy = HierarchicalPolicy(self.market.n_features, **asdict(cfg.model)).to(device)
        self.optimizers = make_optimizers(
            self.policy, lr_macro=tc.lr_macro, lr_micro=tc.lr_micro, lr_head=tc.lr_head
        )
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.state = TrainState()
        if tc.resume:
            self._resume(tc.resume, device)
        self.env = env_params(cfg)
        self.grid = position_grid(self.env)
        self.cache: MacroCache | None = None
        self.val: dict[str, Any] = {}

    def _resume(self, path: str, device: torch.device) -> None:
        ckpt = load_checkpoint(path, map_location=device)
        _check_resume(ckpt, self.cfg, self.market)
        load_weights(self.policy, ckpt["policy"], path)
        for name, opt in self.optimizers.items():
            load_weights(opt, ckpt["optimizers"][name], path)
        self.gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.state = TrainState(**ckpt["train_state"])
        self._carry_best(Path(path))
        print(f"resumed from {path} at episode {self.state.episode}")

    def _carry_best(self, resumed: Path) -> None:
        """Copy the run's ``best.pt`` from beside the resumed checkpoint into this output folder.

        Why: resuming into a new folder would otherwise leave it (and the MLflow run, which
        logs this folder's checkpoints) with ``last.pt`` only while the state says the best
        episode is N, so a backtest by run id would quietly evaluate ``last.pt``.
        """
        if self.state.best_episode < 0:
            return
        source = resumed.parent / "best.pt"
        if source.exists() and source.resolve() == self.best_path.resolve():
            return  # resumed in place: best.pt is already here
        episode = None
        if source.is_file():
            episode = load_checkpoint(source)["train_state"].get("best_episode")
        if episode != self.state.best_episode:
            print(
                f"warning: {source} of the best episode {self.state.best_episode} is missing or "
                f"is another run's; {self.best_path} is only written when validation improves"
            )
            return
        atomic_write(self.best_path, lambda p: shutil.copyfile(source, p))
        print(f"carried {source} (best episode {episode}) into {self.best_path}")

    def save(self, path: Path) -> Path:
        return save_checkpoint(
            path,
            {
                "policy": self.policy.state_dict(),
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "train_state": asdict(self.state),
                "rng": {"generator": self.gen.get_state(), "torch": torch.get_rng_state()},
                "config": config_dict(self.cfg),
                "model": asdict(self.cfg.model),
                "env": asdict(self.env),
                "feature_spec": self.market.feature_spec(),
                "data_fingerprint": self.market.fingerprint,
                "data_splits": {k: list(v) for k, v in self.market.splits.items()},
            },
        )

    def episode(self, episode: int) -> dict[str, float]:
        """Collect a batch of trajectories and apply one scheduled REINFORCE update."""
        tc = self.cfg.trainer
        t0 = time.perf_counter()
        lo, hi = self.market.splits["train"]
        update_macro = macro_steps_at(episode, tc.macro_every)
        use_cache = tc.cache_frozen_macro and not update_macro
        if use_cache and self.cache is None:
            self.cache = macro_cache(self.policy, self.tensors.macro, lo, hi)
        starts = sample_starts(lo, hi, tc.episode_len, tc.n_envs, self.gen)
        traj = collect(
            self.policy,
            self.tensors,
            starts,
            tc.episode_len,
            self.grid,
            self.env,
            generator=self.gen,
            cache=self.cache if use_cache else None,
            train_macro=update_macro,
        )
        metrics = reinforce_update(
            self.policy,
            self.optimizers,
            traj,
            gamma=tc.gamma,
            entropy_coef=tc.entropy_coef,
            grad_clip=tc.grad_clip,
            update_macro=update_macro,
        )
        if update_macro:
            self.cache = None  # MacroNet changed: its cached embeddings are stale
            self.state.macro_steps += 1
        metrics["perf/steps_per_s"] = tc.n_envs * tc.episode_len / (time.perf_counter() - t0)
        self.state.episode = episode + 1
        return metrics

    def validate(self, episode: int) -> dict[str, float]:
        """Deterministic validation; keeps `best` and counts evaluations without improvement."""
        tc = self.cfg.trainer
        self.val = validate(self.policy, self.market, self.tensors, self.env)
        vals = metric_keys(self.val, prefix="val/")
        value = vals.get(f"val/{tc.best_metric}")
        if value is None:
            choices = sorted(k[4:] for k in vals)
            raise KeyError(
                f"trainer.best_metric={tc.best_metric!r} is not a validation key; "
                f"choose one of {choices}"
            )
        if _improved(value, self.state.best_value, tc.best_mode.value):
            self.state.best_value, self.state.best_episode = value, episode
            self.state.evals_without_improvement = 0
            self.save(self.best_path)
        else:
            self.state.evals_without_improvement += 1
        return vals

    def stop_early(self) -> bool:
        patience = self.cfg.trainer.early_stop_patience
        return 0 < patience <= self.state.evals_without_improvement


def train(
    cfg: Config,
    out_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    composed_yaml: str | None = None,
    progress: bool = True,
    on_episode: EpisodeHook | None = None,
) -> TrainResult:
    """Train a HierarchicalPolicy as configured; writes checkpoints under ``out_dir``.

    ``on_episode(episode, metrics, policy, optimizers)`` runs after each episode's update
    (for custom logging, and for tests that watch the schedule).
    """
    run = Trainer(cfg, out_dir)
    tc, state = cfg.trainer, run.state
    tracker = _start_tracker(cfg, run.market, overrides, state.run_id)
    state.run_id = tracker.run_id
    status, stopped_early = "FAILED", False
    pbar = tqdm(
        total=tc.episodes, initial=state.episode, disable=not progress, mininterval=1.0, unit="ep"
    )
    try:
        if not tc.resume:
            tracker.log_params(flatten(cfg))
        _log_config_artifacts(tracker, run.out, cfg, overrides, composed_yaml)
        run.policy.train()
        for episode in range(state.episode, tc.episodes):
            metrics = run.episode(episode)
            last = state.episode == tc.episodes
            if state.episode % tc.eval_every == 0 or last:
                metrics.update(run.validate(episode))
                stopped_early = run.stop_early()
            if state.episode % tc.checkpoint_every == 0 or last or stopped_early:
                run.save(run.last_path)
            tracker.log_metrics(metrics, step=episode)
            if on_episode is not None:
                on_episode(episode, metrics, run.policy, run.optimizers)
            _show(pbar, metrics, run.val)
            if stopped_early:
                n = tc.early_stop_patience
                print(f"early stop at episode {episode}: {n} evaluations without improvement")
                break
        if not run.last_path.exists():  # resumed a finished run: nothing new, keep the state
            run.save(run.last_path)
        tracker.set_tags(
            {"best_episode": str(state.best_episode), "stopped_early": str(stopped_early)}
        )
        if cfg.tracking.log_checkpoints:
            for path in (run.last_path, run.best_path):
                if path.exists():
                    tracker.log_artifact(path, "checkpoints")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        pbar.close()
        _finish(tracker, status, run.last_path if cfg.tracking.log_checkpoints else None)
    best = run.best_path if run.best_path.exists() else None
    result = TrainResult(
        run.out, run.last_path, best, tracker.run_id, state, run.val, stopped_early
    )
    _print_summary(result, cfg)
    return result


def _show(pbar: tqdm, metrics: dict[str, float], val: dict[str, Any]) -> None:
    pbar.set_postfix(
        reward=f"{metrics['reward/mean']:+.4f}",
        loss=f"{metrics['loss/policy']:.3g}",
        steps_s=f"{metrics['perf/steps_per_s']:.0f}",
        val_sharpe=f"{val.get('Sharpe Ratio', float('nan')):.2f}",
        refresh=False,
    )
    pbar.update(1)


def _finish(tracker: Tracker, status: str, last: Path | None) -> None:
    """End the MLflow run with its status; a failed run still gets its last good checkpoint."""
    if status != "FINISHED" and last is not None and last.exists():
        try:
            tracker.log_artifact(last, "checkpoints")
        except Exception as exc:  # never mask the original error
            print(f"warning: could not log the last checkpoint: {exc}")
    tracker.finish(status)


def _log_config_artifacts(
    tracker: Tracker, out: Path, cfg: Config, overrides: Sequence[str], composed_yaml: str | None
) -> None:
    write_text(out / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    write_text(out / "overrides.txt", "\n".join(overrides) + "\n")
    if composed_yaml is not None:
        write_text(out / "config_composed.yaml", composed_yaml)
    for name in ("config_resolved.yaml", "overrides.txt", "config_composed.yaml"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "config")


def _print_summary(result: TrainResult, cfg: Config) -> None:
    s = result.state
    best = (
        "none"
        if s.best_value is None
        else f"{cfg.trainer.best_metric}={s.best_value:.4g} at episode {s.best_episode}"
    )
    lines = [
        f"episodes: {s.episode} (MacroNet steps: {s.macro_steps}); best validation {best}",
        f"output: {result.out_dir.resolve()}",
        f"checkpoints: {result.last_checkpoint}"
        + (f", {result.best_checkpoint}" if result.best_checkpoint else ""),
    ]
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (experiment '{cfg.tracking.experiment}')")
        lines.append(f"open the UI: {ui_command(cfg.tracking.uri)}")
    print("\n".join(lines))


register_configs()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> float | None:
    """Compose, convert to typed config, train. Returns the best validation value (for sweepers)."""
    with reported_errors(Config):
        cfg = to_config(dcfg)
        hc = HydraConfig.get()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sigterm)  # a cluster's preemption ends the run KILLED
        result = train(
            cfg,
            hc.runtime.output_dir,
            overrides=list(hc.overrides.task),
            composed_yaml=OmegaConf.to_yaml(dcfg),
        )
    return result.state.best_value


def main() -> None:
    """``python -m hmarl.train``: one ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(hydra_main, Config, "interrupted: the run ended KILLED; resume it from its last.pt")


if __name__ == "__main__":
    main()
