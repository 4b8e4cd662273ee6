"""Checkpoints: atomic writes, loads that never execute code.

A checkpoint holds plain types and tensors only (module and optimizer states, the schedule
counter, RNG states, the resolved config, the feature spec with scaler statistics, the data
fingerprint and versions), so ``torch.load(weights_only=True)`` reads it; a pickle that would
run code on load is refused instead.
"""

from __future__ import annotations

import io
import os
import pickle
import platform
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch

from hmarl import __version__
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.specialists import build_policy
from hmarl.config import model_from_record
from hmarl.io import atomic_write
from hmarl.tracking import CHECKPOINT_DIR

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unsafe, of another format or incompatible."""


# ----------------------------------------------------------------------------- the layout


class TrackingRecord(TypedDict):
    """Where the training run lives: a backtest of the checkpoint logs beside it."""

    uri: str | None  # absolute store URI (hmarl.tracking.absolute_store_uri)
    experiment: str | None
    run_id: str | None


class _Essentials(TypedDict):
    """What any reader needs: the network, its inputs and the rules it was trained under."""

    policy: dict[str, Any]  # HierarchicalPolicy.state_dict(): tensors
    model: dict[str, Any]  # hmarl.config.ModelConfig's fields: rebuilds the network
    env: dict[str, Any]  # hmarl.market.env.EnvParams' fields: the execution rules
    feature_spec: dict[str, Any]  # MarketData.feature_spec(): names, windows, train scalers
    train_state: dict[str, Any]  # hmarl.train.trainer.TrainState's fields
    data_fingerprint: str  # hmarl.data.fingerprint of the candles it was trained on


class Payload(_Essentials, total=False):
    """A checkpoint's content, as a training run writes it (:meth:`Trainer.save`).

    Why a TypedDict and not a dataclass: the file must load with
    ``torch.load(weights_only=True)``, which reads plain dicts only; the type makes the
    writer's and every reader's keys checkable (mypy) without a second representation.
    The keys below the essentials are optional for readers (a backtest needs none of them);
    resuming a run needs them all.
    """

    tracking: TrackingRecord
    task: str  # "quote" for a quoting checkpoint (hmarl/train/quote_task.py); absent: trading
    validation: dict[str, int | float | str]  # the stats of the evaluation that saved it
    optimizers: dict[str, dict[str, Any]]  # per-module Adam states
    rng: dict[str, Any]  # generator and torch RNG states (tensors)
    config: dict[str, Any]  # the resolved training config (hmarl.config.Config)
    data_splits: dict[str, list[int]]  # train / val / test decision-row ranges


class RunRecord(TypedDict):
    """The payload's entries that any training run writes, whatever its market or task
    (hmarl.train.trainer.run_record); the market's (env, feature_spec, data_fingerprint,
    data_splits) come beside them."""

    tracking: TrackingRecord
    validation: dict[str, int | float | str]
    policy: dict[str, Any]
    optimizers: dict[str, dict[str, Any]]
    train_state: dict[str, Any]
    rng: dict[str, Any]
    config: dict[str, Any]
    model: dict[str, Any]


class Checkpoint(Payload):
    """A checkpoint file: its payload, the format number and the versions that wrote it."""

    format: int
    versions: dict[str, str]


BACKTEST_KEYS = tuple(_Essentials.__annotations__)  # in their order, for messages
RESUME_KEYS = (*BACKTEST_KEYS, "optimizers", "rng")


def check_keys(
    ckpt: Mapping[str, Any], source: str, purpose: str, keys: Sequence[str] = BACKTEST_KEYS
) -> None:
    """Refuse a checkpoint that lacks what ``purpose`` needs, naming the missing keys."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{source} lacks {missing}: it cannot be {purpose}")


# ----------------------------------------------------------------------------- files


def versions() -> dict[str, str]:
    return {
        "hmarl": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def plain_stats(stats: dict[str, Any]) -> dict[str, int | float | str]:
    """Stats as builtin int / float / str, which ``weights_only`` loading accepts (numpy
    scalars it refuses)."""
    out: dict[str, int | float | str] = {}
    for key, value in stats.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bool, int, np.integer)):
            out[key] = int(value)
        else:
            out[key] = float(value)
    return out


