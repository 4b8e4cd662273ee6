"""Training as a function, :func:`train` (one run: set-up, the episode loop, validation,
checkpoints, tracking), and the :class:`Trainer` it drives; what ``python -m hmarl.train``
(:mod:`hmarl.train.__main__`, the only place that sees Hydra's config), the benchmarks and the
tests call. Which validation `best.pt` keeps is :mod:`hmarl.train.selection`'s rule.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from hmarl.agent.checkpoint import (
    RESUME_KEYS,
    Checkpoint,
    CheckpointError,
    Payload,
    RunRecord,
    TrackingRecord,
    check_keys,
    load_checkpoint,
    load_weights,
    plain_stats,
    save_checkpoint,
)
from hmarl.agent.evaluation import policy_stats, pooled_policy_stats
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.reinforce import GridModel, macro_steps_at, make_optimizers, reinforce_update
from hmarl.agent.rollout import (
    LazyMacroCache,
    MarketTensors,
    collect,
    market_tensors,
    sample_market_starts,
    sample_starts,
)
from hmarl.agent.specialists import build_policy, frozen_groups, specialist_rates
from hmarl.cli import Interrupted
from hmarl.config import (
    Combine,
    Config,
    SoloValues,
    Task,
    TrainerConfig,
    flatten,
    model_from_record,
    model_record,
)
from hmarl.io import append_text, atomic_write, write_text
from hmarl.market.env import EnvParams, position_grid
from hmarl.market.many import Markets, check_episode_fits, load_markets
from hmarl.market.market_data import MarketData
from hmarl.market.specialist_data import market_for_model, specialist_inputs
from hmarl.runtime import setup
from hmarl.stats.baselines import buy_and_hold_return
from hmarl.stats.metrics import GATE_PREFIX, flag_sentences, metric_keys, outcome_flags
from hmarl.steps import ACTIONS
from hmarl.tracking import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    Tracker,
    absolute_store_uri,
    git_commit,
    tracked_run,
    ui_command,
)
from hmarl.train.resume import describe_data, resume_command
from hmarl.train.selection import (
    EDGE_CONDITIONS,
    condition_text,
    edge_failures,
    improved,
    misses_text,
    selection_score,
)


@dataclass
class TrainState:
    """Everything besides weights, optimizers and RNGs that a resumed run must continue."""

    episode: int = 0  # next episode to run
    macro_steps: int = 0
    best_value: float | None = None
    best_episode: int = -1
    best_trades: int = -1  # validation trades of the `best` checkpoint
    best_edge: bool = False  # whether `best` is an edge (see edge_found)
    best_score: float | None = None  # its selection score (see selection_score)
    edge_streak: int = 0  # evaluations in a row, up to the last, that passed edge_found
    evals_without_improvement: int = 0
    collapses: int = 0  # validations that found the policy collapsed
    run_id: str | None = None
    # what the summary, the tags, compare and the page report beside the kept episode
    evaluations: int = 0  # validations run
    peak_value: float | None = None  # the best best_metric of any validation, kept or not
    peak_episode: int = -1
    edge_misses: dict[str, int] = field(default_factory=dict)  # condition -> evaluations failing
    edge_passes: int = 0  # evaluations that passed every condition (a streak may still be short)
    last_saved_episode: int = -1  # the last episode whose state last.pt holds


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    run_id: str | None
    state: TrainState
    val: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    best_val: dict[str, Any] = field(default_factory=dict)  # validation that selected best.pt
    flags: list[str] = field(default_factory=list)  # hmarl.stats.metrics.outcome_flags of best_val
    best_val_markets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per market
    wall_s: float = math.nan  # the whole train() call
    steps_per_s: float = math.nan  # mean over episodes (Throughput)


def env_params(cfg: Config) -> EnvParams:
    return EnvParams.from_config(cfg.env)


def load_market(cfg: Config, log: Callable[[str], None] | None = print) -> MarketData:
    """The market a training config describes (features and windows from the cache if built)."""
    return market_for_model(
        cfg.data,
        feature_names=cfg.features.names,
        macro_window=cfg.features.macro_window,
        micro_window=cfg.features.micro_window,
        specialists=specialist_inputs(cfg.model.specialists),
        cache_dir=cfg.cache_dir,
        log=log,
    )


def load_many(cfg: Config, log: Callable[[str], None] | None = print) -> Markets:
    """The markets of ``data.paths`` (:mod:`hmarl.market.many`), each refused by name when it
    cannot give the windows or hold one episode in its train split."""
    markets = load_markets(cfg.data, lambda data: load_market(replace(cfg, data=data), log))
    check_episode_fits(markets, cfg.trainer.episode_len)
    return markets


def policy_for(cfg: Config, market: MarketData) -> HierarchicalPolicy:
    """The configured network for this market's inputs (SPEC's, or the specialists')."""
    sizes = [len(s["names"]) for s in market.specialists]
    return build_policy(market.n_features, cfg.model, sizes)


