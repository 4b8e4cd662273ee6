"""Training entry point: ``python -m hmarl.train +experiment=asym_1_10``.

Only :func:`main` sees Hydra's config; it converts it to :class:`hmarl.config.Config` and
calls :func:`train` with plain values, which tests call directly too.
"""

from __future__ import annotations

import math
import os
import signal
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

from hmarl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hmarl.config import Config, conf_dir, flatten, register_configs, to_config
from hmarl.dataset import MarketData, market_for_config
from hmarl.env import EnvParams, position_grid
from hmarl.evaluation import market_tensors, validate
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
        raise ValueError(f"device={name} requested but CUDA is not available; use device=auto or cpu")
    return device


def env_params(cfg: Config) -> EnvParams:
    e = cfg.env
    return EnvParams(e.commission, e.slippage_bps, e.max_position, e.allow_short, e.action_mode.value, e.increment)


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
        problems.append("the data differs from the data the checkpoint was trained on (fingerprint)")
    if problems:
        raise CheckpointError("cannot resume from this checkpoint:\n  " + "\n  ".join(problems))


def _start_tracker(cfg: Config, market: MarketData, overrides: Sequence[str], run_id: str | None) -> Tracker:
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
    return MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment, run_name=name[:250], tags=tags, run_id=run_id)


