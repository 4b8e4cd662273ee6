"""``task=quote`` through the entry point: the quoting agent with MLflow tracking, atomic
checkpoints, resume, the selection rule and its quoting edge.

Why a run of its own beside :class:`hmarl.train.trainer.Trainer`: a quoting market is generated
(fresh seeded paths each episode, fixed seeded paths for validation and test) and carries exact
baselines, not candle splits. The episode and the exact evaluation are
:mod:`hmarl.train.quoting`'s (:func:`quote_episode`, :func:`evaluate`), so a run here and
``train_quotes`` (the benchmark's library call) train the same network the same way; what this
module adds is the trading task's machinery around them: :class:`TrainState`, the checkpoint
layout (``checkpoints/last.pt``, ``best.pt``; weights-only, with the model record that rebuilds
the network), ``trainer.resume``, MLflow runs, and the selection rule of
:mod:`hmarl.train.selection` with the quoting edge (:func:`quote_edge_failures`).

**Evaluations** (every ``trainer.eval_every`` episodes, before that episode's update, and after
the last) score the greedy policy on ``quote.eval_paths`` fixed validation paths exactly (the
expected objective over the fills, given each path) and log the quote statistics of its run on
the paths' sampled fills (:func:`hmarl.stats.quoting.batch_quote_stats`, per episode). The
baselines are exact numbers (:mod:`hmarl.market.avellaneda`): on this market a (time,
inventory) policy's value does not depend on the mid's path, so the best fixed quote "chosen on
validation" is the level with the best exact objective.

**The market interface** (:class:`QuoteMarket`): what the run needs of a quoting market is its
rules, a fingerprint, a training batch per episode, the evaluation batches and the baselines'
exact objectives and policies. :func:`quote_market` builds it from ``data.source``: the
Avellaneda-Stoikov market here, a tick market (``data=ticks_synthetic`` | ``ticks``) as a
:class:`hmarl.train.quote_tape.TapeQuoteMarket` over a :class:`hmarl.market.tape_market.TapeMarket`
(validation and test: every whole episode of their tapes, scored by the greedy policy's settled
reward, mark-to-market included; the baselines: validation's no quote, best fixed quote and
closed form with sigma, A, k estimated on the train tape).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hmarl.agent.checkpoint import (
    RESUME_KEYS,
    CheckpointError,
    Payload,
    check_keys,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_policy import quote_policy
from hmarl.agent.quote_rollout import QuoteBatch, QuoteSample, QuoteTrajectory, sample_quotes
from hmarl.agent.reinforce import macro_steps_at, make_optimizers
from hmarl.config import (
    Config,
    ConfigError,
    DataSource,
    flatten,
    model_from_record,
    model_record,
)
from hmarl.data.ticks_synthetic import TickParams
from hmarl.io import append_text
from hmarl.market import avellaneda as av
from hmarl.market.many import MarketsError, market_paths
from hmarl.market.quoting import QuoteParams, QuoteSettlement
from hmarl.market.tape_market import TapeMarket, split_tape, synthetic_market
from hmarl.runtime import setup
from hmarl.sources.book import DAY_FILES, capture_ticker, session_filter, split_days
from hmarl.sources.tick_tape import tape_from_ticks
from hmarl.sources.ticks import Ticks, read_ws_capture
from hmarl.stats.metrics import metric_keys
from hmarl.stats.quoting import batch_quote_stats
from hmarl.tracking import (
    git_commit,
    tracked_run,
)
from hmarl.train.quote_tape import TapeQuoteMarket
from hmarl.train.quoting import (
    TEST_SEED,
    VALIDATION_SEED,
    QuoteTraining,
    make_batch,
    objective,
    quote_episode,
)
from hmarl.train.selection import (
    QUOTE_EDGE_CONDITIONS,
    improved,
    quote_condition_text,
    quote_edge_failures,
)
from hmarl.train.trainer import (
    EpisodeHook,
    TrainResult,
    TrainState,
    carry_best,
    checkpoint_paths,
    entropy_coef_at,
    explained_interrupt,
    keep_last_checkpoint,
    log_checkpoints,
    log_config_artifacts,
    restore_run,
    run_record,
    stored_validation,
    where_lines,
)

TASK = "quote"  # the checkpoint's `task` entry
OBJECTIVE = "Objective [price x lots]"  # expected wealth change per episode, penalties in
BASELINES = ("optimum", "closed_form", "best_fixed", "no_quote")
SPLIT_SEEDS = {"val": VALIDATION_SEED, "test": TEST_SEED}


# ----------------------------------------------------------------------------- the market


@dataclass(frozen=True)
class QuoteMarket:
    """A quoting market as the entry points use it (see the module docstring)."""

    params: QuoteParams
    settings: QuoteTraining
    market: av.ASParams
    fingerprint: str  # of the market's configuration (a generated market has no file)

    @property
    def features(self) -> tuple[str, ...]:
        return av.FEATURES

    @property
    def steps(self) -> int:
        return self.market.steps

    def train_batch(self, episode: int) -> QuoteBatch:
        """Fresh paths seeded by ``(seed, episode)``: a resumed run draws the same ones."""
        s = self.settings
        return make_batch(self.market, self.params, s, s.n_envs, (s.seed, episode))

    def paths(self, split: str) -> av.ASPaths:
        """The fixed evaluation paths of ``split`` (val | test), as :meth:`eval_batch` uses."""
        s = self.settings
        rng = np.random.default_rng([SPLIT_SEEDS[split]])
        return av.generate(self.market, s.eval_paths, rng, history=s.macro_window)

    def eval_batch(self, split: str) -> QuoteBatch:
        s = self.settings
        return make_batch(self.market, self.params, s, s.eval_paths, SPLIT_SEEDS[split])

    def baseline_policies(self) -> dict[str, np.ndarray]:
        """Every baseline as a (time, inventory) policy ``[L, S, A]`` (one-hot)."""
        m, p = self.market, self.params
        level, _ = av.best_fixed_quote(m, p)
        shape = (m.steps, p.n_states, p.n_actions)
        return {
            "optimum": av.optimum(m, p).policy,
            "closed_form": np.broadcast_to(av.closed_form_policy(m, p), shape).copy(),
            "best_fixed": np.broadcast_to(av.fixed_quote_policy(p, level), shape).copy(),
            "no_quote": np.broadcast_to(av.no_quote_policy(p), shape).copy(),
        }

    def baselines(self) -> dict[str, float]:
        """Each baseline's exact objective (the same on every split of this market)."""
        return {
            name: av.policy_value(self.market, self.params, pi).value(self.params)
            for name, pi in self.baseline_policies().items()
        }

    def best_fixed_level(self) -> int:
        return av.best_fixed_quote(self.market, self.params)[0]

    def objective(self, policy: HierarchicalPolicy, batch: QuoteBatch) -> float:
        """The greedy policy's exact objective over the fills (what selection uses)."""
        return objective(policy, batch, self.params)

    def with_params(self, params: QuoteParams) -> QuoteMarket:
        """The same market under other costs or penalties (the backtest's fee multipliers)."""
        return replace(self, params=params)

    def split_record(self) -> dict[str, list[int]]:
        """Each evaluation split as [seed, paths]."""
        return {k: [seed, self.settings.eval_paths] for k, seed in SPLIT_SEEDS.items()}


