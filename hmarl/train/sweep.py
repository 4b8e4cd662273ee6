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

Why paths are pinned before jobs start: a job may run in another working directory than the
launching process (a Ray worker runs where ``ray start`` was run, a SLURM job where its node
puts it), so a relative sweep folder, cache or ``sqlite:///mlflow.db`` would name another
place there, and the parent would find no children. ``on_multirun_start`` therefore rewrites
them as absolute paths into the overrides every job is composed from (:func:`pin_paths`), and
leaves a marker file in the sweep folder; a job that cannot see the marker (or the sqlite
store) runs on a machine without the launcher's storage and stops at once with what to do
(:func:`check_visible`). Each child run is tagged with its real output folder and host.

How the sweep ends: ``on_multirun_end`` closes the parent FINISHED only if every child run
finished (and, for the basic sweeper, every planned job left a run); otherwise FAILED, and
the command fails (:class:`SweepFailed`, exit 1) naming the jobs without a run and the
children that did not finish. A sweep that raises never reaches ``on_multirun_end`` (Hydra
has no ``finally`` there), so an ``atexit`` hook closes a still-running parent FAILED.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hmarl.config import Config, Task, to_config
from hmarl.io import write_json
from hmarl.tracking import (
    CHECKPOINT_DIR,
    JOB_DIR_ENV,
    LAST_CHECKPOINT,
    PARENT_RUN_ENV,
    SWEEP_DIR_ENV,
    absolute_store_uri,
    git_commit,
    prepare_store,
    run_name,
    search_all,
    sqlite_path,
)

if TYPE_CHECKING:  # mlflow is imported where used: a plain `tracking=none` run never loads it
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SWEEP_KIND = "sweep"  # `kind` tag of a parent run (training runs carry kind=train)
EXPERIMENT_KEYS = ("experiment", "+experiment", "++experiment")  # named by the experiment_name tag
RESUME_KEY = "trainer.resume"  # added to a requeued job's overrides: not part of what it is
SWEEP_MARKER = ".hmarl_sweep.json"  # written by the launching process; jobs must see it
SERVER_HINT = (
    "log to one tracking server that every node reaches (mlflow server ...; "
    "tracking.uri=http://<server>:5000) and put hydra.sweep.dir and cache_dir on storage every "
    "node mounts (docs: Sweeps, 'On a cluster')"
)


class SweepSetupError(ValueError):
    """A sweep that cannot run as configured (exit 2): says what is wrong and what to do."""


class SweepFailed(RuntimeError):
    """The sweep ran but its parent run ended FAILED (exit 1): names the jobs that failed."""


# ----------------------------------------------------------------------------- launchers

LAUNCHER_MODULES = (
    "hydra_plugins.hmarl_launchers.ray_cluster",
    "hydra_plugins.hmarl_launchers.requeue",
)