def _improved(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def train(
    cfg: Config,
    out_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    composed_yaml: str | None = None,
    progress: bool = True,
    on_episode: Callable[[int, dict[str, float], HierarchicalPolicy, dict[str, torch.optim.Adam]], None]
    | None = None,
) -> TrainResult:
    """Train a HierarchicalPolicy as configured; writes checkpoints under ``out_dir``.

    ``on_episode(episode, metrics, policy, optimizers)`` runs after each episode's update
    (for custom logging, and for tests that watch the schedule).
    """
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    tc = cfg.trainer

    # ---- data: candles -> features -> windows (cached) ----
    market = market_for_config(
        cfg.data,
        feature_names=cfg.features.names,
        macro_window=cfg.features.macro_window,
        micro_window=cfg.features.micro_window,
        cache_dir=cfg.cache_dir,
    )
    tensors = market_tensors(market, device)
    lo, hi = market.splits["train"]

    # ---- model, optimizers, RNG, state (fresh or resumed) ----
    policy = HierarchicalPolicy(market.n_features, **asdict(cfg.model)).to(device)
    optimizers = make_optimizers(policy, lr_macro=tc.lr_macro, lr_micro=tc.lr_micro, lr_head=tc.lr_head)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    state = TrainState()
    if tc.resume:
        ckpt = load_checkpoint(tc.resume, map_location=device)
        _check_resume(ckpt, cfg, market)
        policy.load_state_dict(ckpt["policy"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        gen.set_state(ckpt["rng"]["generator"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        state = TrainState(**ckpt["train_state"])
        print(f"resumed from {tc.resume} at episode {state.episode}")
    env = env_params(cfg)
    grid = position_grid(env)

    def save(path: Path) -> Path:
        return save_checkpoint(
            path,
            {
                "policy": policy.state_dict(),
                "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                "train_state": asdict(state),
                "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
                "config": config_dict(cfg),
                "model": asdict(cfg.model),
                "env": asdict(env),
                "feature_spec": market.feature_spec(),
                "data_fingerprint": market.fingerprint,
                "data_splits": {k: list(v) for k, v in market.splits.items()},
            },
        )

    tracker = _start_tracker(cfg, market, overrides, state.run_id)
    state.run_id = tracker.run_id
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    status, val, stopped_early = "FAILED", {}, False
    pbar = tqdm(total=tc.episodes, initial=state.episode, disable=not progress, mininterval=1.0, unit="ep")
    try:
        if not tc.resume:
            tracker.log_params(flatten(cfg))
        _log_config_artifacts(tracker, out, cfg, overrides, composed_yaml)
        cache: MacroCache | None = None
        policy.train()
        for episode in range(state.episode, tc.episodes):
            t0 = time.perf_counter()
            update_macro = macro_steps_at(episode, tc.macro_every)
            use_cache = tc.cache_frozen_macro and not update_macro
            if use_cache and cache is None:
                cache = macro_cache(policy, tensors.macro, lo, hi)
            starts = sample_starts(lo, hi, tc.episode_len, tc.n_envs, gen)
            traj = collect(
                policy, tensors, starts, tc.episode_len, grid, env, generator=gen,
                cache=cache if use_cache else None, train_macro=update_macro,
            )
            metrics = reinforce_update(
                policy, optimizers, traj, gamma=tc.gamma, entropy_coef=tc.entropy_coef,
                grad_clip=tc.grad_clip, update_macro=update_macro,
            )
            if update_macro:
                cache = None  # MacroNet changed: its cached embeddings are stale
                state.macro_steps += 1
            metrics["perf/steps_per_s"] = tc.n_envs * tc.episode_len / (time.perf_counter() - t0)
            state.episode = episode + 1
            last = state.episode == tc.episodes
            if state.episode % tc.eval_every == 0 or last:
                val = validate(policy, market, tensors, env)
                vals = metric_keys(val, prefix="val/")
                metrics.update(vals)
                value = vals.get(f"val/{tc.best_metric}")
                if value is None:
                    raise KeyError(f"trainer.best_metric={tc.best_metric!r} is not a validation key; "
                                   f"choose one of {sorted(k[4:] for k in vals)}")
                if _improved(value, state.best_value, tc.best_mode.value):
                    state.best_value, state.best_episode = value, episode
                    state.evals_without_improvement = 0
                    save(best_path)
                else:
                    state.evals_without_improvement += 1
                stopped_early = 0 < tc.early_stop_patience <= state.evals_without_improvement
            if state.episode % tc.checkpoint_every == 0 or last or stopped_early:
                save(last_path)
            tracker.log_metrics(metrics, step=episode)
            if on_episode is not None:
                on_episode(episode, metrics, policy, optimizers)
            pbar.set_postfix(
                reward=f"{metrics['reward/mean']:+.4f}", loss=f"{metrics['loss/policy']:.3g}",
                steps_s=f"{metrics['perf/steps_per_s']:.0f}",
                val_sharpe=f"{val.get('Sharpe Ratio', float('nan')):.2f}", refresh=False,
            )
            pbar.update(1)
            if stopped_early:
                print(f"early stop at episode {episode}: no improvement in {tc.early_stop_patience} evaluations")
                break
        if not last_path.exists():  # resumed a finished run: nothing new, keep the state
            save(last_path)
        tracker.set_tags({"best_episode": str(state.best_episode), "stopped_early": str(stopped_early)})
        if cfg.tracking.log_checkpoints:
            for path in (last_path, best_path):
                if path.exists():
                    tracker.log_artifact(path, "checkpoints")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        pbar.close()
        if status != "FINISHED" and cfg.tracking.log_checkpoints and last_path.exists():
            try:  # the last good checkpoint, for inspection of the failed run
                tracker.log_artifact(last_path, "checkpoints")
            except Exception as exc:  # never mask the original error
                print(f"warning: could not log the last checkpoint: {exc}")
        tracker.finish(status)
    result = TrainResult(out, last_path, best_path if best_path.exists() else None, tracker.run_id,
                         state, val, stopped_early)
    _print_summary(result, cfg)
    return result


def _log_config_artifacts(
    tracker: Tracker, out: Path, cfg: Config, overrides: Sequence[str], composed_yaml: str | None
) -> None:
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    if composed_yaml is not None:
        (out / "config_composed.yaml").write_text(composed_yaml)
    for name in ("config_resolved.yaml", "overrides.txt", "config_composed.yaml"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "config")


def _print_summary(result: TrainResult, cfg: Config) -> None:
    s = result.state
    best = "none" if s.best_value is None else f"{cfg.trainer.best_metric}={s.best_value:.4g} at episode {s.best_episode}"
    lines = [
        f"episodes: {s.episode} (MacroNet steps: {s.macro_steps}); best validation {best}",
        f"output: {result.out_dir.resolve()}",
        f"checkpoints: {result.last_checkpoint}" + (f", {result.best_checkpoint}" if result.best_checkpoint else ""),
    ]
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (experiment '{cfg.tracking.experiment}')")
        lines.append(f"open the UI: {ui_command(cfg.tracking.uri)}")
    print("\n".join(lines))


register_configs()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(dcfg: DictConfig) -> float | None:
    """Compose, convert to typed config, train. Returns the best validation value (for sweepers)."""
    cfg = to_config(dcfg)
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name == "RUN":
        signal.signal(signal.SIGTERM, _sigterm)  # a cluster's preemption ends the run KILLED
    result = train(
        cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task), composed_yaml=OmegaConf.to_yaml(dcfg)
    )
    return result.state.best_value


if __name__ == "__main__":
    main()