AnyQuoteMarket = QuoteMarket | TapeQuoteMarket


def quote_params(cfg: Config) -> QuoteParams:
    q = cfg.quote
    return QuoteParams(
        offsets=tuple(float(o) for o in q.offsets),
        tick=q.tick,
        max_inventory=q.max_inventory,
        maker_fee=q.maker_fee,
        phi=q.phi,
        alpha=q.alpha,
        liquidation_cost=q.liquidation_cost,
        no_quote_penalty=q.no_quote_penalty,
        w_mtm=q.w_mtm,
        w_spread=q.w_spread,
    )


def params_record(params: QuoteParams) -> dict[str, Any]:
    """The rules as plain values (a checkpoint's ``env``; weights-only loadable)."""
    record = asdict(params)
    record["offsets"] = [float(o) for o in params.offsets]
    return record


def params_from_record(record: Mapping[str, Any]) -> QuoteParams:
    return QuoteParams(**{**record, "offsets": tuple(record["offsets"])})


def quote_settings(cfg: Config) -> QuoteTraining:
    """The loop's settings from the typed config (the keys ``train_quotes`` takes)."""
    tc = cfg.trainer
    return QuoteTraining(
        episodes=tc.episodes,
        n_envs=tc.n_envs,
        macro_every=tc.macro_every,
        lr_macro=tc.lr_macro,
        lr_micro=tc.lr_micro,
        lr_head=tc.lr_head,
        gamma=tc.gamma,
        entropy_coef=tc.entropy_coef,
        grad_clip=tc.grad_clip,
        estimator=tc.estimator.value,
        exploration=tc.exploration.value,
        macro_window=cfg.features.macro_window,
        micro_window=cfg.features.micro_window,
        dropout=cfg.model.dropout,
        head_hidden=tuple(cfg.model.head_hidden),
        eval_every=tc.eval_every,
        eval_paths=cfg.quote.eval_paths,
        seed=cfg.seed,
        threads=cfg.threads,
    )


