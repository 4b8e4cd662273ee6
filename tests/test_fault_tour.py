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
