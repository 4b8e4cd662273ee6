"""Sweeps beyond one process: a running Ray cluster, one MLflow server, SLURM's requeue.

The slow cases start real services (a Ray head, an ``mlflow server``) in subprocesses with
their own temporary folders and free ports on 127.0.0.1, bounded in time, and stop only what
they started (by process group). The Ray cases skip without the ``ray`` extra
(``.ci/run`` installs it); the requeue case needs the ``slurm`` extra (submitit).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from test_sweep import TINY, parent_and_children, sqlite_uri

from hmarl.tracking import JOB_DIR_ENV, PARENT_RUN_ENV, SWEEP_DIR_ENV

HAS_RAY = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs the ray extra (pip install -e .[ray])")
needs_submitit = pytest.mark.skipif(not HAS_SUBMITIT, reason="needs the slurm extra")
BIN = Path(sys.executable).parent  # the venv's `ray` and `mlflow` commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, what: str, timeout: float, proc: subprocess.Popen[str]) -> None:
    """Poll ``check()`` until true; fail with the service's output if it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode}: {proc.communicate()[0][-3000:]}")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {timeout} s")


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop the service we started, and only it: its own process group (start_new_session)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                time.sleep(1)  # the group's other members got the same signal
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (workers)
    except ProcessLookupError:
        pass


