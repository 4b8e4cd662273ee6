"""Atomic file writes: every output goes to a temporary file beside its target, then is renamed.

Why: a crash, a full disk or an interrupt mid-write must never leave a half-written checkpoint,
cache entry or report under the final name, nor destroy the previous good one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    return write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


def write_csv(path: str | os.PathLike[str], frame: pd.DataFrame, index: bool = True) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=index))


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_parquet(p, index=True))


def write_png(path: str | os.PathLike[str], fig: Figure, dpi: int = 110) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
