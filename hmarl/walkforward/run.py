"""The walk-forward as a function, :func:`walk_forward`: plan, train folds, test, stitch, report.

1. Plan (before any training): each market of ``data.paths`` (or the one ``data.path``, or the
   synthetic market) is loaded once; its folds are cut by :func:`hmarl.walkforward.folds.plan_folds`
   and every refusal (empty or overlapping folds, a fold shorter than the windows, fewer folds
   than asked, a glob matching nothing, a market too short) is a ``ValueError``: exit 2.
2. Train: each fold is one :func:`hmarl.train.trainer.train` run in ``<out>/<market>/fold_NN``,
   selecting ``best.pt`` on its own validation. ``walkforward.jobs`` > 1 trains folds at once
   in joblib worker processes. With tracking on, the folds are MLflow children of one parent
   run (made here first, as a sweep's is: :mod:`hmarl.train.sweep`). A fold whose folder holds
   ``fold.json`` (written when its training completed) is not trained again: re-running the
   same command with ``walkforward.out=<folder>`` resumes.
3. Test and stitch: each fold's ``best.pt`` and the baselines run on its test split
   (:mod:`hmarl.walkforward.evaluate`) in the process that trained it, right after its
   training (:func:`fold_job`); here, the test segments are stitched
   (:mod:`hmarl.walkforward.stitch`) and every record's statistics come from
   :func:`hmarl.stats.metrics.compute_stats`.
4. Report: ``folds.csv``, ``markets.csv``, ``buckets.csv``, ``walkforward.json`` and per market
   ``<market>/stitched/`` (stats.json, stats.csv, steps.csv, report.html), each file atomic and
   each stitched folder whole or absent.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hmarl.backtest.runs import stats_of
from hmarl.config import Config, DataConfig
from hmarl.io import staged_folder, write_csv, write_json
from hmarl.market.liquidity import aggregate, liquidity_bucket, median_daily_value
from hmarl.market.many import MarketsError, market_name, named_paths
from hmarl.market.market_data import candles_needed, load_market_candles, resolve_feature_names
from hmarl.report.html import write_report_html
from hmarl.stats.metrics import Calendar, stats_table
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.steps import EQUITY, market_returns
from hmarl.tracking import CHECKPOINT_DIR, LAST_CHECKPOINT, absolute_store_uri, prepare_store
from hmarl.train.sweep import abort_sweep, export_env, finish_sweep, start_parent_run
from hmarl.walkforward.evaluate import FoldTest, evaluate_fold
from hmarl.walkforward.folds import (
    Fold,
    WalkForwardError,
    bar_lengths,
    fold_data,
    plan_folds,
)
from hmarl.walkforward.schema import WalkForwardConfig
from hmarl.walkforward.stitch import ADVISED, NETWORK, STRATEGY, stitched_runs

FOLD_DONE = "fold.json"  # written when a fold's training completed: the resume marker
KIND = "walkforward"  # `kind` tag of the parent run


@dataclass
class MarketPlan:
    """One market's folds, and what the tables say about it."""

    name: str
    path: str | None
    index: pd.DatetimeIndex
    folds: list[Fold]
    daily_value: float  # median daily traded value (hmarl.market.liquidity)

    def data(self, base: DataConfig, fold: Fold) -> DataConfig:
        return fold_data(base, self.index, fold, self.path)


def default_out_dir() -> Path:
    return Path("walkforward") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def plan_markets(cfg: Config, wf: WalkForwardConfig) -> list[MarketPlan]:
    """Every market's folds, or a ``ValueError`` naming the market and the fix (no training)."""
    try:
        markets: list[tuple[str, str | None]] = (
            [*named_paths(cfg.data.paths)] if cfg.data.paths else []
        )
    except MarketsError as exc:
        raise WalkForwardError(str(exc)) from exc
    pairs = markets or [(market_name(cfg.data.path), cfg.data.path)]
    names = resolve_feature_names(cfg.features.names)
    need = candles_needed(names, cfg.features.macro_window, cfg.features.micro_window)
    plans = []
    for name, path in pairs:
        data = replace(cfg.data, path=path, paths=[], val_start=None, test_start=None)
        try:
            candles = load_market_candles(data, min_candles=need, log=None)
        except ValueError as exc:
            raise WalkForwardError(f"market {name} ({path or 'synthetic'}): {exc}") from exc
        index = pd.DatetimeIndex(candles.index)
        bar_seconds = float(pd.Series(index.asi8).diff().median()) / 1e9
        folds = plan_folds(
            len(index),
            bar_lengths(wf, bar_seconds),
            wf.mode,
            wanted=wf.folds,
            min_train=need,
            market=f"market {name}",
        )
        plans.append(MarketPlan(name, path, index, folds, median_daily_value(candles)))
    return plans


