"""MLflow tracking behind a small interface, with batched writes and honest run status.

Why batched: each call to a remote tracking server costs ~100 ms, so metrics are buffered
and sent with ``log_batch``. Why one lifecycle: a run that raises or is interrupted must end
FAILED or KILLED, never stay RUNNING in the UI, so every tracked run (training, backtest)
opens and closes in :func:`tracked_run`, and nothing else sets a run's status (the sweep's
parent run, which spans processes, is closed by :mod:`hmarl.train.sweep`). Store URIs
(:func:`sqlite_path`), run names (:func:`run_name`) and paged searches (:func:`search_all`)
are read one way here for every caller.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from hmarl.config import AUTO_URI, BacktestError, TrackingConfig

if TYPE_CHECKING:  # mlflow is imported lazily: `tracking=none` never loads it (~2 s)
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient

RUN_NAME_LIMIT = 250  # characters: MLflow refuses longer run names
# Set by the sweep callback (hmarl/train/sweep.py) so that jobs become children of one parent run.
# A run's checkpoints: one layout in its output folder and among its MLflow artifacts.
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.pt"  # the policy the selection rule kept (hmarl.train.selection)
LAST_CHECKPOINT = "last.pt"  # the latest state, to resume from
CHECKPOINT_NAMES = (BEST_CHECKPOINT, LAST_CHECKPOINT)  # the order a backtest prefers them

PARENT_RUN_ENV = "HMARL_MLFLOW_PARENT_RUN_ID"
SWEEP_DIR_ENV = "HMARL_SWEEP_DIR"
JOB_DIR_ENV = "HMARL_JOB_DIR"  # a sweep job's output folder (absolute), tagged with its host


class Tracker:
    """No-op tracker (``tracking=none``); :class:`MlflowTracker` overrides every method."""

    run_id: str | None = None
    experiment_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_artifact(
        self, path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None: ...

    def flush(self) -> None: ...

    def finish(self, status: str) -> None: ...


class TrackingError(ValueError):
    """A tracking store or run that cannot be used as configured (names the URI and the fix)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI, else None."""
    if urlparse(uri).scheme != "sqlite":
        return None
    return Path(uri[len("sqlite:///") :])


def absolute_store_uri(uri: str) -> str:
    """``uri`` with a relative sqlite path made absolute (other URIs unchanged).

    A checkpoint records where its training run lives; ``sqlite:///mlflow.db`` names a
    different file from every other working directory, so the path is resolved first.
    """
    db = sqlite_path(uri)
    if db is not None and not db.is_absolute():
        return "sqlite:///" + str(db.resolve())
    return uri


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a sqlite store (``<db dir>/mlartifacts``), else the server's default."""
    db = sqlite_path(uri)
    return None if db is None else (db.resolve().parent / "mlartifacts").as_uri()