def config_dict(cfg: Config) -> dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(node, dict)
    return {str(k): v for k, v in node.items()}


def _check_resume(ckpt: Checkpoint, cfg: Config, market: MarketData, path: str) -> None:
    """A resumed run must train the same model on the same inputs."""
    problems = []
    own: list[str] = []  # the checkpoint's own values, as overrides that make the resume work
    model = model_record(cfg.model)
    if model_record(model_from_record(ckpt["model"])) != model:
        problems.append(f"model differs: checkpoint {ckpt['model']} vs config {model}")
        own += [f"model.{k}={v}" for k, v in ckpt["model"].items() if model.get(k) != v]
    spec = market.feature_spec()
    for key in ("names", "macro_window", "micro_window"):
        if ckpt["feature_spec"][key] != spec[key]:
            problems.append(f"features.{key} differs: {ckpt['feature_spec'][key]} vs {spec[key]}")
            value = ckpt["feature_spec"][key]
            own.append(
                f"features.{key}=[{','.join(value)}]"
                if key == "names"
                else f"features.{key}={value}"
            )
    if ckpt["data_fingerprint"] != market.fingerprint:
        problems.append(
            f"the data differs: the checkpoint was trained on {describe_data(ckpt.get('config'))} "
            f"(fingerprint {ckpt['data_fingerprint'][:12]}), this config reads "
            f"{describe_data(config_dict(cfg))} (fingerprint {market.fingerprint[:12]})"
        )
    if problems:
        keep = f"; or keep this config's other keys and add {' '.join(own)}" if own else ""
        raise CheckpointError(
            f"cannot resume from {path}: " + "; ".join(problems) + f"; resume with "
            f"trainer.resume={path} alone (the run's config is taken from the checkpoint), "
            f"naming only the keys to change{keep}; or start a new run without trainer.resume"
        )


def restore_run(
    ckpt: Checkpoint,
    path: str,
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    gen: torch.Generator,
    device: torch.device,
) -> TrainState:
    """Load a resumed checkpoint's weights, optimizer states and RNG states (both tasks' runs);
    returns its :class:`TrainState`."""
    load_weights(policy, ckpt["policy"], path)
    for name, opt in optimizers.items():
        load_weights(opt, ckpt["optimizers"][name], path)
    # RNG states are CPU byte tensors whatever the device (map_location moved them)
    try:
        gen.set_state(ckpt["rng"]["generator"].cpu())
    except RuntimeError as exc:
        raise CheckpointError(
            f"cannot resume {path} on {device}: its sampling generator was saved on another "
            f"device type ({exc}); resume on the device type it was trained on"
        ) from exc
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    return TrainState(**ckpt["train_state"])


def carry_best(best_episode: int, resumed: Path, best_path: Path) -> None:
    """Copy the run's ``best.pt`` from beside the resumed checkpoint into this output folder.

    Why: resuming into a new folder would otherwise leave it (and the MLflow run, which
    logs this folder's checkpoints) with ``last.pt`` only while the state says the best
    episode is N, so a backtest by run id would quietly evaluate ``last.pt``.
    """
    if best_episode < 0:
        return
    source = resumed.parent / BEST_CHECKPOINT
    if source.exists() and source.resolve() == best_path.resolve():
        return  # resumed in place: best.pt is already here
    episode = None
    if source.is_file():
        episode = load_checkpoint(source)["train_state"].get("best_episode")
    if episode != best_episode:
        print(
            f"warning: {source} of the best episode {best_episode} is missing or "
            f"is another run's; {best_path} is only written when validation improves"
        )
        return
    atomic_write(best_path, lambda p: shutil.copyfile(source, p))
    print(f"carried {source} (best episode {episode}) into {best_path}")


def run_record(
    cfg: Config,
    state: TrainState,
    val: dict[str, Any],
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    gen: torch.Generator,
) -> RunRecord:
    """The entries of a checkpoint that any training run writes, whatever its market."""
    tracked = bool(state.run_id)
    return RunRecord(
        tracking=TrackingRecord(
            uri=absolute_store_uri(cfg.tracking.uri) if tracked else None,
            experiment=cfg.tracking.experiment if tracked else None,
            run_id=state.run_id,
        ),
        validation=plain_stats(val),
        policy=policy.state_dict(),
        optimizers={n: o.state_dict() for n, o in optimizers.items()},
        train_state=asdict(state),
        rng={"generator": gen.get_state(), "torch": torch.get_rng_state()},
        config=config_dict(cfg),
        model=model_record(cfg.model),
    )