def quote_market(cfg: Config) -> AnyQuoteMarket:
    """The quoting market ``data.source`` names (the one place a new market kind plugs in)."""
    if cfg.data.source in (DataSource.ticks_synthetic, DataSource.ticks):
        return tape_quote_market(cfg)
    if cfg.data.source != DataSource.avellaneda:
        raise ConfigError(
            f"data={cfg.data.source.value} is not a quoting market: use data=avellaneda | "
            "ticks_synthetic | ticks"
        )
    a = cfg.data.avellaneda
    market = av.ASParams(sigma=a.sigma, A=a.A, k=a.k, dt=a.dt, steps=a.steps, mid0=a.mid0)
    doc = json.dumps({"source": cfg.data.source.value, **asdict(a)}, sort_keys=True)
    return QuoteMarket(
        quote_params(cfg), quote_settings(cfg), market, hashlib.sha256(doc.encode()).hexdigest()
    )


def tape_market(cfg: Config) -> TapeMarket:
    """The three tapes of ``data=ticks_synthetic`` (seeded by ``seed``) or ``data=ticks`` (the
    capture in ``data.path``, sampled every ``data.ticks.dt``, cut in time)."""
    if cfg.data.source == DataSource.ticks_synthetic:
        t = cfg.data.ticks_synthetic
        params = TickParams(
            tick=cfg.quote.tick,
            bid0=t.bid0,
            move_prob=t.move_prob,
            spread_probs=tuple(t.spread_probs),
            queue_mean=t.queue_mean,
            rate=t.rate,
            size_mean=t.size_mean,
            depth=t.depth,
            informed=t.informed,
            dt_ns=round(t.dt * 1e9),
        )
        steps = (t.train_steps, t.val_steps, t.test_steps)
        return synthetic_market(params, cfg.seed, steps, episode_steps=t.episode_steps)
    path, session = str(cfg.data.path), cfg.data.ticks.session
    ticks = read_ws_capture(path)
    return _split(cfg, session_filter(ticks, session) if session else ticks, path)


def _split(cfg: Config, ticks: Ticks, where: str) -> TapeMarket:
    """One tape of ``ticks`` every ``data.ticks.dt``, cut into its three time segments."""
    r = cfg.data.ticks
    tape = tape_from_ticks(
        ticks,
        dt_ns=round(r.dt * 1e9),
        tick=cfg.quote.tick,
        lot=r.lot,
        depth=r.depth,
        max_gap_ns=round(r.max_gap * 1e9),
        where=where,
    )
    shares = (cfg.data.train_frac, cfg.data.val_frac)
    return split_tape(tape, cfg.quote.tick, r.dt, shares, episode_steps=r.episode_steps)


def tick_files(cfg: Config) -> list[tuple[str, Path]]:
    """``(ticker, path)`` of every entry of ``data.paths`` (files or globs): a websocket
    capture (the ticker from a ``binance_<market>_<symbol>_<day>_ws.gz`` name, else the file's
    stem) or a day folder of ``scripts/download_ticks.py``'s cache
    (``<cache>/<SYMBOL>/<day>/`` holding quotes.parquet and trades.parquet)."""
    out = []
    for found in market_paths(cfg.data.paths):
        path = Path(found)
        if path.is_dir():
            if not all((path / f).is_file() for f in DAY_FILES):
                raise MarketsError(
                    f"data.paths: {path} is a folder without {' and '.join(DAY_FILES)}: give "
                    "capture files or the day folders of scripts/download_ticks.py's cache"
                )
            out.append((path.parent.name.upper(), path))
        elif path.suffix == ".zip":
            raise MarketsError(
                f"data.paths: {path} is a dump zip: give the cache's day folders "
                "(<cache>/<SYMBOL>/<day>, e.g. 'data/ticks/*USDT/*') that download_ticks.py "
                "parsed them into"
            )
        else:
            out.append((capture_ticker(path), path))
    return out