def clean_env(**extra: str) -> dict[str, str]:
    drop = (PARENT_RUN_ENV, SWEEP_DIR_ENV, JOB_DIR_ENV, "RAY_ADDRESS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def train_cmd(*args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]  # -m before the overrides (Hydra's argparse)
    overrides = [a for a in args if not a.startswith("-")]
    return [sys.executable, "-m", "hmarl.train", *flags, *TINY, *overrides]  # args win over TINY


def run(cmd: Sequence[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    """Run to the end; the combined output (the test fails with it on a non-zero exit)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


# ----------------------------------------------------------------------------- Ray cluster


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str], Path]]:
    """A Ray head of our own: temp dir, port, token auth with a token that is only ours."""
    if not HAS_RAY:
        pytest.skip("needs the ray extra")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    head_dir = temp / "head"
    head_dir.mkdir()
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
        f"--temp-dir={temp / 't'}", "--num-cpus=2", "--include-dashboard=false",
        "--node-ip-address=127.0.0.1", "--disable-usage-stats",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=head_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, "ray head", 120, proc)
        time.sleep(3)  # the raylet registers after the GCS port opens
        yield f"127.0.0.1:{port}", env, head_dir
    finally:
        stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@needs_ray
def test_ray_cluster_sweep_from_another_folder(
    ray_head: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    """4 jobs on a running head, launched from another folder with a *relative* sqlite store
    and cache: one store with 4 FINISHED children, outputs where their tags say, nothing in
    the head's folder."""
    address, env, head_dir = ray_head
    launch = tmp_path / "launch"
    launch.mkdir()
    cmd = train_cmd(
        "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
        "+experiment=asym_1_10,sym_1_1", "seed=0,1",
        "tracking.uri=sqlite:///mlflow.db", "cache_dir=cache", "hydra.sweep.dir=multirun/s",
    )  # fmt: skip
    out = run(cmd, launch, env, timeout=480)
    parent, children = parent_and_children(sqlite_uri(launch / "mlflow.db"))
    assert parent.info.status == "FINISHED", out[-3000:]
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    dirs = {Path(c.data.tags["output_dir"]) for c in children}
    assert dirs == {launch / "multirun" / "s" / str(i) for i in range(4)}
    assert all((d / "checkpoints" / "last.pt").is_file() for d in dirs)
    assert sorted(p.name for p in head_dir.iterdir()) == []  # no outputs, cache or store there
    assert out.count("features: loaded from cache") == 4, out[-3000:]


@pytest.mark.slow
@needs_ray
def test_ray_cluster_refuses_a_job_no_node_can_fit(
    ray_head: tuple[str, dict[str, str], Path], tmp_path: Path
) -> None:
    address, env, _ = ray_head
    cmd = train_cmd(
        "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
        "hydra.launcher.ray.remote.num_cpus=64", "seed=0,1", "tracking=none",
        f"cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert "error: no node of the Ray cluster can run a job" in proc.stderr
    assert "'CPU': 64.0" in proc.stderr and "num_cpus" in proc.stderr


# ----------------------------------------------------------------------------- MLflow server


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` (sqlite backend + artifact root) on a free port; stopped by its PID."""
    root = tmp_path / "server"
    root.mkdir()
    port = free_port()
    cmd = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", sqlite_uri(root / "mlflow.db"),
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(healthy, "mlflow server", 120, proc)
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_one_tracking_server_serves_a_parallel_sweep_and_a_backtest_elsewhere(
    mlflow_server: str, tmp_path: Path
) -> None:
    """Every job logs over HTTP to one server; a child is back-tested by run id from another
    folder (its checkpoint comes from the server's artifact store, not from a local path)."""
    work, other = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), other.mkdir()
    cmd = train_cmd(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "+experiment=asym_1_10,sym_1_1", "seed=0,1", f"tracking.uri={mlflow_server}",
        "hydra.sweep.dir=multirun/s",
    )  # fmt: skip
    run(cmd, work, clean_env(), timeout=480)
    parent, children = parent_and_children(mlflow_server)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 4
    client = MlflowClient(tracking_uri=mlflow_server)
    for c in children:
        names = {Path(a.path).name for a in client.list_artifacts(c.info.run_id, "checkpoints")}
        assert "last.pt" in names
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()
    child = children[0].info.run_id
    bt = [
        sys.executable, "-m", "hmarl.backtest", f"run_id={child}",
        f"tracking.uri={mlflow_server}", "random_timing=0", "n_bootstrap=0", "out=bt",
    ]  # fmt: skip
    out = run(bt, other, clean_env(), timeout=300)
    assert (other / "bt").is_dir(), out[-2000:]
    backtests = [
        r for r in client.search_runs([parent.info.experiment_id], "tags.kind = 'backtest'")
    ]
    assert len(backtests) == 1 and backtests[0].info.status == "FINISHED"


# ----------------------------------------------------------------------------- SLURM requeue

REQUEUE_TRAIN = ["trainer.episodes=40", "trainer.checkpoint_every=2", "trainer.eval_every=10"]


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@needs_submitit
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process in /proc")
def test_a_requeued_job_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """USR2 to a running job (what SLURM sends before the time limit or on preemption):
    submitit calls the launcher's checkpoint hook and restarts the job, which resumes from
    its last.pt; the final state equals an uninterrupted run's, in one FINISHED child run."""
    cache = f"cache_dir={tmp_path / 'cache'}"
    straight = tmp_path / "straight"
    run(
        train_cmd(*REQUEUE_TRAIN, cache, "tracking=none", f"hydra.run.dir={straight}"),
        tmp_path, clean_env(),
    )  # fmt: skip
    sweep = tmp_path / "sweep"
    cmd = train_cmd(
        "-m", "hydra/launcher=slurm_rehearsal", "seed=0", *REQUEUE_TRAIN, cache,
        f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        last = sweep / "0" / "checkpoints" / "last.pt"
        wait_for(last.is_file, "the job's first last.pt", 240, proc)
        ids = [d.name for d in (sweep / ".submitit").iterdir() if d.name.isdigit()]
        assert len(ids) == 1, ids
        controller = int(ids[0])  # a local job's id is its controller's pid
        tasks = children_of(controller)
        assert len(tasks) == 1, tasks
        os.kill(tasks[0], signal.SIGUSR2)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-4000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs, logs[-3000:]
    assert f"resumed from {last} at episode" in logs, logs[-3000:]
    requeued = torch.load(last, weights_only=True)
    uninterrupted = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    assert requeued["train_state"]["episode"] == 40
    for key, value in uninterrupted["policy"].items():
        assert torch.equal(requeued["policy"][key], value), key
    parent, children = parent_and_children(sqlite_uri(tmp_path / "mlflow.db"))
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"]  # the same run, continued


# ----------------------------------------------------------------------------- plain helpers


@needs_ray
def test_joining_a_cluster_drops_start_up_settings() -> None:
    from hmarl.train.ray_launcher import init_args

    start = {"address": "local", "num_cpus": 2, "object_store_memory": 78643200}
    assert init_args(start) == start  # starting one: every setting applies
    join = {"address": "auto", "num_cpus": 2, "object_store_memory": 78643200, "namespace": "x"}
    assert init_args(join) == {"address": "auto", "namespace": "x"}
    assert init_args({"address": "10.0.0.1:6379", "object_store_memory": None}) == {
        "address": "10.0.0.1:6379"
    }


@needs_ray
def test_a_job_must_fit_one_node() -> None:
    from hmarl.train.ray_launcher import RayResourcesError, check_fits, job_request

    assert job_request({"num_cpus": None}) == {"CPU": 1.0}  # Ray's default: one CPU a task
    request = job_request({"num_cpus": 4, "num_gpus": 0, "max_calls": 1})
    assert request == {"CPU": 4.0}
    check_fits(request, [{"CPU": 2.0}, {"CPU": 8.0}])
    with pytest.raises(RayResourcesError, match=r"asks for \{'CPU': 4.0\}.*\{'CPU': 2.0\}"):
        check_fits(request, [{"CPU": 2.0}, {"CPU": 1.0}])  # 3 CPUs in all, but no node has 4
    with pytest.raises(RayResourcesError, match="GPU"):
        check_fits(job_request({"num_cpus": 1, "num_gpus": 1}), [{"CPU": 8.0}])


@needs_submitit
def test_a_requeue_resumes_from_the_jobs_last_checkpoint(tmp_path: Path) -> None:
    from hmarl.train.sweep import resume_overrides

    given = ["seed=1", "trainer.resume=/old/last.pt", "cache_dir=/c"]
    assert resume_overrides(given, tmp_path) == given  # no last.pt yet: start again
    last = tmp_path / "checkpoints" / "last.pt"
    last.parent.mkdir()
    last.touch()
    assert resume_overrides(given, tmp_path) == [
        "seed=1",
        "cache_dir=/c",
        f"trainer.resume='{last}'",
    ]