def checkpoint_paths(out: Path, resume: str | None) -> tuple[Path, Path]:
    """A run's ``last.pt`` and ``best.pt`` paths, their folder made (and checked: below)."""
    last, best = out / CHECKPOINT_DIR / LAST_CHECKPOINT, out / CHECKPOINT_DIR / BEST_CHECKPOINT
    check_output_dir(last.parent, resume)
    last.parent.mkdir(parents=True, exist_ok=True)
    return last, best


def check_output_dir(checkpoints: Path, resume: str | None) -> None:
    """Refuse an output folder holding another run's checkpoints (they would be reported).

    Why: a run that never improves writes no ``best.pt``; a stale one left in a reused
    folder would then be reported, logged and backtested as this run's. Resuming from a
    checkpoint of that same folder continues its run, so its files belong to it.
    """
    found = [n for n in (LAST_CHECKPOINT, BEST_CHECKPOINT) if (checkpoints / n).exists()]
    if not found or (resume is not None and Path(resume).resolve().parent == checkpoints.resolve()):
        return
    raise CheckpointError(
        f"output folder {checkpoints.parent} already holds {', '.join(found)} of an earlier "
        f"run: choose a new folder (hydra.run.dir=...) or continue that run with "
        f"trainer.resume={checkpoints / LAST_CHECKPOINT}"
    )


def _run_identity(
    cfg: Config, market: MarketData, overrides: Sequence[str]
) -> tuple[str, dict[str, str]]:
    """The training run's name and tags (names are cut by :func:`hmarl.tracking.run_name`)."""
    name = cfg.tracking.run_name or " ".join([cfg.experiment_name, *overrides]).strip() or "train"
    tags = {
        "experiment_name": cfg.experiment_name,
        "git_commit": git_commit(),
        "data_fingerprint": market.fingerprint,
        "hydra_overrides": " ".join(overrides),
        "kind": "train",
    }
    return name, tags


