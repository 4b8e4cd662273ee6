"""Checkpoints: atomic writes, loads that never execute code.

A checkpoint holds plain types and tensors only (module and optimizer states, the schedule
counter, RNG states, the resolved config, the feature spec with scaler statistics, the data
fingerprint and versions), so ``torch.load(weights_only=True)`` reads it; a pickle that would
run code on load is refused instead.
"""

from __future__ import annotations

import os
import pickle
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hmarl import __version__
from hmarl.config import ModelConfig
from hmarl.io import atomic_write
from hmarl.policy import HierarchicalPolicy

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unsafe, of another format or incompatible."""


def versions() -> dict[str, str]:
    return {
        "hmarl": __version__,
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def absolute_store_uri(uri: str) -> str:
    """``uri`` with a relative sqlite path made absolute (other URIs unchanged).

    A checkpoint records where its training run lives; ``sqlite:///mlflow.db`` names a
    different file from every other working directory, so the path is resolved first.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_absolute():
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


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


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous checkpoint under ``path`` untouched.
    """
    doc = {"format": FORMAT, "versions": versions(), **payload}
    return atomic_write(path, lambda p: torch.save(doc, p))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, never code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {p}: it is not a weights-only checkpoint (it would need to "
            f"execute code from the file to load). Details: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an hmarl checkpoint of format {FORMAT}")
    return ckpt


def policy_from_checkpoint(
    ckpt: dict[str, Any], device: str | torch.device = "cpu"
) -> HierarchicalPolicy:
    """Rebuild the policy with the checkpoint's architecture and weights (eval mode)."""
    model = ModelConfig(**ckpt["model"])
    policy = HierarchicalPolicy(len(ckpt["feature_spec"]["names"]), **asdict(model))
    policy.load_state_dict(ckpt["policy"])
    return policy.to(device).eval()