# ----------------------------------------------------------------------------- training


def train_fold(
    cfg: Config, fold_dir: str, overrides: list[str], parent_run_id: str | None, root: str
) -> dict[str, Any]:
    """Train one fold (in this process or a worker) and leave its ``fold.json``."""
    from hmarl.train.trainer import train

    export_env(parent_run_id, root if parent_run_id else None, fold_dir)
    last = Path(fold_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():  # an interrupted fold continues from its last state
        cfg = replace(cfg, trainer=replace(cfg.trainer, resume=str(last)))
    result = train(cfg, fold_dir, overrides=overrides, progress=False)
    doc = {
        "edge_found": bool(result.state.best_edge),
        "checkpoint": str(result.best_checkpoint or result.last_checkpoint),
        "run_id": result.run_id,
        "best_episode": result.state.best_episode,
        "wall_s": result.wall_s,
    }
    write_json(Path(fold_dir) / FOLD_DONE, doc)
    return doc


def fold_config(cfg: Config, plan: MarketPlan, fold: Fold, uri: str | None) -> Config:
    tracking = replace(cfg.tracking, uri=uri) if uri else cfg.tracking
    return replace(cfg, data=plan.data(cfg.data, fold), tracking=tracking)


def fold_overrides(cfg: Config, plan: MarketPlan, fold: Fold, base: list[str]) -> list[str]:
    """The fold's run as ``python -m hmarl.train`` overrides (its tags, name and resume line)."""
    data = plan.data(cfg.data, fold)
    return [
        *(o for o in base if not o.startswith(("data.paths=", "walkforward."))),
        *([f"data.path={plan.path}"] if plan.path else []),
        f"data.start={data.start}",
        f"data.val_start={data.val_start}",
        f"data.test_start={data.test_start}",
        f"data.end={data.end}",
    ]


def one_fold(plans: list[MarketPlan], number: int) -> list[MarketPlan]:
    """Each market's plan cut to its fold ``number`` (``walkforward.fold``); a number past a
    market's folds is refused before any training."""
    short = [f"{p.name} ({len(p.folds)})" for p in plans if number >= len(p.folds)]
    if short:
        raise WalkForwardError(
            f"walkforward.fold={number} but these markets have fewer folds: {', '.join(short)}; "
            "folds are numbered from 0"
        )
    return [replace(p, folds=[p.folds[number]]) for p in plans]


def fold_job(
    cfg: Config,
    fold_dir: str,
    overrides: list[str],
    parent_run_id: str | None,
    root: str,
    record: dict[str, Any] | None,
    wf: WalkForwardConfig | None,
) -> tuple[dict[str, Any], FoldTest | None]:
    """One fold in one process: train it unless ``record`` (its ``fold.json``) says it was,
    then, with ``wf`` given, test it (:func:`hmarl.walkforward.evaluate.evaluate_fold`).

    Why the test runs here, in the fold's worker: a fold's test (its supervised baseline's fit
    above all) used to run in the launching process after every training, one fold after
    another, while the workers sat idle; here the folds' tests run ``walkforward.jobs`` at once,
    each right after its own training, in a process that has its imports already done. The
    result is the same: the test reads only the fold's checkpoint and data.
    """
    if record is None:
        record = {**train_fold(cfg, fold_dir, overrides, parent_run_id, root), "trained": True}
    if wf is None:
        return record, None
    test = evaluate_fold(
        cfg,
        Path(record["checkpoint"]),
        momentum_lookbacks=list(wf.momentum_lookbacks),
        random_timing_n=wf.random_timing,
        calendar=Calendar(),
        supervised_cfg=wf.supervised,
    )
    return record, test


def run_folds(
    cfg: Config,
    wf: WalkForwardConfig,
    plans: list[MarketPlan],
    out: Path,
    overrides: list[str],
    *,
    test: bool = True,
) -> dict[tuple[str, int], tuple[dict[str, Any], FoldTest | None]]:
    """Train every fold without a ``fold.json`` and (``test``) test every fold, ``wf.jobs`` at
    once; returns each fold's record and test, by (market, fold)."""
    calls = []
    trained = 0
    uri = absolute_store_uri(cfg.tracking.uri) if cfg.tracking.enabled else None
    for plan in plans:
        for fold in plan.folds:
            fold_dir = out / plan.name / fold.name
            marker = fold_dir / FOLD_DONE
            record = {**read_json(marker), "trained": False} if marker.is_file() else None
            trained += record is not None
            fcfg = fold_config(cfg, plan, fold, uri if record is None else None)
            args = (fcfg, str(fold_dir.resolve()), fold_overrides(cfg, plan, fold, overrides))
            calls.append(((plan.name, fold.number), args, record))
    todo = len(calls) - trained
    print(f"walkforward: {trained} fold(s) already trained, {todo} to train in {out}")
    parent = None
    if uri is not None and todo:
        experiment_id = prepare_store(uri, cfg.tracking.experiment)
        tags = {"kind": KIND, "walkforward_dir": str(out.resolve()), "folds": str(todo)}
        parent = start_parent_run(uri, experiment_id, f"walkforward {out.name}", tags)
    root = str(out.resolve())
    ready: dict[tuple[str, int], tuple[dict[str, Any], FoldTest | None]] = {}
    keys, jobs = [], []
    for key, args, record in calls:
        if record is not None and not test:  # trained, and nothing to test
            ready[key] = (record, None)
        else:
            keys.append(key)
            jobs.append((*args, parent, root, record, wf if test else None))
    try:
        if wf.jobs > 1 and len(jobs) > 1:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=min(wf.jobs, len(jobs)))(delayed(fold_job)(*j) for j in jobs)
        else:
            results = [fold_job(*j) for j in jobs]
    except BaseException:
        export_env(None, None)
        if uri is not None and parent is not None:
            abort_sweep(uri, parent)
        raise
    export_env(None, None)
    if uri is not None and parent is not None:
        status, problems = finish_sweep(uri, parent, todo)
        if status != "FINISHED":
            raise RuntimeError(f"walkforward: parent run {parent} ended {status}: {problems}")
    return {**ready, **dict(zip(keys, results, strict=True))}