def _span(ranges: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The stacked rows from the first range's start to the last one's end (the MacroNet
    cache's range; rows between them that no episode reads are never computed)."""
    return min(a for a, _ in ranges), max(b for _, b in ranges)


def collapse_reason(stats: dict[str, Any], entropy: float, tc: Any) -> str | None:
    """Why the policy counts as collapsed, or None: its mean training entropy per step fell
    below ``collapse_entropy``, or one action's mean validation probability exceeds
    ``collapse_share`` (a policy that can no longer explore or change its mind)."""
    if math.isfinite(entropy) and entropy < tc.collapse_entropy:
        return f"entropy {entropy:.3g} < trainer.collapse_entropy={tc.collapse_entropy}"
    shares = {a: stats.get(f"Mean P({a})") for a in ACTIONS}
    for action, share in shares.items():
        if share is not None and share > tc.collapse_share:
            return f"mean P({action}) {share:.4f} > trainer.collapse_share={tc.collapse_share}"
    return None


def entropy_coef_at(tc: TrainerConfig, episode: int) -> float:
    """``entropy_coef``, decayed linearly to ``entropy_coef_final`` by the last episode (both
    tasks' runs)."""
    if tc.entropy_coef_final is None or tc.episodes <= 1:
        return tc.entropy_coef
    frac = min(1.0, episode / (tc.episodes - 1))
    return tc.entropy_coef + frac * (tc.entropy_coef_final - tc.entropy_coef)


def gate_metrics(stats: dict[str, Any]) -> dict[str, float]:
    """``val/gate/<name>``: each specialist's mean gate weight on the validation run."""
    return {
        f"val/gate/{k.removeprefix(GATE_PREFIX)}": float(v)
        for k, v in stats.items()
        if k.startswith(GATE_PREFIX)
    }


EpisodeHook = Callable[
    [int, dict[str, float], HierarchicalPolicy, dict[str, torch.optim.Adam]], None
]


class Trainer:
    """One training run: set-up, the episode loop, validation and checkpoints."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike[str]) -> None:
        self.cfg, tc = cfg, cfg.trainer
        self.out = Path(out_dir)
        self.last_path, self.best_path = checkpoint_paths(self.out, tc.resume)
        precision = tc.matmul_precision.value  # process-wide
        device = setup(cfg.device, cfg.threads, matmul_precision=precision, seed=cfg.seed)

        # ---- data: candles -> features -> windows (cached) ----
        # several markets (data.paths): each built on its own, their rows stacked
        self.markets = load_many(cfg) if cfg.data.paths else None
        self.market = self.markets.stacked if self.markets else load_market(cfg)
        self.tensors = market_tensors(self.market, device)

        # ---- model, optimizers, RNG, state (fresh or resumed) ----
        self.policy = policy_for(cfg, self.market).to(device)
        self.optimizers = make_optimizers(
            self.policy,
            lr_macro=tc.lr_macro,
            lr_micro=tc.lr_micro,
            lr_head=tc.lr_head,
            lrs=specialist_rates(cfg.model),
        )
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.state = TrainState()
        if tc.resume:
            self._resume(tc.resume, device)
        self.env = env_params(cfg)
        self.grid = position_grid(self.env)
        # each market's training rows (empty: one market, whose rows are splits["train"])
        self.train_ranges = list(self.markets.ranges("train").values()) if self.markets else []
        # what training episodes earn (validation and test settle self.tensors' true returns)
        self.train_tensors = self._training_tensors()
        self.grid_model = GridModel(self.grid, self.env, self.train_tensors.returns)
        model = cfg.model
        # a mixture of specialists has a gate and own policies; concat has neither
        self.mixture = bool(model.specialists) and model.combine == Combine.mixture
        # model.solo_values=own reads every specialist's own grid probabilities: the rollout's
        # all-states pass keeps them instead of the update running it again
        self.solo_own = self.mixture and model.solo_coef > 0 and model.solo_values == SoloValues.own
        self.val_buy_and_hold_pct = self._val_buy_and_hold()
        self.cache: LazyMacroCache | None = None
        self.val: dict[str, Any] = {}
        self.entropies: list[float] = []  # training entropy since the last validation
        self.collapse: str | None = None
        self.best_val: dict[str, Any] = {}  # stats of the evaluation `best.pt` was saved at
        self.val_markets: dict[str, dict[str, Any]] = {}  # each market's (data.paths)
        self.best_val_markets: dict[str, dict[str, Any]] = {}

    def _val_buy_and_hold(self) -> float:
        """Buy & hold on the validation record (%): compounded over the markets laid end to
        end when there are several, as the pooled validation record is."""
        if self.markets is None:
            return buy_and_hold_return(self.market, *self.market.splits["val"], self.env)
        growth = 1.0
        for part in self.markets.parts:
            pct = buy_and_hold_return(part.market, *part.market.splits["val"], self.env)
            growth *= 1.0 + pct / 100.0
        return (growth - 1.0) * 100.0

    def _resume(self, path: str, device: torch.device) -> None:
        ckpt = load_checkpoint(path, map_location=device)
        check_keys(ckpt, path, "resumed", RESUME_KEYS)
        _check_resume(ckpt, self.cfg, self.market, path)
        self.state = restore_run(ckpt, path, self.policy, self.optimizers, self.gen, device)
        carry_best(self.state.best_episode, Path(path), self.best_path)
        print(f"resumed from {path} at episode {self.state.episode}")

    def save(self, path: Path) -> Path:
        """Write a checkpoint; one saved as `best.pt` also keeps its validation stats here."""
        if path == self.best_path:
            self.best_val = dict(self.val)
            self.best_val_markets = dict(self.val_markets)
        else:
            self.state.last_saved_episode = self.state.episode - 1
        payload = Payload(
            **run_record(self.cfg, self.state, self.val, self.policy, self.optimizers, self.gen),
            env=asdict(self.env),
            feature_spec=(self.markets or self.market).feature_spec(),
            data_fingerprint=self.market.fingerprint,
            data_splits={k: list(v) for k, v in self.market.splits.items()},  # {}: several
        )
        return save_checkpoint(path, payload)

    def _training_tensors(self) -> MarketTensors:
        """The market's tensors, with ``trainer.excess_returns`` each training range's returns
        less their mean: a policy that holds the training period's drift earns nothing for it,
        so what it learns is timing (a rising training split otherwise teaches "stay long")."""
        if not self.cfg.trainer.excess_returns:
            return self.tensors
        returns = self.tensors.returns.clone()
        for lo, hi in self.train_ranges or [self.market.splits["train"]]:
            returns[lo:hi] -= returns[lo:hi].mean()
        return self.tensors._replace(returns=returns)

    def episode(self, episode: int) -> dict[str, float]:
        """Collect a batch of trajectories and apply one scheduled REINFORCE update."""
        tc = self.cfg.trainer
        t0 = time.perf_counter()
        ranges = self.train_ranges
        lo, hi = self.market.splits["train"] if not ranges else _span(ranges)
        update_macro = macro_steps_at(episode, tc.macro_every)
        use_cache = tc.cache_frozen_macro and not update_macro
        if use_cache and self.cache is None:
            chunk = tc.macro_cache_chunk
            self.cache = LazyMacroCache.empty(self.policy, self.tensors.macro, lo, hi, chunk)
        if ranges:  # each environment picks a market (hmarl.market.many)
            starts = sample_market_starts(ranges, tc.episode_len, tc.n_envs, self.gen)
        else:
            starts = sample_starts(lo, hi, tc.episode_len, tc.n_envs, self.gen)
        traj = collect(
            self.policy,
            self.train_tensors,
            starts,
            tc.episode_len,
            self.grid,
            self.env,
            generator=self.gen,
            cache=self.cache if use_cache else None,
            train_macro=update_macro,
            keep_grid_logits=tc.estimator.value == "expected",
            keep_grid_own=self.solo_own,
        )
        model, mixture = self.cfg.model, self.mixture
        metrics = reinforce_update(
            self.policy,
            self.optimizers,
            traj,
            gamma=tc.gamma,
            entropy_coef=self.entropy_coef(episode),
            grad_clip=tc.grad_clip,
            update_macro=update_macro,
            estimator=tc.estimator.value,
            model=self.grid_model,
            exploration=tc.exploration.value,
            frozen=frozen_groups(self.cfg.model, episode),
            solo_coef=model.solo_coef if mixture else 0.0,
            gate_barrier=model.gate_barrier if mixture else 0.0,
            solo_values=model.solo_values.value,
        )
        self.entropies.append(metrics["entropy"])
        if update_macro:
            self.cache = None  # MacroNet changed: its cached embeddings are stale
            self.state.macro_steps += 1
        metrics["perf/steps_per_s"] = tc.n_envs * tc.episode_len / (time.perf_counter() - t0)
        self.state.episode = episode + 1
        return metrics

    def entropy_coef(self, episode: int) -> float:
        return entropy_coef_at(self.cfg.trainer, episode)

    def validate(self, episode: int) -> dict[str, float]:
        """Validation; keeps `best` (see :func:`improved`), counts evaluations without
        improvement, and checks for collapse (``self.collapse`` holds the reason, or None)."""
        tc = self.cfg.trainer
        greedy = tc.eval_policy.value == "greedy"
        if self.markets is None:
            self.val = policy_stats(
                self.policy, self.market, self.tensors, self.env, greedy=greedy, seed=self.cfg.seed
            )
        else:  # selection on the pooled record; each market's figures logged beside it
            self.val, self.val_markets = pooled_policy_stats(
                self.policy,
                self.market,
                self.tensors,
                self.env,
                self.markets.ranges("val"),
                greedy=greedy,
                seed=self.cfg.seed,
            )
        entropy = sum(self.entropies) / len(self.entropies) if self.entropies else math.nan
        self.entropies = []
        self.collapse = collapse_reason(self.val, entropy, tc)
        vals = metric_keys(self.val, prefix="val/")
        vals.update(gate_metrics(self.val))
        for name, own in self.val_markets.items():  # MLflow names: letters, digits, _-. /
            vals.update(metric_keys(own, prefix=f"val/{re.sub(r'[^0-9A-Za-z_./ -]', '_', name)}/"))
        value = vals.get(f"val/{tc.best_metric}")
        if value is None:
            choices = sorted(k[4:] for k in vals)
            raise KeyError(
                f"trainer.best_metric={tc.best_metric!r} is not a validation key; "
                f"choose one of {choices}"
            )
        trades = int(self.val.get("# Trades", 0))
        failures = edge_failures(
            self.val, tc.min_val_trades, self.val_buy_and_hold_pct, tc.edge_null_percentile
        )
        passed = not failures
        self._count(episode, value, failures)
        # an edge must hold on `edge_confirmations` evaluations in a row: one lucky evaluation
        # among ~30 against a small null is likely even without skill, several in a row are not
        self.state.edge_streak = self.state.edge_streak + 1 if passed else 0
        edge = passed and self.state.edge_streak >= tc.edge_confirmations
        score = selection_score(self.val, value, edge, tc.best_mode.value)
        best, best_edge = self.state.best_score, self.state.best_edge
        if improved(score, edge, best, best_edge):
            tie = score == best and edge == best_edge
            self.state.best_value, self.state.best_episode = value, episode
            self.state.best_score, self.state.best_edge = score, edge
            self.state.best_trades = trades
            # a tie takes the later network but is no improvement for early stopping
            if tie:
                self.state.evals_without_improvement += 1
            else:
                self.state.evals_without_improvement = 0
            self.save(self.best_path)
        else:
            self.state.evals_without_improvement += 1
        vals["val/collapsed"] = float(self.collapse is not None)
        vals["val/edge"] = float(edge)  # what selection saw: the rule replays from the metrics
        return vals

    def _count(self, episode: int, value: float, failures: list[str]) -> None:
        """Record what the summary reports beside the kept episode: the best metric of any
        validation, and how many validations failed each edge condition."""
        st = self.state
        st.evaluations += 1
        st.edge_passes += not failures
        for c in failures:
            st.edge_misses[c] = st.edge_misses.get(c, 0) + 1
        sign = 1.0 if self.cfg.trainer.best_mode.value == "max" else -1.0
        if math.isfinite(value) and (st.peak_value is None or sign * value > sign * st.peak_value):
            st.peak_value, st.peak_episode = value, episode

    def on_collapse(self, episode: int) -> bool:
        """Act on a collapse found by the last validation; returns True to stop the run."""
        if self.collapse is None:
            return False
        self.state.collapses += 1
        action = self.cfg.trainer.on_collapse.value
        tqdm.write(f"episode {episode}: policy collapsed ({self.collapse}); on_collapse={action}")
        if action == "stop":
            return True
        if action == "restore" and self.best_path.exists() and self.state.best_episode != episode:
            self.restore_best()
        return False

    def restore_best(self) -> None:
        """Continue from the `best` weights and optimizer states (not its RNG: a new stream)."""
        ckpt = load_checkpoint(self.best_path, map_location=self.tensors.macro.device)
        self.policy.load_state_dict(ckpt["policy"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        self.cache = None
        tqdm.write(f"restored the best policy of episode {self.state.best_episode}")

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

    ``task=quote`` runs the quoting agent (:func:`hmarl.train.quote_task.train_quote_task`).

    ``on_episode(episode, metrics, policy, optimizers)`` runs after each episode's update
    (for custom logging, and for tests that watch the schedule).
    """
    if cfg.task == Task.quote:  # market making: its own run around hmarl.train.quoting
        from hmarl.train.quote_task import train_quote_task

        return train_quote_task(
            cfg,
            out_dir,
            overrides=overrides,
            composed_yaml=composed_yaml,
            progress=progress,
            on_episode=on_episode,
        )
    t_start = time.perf_counter()
    run = Trainer(cfg, out_dir)
    tc, state = cfg.trainer, run.state
    speed = Throughput()
    name, tags = _run_identity(cfg, run.market, overrides)
    keep_last = keep_last_checkpoint(run.last_path) if cfg.tracking.log_checkpoints else None
    stopped_early = False
    with (
        tracked_run(cfg.tracking, name, tags, run_id=state.run_id, on_failure=keep_last) as tracker,
        explained_interrupt(run.out, run.state, run.last_path, tc.checkpoint_every),
    ):
        state.run_id = tracker.run_id
        pbar = tqdm(
            total=tc.episodes,
            initial=state.episode,
            disable=not progress,
            mininterval=1.0,
            unit="ep",
        )
        try:
            if not tc.resume:
                tracker.log_params(flatten(cfg))
            log_config_artifacts(tracker, run.out, cfg, overrides, composed_yaml)
            run.policy.train()
            for episode in range(state.episode, tc.episodes):
                metrics = run.episode(episode)
                speed.add(tc.n_envs * tc.episode_len, metrics["perf/steps_per_s"])
                last = state.episode == tc.episodes
                if state.episode % tc.eval_every == 0 or last:
                    metrics.update(run.validate(episode))
                    stopped_early = run.on_collapse(episode) or run.stop_early()
                if state.episode % tc.checkpoint_every == 0 or last or stopped_early:
                    run.save(run.last_path)
                tracker.log_metrics(metrics, step=episode)
                if on_episode is not None:
                    on_episode(episode, metrics, run.policy, run.optimizers)
                _show(pbar, metrics, run.val, speed)
                if stopped_early:
                    n = tc.early_stop_patience
                    why = (
                        "the policy collapsed (trainer.on_collapse=stop)"
                        if run.collapse is not None and tc.on_collapse.value == "stop"
                        else f"{n} evaluations without improvement"
                    )
                    print(f"early stop at episode {episode}: {why}")
                    break
            if not run.last_path.exists():  # resumed a finished run: nothing new, keep the state
                run.save(run.last_path)
            best_val = run.best_val or stored_validation(run.best_path)
            flags = outcome_flags(best_val, tc.min_val_trades) if best_val else []
            tracker.set_tags(
                {
                    "best_episode": str(state.best_episode),
                    "edge_found": str(state.best_edge),
                    "stopped_early": str(stopped_early),
                    "flags": ",".join(run_flags(flags, state.best_edge)) or "none",
                    "edge_misses": misses_text(state.edge_misses, state.evaluations) or "none",
                    "val_buy_and_hold_pct": f"{run.val_buy_and_hold_pct:.4f}",
                    "kept_exposure_pct": f"{best_val.get('Exposure Time [%]', math.nan):.2f}",
                }
            )
            log_checkpoints(tracker, cfg, run.last_path, run.best_path)
        finally:
            pbar.close()
    best = run.best_path if run.best_path.exists() else None
    result = TrainResult(
        run.out, run.last_path, best, tracker.run_id, state, run.val, stopped_early
    )
    result.best_val, result.flags = best_val, flags
    result.best_val_markets = run.best_val_markets
    result.wall_s, result.steps_per_s = time.perf_counter() - t_start, speed.mean
    append_text(run.out / "train.log", _print_summary(result, cfg, run.val_buy_and_hold_pct))
    return result


@contextmanager
def explained_interrupt(
    out: Path, state: TrainState, last: Path, checkpoint_every: int
) -> Iterator[None]:
    """Turn Ctrl-C (or SIGTERM) into :class:`hmarl.cli.Interrupted` whose message says where
    the run's last checkpoint is and the one command that continues it; ``train.log`` keeps
    the same lines (it used to be left empty). Both tasks' runs (trade, quote) use it."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        text = interrupted_text(state, last, checkpoint_every)
        append_text(out / "train.log", text)
        raise Interrupted(text) from exc


def interrupted_text(state: TrainState, last: Path, checkpoint_every: int) -> str:
    """What an interrupted run tells the user: how far it got and how to continue it."""
    head = f"interrupted at episode {state.episode}: the run ended KILLED"
    if not last.exists():
        return (
            f"{head}; no checkpoint was written yet (the first comes after episode "
            f"{checkpoint_every}, trainer.checkpoint_every): start the run again"
        )
    saved = state.last_saved_episode
    holds = f" (episode {saved})" if saved >= 0 else ""
    return f"{head}; its last checkpoint is {last.resolve()}{holds}; continue it with:\n  " + (
        resume_command(last)
    )


class Throughput:
    """Env-steps per second over all episodes so far: total steps / total episode time.

    One episode's rate swings with the machine's load (6k to 250k steps/s were seen within
    a run); the running mean is what a user can plan with.
    """

    def __init__(self) -> None:
        self.steps, self.seconds = 0, 0.0

    def add(self, steps: int, steps_per_s: float) -> None:
        self.steps += steps
        self.seconds += steps / steps_per_s if steps_per_s > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.nan


def _show(pbar: tqdm, metrics: dict[str, float], val: dict[str, Any], speed: Throughput) -> None:
    pbar.set_postfix(
        reward=f"{metrics['reward/mean']:+.4f}",
        loss=f"{metrics['loss/policy'] + 0.0:.3g}",  # + 0.0 turns -0.0 into 0
        steps_s=f"{speed.mean:.0f}",
        val_sharpe=f"{val.get('Sharpe Ratio', float('nan')):.2f}",
        refresh=False,
    )
    pbar.update(1)


def stored_validation(best: Path) -> dict[str, Any]:
    """The validation stats a `best.pt` was saved with (a resumed run has them only there)."""
    if not best.exists():
        return {}
    stored = load_checkpoint(best).get("validation", {})
    return dict(stored) if isinstance(stored, dict) else {}


def keep_last_checkpoint(last: Path) -> Callable[[Tracker], None]:
    """A run that did not finish still gets its last good checkpoint (``on_failure`` of
    :func:`hmarl.tracking.tracked_run`)."""

    def log(tracker: Tracker) -> None:
        if last.exists():
            try:
                tracker.log_artifact(last, CHECKPOINT_DIR)
            except Exception as exc:  # never mask the original error
                print(f"warning: could not log the last checkpoint: {exc}")

    return log


def log_checkpoints(tracker: Tracker, cfg: Config, *paths: Path) -> None:
    """Log a finished run's checkpoints that exist (unless ``tracking.log_checkpoints=false``)."""
    if cfg.tracking.log_checkpoints:
        for path in paths:
            if path.exists():
                tracker.log_artifact(path, CHECKPOINT_DIR)


def log_config_artifacts(
    tracker: Tracker, out: Path, cfg: Config, overrides: Sequence[str], composed_yaml: str | None
) -> None:
    write_text(out / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    write_text(out / "overrides.txt", "\n".join(overrides) + "\n")
    if composed_yaml is not None:
        write_text(out / "config_composed.yaml", composed_yaml)
    for name in ("config_resolved.yaml", "overrides.txt", "config_composed.yaml"):
        if (out / name).exists():
            tracker.log_artifact(out / name, "config")


def run_flags(flags: Sequence[str], edge: bool) -> list[str]:
    """The run's flags as tagged: its kept validation's, and ``no_edge_found_in_training``
    when it found none (a no-edge run used to read ``flags: none`` in the runs table)."""
    return [*flags, *([] if edge else ["no_edge_found_in_training"])]


def kept_line(s: TrainState, cfg: Config, best_val: dict[str, Any]) -> str:
    """Which episode ``best.pt`` holds and why, beside the best metric any validation reached.

    Why: "best validation sharpe=-6.03 at episode 49" read as the best Sharpe although later
    validations reached +0.20; without an edge the kept episode is the least exposed policy.
    """
    metric = cfg.trainer.best_metric
    if s.best_value is None:
        return "no validation kept (none was finite)"
    value = f"validation {metric}={s.best_value:+.4g}"
    if s.best_edge:
        return f"kept episode {s.best_episode} (best.pt): an edge, the best {value}"
    exposure = float(best_val.get("Exposure Time [%]", math.nan))
    line = (
        f"kept episode {s.best_episode} (best.pt): no edge, so the least exposed policy "
        f"(in the market on {exposure:.0f}% of validation bars), {value}"
    )
    if s.peak_value is not None and s.peak_episode != s.best_episode:
        line += (
            f"; the best validation {metric} was {s.peak_value:+.4g} at episode "
            f"{s.peak_episode}, not kept because it was no edge"
        )
    return line


def no_edge_warning(s: TrainState, cfg: Config, buy_and_hold_pct: float) -> str:
    """The one warning of a run without an edge, naming the conditions that failed and how
    often, not every condition of the rule."""
    tc = cfg.trainer
    failed = [
        f"{condition_text(c, tc.min_val_trades, buy_and_hold_pct, tc.edge_null_percentile)} "
        f"({n} of {s.evaluations} evaluations failed it)"
        for c, n in ((c, s.edge_misses.get(c, 0)) for c in EDGE_CONDITIONS)
        if n
    ]
    k = tc.edge_confirmations
    if s.edge_passes and k > 1:
        failed.append(
            f"{k} evaluations in a row passing every condition ({s.edge_passes} passed, never "
            f"{k} in a row)"
        )
    why = "; ".join(failed) or "no evaluation ran"
    return (
        f"WARNING: no edge found on validation: {why}; best.pt is the least exposed policy "
        "seen, and the advice is to stay flat rather than trade it"
    )


def _print_summary(result: TrainResult, cfg: Config, buy_and_hold_pct: float) -> str:
    """Print the end-of-training summary and return it (it is kept in ``train.log``)."""
    s = result.state
    steps = s.episode * cfg.trainer.n_envs * cfg.trainer.episode_len
    lines = [
        f"episodes: {s.episode} (MacroNet steps: {s.macro_steps}); "
        + kept_line(s, cfg, result.best_val),
        f"wall time {result.wall_s:.1f} s; mean {result.steps_per_s:,.0f} env-steps/s over "
        "the episodes run (validation excluded)"
        + (f"; {steps:,} env-steps in all" if s.episode else ""),
    ]
    if result.best_val:
        v = result.best_val
        lines.append(
            f"best checkpoint's validation: {v['# Trades']} trades, return "
            f"{v['Return [%]']:+.2f}% after costs"
            + (
                f", random-timing percentile {v['Random-Timing Percentile [%]']:.0f}% "
                f"(p={v['Random-Timing p-value']:.3f})"
                if "Random-Timing p-value" in v
                else ""
            )
        )
        if result.best_val_markets:
            lines.append(
                "that validation is the markets' splits laid end to end; per market: "
                + "; ".join(
                    f"{name} return {m['Return [%]']:+.2f}%, {m['# Trades']} trades, "
                    f"Sharpe {m['Sharpe Ratio']:.2f}"
                    for name, m in result.best_val_markets.items()
                )
            )
        lines += [f"WARNING: {t}" for t in flag_sentences(v, result.flags, "validation")]
        if not s.best_edge:
            lines.append(no_edge_warning(s, cfg, buy_and_hold_pct))
    text = "\n".join([*lines, *where_lines(result, cfg)])
    print(text)
    return text


def where_lines(result: TrainResult, cfg: Config) -> list[str]:
    """The summary's last lines (both tasks): the output folder, checkpoints, MLflow run."""
    lines = [
        f"output: {result.out_dir.resolve()}",
        f"checkpoints: {result.last_checkpoint}"
        + (f", {result.best_checkpoint}" if result.best_checkpoint else ""),
    ]
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (experiment '{cfg.tracking.experiment}')")
        lines.append(f"open the UI: {ui_command(cfg.tracking.uri)}")
    return lines