def ensure_sqlite_dir(uri: str) -> None:
    """Create the folder of a ``sqlite:///path/to.db`` store (sqlite does not)."""
    db = sqlite_path(uri)
    if db is not None:
        db.resolve().parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` beside a sqlite store (other stores: no lock).

    Why: processes that open one *new* sqlite store together (a sweep's jobs, two terminals,
    a SLURM array) race through MLflow's schema migrations and die ("duplicate column name:
    step", alembic "expected to match one row"). Creation and migration under one lock run
    once; the others then find a finished schema. The lock file stays (removing it would
    race). Windows has no ``fcntl``: there the lock is skipped, and parallel jobs should
    share a store created beforehand (a sweep does that) or a tracking server.
    """
    db = sqlite_path(uri)
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if db is None or fcntl is None:
        yield
        return
    lock = db.resolve().parent / f"{db.name}.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _unusable_store(uri: str, exc: BaseException) -> TrackingError:
    """The error for a store that cannot be opened: the URI, the file, the reason, the fix."""
    db = sqlite_path(uri)
    where = f" (database file {db.resolve()})" if db is not None else ""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if db is not None and not os.access(db.resolve().parent, os.W_OK):
        reason = f"folder {db.resolve().parent} is not writable ({reason})"
    return TrackingError(
        f"cannot open the MLflow store tracking.uri={uri}{where}: {reason}; pass "
        "tracking.uri=sqlite:///<a writable path>/mlflow.db, a server URL, or tracking=none"
    )


def open_experiment(uri: str, name: str) -> tuple[MlflowClient, str]:
    """A client on the store ``uri`` and the id of experiment ``name``, both created if new.

    Safe when many processes start at once: creation, migration and the experiment's
    creation happen under :func:`store_lock`. Every trainer, backtest and sweep opens its
    store here.
    """
    from mlflow.tracking import MlflowClient

    try:
        ensure_sqlite_dir(uri)
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            return client, get_or_create_experiment(client, name, uri)
    except TrackingError:
        raise
    except Exception as exc:  # sqlite, alembic, OS and MLflow errors alike: name the store
        if sqlite_path(uri) is None:
            raise  # a server: its own error says what is wrong (unreachable, refused)
        raise _unusable_store(uri, exc) from exc


def prepare_store(uri: str, experiment: str) -> str:
    """Create the store (schema) and the experiment if needed; returns the experiment id."""
    return open_experiment(uri, experiment)[1]


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment id, creating it (race-safe: another job may create it first)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_root_for(uri)))
    except Exception:  # created concurrently by another job
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


class MlflowTracker(Tracker):
    """One MLflow run; metrics are buffered and flushed in batches."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        flush_every_s: float = 10.0,
    ) -> None:
        self.client, self.experiment_id = open_experiment(uri, experiment)
        all_tags = dict(tags or {})
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        if os.environ.get(SWEEP_DIR_ENV):
            all_tags["sweep_dir"] = os.environ[SWEEP_DIR_ENV]
        if os.environ.get(JOB_DIR_ENV):  # where this job's outputs really are
            all_tags.update(output_dir=os.environ[JOB_DIR_ENV], host=socket.gethostname())
        if run_id is not None:  # resuming: continue the same run
            self._check_resumable(uri, run_id)
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.set_tags(all_tags)
        else:
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
            self.run_id = run.info.run_id
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.flush_every_s = flush_every_s

    def _check_resumable(self, uri: str, run_id: str) -> None:
        """A resumed run must exist in this store (a checkpoint records only the run's id)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(
                f"the checkpoint to resume belongs to MLflow run {run_id}, which is not in "
                f"tracking.uri={uri}: resume with the tracking.uri it was trained with, or "
                "with tracking=none"
            ) from exc

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        assert self.run_id is not None
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if len(self._buffer) >= 900 or time.monotonic() - self._last_flush > self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        assert self.run_id is not None
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        assert self.run_id is not None
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        assert self.run_id is not None
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        assert self.run_id is not None
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)


# ----------------------------------------------------------------------------- run lifecycle


def run_name(name: str, limit: int = RUN_NAME_LIMIT) -> str:
    """``name`` as MLflow accepts it: unchanged up to ``limit`` characters; a longer one keeps
    its start and its end around ``...`` (``limit`` characters in all).

    Why both ends: a training run's name starts with what it is (the experiment and its
    overrides) and a backtest's ends with which checkpoint it read (the file's path).
    """
    if len(name) <= limit:
        return name
    head = (limit - 3) // 2
    return name[:head] + "..." + name[len(name) - (limit - 3 - head) :]


def start_run(
    tracking: TrackingConfig, name: str, tags: Mapping[str, str], run_id: str | None = None
) -> Tracker:
    """A tracker for the run (a no-op :class:`Tracker` when ``tracking.enabled`` is off);
    ``run_id`` continues that run (a resumed training) instead of creating one."""
    if not tracking.enabled:
        return Tracker()
    return MlflowTracker(
        tracking.uri, tracking.experiment, run_name=run_name(name), tags=dict(tags), run_id=run_id
    )


@contextmanager
def tracked_run(
    tracking: TrackingConfig,
    name: str,
    tags: Mapping[str, str],
    *,
    run_id: str | None = None,
    on_failure: Callable[[Tracker], None] | None = None,
) -> Iterator[Tracker]:
    """The one lifecycle of a tracked run: it ends FINISHED when the block completes, KILLED
    on an interrupt (Ctrl-C; SIGTERM where the entry point turns it into KeyboardInterrupt),
    FAILED on any other exception, which is re-raised.

    ``on_failure(tracker)`` runs before a run that did not finish is closed (training logs
    its last good checkpoint there); an error inside it is printed, never raised over the
    original one.
    """
    tracker = start_run(tracking, name, tags, run_id)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED" and on_failure is not None:
            try:
                on_failure(tracker)
            except Exception as exc:  # never mask the original error
                print(f"warning: {exc}")
        tracker.finish(status)


def search_all(client: MlflowClient, ids: Sequence[str], query: str) -> list[Run]:
    """Every run of experiments ``ids`` matching ``query``, across result pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(list(ids), query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


# ----------------------------------------------------------------------------- helpers


def git_commit() -> str:
    """The source checkout's commit (``unknown`` for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


# ----------------------------------------------------------------------------- backtests

DEFAULT_URI = TrackingConfig().uri  # sqlite:///mlflow.db in the working directory


def run_checkpoints(client: MlflowClient, run_id: str) -> tuple[list[str], list[str]]:
    """The checkpoints an MLflow run logged, in the order a backtest prefers them, and every
    file name under its ``checkpoints/`` artifacts (for messages)."""
    names = sorted(Path(f.path).name for f in client.list_artifacts(run_id, CHECKPOINT_DIR))
    return [n for n in CHECKPOINT_NAMES if n in names], names


def fetch_run_checkpoint(run_id: str, tracking_uri: str, dst: Path) -> tuple[Path, str]:
    """Download an MLflow run's ``checkpoints/best.pt`` (else ``last.pt``) into ``dst``."""
    from mlflow.exceptions import MlflowException  # lazily: a local backtest never loads mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        available, artifacts = run_checkpoints(client, run_id)
    except MlflowException as exc:
        raise BacktestError(f"MLflow run {run_id!r} not found at {tracking_uri}: {exc}") from exc
    if available:
        path = f"{CHECKPOINT_DIR}/{available[0]}"
        local = client.download_artifacts(run_id, path, str(dst))
        return Path(local), f"runs:/{run_id}/{path}"
    raise BacktestError(
        f"MLflow run {run_id} at {tracking_uri} has no {CHECKPOINT_DIR}/{BEST_CHECKPOINT} or "
        f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT} artifact (artifacts: {artifacts or 'none'}); "
        "was it trained with tracking.log_checkpoints=false? Pass checkpoint=<path> instead"
    )


def backtest_tracking(
    tracking: TrackingConfig, ckpt: Mapping[str, Any], run_id: str | None
) -> tuple[TrackingConfig, str]:
    """Where the backtest logs, and why: beside its training run unless told otherwise.

    ``tracking.uri=auto`` (the default): a ``run_id=`` backtest logs to the store it fetched
    the checkpoint from; a ``checkpoint=`` backtest to the store and experiment its
    checkpoint records (absolute), or to ``sqlite:///mlflow.db`` when it records none (older
    checkpoints, training with ``tracking=none``) or its sqlite file is gone. Any other
    ``tracking.uri`` is used as given.
    """
    if not tracking.enabled or tracking.uri != AUTO_URI:
        return tracking, "as configured"
    if run_id is not None:
        return replace(tracking, uri=DEFAULT_URI), "the store the checkpoint was fetched from"
    rec = ckpt.get("tracking") or {}
    uri, experiment = rec.get("uri"), rec.get("experiment")
    if not uri:
        return replace(tracking, uri=DEFAULT_URI), "the checkpoint records no training store"
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return replace(tracking, uri=DEFAULT_URI), f"the training store {uri} does not exist"
    return replace(tracking, uri=uri, experiment=experiment or tracking.experiment), (
        "the training run's store"
    )