def read_json(path: Path) -> dict[str, Any]:
    import json

    with path.open() as fh:
        doc = json.load(fh)
    assert isinstance(doc, dict)
    return doc


# ----------------------------------------------------------------------------- tables


def return_pct(steps: pd.DataFrame) -> float:
    """A steps table's return after costs, in % (its equity compounds from 1.0)."""
    return (float(steps[EQUITY].iloc[-1]) - 1.0) * 100.0


def fold_row(
    plan: MarketPlan, fold: Fold, record: dict[str, Any], test: FoldTest
) -> dict[str, Any]:
    """One line of ``folds.csv``: dates, the verdict, and every run's test return."""
    runs = test.runs
    edge = bool(record["edge_found"])
    row: dict[str, Any] = {
        "market": plan.name,
        "bucket": liquidity_bucket(plan.daily_value),
        "fold": fold.number,
        "train_start": plan.index[fold.start].isoformat(),
        "val_start": plan.index[fold.val_start].isoformat(),
        "test_start": plan.index[fold.test_start].isoformat(),
        "test_end": plan.index[min(fold.end, len(plan.index)) - 1].isoformat(),
        "edge_found": edge,
        "trained_now": bool(record.get("trained", True)),
        f"{NETWORK} [%]": return_pct(runs[STRATEGY]),
        f"{ADVISED} [%]": return_pct(runs[STRATEGY]) if edge else return_pct(runs["flat"]),
    }
    row.update({f"{n} [%]": return_pct(s) for n, s in runs.items() if n != STRATEGY})
    row["random_timing_percentile"] = test.null_percentile
    row["momentum_bars"] = test.momentum_bars
    return row


