"""The fault tour: start a training, SIGKILL it, resume into a new folder, backtest by run id.

Each step runs as a user runs it (``python -m ...`` in a subprocess, one sqlite store), and
the end checks that the right weights and labels come out: the resumed run carries the
``best.pt`` of the killed one (issue 12: the new folder and the MLflow run had only
``last.pt`` while the tag said best_episode=9), and the backtest by run id evaluates that
``best.pt`` labelled with its own episode.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_cli, tiny_overrides
from mlflow.tracking import MlflowClient

from hmarl.agent.checkpoint import CheckpointError, load_checkpoint
from hmarl.app.backend import backtests_of
from hmarl.io import atomic_write, folder_lock
from hmarl.report.compare import backtest_metrics_by_run, experiment_ids


def wait_for_checkpoints(folder: Path, episodes: int, proc: subprocess.Popen[str]) -> int:
    """Wait until ``last.pt`` holds >= ``episodes`` episodes and ``best.pt`` exists."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            done = int(load_checkpoint(folder / "last.pt")["train_state"]["episode"])
        except CheckpointError:  # not written yet
            done = 0
        if done >= episodes and (folder / "best.pt").exists():
            return done
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {episodes} episodes in {folder} within 240 s")


@pytest.mark.slow
def test_kill_resume_elsewhere_and_backtest_by_run_id(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = tiny_overrides(tmp_path, tracking=True)
    first = tmp_path / "first"

    # ---- start, then SIGKILL mid-run (no chance to close the MLflow run) ----
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmarl.train", *common, "trainer.episodes=100000",
         f"hydra.run.dir={first}"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_checkpoints(first / "checkpoints", 10, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    killed = load_checkpoint(first / "checkpoints" / "last.pt")["train_state"]
    run_id = killed["run_id"]
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves it open

    # ---- resume into a new folder ----
    second = tmp_path / "second"
    target = int(killed["episode"]) + 5
    resumed = run_cli(
        "hmarl.train", *common, f"trainer.episodes={target}",
        f"trainer.resume={first / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={second}",
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    best = load_checkpoint(second / "checkpoints" / "best.pt")
    best_episode = int(best["train_state"]["best_episode"])
    assert run.data.tags["best_episode"] == str(best_episode)
    assert best_episode >= int(killed["best_episode"])  # carried, or improved since
    if best_episode == int(killed["best_episode"]):  # carried: the same file
        assert (second / "checkpoints" / "best.pt").read_bytes() == (
            first / "checkpoints" / "best.pt"
        ).read_bytes()
    artifact = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path)))
    assert artifact.read_bytes() == (second / "checkpoints" / "best.pt").read_bytes()

    # ---- backtest by run id: best.pt, labelled with its own episode ----
    args = ["n_bootstrap=0", "plots=false", "fee_multipliers=[1.0]", "progress=false"]
    report = run_cli(
        "hmarl.backtest", f"run_id={run_id}", f"tracking.uri={uri}",
        f"cache_dir={tmp_path}/cache", f"out={tmp_path}/report", *args, cwd=tmp_path,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    meta = json.loads((tmp_path / "report" / "stats.json").read_text())["meta"]
    assert meta["checkpoint"] == f"runs:/{run_id}/checkpoints/best.pt"
    assert meta["checkpoint_episode"] == best_episode == meta["best_episode"]
    assert meta["train_run_id"] == run_id

    # ---- and last.pt is labelled with the last episode, not the best one ----
    last = run_cli(
        "hmarl.backtest", f"checkpoint={second / 'checkpoints' / 'last.pt'}", "tracking=none",
        f"cache_dir={tmp_path}/cache", f"out={tmp_path}/report_last", *args, cwd=tmp_path,
    )  # fmt: skip
    assert last.returncode == 0, last.stderr[-3000:]
    meta = json.loads((tmp_path / "report_last" / "stats.json").read_text())["meta"]
    assert meta["checkpoint_episode"] == target - 1 and meta["best_episode"] == best_episode
    weights = load_checkpoint(second / "checkpoints" / "last.pt")["policy"]
    same = all(torch.equal(weights[k], best["policy"][k]) for k in weights)
    assert same == (best_episode == target - 1)  # other weights, unless the last was the best


# ----------------------------------------------------------------------------- backtest folders

BT_ARGS = ("n_bootstrap=0", "fee_multipliers=[1.0]", "progress=false", "tracking=none",
           "random_timing=50")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracked tiny run (store ``<root>/mlflow.db``): its backtests can be read as the page
    and compare read them, by the training run's id."""
    root = tmp_path_factory.mktemp("tour")
    done = run_cli(
        "hmarl.train", *tiny_overrides(root, tracking=True), "trainer.episodes=6",
        f"hydra.run.dir={root}/run", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run" / "checkpoints" / "last.pt"


def store_of(ckpt: Path) -> str:
    return f"sqlite:///{ckpt.parents[2] / 'mlflow.db'}"


def backtest_cmd(ckpt: Path, out: Path, *extra: str, tracked: bool = False) -> list[str]:
    """``python -m hmarl.backtest`` of ``ckpt`` into ``out``; ``tracked``: in the run's store."""
    cache = ckpt.parents[2] / "cache"
    args = [a for a in BT_ARGS if not tracked or a != "tracking=none"]
    store = [f"tracking.uri={store_of(ckpt)}"] if tracked else []
    return [sys.executable, "-m", "hmarl.backtest", f"checkpoint={ckpt}", f"out={out}",
            f"cache_dir={cache}", *args, *store, *extra]  # fmt: skip


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_a_killed_backtest_leaves_the_previous_report_whole(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(
        backtest_cmd(tiny_checkpoint, out, "plots=false", "report_html=false", tracked=True),
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    before = folder_bytes(out)
    assert {"stats.json", "trades.csv", "backtest.log", "config.json"} <= set(before)
    assert not (out / ".hydra").exists()  # Hydra writes nothing into the report folder

    # ---- a second backtest into the same folder, SIGKILLed once its stats.json is written ----
    second = backtest_cmd(tiny_checkpoint, out, "plots=true", "seed=1", tracked=True)
    proc = subprocess.Popen(second, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not list(tmp_path.glob(".report.*.tmp/stats.json")):
            assert proc.poll() is None, "finished before it could be killed mid-write"
            assert time.monotonic() < deadline, "no staged stats.json within 240 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert folder_bytes(out) == before  # the earlier report, whole and unchanged
    (debris,) = tmp_path.glob(".report.*.tmp")  # the killed writer's staging folder
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["report"]

    # ---- the page and compare read backtests from the store: the killed one is not whole ----
    client = MlflowClient(store_of(tiny_checkpoint))
    train_id = load_checkpoint(tiny_checkpoint)["train_state"]["run_id"]
    runs = client.search_runs(experiment_ids(client), "tags.kind = 'backtest'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "RUNNING"]  # killed: RUNNING
    listed = backtests_of(client, [train_id])  # the page's table of this run's backtests
    assert listed["status"].tolist() == ["FINISHED"]  # the killed one is not linked (its
    assert listed["complete"].tolist() == [True]  # train_run_id tag comes with the report)
    test_metrics = backtest_metrics_by_run(client, experiment_ids(client), [train_id])
    whole = json.loads(before["stats.json"])["stats"]["strategy"]
    assert test_metrics.loc[train_id, "test_sharpe"] == pytest.approx(whole["Sharpe Ratio"])

    # ---- the next backtest into the folder removes the debris and replaces the report ----
    again = subprocess.run(backtest_cmd(tiny_checkpoint, out, "plots=false", "seed=2"),
                           cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert not debris.exists() and not list(tmp_path.glob(".report.*.tmp"))
    meta = json.loads((out / "stats.json").read_text())["meta"]
    assert meta["seed"] == 2 and (out / "backtest.log").read_text().count("backtest of ") == 1


@pytest.mark.slow
def test_a_second_writer_of_the_same_folder_is_refused(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with folder_lock(out, "out"):  # a backtest writing `out` right now
        proc = subprocess.run(backtest_cmd(tiny_checkpoint, out), cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: out={out}: another process (pid {os.getpid()}) is writing")
    assert "choose another out=" in line
    assert not out.exists() or not any(out.iterdir())  # at most Hydra's empty run dir


def test_debris_of_killed_writes_is_removed_and_live_temporaries_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    stale = [tmp_path / f".best.pt.{pid}.ab12cd34.tmp", tmp_path / f".last.pt.{pid}.x9.tmp"]
    live = tmp_path / f".best.pt.{os.getpid()}.zz99.tmp"
    other = tmp_path / f".notes.txt.{pid}.q1.tmp"  # another name: not this write's debris
    for p in [*stale, live, other]:
        p.write_bytes(b"half a checkpoint")
    atomic_write(tmp_path / "best.pt", lambda p: p.write_bytes(b"whole"))
    atomic_write(tmp_path / "last.pt", lambda p: p.write_bytes(b"whole"))
    assert not any(p.exists() for p in stale) and live.exists() and other.exists()
    assert (tmp_path / "best.pt").read_bytes() == b"whole"


@pytest.mark.parametrize(("key", "use"), [("out", "atomic_folder"), ("cache_dir", "staged")])
def test_read_only_folders_are_bad_input_naming_the_key(tmp_path: Path, key: str, use: str) -> None:
    from test_faults import in_small_mount

    code = f"""
import sys
from hmarl.io import atomic_folder, staged_folder, UnwritableOutputError
target = sys.argv[1] + "/sub/report"
try:
    with {"atomic_folder" if use == "atomic_folder" else "staged_folder"}(target, "{key}"):
        pass
except UnwritableOutputError as exc:
    print(isinstance(exc, ValueError), exc)
"""
    proc = in_small_mount(tmp_path, code, ro=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bad_input, message = proc.stdout.strip().split(" ", 1)
    assert bad_input == "True"  # ValueError: the entry points exit 2
    assert message.startswith(f"cannot write {key}={tmp_path / 'mnt'}/sub/report: ")
    assert f"choose a writable {key}=" in message


@pytest.mark.slow
@pytest.mark.parametrize("key", ["out", "cache_dir"])
@pytest.mark.parametrize("how", ["chmod", "read-only mount"])
def test_a_backtest_into_a_read_only_folder_is_bad_input_naming_the_key(
    tiny_checkpoint: Path, tmp_path: Path, key: str, how: str
) -> None:
    """``out=`` or ``cache_dir=`` in a folder nobody may write: one ``error:`` line naming the key
    and the path, exit 2 (it was ``[Errno 30] Read-only file system``, exit 1)."""
    from test_faults import in_small_mount

    place = {"out": "{root}/sub/report", "cache_dir": "{root}/sub/cache"}[key]
    report = tmp_path / "report"  # where the report goes when `out` is not the read-only one

    def command(target: Path) -> list[str]:
        cmd = backtest_cmd(tiny_checkpoint, report, "plots=false")
        return [f"{key}={target}" if a.startswith(f"{key}=") else a for a in cmd]

    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("running as root: chmod 0555 does not stop root from writing")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = Path(place.format(root=ro))
        try:
            proc = subprocess.run(command(target), cwd=tmp_path, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        finally:
            ro.chmod(0o755)
        code, err = proc.returncode, proc.stderr
    else:  # a read-only tmpfs binds root too (in a user and mount namespace of its own)
        target = Path(place.format(root=tmp_path / "mnt"))
        code_text = (
            "import subprocess, sys\n"
            f"p = subprocess.run({command(target)!r}, cwd={str(tmp_path)!r}, capture_output=True,"
            " text=True)\n"
            "sys.stdout.write(f'{p.returncode}\\n' + p.stderr)\n"
        )
        proc = in_small_mount(tmp_path, code_text, ro=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rc, err = proc.stdout.split("\n", 1)
        code = int(rc)
    assert code == 2, err[-2000:]
    (line,) = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot write {key}={target.parents[1]}"), line  # or below
    assert f"choose a writable {key}=" in line
    assert not report.exists()  # nothing half-written where the report would go


@pytest.mark.slow
def test_a_cache_build_killed_mid_write_leaves_debris_the_next_build_removes(
    tmp_path: Path,
) -> None:
    """SIGKILL while a cache entry is being built: its staging folder stays (nothing else can
    remove it) but no entry is visible; the next build of the same data removes the debris
    and writes the entry whole."""
    cache = tmp_path / "cache"
    build = (
        "import sys; from hmarl.config import DataConfig; "
        "from hmarl.market.market_data import market_for_config; "
        "market_for_config(DataConfig(n_candles=int(sys.argv[1])), feature_names=[], "
        "macro_window=492, micro_window=60, cache_dir=sys.argv[2], log=None)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", build, "300000", str(cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not list(cache.glob(".market-*.tmp/*")):  # building: files in its staging folder
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr}"
            assert time.monotonic() < deadline, "no staging folder within 240 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    (debris,) = cache.glob(".market-*.tmp")
    assert not list(cache.glob("market-*"))  # no entry visible: readers build their own
    again = subprocess.run([sys.executable, "-c", build, "300000", str(cache)], env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert not debris.exists() and not list(cache.glob(".market-*"))
    (entry,) = cache.glob("market-*")
    assert (entry / "meta.json").is_file()