def register_launchers() -> None:
    """Make hmarl's launcher classes known to Hydra, whatever the install.

    Why: Hydra instantiates launchers only from classes its scan of the ``hydra_plugins``
    folders found; an installed wheel has ``hydra_plugins/hmarl_launchers`` there, but an
    editable install (``make setup``) maps it through an import hook the scan cannot list.
    """
    import importlib

    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    plugins = Plugins.instance()
    for name in LAUNCHER_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            known = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__name__', '')}"
            if (
                isinstance(obj, type)
                and issubclass(obj, Launcher)
                and obj.__module__ == name
                and known not in plugins.class_name_to_class
            ):
                plugins._register(obj)  # Hydra's own registration of a scanned plugin


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
    from hmarl.market.many import market_paths
    from hmarl.market.market_data import market_for_config

    seen: set[str] = set()
    for cfg in configs:
        if cfg.task == Task.quote:  # a generated quoting market: no candles, nothing cached
            continue
        # data.paths: each market on its own, as the job builds it (hmarl.market.many)
        files = market_paths(cfg.data.paths) if cfg.data.paths else [cfg.data.path]
        for path in files:
            args = {**market_args(cfg), "data": replace(cfg.data, path=path, paths=[])}
            key = json.dumps({**args, "data": asdict(args["data"])}, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                market_for_config(**args)
    return len(seen)


# ----------------------------------------------------------------------------- paths


def _absolute_dir(value: str | None) -> str | None:
    """A relative folder or file made absolute (None, absolute paths and URLs unchanged)."""
    if not value or "://" in value or Path(value).is_absolute():
        return value
    return str(Path(value).expanduser().resolve())


# The job settings that name files: key -> (its value in a job's config, that value made absolute).
PATH_KEYS: dict[str, tuple[Callable[[Config], str | None], Callable[[str], str | None]]] = {
    "cache_dir": (lambda c: c.cache_dir, _absolute_dir),
    "tracking.uri": (lambda c: c.tracking.uri if c.tracking.enabled else None, absolute_store_uri),
    "data.path": (lambda c: c.data.path, _absolute_dir),
}


def quote(value: str) -> str:
    """``value`` as one Hydra override value (quoted: paths may hold spaces or commas)."""
    return "'" + value.replace("'", "\\'") + "'"


def pin_paths(overrides: Sequence[str], configs: Sequence[Config]) -> list[str]:
    """``overrides`` with each relative path setting of the jobs replaced by its absolute path.

    Why in the overrides: every job's config is composed from them, in whatever process and
    folder it runs. A setting the jobs disagree on (a sweep over ``cache_dir``) must already
    be absolute: a message says so rather than pinning one value for all.
    """
    pinned = list(overrides)
    for key, (get, absolute) in PATH_KEYS.items():
        values = {get(c) for c in configs} - {None}
        fixed = {v: absolute(v) for v in values if v is not None}
        if all(v == a for v, a in fixed.items()):
            continue
        if len(fixed) > 1:
            raise SweepSetupError(
                f"the jobs of this sweep use different relative {key} values "
                f"({', '.join(sorted(fixed))}): give them as absolute paths"
            )
        value = next(iter(fixed.values()))
        assert value is not None
        pinned = replace_override(pinned, key, value)
    return _pin_market_list(pinned, configs)


def _pin_market_list(overrides: list[str], configs: Sequence[Config]) -> list[str]:
    """``data.paths`` (files or globs, hmarl.market.many) made absolute entry by entry."""
    lists = {tuple(c.data.paths) for c in configs if c.data.paths}
    fixed = {given: tuple(_absolute_dir(p) or p for p in given) for given in lists}
    if all(given == absolute for given, absolute in fixed.items()):
        return overrides
    if len(fixed) > 1:
        raise SweepSetupError(
            "the jobs of this sweep use different relative data.paths lists: give their "
            "entries as absolute paths"
        )
    return replace_override(overrides, "data.paths", next(iter(fixed.values())))


def replace_override(overrides: Sequence[str], key: str, value: str | Sequence[str]) -> list[str]:
    """``overrides`` with any ``key=...`` dropped and ``key=<value>`` appended (a list of
    values as a quoted list)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    drop = {o.input_line for o in parsed if o.key_or_group.lstrip("+") == key}
    text = quote(value) if isinstance(value, str) else f"[{','.join(map(quote, value))}]"
    return [o for o in overrides if o not in drop] + [f"{key}={text}"]


def resume_overrides(overrides: list[str], job_dir: str | Path) -> list[str]:
    """A requeued job's overrides: resume from its folder's ``last.pt`` when it wrote one
    (``hydra_plugins/hmarl_launchers/requeue.py``; a fresh start there would be refused)."""
    last = Path(job_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
    return replace_override(overrides, RESUME_KEY, str(last)) if last.is_file() else overrides


def check_visible(sweep_dir: str, uri: str | None, launch_host: str) -> None:
    """In a job: refuse to run where the launching process's files are not visible.

    Why: a job on another machine would otherwise write its outputs, and (with a sqlite
    store) its run, to a private copy of the same path, and the sweep would find no children.
    """
    missing = []
    if not (Path(sweep_dir) / SWEEP_MARKER).is_file():
        missing.append(f"the sweep folder {sweep_dir}")
    db = sqlite_path(uri) if uri else None
    if db is not None and not db.is_file():
        missing.append(f"the MLflow store {db}")
    if missing:
        raise SweepSetupError(
            f"this job runs on {socket.gethostname()}, which cannot see {' or '.join(missing)} "
            f"made by the launching process on {launch_host} (no shared storage): {SERVER_HINT}"
        )


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
    varying = [
        k for k in keys if len({kv.get(k) for kv in parsed.values()}) > 1 and k != RESUME_KEY
    ]
    names = {}
    for rid, kv in parsed.items():
        parts = [f"{k}={kv[k]}" for k in sorted(varying) if k in kv and k not in EXPERIMENT_KEYS]
        names[rid] = " ".join([experiments.get(rid, ""), *parts]).strip() or rid
    return names


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


SWEEP_FILES = ("multirun.yaml", "optimization_results.yaml")  # Hydra's and Optuna's summaries


class SweepResult(NamedTuple):
    """How a sweep ended: the parent's status and, when FAILED, what went wrong (one line each)."""

    status: str
    problems: list[str]


def job_label(job: Sequence[str], sweeping: Sequence[str]) -> str:
    """A job by the overrides that vary across the sweep (``+experiment=sym_1_1 seed=2``)."""
    keys = {_split(o)[0] for o in sweeping}
    return " ".join(o for o in job if _split(o)[0] in keys) or " ".join(job)


def _job_key(overrides: Sequence[str]) -> str:
    """A job's identity: its overrides less the resume a requeue adds."""
    return " ".join(o for o in overrides if _split(o)[0] != RESUME_KEY)


def sweep_problems(
    children: Sequence[Run], jobs: Sequence[Sequence[str]] | None, sweeping: Sequence[str]
) -> list[str]:
    """The planned jobs that left no run and the children that did not finish."""
    problems = []
    if jobs is not None:
        seen = {_job_key(c.data.tags.get("hydra_overrides", "").split()) for c in children}
        missing = [job_label(j, sweeping) for j in jobs if _job_key(j) not in seen]
        if missing:
            problems.append(
                f"{len(missing)} of {len(jobs)} jobs left no run ({'; '.join(missing)})"
            )
    for c in children:
        if c.info.status != "FINISHED":
            label = c.info.run_name or c.info.run_id
            where = c.data.tags.get("output_dir", "")
            problems.append(
                f"child {label} ({c.info.run_id}) is {c.info.status}"
                + (f", outputs in {where}" if where else "")
            )
    return problems


def finish_sweep(
    uri: str,
    parent_run_id: str,
    expected: int | None,
    *,
    rename: bool = True,
    sweep_dir: str | None = None,
    jobs: Sequence[Sequence[str]] | None = None,
    sweeping: Sequence[str] = (),
) -> SweepResult:
    """Close the parent with the sweep's status, tag the job counts; returns how it ended.

    The sweep folder's summaries (the sweep config, an Optuna sweeper's best parameters)
    become the parent's artifacts, so the UI shows what was searched and what won. ``jobs``
    (every planned job's overrides, when known) lets a FAILED sweep name its missing jobs.
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
    problems = sweep_problems(children, jobs, sweeping) if status != "FINISHED" else []
    if status != "FINISHED" and not problems and expected is not None:
        problems = [f"{expected - len(children)} of {expected} jobs left no run"]
    if rename and len(children) > 1:
        overrides = {c.info.run_id: c.data.tags.get("hydra_overrides", "") for c in children}
        experiments = {c.info.run_id: c.data.tags.get("experiment_name", "") for c in children}
        for rid, name in child_names(overrides, experiments).items():
            client.update_run(rid, name=run_name(name))
    counts: dict[str, object] = {
        "jobs_runs": len(children),
        "jobs_finished": statuses.count("FINISHED"),
        "jobs_failed": sum(s in ("FAILED", "KILLED") for s in statuses),
        "jobs_unclosed": statuses.count("RUNNING"),
    }
    if expected is not None:
        counts["jobs_expected"] = expected
    if problems:
        counts["sweep_error"] = "; ".join(problems)[:5000]
    client.log_batch(parent_run_id, tags=[RunTag(k, str(v)) for k, v in counts.items()])
    client.set_terminated(parent_run_id, status=status)
    return SweepResult(status, problems)


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


def export_env(
    parent_run_id: str | None, sweep_dir: str | None, job_dir: str | None = None
) -> None:
    """Set (or clear) the variables that make a job's MlflowTracker a child run (and tag
    where its outputs are)."""
    pairs = ((PARENT_RUN_ENV, parent_run_id), (SWEEP_DIR_ENV, sweep_dir), (JOB_DIR_ENV, job_dir))
    for name, value in pairs:
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
        self.jobs: list[list[str]] | None = None
        self.sweeping: list[str] = []
        self.launch_host = socket.gethostname()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        given = [str(o) for o in config.hydra.overrides.task]
        configs = [_task_config(config)]  # the base job, or every job when the sweep is enumerable
        given_jobs = parse_sweep(given)[1]
        if given_jobs is not None and GlobalHydra.instance().is_initialized():
            configs = job_configs(kwargs.get("config_name"), given_jobs)
        overrides = pin_paths(given, configs)
        self._pin(config, overrides)
        sweeping, jobs = parse_sweep(overrides)
        is_basic = "BasicSweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_"))
        self.sweeping, self.jobs = sweeping, jobs
        self.expected_jobs = len(jobs) if jobs is not None and is_basic else None
        if self.prebuild:  # relative paths name the same files as the pinned ones, here
            log.info("sweep: %d distinct market(s) ready in the cache", prebuild_markets(configs))
        base = configs[0]
        if base.tracking.enabled:
            self._start_parent(base, config, overrides, sweeping)
        marker = {"host": self.launch_host, "uri": self.uri, "parent_run_id": self.parent_run_id}
        write_json(Path(self.sweep_dir) / SWEEP_MARKER, marker)
        export_env(self.parent_run_id, self.sweep_dir)

    def _pin(self, config: DictConfig, overrides: list[str]) -> None:
        """Pin the sweep folder, and the task's ``overrides`` (paths made absolute), into the
        config every job is composed from (see the module docstring)."""
        assert self.sweep_dir is not None
        hydra_overrides = [str(o) for o in config.hydra.overrides.hydra]
        with read_write(config), open_dict(config):
            config.hydra.sweep.dir = self.sweep_dir
            config.hydra.overrides.hydra = replace_override(
                hydra_overrides, "hydra.sweep.dir", self.sweep_dir
            )
            config.hydra.overrides.task = overrides

    def _start_parent(
        self, base: Config, config: DictConfig, overrides: Sequence[str], sweeping: Sequence[str]
    ) -> None:
        uri = absolute_store_uri(base.tracking.uri)  # jobs check it from their own folder
        experiment_id = prepare_store(uri, base.tracking.experiment)
        assert self.sweep_dir is not None
        tags = {
            "sweep_dir": self.sweep_dir,
            "hydra_overrides": " ".join(overrides),
            "sweep_overrides": " ".join(sweeping),
            "launcher": str(OmegaConf.select(config, "hydra.launcher._target_")),
            "sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_")),
            "git_commit": git_commit(),
            "host": self.launch_host,
        }
        if self.expected_jobs is not None:
            tags["jobs_expected"] = str(self.expected_jobs)
        name = "sweep " + (" ".join(sweeping) or Path(self.sweep_dir).name)
        self.uri = uri
        self.parent_run_id = start_parent_run(uri, experiment_id, name, tags)
        atexit.register(abort_sweep, uri, self.parent_run_id)
        log.info("sweep: MLflow parent run %s in %s", self.parent_run_id, uri)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_dir is None:  # a single run: nothing to do
            return
        # a job of this sweep, in whatever process (and on whatever machine) runs it
        check_visible(self.sweep_dir, self.uri, self.launch_host)
        job_dir = OmegaConf.select(config, "hydra.runtime.output_dir")
        export_env(self.parent_run_id, self.sweep_dir, str(job_dir) if job_dir else None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        export_env(None, None)
        if self.uri is None or self.parent_run_id is None:
            return
        result = finish_sweep(
            self.uri,
            self.parent_run_id,
            self.expected_jobs,
            rename=self.rename_children,
            sweep_dir=self.sweep_dir,
            jobs=self.jobs,
            sweeping=self.sweeping,
        )
        atexit.unregister(abort_sweep)  # after: if closing failed, exit still closes FAILED
        log.info("sweep: parent run %s closed %s", self.parent_run_id, result.status)
        if result.status != "FINISHED":
            raise SweepFailed(
                f"the sweep's parent run {self.parent_run_id} in {self.uri} ended "
                f"{result.status}: {'; '.join(result.problems) or 'a job failed'}; each job's "
                f"log is in its folder under {self.sweep_dir}"
            )