def stitched_report(
    cfg: Config,
    wf: WalkForwardConfig,
    plan: MarketPlan,
    tests: list[FoldTest],
    edges: list[bool],
    folder: Path,
) -> dict[str, Any]:
    """Stitch one market's test segments; write its stats, steps and report.html; return its
    summary (stats of every record, the random-timing percentile of the advised and network
    records)."""
    calendar = Calendar()
    runs = stitched_runs([t.runs for t in tests], edges)
    stats = stats_of(runs, calendar, 0, cfg.seed)
    nulls: dict[str, dict[str, float | int]] = {}
    from hmarl.market.env import EnvParams

    env = EnvParams.from_config(cfg.env)
    band = None
    if wf.random_timing > 0:
        for name in (ADVISED, NETWORK):
            if name == NETWORK and runs[NETWORK].equals(runs[ADVISED]):
                # every fold found an edge: the same record, the same seed, the same null
                nulls[name] = nulls[ADVISED]
            else:
                null = random_timing(
                    runs[name],
                    market_returns(runs[name]),
                    env,
                    n=wf.random_timing,
                    seed=cfg.seed,
                    calendar=calendar,
                )
                nulls[name] = random_timing_stats(null)
                band = null.band if name == ADVISED else band
            stats[name] = {**stats[name], **nulls[name]}
    table = stats_table(stats)
    first, last = runs[ADVISED].index[0], runs[ADVISED].index[-1]
    doc = {
        "meta": {
            "checkpoint": f"walk-forward: {len(tests)} folds, {sum(edges)} with an edge",
            "data": f"{plan.name}: stitched test segments",
            "split": "stitched test",
            "first_decision": first.isoformat(),
            "last_decision": last.isoformat(),
            "bars": len(runs[ADVISED]),
            "env": asdict(env),
            "split_starts": {
                f"fold {k}": t.runs[STRATEGY].index[0].isoformat() for k, t in enumerate(tests)
            },
            "edges": edges,
            "records": {
                NETWORK: "each fold's best.pt on its test segment, edge or not",
                ADVISED: "each fold's best.pt where its training found an edge, flat elsewhere",
            },
        },
        "stats": stats,
    }
    ordered = {NETWORK: runs[NETWORK], **{k: v for k, v in runs.items() if k != NETWORK}}
    with staged_folder(folder, "walkforward.out") as work:
        write_json(work / "stats.json", doc)
        write_csv(work / "stats.csv", table)
        write_csv(work / "steps.csv", runs[ADVISED])
        write_report_html(work / "report.html", ordered, table, doc, band, "hmarl walk-forward")
    return {
        "market": plan.name,
        "bars": len(runs[ADVISED]),
        **{f"{n} Return [%]": float(s["Return [%]"]) for n, s in stats.items()},
        **{
            f"{n} Random-Timing Percentile [%]": float(v["Random-Timing Percentile [%]"])
            for n, v in nulls.items()
        },
    }


# ----------------------------------------------------------------------------- the whole


def walk_forward(
    cfg: Config,
    wf: WalkForwardConfig,
    out_dir: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Plan, train, test, stitch and report (see the module docstring); returns the summary."""
    out = Path(out_dir or wf.out or default_out_dir())
    plans = plan_markets(cfg, wf)  # every refusal before any training
    out.mkdir(parents=True, exist_ok=True)
    plan_doc = {
        "walkforward": asdict(wf),
        "markets": {
            p.name: {
                "path": p.path,
                "median_daily_value": p.daily_value,
                "bucket": liquidity_bucket(p.daily_value),
                "folds": [asdict(f) for f in p.folds],
            }
            for p in plans
        },
    }
    if wf.fold is not None:  # one job of a multirun over folds: train that fold, no tables
        only = one_fold(plans, wf.fold)
        records = run_folds(cfg, wf, only, out, list(overrides or []), test=False)
        print(
            f"walkforward: fold {wf.fold} of {len(only)} market(s) trained in {out}; once every "
            f"fold is, the same command without walkforward.fold builds the tables"
        )
        return {"out": str(out), "fold": wf.fold, "trained": len(records)}
    write_json(out / "plan.json", plan_doc)
    results = run_folds(cfg, wf, plans, out, list(overrides or []))
    rows, summaries = [], []
    for plan in plans:
        tests, edges = [], []
        for fold in plan.folds:
            record, test = results[(plan.name, fold.number)]
            assert test is not None  # run_folds tests every fold unless told not to
            rows.append(fold_row(plan, fold, record, test))
            tests.append(test)
            edges.append(bool(record["edge_found"]))
        summaries.append(stitched_report(cfg, wf, plan, tests, edges, out / plan.name / "stitched"))
    folds = pd.DataFrame.from_records(rows)
    write_csv(out / "folds.csv", folds, index=False)
    write_csv(out / "markets.csv", aggregate(folds, "market"))
    write_csv(out / "buckets.csv", aggregate(folds, "bucket"))
    summary = {"out": str(out), "stitched": summaries, "folds": len(folds)}
    write_json(out / "walkforward.json", {**plan_doc, **summary})
    print(folds.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    for s in summaries:
        line = ", ".join(
            f"{k} {v:.2f}" for k, v in s.items() if isinstance(v, float) and math.isfinite(v)
        )
        print(f"stitched {s['market']} ({s['bars']} bars): {line}")
    print(f"walkforward: tables and reports in {out}")
    return summary