def save_checkpoint(path: str | os.PathLike[str], payload: Payload) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous checkpoint under ``path`` untouched.
    """
    doc: Checkpoint = {"format": FORMAT, "versions": versions(), **payload}
    buffer = io.BytesIO()  # serialised in memory: a full disk then raises a plain OSError
    torch.save(doc, buffer)  # (torch.save to a path reports it as "basic_ios::clear")
    data = buffer.getvalue()
    return atomic_write(path, lambda p: p.write_bytes(data))


def _check_kind(p: Path) -> None:
    """Refuse a file that is no checkpoint at all before torch parses it (clear reasons)."""
    with p.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{p} is empty (0 bytes): not a checkpoint; was its copy cut short?")
    if head.startswith(b"PK") and not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"cannot read checkpoint {p}: a damaged or truncated PyTorch archive (the zip has no "
            "directory); use another copy, e.g. the run's MLflow artifact"
        )
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(
            f"{p} is not a checkpoint: neither a PyTorch archive (zip) nor a pickle (it starts "
            f"with {head!r}); pass a checkpoints/last.pt or best.pt written by hmarl.train"
        )


def checkpoint_file(path: str | os.PathLike[str], prefer: Sequence[str]) -> Path:
    """The checkpoint a path names: a file as it is; a run folder (or its ``checkpoints/``)
    by the first of ``prefer`` (e.g. ``best.pt``, ``last.pt``) that it holds.

    Why: the summary prints the run's output folder, and ``checkpoint=<that folder>`` used
    to answer "checkpoint not found" for a folder that exists.
    """
    p = Path(path)
    if not p.is_dir():
        return p
    for folder in (p / CHECKPOINT_DIR, p):
        for name in prefer:
            if (folder / name).is_file():
                return folder / name
    raise CheckpointError(
        f"{p} is a folder without {' or '.join(prefer)} (looked in {p / CHECKPOINT_DIR} and "
        f"{p}): pass a run's output folder or a checkpoint file, e.g. "
        f"{p / CHECKPOINT_DIR / prefer[0]}"
    )


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load with ``weights_only=True``: tensors and plain containers only, never code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    _check_kind(p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {p}: it is not a weights-only checkpoint (it would need to "
            f"execute code from the file to load). Details: {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # torch's parsers raise anything on a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {p}: the file is damaged or truncated ({reason})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an hmarl checkpoint of format {FORMAT}")
    return cast(Checkpoint, ckpt)


def checkpoint_episode(ckpt: Mapping[str, Any]) -> int | None:
    """The last episode whose update the checkpoint's weights include (None: untrained).

    ``train_state.episode`` is the next episode to run, for ``last.pt`` and ``best.pt``
    alike, so this labels the weights actually loaded; ``best_episode`` is the run's best
    so far, which for a ``last.pt`` is another episode's weights.
    """
    episode = int(ckpt.get("train_state", {}).get("episode", 0)) - 1
    return episode if episode >= 0 else None


def load_weights(
    module: torch.nn.Module | torch.optim.Optimizer, state: dict[str, Any], source: str
) -> None:
    """``module.load_state_dict(state)``; states of other shapes or names are a CheckpointError.

    Why: a checkpoint records its model sizes beside its weights; when the two disagree (an
    edited or foreign file) torch's error lists every tensor, not which file is wrong.
    """
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(
            f"the weights in {source} do not fit the model it records ({detail}); the file "
            "was altered or written by other code: use an unmodified checkpoint"
        ) from exc


def policy_from_checkpoint(
    ckpt: Mapping[str, Any], device: str | torch.device = "cpu", source: str = "the checkpoint"
) -> HierarchicalPolicy:
    """Rebuild the policy with the checkpoint's architecture and weights (eval mode)."""
    try:
        model = model_from_record(ckpt["model"])
        sizes = [len(s["names"]) for s in ckpt["feature_spec"].get("specialists", [])]
        policy = build_policy(len(ckpt["feature_spec"]["names"]), model, sizes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{source} records a model that cannot be built ({ckpt['model']}): {exc}"
        ) from exc
    load_weights(policy, ckpt["policy"], source)
    return policy.to(device).eval()