def tick_tapes(cfg: Config) -> list[tuple[str, TapeMarket]]:
    """``data=ticks data.paths=[...]``: one tape per (ticker, UTC day) of every file, each cut
    into its own train / validation / test time segments, named ``"TICKER YYYY-MM-DD"``; a
    (ticker, day) given twice is refused."""
    tapes: dict[str, TapeMarket] = {}
    session = cfg.data.ticks.session
    for ticker, path in tick_files(cfg):
        if path.is_dir():
            ticks = Ticks(*(pd.read_parquet(path / f) for f in DAY_FILES))
        else:
            ticks = read_ws_capture(path)
        if session:  # before the days are cut: a day outside the session is no tape
            ticks = session_filter(ticks, session)
        for day, day_ticks in split_days(ticks).items():
            name = f"{ticker} {day}"
            if name in tapes:
                raise MarketsError(f"data.paths: {name} is given twice (again in {path})")
            tapes[name] = _split(cfg, day_ticks, f"{path} ({day})")
    if not tapes:
        raise MarketsError(f"data.paths={cfg.data.paths}: no quotes in the files (or session)")
    return sorted(tapes.items())  # "TICKER YYYY-MM-DD": each ticker's days in time order


def _file_digest(cfg: Config) -> list[str]:
    """SHA-256 of every file the market reads (a day folder: its two files)."""
    if not cfg.data.paths:
        return [hashlib.sha256(Path(str(cfg.data.path)).read_bytes()).hexdigest()]
    digests = []
    for _, path in tick_files(cfg):
        files = [path / f for f in DAY_FILES] if path.is_dir() else [path]
        digests += [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    return digests


def tape_quote_market(cfg: Config) -> TapeQuoteMarket:
    """A tick market as the entry points use it; a tape too short for its split, windows or
    episodes, or a ``data.paths`` entry that names no file, is refused naming the keys to
    change (and the tape)."""
    source = cfg.data.source.value
    block = asdict(cfg.data.ticks_synthetic if source == "ticks_synthetic" else cfg.data.ticks)
    doc: dict[str, Any] = {"source": source, **block, "tick": cfg.quote.tick}
    try:
        if cfg.data.source == DataSource.ticks_synthetic:
            doc["seed"] = cfg.seed  # the tapes are drawn from it
        else:
            digests = _file_digest(cfg)
            doc["file_sha256"] = digests[0] if not cfg.data.paths else digests
            doc["shares"] = [cfg.data.train_frac, cfg.data.val_frac]
        fingerprint = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        tapes: TapeMarket | list[tuple[str, TapeMarket]]
        if cfg.data.paths:
            tapes = tick_tapes(cfg)
        elif cfg.data.source == DataSource.ticks:
            tapes = [(capture_ticker(Path(str(cfg.data.path))), tape_market(cfg))]
        else:
            tapes = tape_market(cfg)
        return TapeQuoteMarket(quote_params(cfg), quote_settings(cfg), tapes, fingerprint)
    except MarketsError as exc:
        raise ConfigError(str(exc)) from exc
    except ValueError as exc:
        steps = (
            "data.ticks.dt (a larger dt gives fewer steps), data.train_frac / data.val_frac"
            if cfg.data.source == DataSource.ticks
            else "data.ticks_synthetic.train_steps / val_steps / test_steps"
        )
        raise ConfigError(
            f"data={source}: {exc}; change {steps}, data.{source}.episode_steps or "
            "features.macro_window"
        ) from exc


def build_quote_policy(
    model: Mapping[str, Any], n_features: int, params: QuoteParams
) -> HierarchicalPolicy:
    """The quoting network from a model record (:func:`hmarl.config.model_record`)."""
    record = model_record(model_from_record(dict(model)))
    return quote_policy(n_features, params, **record)


def quote_policy_from_checkpoint(
    ckpt: Mapping[str, Any], source: str = "the checkpoint"
) -> HierarchicalPolicy:
    """Rebuild a quoting checkpoint's network (eval mode) from its model record and rules."""
    try:
        params = params_from_record(ckpt["env"])
        policy = build_quote_policy(ckpt["model"], len(ckpt["feature_spec"]["names"]), params)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{source} records a quoting model that cannot be built: {exc}"
        ) from exc
    load_weights(policy, ckpt["policy"], source)
    return policy.eval()


