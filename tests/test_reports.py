"""What a run tells its user: file modes, strict JSON, the loader's time-zone line, the
training summary (wall time, speed, flags) kept in train.log, the checkpoint's store."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from helpers import compose_config, tiny_overrides
from mlflow.tracking import MlflowClient

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.data.reading import load_candles
from hmarl.io import write_json, write_text
from hmarl.stats.metrics import outcome_flags
from hmarl.tracking import absolute_store_uri
from hmarl.train.trainer import Throughput, run_flags, train


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_json_is_strict_nan_and_inf_are_null(tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.5], "c": "x"})
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5], "c": "x"}
    assert "NaN" not in path.read_text()


@pytest.mark.parametrize(
    ("stamps", "said"),
    [
        (["2024-01-01T00:00:00+00:00", "2024-01-01T00:05:00+00:00"], "with UTC offsets"),
        (["2024-01-01T00:00:00Z", "2024-01-01T00:05:00Z"], "with UTC offsets"),
        (["2024-01-01 00:00:00", "2024-01-01 00:05:00"], "2 without a UTC offset, read as UTC"),
    ],
)
def test_loader_says_naive_only_for_naive_times(
    tmp_path: Path, stamps: list[str], said: str
) -> None:
    rows = [f"{t},1,2,0.5,1.5,10" for t in stamps]
    (tmp_path / "c.csv").write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows))
    lines: list[str] = []
    load_candles(tmp_path / "c.csv", log=lines.append)
    iso = [line for line in lines if "ISO 8601" in line]
    assert iso and said in iso[0], lines


def test_throughput_is_total_steps_over_total_time() -> None:
    speed = Throughput()
    speed.add(1000, 1000.0)  # 1 s
    speed.add(1000, 250.0)  # 4 s
    assert speed.mean == pytest.approx(2000 / 5)


def test_training_summary_flags_and_store(tmp_path: Path) -> None:
    cfg = compose_config(
        *tiny_overrides(tmp_path, "trainer.episodes=3", "trainer.eval_every=1", tracking=True)
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.best_checkpoint is not None and result.run_id is not None
    best = load_checkpoint(result.best_checkpoint)
    assert best["tracking"] == {
        "uri": absolute_store_uri(cfg.tracking.uri),
        "experiment": cfg.tracking.experiment,
        "run_id": result.run_id,
    }
    assert best["validation"]["Sharpe Ratio"] == pytest.approx(result.state.best_value)
    assert result.best_val["Sharpe Ratio"] == result.state.best_value
    assert result.flags == outcome_flags(result.best_val, cfg.trainer.min_val_trades)
    assert result.wall_s > 0 and result.steps_per_s > 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"wall time {result.wall_s:.1f} s" in log and "env-steps/s" in log
    assert "random-timing percentile" in log
    if "no_trades" in result.flags:
        assert "no trade on validation: no edge found at these costs" in log
    if "few_trades" in result.flags:
        assert f"selection rests on {result.best_val['# Trades']} trade" in log
    tags = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(result.run_id).data.tags
    # a run without an edge says so among its flags (a no-edge run read "flags: none")
    assert tags["flags"] == (",".join(run_flags(result.flags, result.state.best_edge)) or "none")
    assert ("no_edge_found_in_training" in tags["flags"]) == (not result.state.best_edge)
    assert tags["edge_misses"] != "none" or result.state.best_edge
    assert (result.best_checkpoint.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
