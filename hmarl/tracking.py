"""MLflow tracking behind a small interface, with batched writes and honest run status.

Why batched: each call to a remote tracking server costs ~100 ms, so metrics are buffered
and sent with ``log_batch``. Why explicit status: a run that raises or is interrupted must
end FAILED or KILLED, never stay RUNNING in the UI.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:  # mlflow is imported lazily: `tracking=none` never loads it (~2 s)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

# Set by the sweep callback (hmarl/sweep.py) so that jobs become children of one parent run.
PARENT_RUN_ENV = "HMARL_MLFLOW_PARENT_RUN_ID"
SWEEP_DIR_ENV = "HMARL_SWEEP_DIR"


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


def artifact_root_for(uri: str) -> str | None:
    """Artifacts beside a sqlite store (``<db dir>/mlartifacts``), else the server's default."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.resolve().parent / "mlartifacts").as_uri()


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
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment, uri)
        all_tags = dict(tags or {})
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        if os.environ.get(SWEEP_DIR_ENV):
            all_tags["sweep_dir"] = os.environ[SWEEP_DIR_ENV]
        if run_id is not None:  # resuming: continue the same run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            self.set_tags(all_tags)
        else:
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name)
            self.run_id = run.info.run_id
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.flush_every_s = flush_every_s

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
