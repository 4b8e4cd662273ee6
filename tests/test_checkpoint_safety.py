"""Checkpoints never execute code when loaded, through the library and through the CLI.

Each malicious file below is first shown to really run its payload under an unsafe
``torch.load(weights_only=False)`` (so the test could fail), then shown to be refused by
:func:`hmarl.agent.checkpoint.load_checkpoint` and the backtest without the payload running.
"""

from __future__ import annotations

import builtins
import os
import pickle
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hmarl.agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hmarl.backtest.inputs import load_backtest_checkpoint

REPO = Path(__file__).resolve().parents[1]


class SystemPayload:
    """Unpickling calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class ExecPayload:
    """Unpickling calls ``exec`` with Python that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _torch_file(path: Path, payload: object) -> None:
    torch.save({"format": 1, "policy": payload, "model": {}}, path)


def _pickle_file(path: Path, payload: object) -> None:
    with path.open("wb") as fh:
        pickle.dump({"format": 1, "policy": payload}, fh, protocol=2)


def _unsafe_load(path: Path) -> None:
    """What the project never does: a full unpickle of an untrusted file."""
    if zipfile.is_zipfile(path):
        torch.load(path, weights_only=False)
    else:
        with path.open("rb") as fh:
            pickle.load(fh)  # the point of the test


PAYLOADS = [SystemPayload, ExecPayload]
WRITERS = [_torch_file, _pickle_file]


@pytest.fixture(
    params=[(p, w) for p in PAYLOADS for w in WRITERS],
    ids=lambda pw: f"{pw[0].__name__}-{pw[1].__name__}",
)
def evil(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(malicious checkpoint, marker its payload would create)."""
    payload_cls, write = request.param
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    write(path, payload_cls(marker))
    assert not marker.exists()
    return path, marker


def test_crafted_checkpoint_really_runs_code_when_loaded_unsafely(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    _unsafe_load(path)
    assert marker.exists()


@pytest.mark.parametrize(
    "load",
    [load_checkpoint, lambda p: load_backtest_checkpoint(str(p), None, "sqlite:///unused.db")],
    ids=["load_checkpoint", "load_backtest_checkpoint"],
)
def test_crafted_checkpoint_is_refused_without_running(
    evil: tuple[Path, Path], load: Callable[[Path], Any]
) -> None:
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt.*weights-only"):
        load(path)
    assert not marker.exists()


def test_backtest_cli_refuses_crafted_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    _torch_file(path, SystemPayload(marker))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hmarl.backtest",
            f"checkpoint={path}",
            "tracking=none",
            "out=report",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to load" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "report" / "stats.json").exists()


def test_other_bad_files_fail_with_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an hmarl checkpoint"):
        load_checkpoint(foreign)


def test_saved_checkpoint_round_trips_through_the_backtest_loader(tmp_path: Path) -> None:
    payload = {
        "policy": {"w": torch.arange(4.0)},
        "model": {"macro_dim": 8},
        "env": {"commission": 0.001},
        "feature_spec": {"names": ["ret_1"], "macro_window": 4, "micro_window": 2, "scalers": {}},
        "train_state": {"run_id": None},
        "data_fingerprint": "abc",
    }
    path = save_checkpoint(tmp_path / "ok.pt", payload)
    ckpt, source = load_backtest_checkpoint(str(path), None, "sqlite:///unused.db")
    assert source == str(path.resolve())
    assert torch.equal(ckpt["policy"]["w"], torch.arange(4.0))
    assert ckpt["feature_spec"]["names"] == ["ret_1"]
    incomplete = save_checkpoint(tmp_path / "incomplete.pt", {"policy": {}})
    with pytest.raises(CheckpointError, match=r"lacks \['model', 'env'"):
        load_backtest_checkpoint(str(incomplete), None, "sqlite:///unused.db")


def test_saved_checkpoint_loads_with_plain_weights_only(tmp_path: Path) -> None:
    """ARCHITECTURE.md: checkpoints are loadable with ``torch.load(weights_only=True)``."""
    path = save_checkpoint(tmp_path / "ok.pt", {"policy": {"w": torch.ones(2)}})
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == 1 and set(ckpt["versions"]) >= {"torch", "numpy", "hmarl"}
