"""A small MLflow store for the page's tests: tiny training runs tracked to sqlite under tmp."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers import compose_config, tiny_overrides


@dataclass
class Store:
    root: Path
    uri: str
    run_id: str  # logged checkpoints
    bare_run_id: str | None  # trained with tracking.log_checkpoints=false


def make_store(root: Path, with_bare_run: bool = False) -> Store:
    """Train a 2-episode run (and optionally one that logs no checkpoints) into root/mlflow.db."""
    from hmarl.train.trainer import train

    common = ("trainer.episodes=2", "trainer.eval_every=1")
    cfg = compose_config(*tiny_overrides(root, *common, tracking=True))
    run = train(cfg, root / "run", progress=False)
    assert run.run_id
    bare_id = None
    if with_bare_run:
        bare_cfg = compose_config(
            *tiny_overrides(root, *common, "tracking.log_checkpoints=false", tracking=True)
        )
        bare_id = train(bare_cfg, root / "bare", progress=False).run_id
    return Store(root, cfg.tracking.uri, run.run_id, bare_id)