def as_numpy(settlement: QuoteSettlement[torch.Tensor]) -> QuoteSettlement[np.ndarray]:
    return QuoteSettlement(*(x.cpu().numpy() for x in settlement))


def run_stats(
    params: QuoteParams, traj: QuoteTrajectory | QuoteSample, steps: int
) -> dict[str, Any]:
    """Per-episode quote statistics of a run (Sharpe over one episode's steps)."""
    return batch_quote_stats(
        params,
        traj.states.cpu().numpy(),
        traj.actions.cpu().numpy(),
        as_numpy(traj.settlement),
        periods=steps,
    )


@torch.no_grad()
def evaluate(
    policy: HierarchicalPolicy,
    batch: QuoteBatch,
    params: QuoteParams,
    score: Callable[[HierarchicalPolicy, QuoteBatch], float] | None = None,
) -> tuple[float, QuoteSample]:
    """The greedy policy's objective (``score``, the market's; by default the exact one of
    :func:`hmarl.train.quoting.objective`, what selection uses) and its run on the batch's
    sampled fills (for the quote statistics): one path per episode, so the sampling-only
    rollout (the head at the visited inventory only) walks it."""
    value = score(policy, batch) if score else objective(policy, batch, params)
    was = policy.training
    policy.eval()  # no dropout; argmax, so the generator draws nothing
    traj = sample_quotes(policy, batch, params, generator=torch.Generator(), greedy=True)
    policy.train(was)
    return value, traj


def objective_figures(value: float, baselines: Mapping[str, float]) -> dict[str, float]:
    """An objective beside the optimum: its share, and the share of the gap between the best
    fixed quote and the optimum it closes (the objective alone on a market without a known
    optimum: a tick market)."""
    if "optimum" not in baselines:
        return {OBJECTIVE: value}
    opt, fixed = baselines["optimum"], baselines["best_fixed"]
    return {
        OBJECTIVE: value,
        "Of the optimum [%]": 100.0 * value / opt if opt else math.nan,
        "Gap closed [%]": 100.0 * (value - fixed) / (opt - fixed) if opt != fixed else math.nan,
    }


# ----------------------------------------------------------------------------- the run


