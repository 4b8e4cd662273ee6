"""Test helpers: typed configs composed from conf/, tiny runs, checkpoint comparison, the CLI.

Plain functions rather than fixtures because module-scoped fixtures (a trained run shared by
a module's tests) and ``app_store.py`` call them too; fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]

TINY = (
    "data.n_candles=6000",
    "features.macro_window=48",
    "features.micro_window=12",
    "trainer.n_envs=4",
    "trainer.episode_len=32",
    "trainer.eval_every=5",
    "trainer.checkpoint_every=5",
)


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (scripts are not a package), for its main()."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_config(*overrides: str):  # -> hmarl.config.Config
    """The typed config composed from conf/ exactly as the entry point does."""
    from hydra import compose, initialize_config_dir

    from hmarl.config import conf_dir, register_configs, to_config

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=list(overrides)))


def tiny_overrides(tmp_path: Path, *extra: str, tracking: bool = False) -> list[str]:
    """A small, fast market and model run whose files all live under tmp_path."""
    store = [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"] if tracking else ["tracking=none"]
    return [*TINY, f"cache_dir={tmp_path}/cache", *store, *extra]


def checkpoint_tensors(path: Path) -> dict[str, Any]:
    """Weights, optimizer states and the sampling generator's state of a checkpoint."""
    import torch

    from hmarl.agent.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    out = {f"policy.{k}": v for k, v in ck["policy"].items()}
    for name, sd in ck["optimizers"].items():
        for pid, st in sd["state"].items():
            for k, v in st.items():
                out[f"opt.{name}.{pid}.{k}"] = torch.as_tensor(v)
    out["rng"] = ck["rng"]["generator"]
    return out


def assert_identical(a: Path, b: Path) -> None:
    """Two checkpoints hold bit-identical tensors (the reproducibility and resume tests)."""
    import torch

    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


class Interrupted(Exception):
    """Raised by :func:`full_and_resumed` to stop a run part-way, as a crash or Ctrl-C would."""


def full_and_resumed(tmp_path: Path, overrides: list[str], episodes: int, stop: int):
    """Train ``episodes`` in one go, and the same run interrupted after episode ``stop`` (an
    exception right after its checkpoint there) then resumed to ``episodes``: both results.

    The interrupted run has the full run's config (only ``checkpoint_every`` differs, which
    does not touch training): schedules over ``trainer.episodes``, like the exploration
    decay, are then the same, as for a real interruption.
    """
    from hmarl.train.trainer import train

    def run(name: str, *extra: str, on_episode: Any = None):  # -> TrainResult
        cfg = compose_config(*overrides, f"trainer.episodes={episodes}", *extra)
        return train(cfg, tmp_path / name, progress=False, on_episode=on_episode)

    def interrupt(episode: int, *_: Any) -> None:
        if episode == stop - 1:  # after episode `stop`'s checkpoint (checkpoint_every=stop)
            raise Interrupted(f"stopped after {stop} episodes")

    full = run("full")
    try:
        run("part", f"trainer.checkpoint_every={stop}", on_episode=interrupt)
    except Interrupted:
        pass
    else:
        raise AssertionError("the interrupted run was not interrupted")
    last = tmp_path / "part" / "checkpoints" / "last.pt"
    resumed = run("resumed", f"trainer.resume={last}")
    return full, resumed


def run_cli(module: str, *args: str, cwd: Path, timeout: int = 300):  # -> CompletedProcess[str]
    """``python -m <module> <args>`` from this checkout, as a user runs it, in ``cwd``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
