"""Resume from the checkpoint alone: its config, data reference and store are inside it.

Why: a resumed run must train the same model on the same data with the same schedule, and
the checkpoint already holds that config. Asking the user to repeat the original overrides
(``data=csv data.path=... features.macro_window=...``) made ``trainer.resume=<last.pt>`` alone
fail with "the data differs (fingerprint)". So the entry point starts from the checkpoint's
config and lays over it only the keys the user named on the command line (for example
``trainer.episodes=400`` to train longer); :meth:`hmarl.train.trainer.Trainer` still refuses a
model, features or data that differ from the checkpoint's.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hmarl.agent.checkpoint import CheckpointError, checkpoint_file, load_checkpoint
from hmarl.config import Config
from hmarl.tracking import BEST_CHECKPOINT, CHECKPOINT_DIR, LAST_CHECKPOINT

RESUME_KEY = "trainer.resume"
# overrides that select an experiment overlay: the checkpoint's config already holds its values
_OVERLAY_KEYS = ("experiment",)


def resume_command(last: Path) -> str:
    """The one command that continues a run in its own folder from its ``last.pt``."""
    last = last.resolve()
    run_dir = last.parent.parent if last.parent.name == CHECKPOINT_DIR else last.parent
    return (
        f"python -m hmarl.train {RESUME_KEY}={shlex.quote(str(last))} "
        f"hydra.run.dir={shlex.quote(str(run_dir))}"
    )


def override_key(override: str) -> str | None:
    """The config key an override sets (``+data.columns.close=x`` -> ``data.columns.close``);
    None for Hydra's own keys, deletions and experiment overlays."""
    if "=" not in override or override.startswith("~"):
        return None
    key = override.split("=", 1)[0].lstrip("+")
    if key.startswith("hydra.") or key.split("@")[0] in _OVERLAY_KEYS:
        return None
    return key.split("@")[0]


def resumed_config(dcfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config of a resumed run: the checkpoint's, with the command line's keys laid over.

    ``trainer.resume`` may name a checkpoint file or a run's output folder (its ``last.pt``).
    The store is the one the checkpoint's run lives in (an absolute URI in the checkpoint)
    unless ``tracking.*`` is given.
    """
    path = checkpoint_file(str(dcfg.trainer.resume), (LAST_CHECKPOINT, BEST_CHECKPOINT))
    ckpt = load_checkpoint(path)
    saved: dict[str, Any] = dict(ckpt.get("config") or {})
    if not saved:
        raise CheckpointError(
            f"{path} holds no config to resume from (written by an older hmarl): repeat the "
            f"run's original overrides with {RESUME_KEY}={path}"
        )
    try:
        base = OmegaConf.merge(OmegaConf.structured(Config), saved)
    except Exception as exc:  # a key this version no longer has, or a changed type
        raise CheckpointError(
            f"cannot resume {path}: its config does not fit this version's schema ({exc}); "
            f"repeat the run's original overrides with {RESUME_KEY}={path}"
        ) from exc
    assert isinstance(base, DictConfig)
    named = [k for k in (override_key(o) for o in overrides) if k is not None]
    record: dict[str, Any] = dict(ckpt.get("tracking") or {})
    if record.get("uri") and not any(k.split(".")[0] == "tracking" for k in named):
        base.tracking.uri = record["uri"]
    for key in named:
        OmegaConf.update(base, key, OmegaConf.select(dcfg, key), merge=False)
    base.trainer.resume = str(path)
    return base


def describe_data(config: dict[str, Any] | None) -> str:
    """The data a config reads, in words: ``data=csv data.path=my.csv`` or the synthetic seed."""
    data = dict((config or {}).get("data") or {})
    source = str(data.get("source", "?"))
    if source == "synthetic":
        return (
            f"data=synthetic data.n_candles={data.get('n_candles')} "
            f"data.market_seed={data.get('market_seed')}"
        )
    extra = [f"data.{k}={data[k]}" for k in ("start", "end", "resample") if data.get(k)]
    files = f"data.paths=[{','.join(data['paths'])}]" if data.get("paths") else None
    return " ".join([f"data={source}", files or f"data.path={data.get('path')}", *extra])
