"""Hydra multirun support: one MLflow parent run per sweep, and the feature cache built once.

Why a callback in the launching process: the jobs of a parallel sweep (joblib, submitit,
Ray) start together, and jobs that each open a *new* sqlite store race through MLflow's
schema migrations and crash ("table alembic_version already exists", "duplicate column
name: step"; ``tests/test_sweep.py`` reproduces it). Hydra calls ``on_multirun_start`` in
the launching process before any launcher or job exists, so the store, the experiment,
the parent run and the cached feature tensors are created there, once; jobs then only
open an existing store and load an existing cache entry. (Store creation is also safe
without the callback: :func:`hmarl.tracking.open_experiment` creates a store under a lock.)

How a job learns its parent run: Hydra pickles its callbacks (inside the launcher's
``HydraContext``) into every job process and calls ``on_job_start`` there. The parent run
id therefore travels inside this callback rather than through the environment of a worker
that may predate the sweep (joblib reuses its loky workers) or live on another machine
(SLURM, Ray). ``on_job_start`` exports ``HMARL_MLFLOW_PARENT_RUN_ID`` and
``HMARL_SWEEP_DIR``, which :class:`hmarl.tracking.MlflowTracker` reads.

How the sweep ends: ``on_multirun_end`` closes the parent FINISHED only if every child run
finished (and, for the basic sweeper, every planned job left a run); otherwise FAILED. A
sweep that raises never reaches ``on_multirun_end`` (Hydra has no ``finally`` there), so an
``atexit`` hook closes a still-running parent FAILED.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from hmarl.config import Config, to_config
from hmarl.tracking import (
    PARENT_RUN_ENV,
    SWEEP_DIR_ENV,
    git_commit,
    prepare_store,
    run_name,
    search_all,
)

if TYPE_CHECKING:  # mlflow is imported where used: a plain `tracking=none` run never loads it
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SWEEP_KIND = "sweep"  # `kind` tag of a parent run (training runs carry kind=train)
EXPERIMENT_KEYS = ("experiment", "+experiment", "++experiment")  # named by the experiment_name tag


# ----------------------------------------------------------------------------- sweep plan


def parse_sweep(overrides: Sequence[str]) -> tuple[list[str], list[list[str]] | None]:
    """(the sweeping overrides, every job's override list) as the basic sweeper expands them.

    The job list is None when the overrides hold a sweep the basic sweeper cannot expand
    (an Optuna ``interval(...)``, a ``glob(...)`` over config groups): then only the base
    config is known before the jobs run.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    sweeping = [o.input_line for o in parsed if o.is_sweep_override() and o.input_line]
    try:
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception as exc:  # a sweep type the basic sweeper refuses; the sweeper in use may not
        log.info("sweep: jobs not enumerable before launch (%s)", exc)
        return sweeping, None
    return sweeping, [list(job) for batch in batches for job in batch]


def job_configs(config_name: str | None, jobs: Iterable[Sequence[str]]) -> list[Config]:
    """Compose each job's typed config with Hydra's compose API (needs an initialised Hydra)."""
    from hydra import compose

    return [to_config(compose(config_name=config_name, overrides=list(job))) for job in jobs]


def market_args(cfg: Config) -> dict[str, Any]:
    """The keyword arguments of :func:`hmarl.market.market_data.market_for_config` of a job."""
    return {
        "data": cfg.data,
        "feature_names": list(cfg.features.names),
        "macro_window": cfg.features.macro_window,
        "micro_window": cfg.features.micro_window,
        "cache_dir": cfg.cache_dir,
    }


def prebuild_markets(configs: Iterable[Config]) -> int:
    """Build (or find) the cached tensors of each distinct market once; returns how many.

    Why here: N parallel jobs that miss the cache would each build the same tensors (the
    cache's atomic rename keeps that correct, but N times the work). Jobs then load them.
    """
    from hmarl.market.market_data import market_for_config

    seen: set[str] = set()
    for cfg in configs:
        args = market_args(cfg)
        key = json.dumps({**args, "data": asdict(cfg.data)}, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            market_for_config(**args)
    return len(seen)


# ----------------------------------------------------------------------------- MLflow store


def start_parent_run(uri: str, experiment_id: str, name: str, tags: Mapping[str, str]) -> str:
    """The sweep's parent run (RUNNING until :func:`finish_sweep`); returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(
        experiment_id, run_name=run_name(name), tags={"kind": SWEEP_KIND, **tags}
    )
    return str(run.info.run_id)


def child_runs(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """Every run (any experiment) whose ``mlflow.parentRunId`` is the sweep's parent."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return search_all(client, experiment_ids, f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def sweep_status(child_statuses: Sequence[str], expected: int | None) -> str:
    """FINISHED only when every child finished and no planned job is missing, else FAILED.

    A child still RUNNING after all jobs returned belongs to a job that died without
    closing its run (out of memory, SIGKILL): that is a failure too.
    """
    if any(s != "FINISHED" for s in child_statuses):
        return "FAILED"
    if expected is not None and len(child_statuses) < expected:
        return "FAILED"
    return "FINISHED"


def child_names(overrides: Mapping[str, str], experiments: Mapping[str, str]) -> dict[str, str]:
    """Short run names: the experiment name plus the overrides that vary across the sweep.

    ``overrides`` maps run id -> its ``hydra_overrides`` tag (space separated); keys that
    take the same value in every run (the tiny-config overrides of a test, a shared
    ``tracking.uri``) are left out, so ``asym_1_10 seed=2`` is what the UI shows.
    """
    parsed = {rid: dict(_split(o) for o in text.split()) for rid, text in overrides.items()}
    keys = {k for kv in parsed.values() for k in kv}
    varying = [k for k in keys if len({kv.get(k) for kv in parsed.values()}) > 1]
    names = {}
    for rid, kv in parsed.items():
        parts = [f"{k}={kv[k]}" for k in sorted(varying) if k in kv and k not in EXPERIMENT_KEYS]
        names[rid] = " ".join([experiments.get(rid, ""), *parts]).strip() or rid
    return names


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


SWEEP_FILES = ("multirun.yaml", "optimization_results.yaml")  # Hydra's and Optuna's summaries


def finish_sweep(
    uri: str,
    parent_run_id: str,
    expected: int | None,
    *,
    rename: bool = True,
    sweep_dir: str | None = None,
) -> str:
    """Close the parent with the sweep's status, tag the job counts; returns the status.

    The sweep folder's summaries (the sweep config, an Optuna sweeper's best parameters)
    become the parent's artifacts, so the UI shows what was searched and what won.
    """
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for name in SWEEP_FILES if sweep_dir else ():
        path = Path(str(sweep_dir)) / name
        if path.is_file():
            client.log_artifact(parent_run_id, str(path), "sweep")
    children = child_runs(client, parent_run_id)
    statuses = [c.info.status for c in children]
    status = sweep_status(statuses, expected)
    if rename and len(children) > 1:
        overrides = {c.info.run_id: c.data.tags.get("hydra_overrides", "") for c in children}
        experiments = {c.info.run_id: c.data.tags.get("experiment_name", "") for c in children}
        for rid, name in child_names(overrides, experiments).items():
            client.update_run(rid, name=run_name(name))
    counts = {
        "jobs_runs": len(children),
        "jobs_finished": statuses.count("FINISHED"),
        "jobs_failed": sum(s in ("FAILED", "KILLED") for s in statuses),
        "jobs_unclosed": statuses.count("RUNNING"),
    }
    if expected is not None:
        counts["jobs_expected"] = expected
    client.log_batch(parent_run_id, tags=[RunTag(k, str(v)) for k, v in counts.items()])
    client.set_terminated(parent_run_id, status=status)
    return status


def abort_sweep(uri: str, parent_run_id: str) -> None:
    """``atexit`` hook: a parent still RUNNING when the launcher exits ends FAILED."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_run(parent_run_id).info.status == "RUNNING":
            client.set_tag(parent_run_id, "sweep_error", "the sweep raised before it ended")
            client.set_terminated(parent_run_id, status="FAILED")
    except Exception as exc:  # at exit: report, never raise over the sweep's own error
        print(f"warning: could not close the sweep's parent run {parent_run_id}: {exc}")


def export_env(parent_run_id: str | None, sweep_dir: str | None) -> None:
    """Set (or clear) the variables that make a job's MlflowTracker a child run."""
    for name, value in ((PARENT_RUN_ENV, parent_run_id), (SWEEP_DIR_ENV, sweep_dir)):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)


# ----------------------------------------------------------------------------- callback


def _task_config(config: DictConfig) -> Config:
    """The typed config of the sweep's base job (the composed config minus ``hydra``)."""
    task = copy.deepcopy(config)
    with open_dict(task):
        task.pop("hydra", None)
    return to_config(task)


class SweepCallback(Callback):
    """``hydra.callbacks.sweep`` in ``conf/config.yaml``; acts in MULTIRUN mode only.

    ``prebuild``: build the feature tensors of every distinct market of the sweep in the
    launching process before jobs start (turn off when the launching machine should not
    load the data, e.g. a SLURM login node without a shared ``cache_dir``).
    ``rename_children``: at the end, name each child run by the overrides that vary.
    """

    def __init__(self, prebuild: bool = True, rename_children: bool = True) -> None:
        self.prebuild = prebuild
        self.rename_children = rename_children
        # Plain values only: this object is pickled into every job process.
        self.uri: str | None = None
        self.parent_run_id: str | None = None
        self.sweep_dir: str | None = None
        self.expected_jobs: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        base = _task_config(config)
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        overrides = [str(o) for o in config.hydra.overrides.task]
        sweeping, jobs = parse_sweep(overrides)
        is_basic = "BasicSweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_"))
        self.expected_jobs = len(jobs) if jobs is not None and is_basic else None
        if self.prebuild:
            configs = [base]
            if jobs is not None and GlobalHydra.instance().is_initialized():
                configs = job_configs(kwargs.get("config_name"), jobs)
            log.info("sweep: %d distinct market(s) ready in the cache", prebuild_markets(configs))
        if base.tracking.enabled:
            self._start_parent(base, config, overrides, sweeping)
        export_env(self.parent_run_id, self.sweep_dir)

    def _start_parent(
        self, base: Config, config: DictConfig, overrides: Sequence[str], sweeping: Sequence[str]
    ) -> None:
        uri = base.tracking.uri
        experiment_id = prepare_store(uri, base.tracking.experiment)
        assert self.sweep_dir is not None
        tags = {
            "sweep_dir": self.sweep_dir,
            "hydra_overrides": " ".join(overrides),
            "sweep_overrides": " ".join(sweeping),
            "launcher": str(OmegaConf.select(config, "hydra.launcher._target_")),
            "sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")),
            "git_commit": git_commit(),
        }
        if self.expected_jobs is not None:
            tags["jobs_expected"] = str(self.expected_jobs)
        name = "sweep " + (" ".join(sweeping) or Path(self.sweep_dir).name)
        self.uri = uri
        self.parent_run_id = start_parent_run(uri, experiment_id, name, tags)
        atexit.register(abort_sweep, uri, self.parent_run_id)
        log.info("sweep: MLflow parent run %s in %s", self.parent_run_id, uri)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is not None:  # a job of this sweep, in whatever process runs it
            export_env(self.parent_run_id, self.sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.uri is not None and self.parent_run_id is not None:
            status = finish_sweep(
                self.uri,
                self.parent_run_id,
                self.expected_jobs,
                rename=self.rename_children,
                sweep_dir=self.sweep_dir,
            )
            atexit.unregister(abort_sweep)  # after: if closing failed, exit still closes FAILED
            log.info("sweep: parent run %s closed %s", self.parent_run_id, status)
        export_env(None, None)