class QuoteRun:
    """One quoting run: set-up, episodes, evaluations, checkpoints (fresh or resumed)."""

    def __init__(self, cfg: Config, out_dir: str | os.PathLike[str]) -> None:
        self.cfg, tc = cfg, cfg.trainer
        self.out = Path(out_dir)
        self.last_path, self.best_path = checkpoint_paths(self.out, tc.resume)
        if cfg.device not in ("auto", "cpu"):
            print(f"note: task=quote runs on the CPU (device={cfg.device} is not used)")
        setup("cpu", cfg.threads, seed=cfg.seed)
        self.market = quote_market(cfg)
        self.params = self.market.params
        self.policy = build_quote_policy(
            model_record(cfg.model), len(self.market.features), self.params
        )
        self.optimizers = make_optimizers(
            self.policy, lr_macro=tc.lr_macro, lr_micro=tc.lr_micro, lr_head=tc.lr_head
        )
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState()
        if tc.resume:
            self._resume(tc.resume)
        self.val_batch = self.market.eval_batch("val")
        self.baselines = self.market.baselines()
        self.val: dict[str, Any] = {}
        self.best_val: dict[str, Any] = {}

    def _resume(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        check_keys(ckpt, path, "resumed", RESUME_KEYS)
        problems = []
        if ckpt.get("task") != TASK:
            problems.append("it is not a quoting checkpoint (task=trade)")
        elif model_record(model_from_record(ckpt["model"])) != model_record(self.cfg.model):
            problems.append(f"model differs: {ckpt['model']} vs {model_record(self.cfg.model)}")
        elif ckpt["env"] != params_record(self.params):
            problems.append(f"the quoting rules differ: {ckpt['env']} vs this config's")
        elif ckpt["data_fingerprint"] != self.market.fingerprint:
            problems.append(f"the market (data.{self.cfg.data.source.value}.*) differs")
        if problems:
            raise CheckpointError(
                f"cannot resume from {path}: {'; '.join(problems)}; resume with "
                f"trainer.resume={path} alone (the run's config is taken from the checkpoint)"
            )
        self.state = restore_run(
            ckpt, path, self.policy, self.optimizers, self.gen, torch.device("cpu")
        )
        carry_best(self.state.best_episode, Path(path), self.best_path)
        print(f"resumed from {path} at episode {self.state.episode}")

    def save(self, path: Path) -> Path:
        if path == self.best_path:
            self.best_val = dict(self.val)
        else:
            self.state.last_saved_episode = self.state.episode - 1
        s = self.market.settings
        payload = Payload(
            **run_record(self.cfg, self.state, self.val, self.policy, self.optimizers, self.gen),
            task=TASK,
            env=params_record(self.params),
            feature_spec={
                "names": list(self.market.features),
                "macro_window": s.macro_window,
                "micro_window": s.micro_window,
            },
            data_fingerprint=self.market.fingerprint,
            data_splits=self.market.split_record(),
        )
        return save_checkpoint(path, payload)

    def episode(self, episode: int) -> dict[str, float]:
        t0 = time.perf_counter()
        batch = self.market.train_batch(episode)
        settings = replace(
            self.market.settings, entropy_coef=entropy_coef_at(self.cfg.trainer, episode)
        )
        update_macro = macro_steps_at(episode, self.cfg.trainer.macro_every)
        metrics = quote_episode(
            self.policy, self.optimizers, batch, self.params, settings, update_macro, self.gen
        )
        self.state.macro_steps += update_macro
        steps = self.cfg.trainer.n_envs * self.market.steps
        metrics["perf/steps_per_s"] = steps / (time.perf_counter() - t0)
        self.state.episode = episode + 1
        return metrics

    def validate(self, episode: int) -> dict[str, float]:
        """The exact validation objective, the quote stats, the edge and `best` (the rule of
        :func:`hmarl.train.selection.improved`, with the objective as the score)."""
        tc, st = self.cfg.trainer, self.state
        value, traj = evaluate(self.policy, self.val_batch, self.params, self.market.objective)
        self.val = {
            **objective_figures(value, self.baselines),
            **run_stats(self.params, traj, self.market.steps),
        }
        failures = quote_edge_failures(value, self.baselines)
        st.evaluations += 1
        st.edge_passes += not failures
        for c in failures:
            st.edge_misses[c] = st.edge_misses.get(c, 0) + 1
        if math.isfinite(value) and (st.peak_value is None or value > st.peak_value):
            st.peak_value, st.peak_episode = value, episode
        st.edge_streak = st.edge_streak + 1 if not failures else 0
        edge = not failures and st.edge_streak >= tc.edge_confirmations
        if improved(value, edge, st.best_score, st.best_edge):
            st.best_value = st.best_score = value
            st.best_episode, st.best_edge = episode, edge
            self.save(self.best_path)
        metrics = metric_keys(self.val, prefix="val/")
        metrics["val/edge"] = float(edge)
        return metrics


def train_quote_task(
    cfg: Config,
    out_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    composed_yaml: str | None = None,
    progress: bool = True,
    on_episode: EpisodeHook | None = None,
) -> TrainResult:
    """Train the quoting agent as configured (``task=quote``); checkpoints under ``out_dir``.

    ``on_episode(episode, metrics, policy, optimizers)`` runs after each episode's update and
    its checkpoint, as in :func:`hmarl.train.trainer.train`.
    """
    t_start = time.perf_counter()
    run = QuoteRun(cfg, out_dir)
    tc, state = cfg.trainer, run.state
    name = cfg.tracking.run_name or " ".join([cfg.experiment_name, *overrides]).strip() or "quote"
    tags = {
        "experiment_name": cfg.experiment_name,
        "git_commit": git_commit(),
        "data_fingerprint": run.market.fingerprint,
        "hydra_overrides": " ".join(overrides),
        "kind": "train",
        "task": TASK,
    }
    keep_last = keep_last_checkpoint(run.last_path) if cfg.tracking.log_checkpoints else None
    steps_done, seconds = 0, 0.0
    with (
        tracked_run(cfg.tracking, name, tags, run_id=state.run_id, on_failure=keep_last) as tracker,
        explained_interrupt(run.out, state, run.last_path, tc.checkpoint_every),
    ):
        state.run_id = tracker.run_id
        pbar = tqdm(total=tc.episodes, initial=state.episode, disable=not progress, unit="ep")
        try:
            if not tc.resume:
                tracker.log_params(flatten(cfg))
                tracker.log_metrics({f"baseline/{k}": v for k, v in run.baselines.items()}, 0)
            log_config_artifacts(tracker, run.out, cfg, overrides, composed_yaml)
            run.policy.train()
            for episode in range(state.episode, tc.episodes + 1):
                metrics: dict[str, float] = {}
                if episode % tc.eval_every == 0 or episode == tc.episodes:
                    metrics.update(run.validate(episode))
                if episode == tc.episodes:
                    tracker.log_metrics(metrics, step=episode)
                    break
                metrics.update(run.episode(episode))
                steps_done += tc.n_envs * run.market.steps
                seconds += tc.n_envs * run.market.steps / metrics["perf/steps_per_s"]
                if state.episode % tc.checkpoint_every == 0:
                    run.save(run.last_path)
                tracker.log_metrics(metrics, step=episode)
                if on_episode is not None:
                    on_episode(episode, metrics, run.policy, run.optimizers)
                pbar.set_postfix(
                    reward=f"{metrics['reward/mean']:+.3f}",
                    val=f"{run.val.get(OBJECTIVE, math.nan):.3f}",
                    refresh=False,
                )
                pbar.update(1)
            run.save(run.last_path)
            best_val = run.best_val or stored_validation(run.best_path)
            tracker.set_tags(
                {
                    "best_episode": str(state.best_episode),
                    "edge_found": str(state.best_edge),
                    "flags": "none" if state.best_edge else "no_edge_found_in_training",
                    "edge_misses": ", ".join(
                        f"{c} {state.edge_misses[c]}/{state.evaluations}"
                        for c in QUOTE_EDGE_CONDITIONS
                        if state.edge_misses.get(c)
                    )
                    or "none",
                    **{f"baseline_{k}": f"{v:.6f}" for k, v in run.baselines.items()},
                }
            )
            log_checkpoints(tracker, cfg, run.last_path, run.best_path)
        finally:
            pbar.close()
    best = run.best_path if run.best_path.exists() else None
    result = TrainResult(run.out, run.last_path, best, tracker.run_id, state, run.val)
    result.best_val = best_val
    result.flags = [] if state.best_edge else ["no_edge_found_in_training"]
    result.wall_s = time.perf_counter() - t_start
    result.steps_per_s = steps_done / seconds if seconds > 0 else math.nan
    append_text(run.out / "train.log", print_summary(result, cfg, run))
    return result


def print_summary(result: TrainResult, cfg: Config, run: QuoteRun) -> str:
    """The end-of-training summary: the kept episode beside the exact baselines, the edge."""
    s, b = result.state, run.baselines
    steps = s.episode * cfg.trainer.n_envs * run.market.steps
    lines = [
        f"episodes: {s.episode} (MacroNet steps: {s.macro_steps}); {steps:,} env-steps; wall "
        f"time {result.wall_s:.1f} s; mean {result.steps_per_s:,.0f} env-steps/s (validation "
        "excluded)",
        "validation objectives per episode (wealth change after fees, minus the "
        "inventory penalties; no market impact assumed): "
        + ", ".join(f"{k} {v:+.4f}" for k, v in b.items())
        + f" (best fixed level {run.market.best_fixed_level()})",
    ]
    v = result.best_val
    if s.best_value is None or not v:
        lines.append("no validation kept")
    else:
        share = (
            f" = {v['Of the optimum [%]']:.1f}% of the optimum, "
            f"{v['Gap closed [%]']:.1f}% of the gap from the best fixed quote closed"
            if "Of the optimum [%]" in v
            else ""
        )
        lines.append(
            f"kept episode {s.best_episode} (best.pt): validation objective "
            f"{v[OBJECTIVE]:+.4f}{share}; "
            + ("an edge (beats no quote and the best fixed quote)" if s.best_edge else "no edge")
        )
        if not s.best_edge:
            failed = [
                f"{quote_condition_text(c, b)} ({s.edge_misses.get(c, 0)} of {s.evaluations} "
                "evaluations failed it)"
                for c in QUOTE_EDGE_CONDITIONS
                if s.edge_misses.get(c)
            ]
            lines.append(
                "WARNING: no edge found on validation: "
                + ("; ".join(failed) or "the edge was never confirmed")
                + "; do not quote with this policy"
            )
    text = "\n".join([*lines, *where_lines(result, cfg)])
    print(text)
    return text
