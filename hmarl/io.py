"""Atomic file writes: every output goes to a temporary file beside its target, then is renamed.

Why: a crash, a full disk or an interrupt mid-write must never leave a half-written checkpoint,
cache entry or report under the final name, nor destroy the previous good one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the process umask.

    ``mkstemp`` creates its file 0o600 (private), and a rename keeps that mode, so reports
    and checkpoints would be unreadable to the user's group; they get the usual mode instead.
    The umask can only be read by setting it, so that happens under a lock.
    """
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_LOW_SPACE = 1 << 20  # bytes: below this after a failed write, the disk is the likely cause


class OutputError(OSError):
    """An output that could not be written: the message names the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def _output_error(target: Path, exc: BaseException) -> OutputError | None:
    """A clear error for a write that failed for lack of space or a read-only folder.

    Some writers hide the cause (``torch.save`` to a path says "basic_ios::clear: iostream
    error"), so a failed write on a device with under 1 MiB free also counts as full.
    """
    code = exc.errno if isinstance(exc, OSError) else None
    try:
        free: int | None = shutil.disk_usage(target.parent).free
    except OSError:
        free = None
    if code in _FULL or (free is not None and free < _LOW_SPACE):
        left = "" if free is None else f", {free} bytes free"
        return OutputError(
            errno.ENOSPC,
            f"disk full: cannot write {target} (no space left on the device of "
            f"{target.parent}{left}); free some space and re-run; the previous {target.name}, "
            "if any, is unchanged",
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(
            code,
            f"cannot write {target}: {os.strerror(code)} in {target.parent}; choose a "
            "writable output folder",
        )
    return None


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place.

    The file ends with the mode a plain ``open()`` would give it (see :func:`file_mode`). A full
    disk or a read-only folder raises :class:`OutputError` naming ``path``; the temporary file
    is removed and a previous file under ``path`` stays as it was.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode())
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, target)
    except Exception as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        clear = _output_error(target, exc)
        if clear is not None:
            raise clear from exc
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def append_text(path: str | os.PathLike[str], text: str) -> Path:
    """Append ``text`` to a log file in one write (a log grows; it is never replaced).

    Used for ``train.log`` / ``backtest.log``, which Hydra may hold open for its own logging.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return target


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers (``NaN`` breaks strict parsers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Strict JSON: non-finite numbers become null (undefined), see :func:`_json_safe`."""
    text = json.dumps(_json_safe(doc), indent=2, default=str, allow_nan=False)
    return write_text(path, text + "\n")


def write_csv(path: str | os.PathLike[str], frame: pd.DataFrame, index: bool = True) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=index))


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_parquet(p, index=True))


def write_png(path: str | os.PathLike[str], fig: Figure, dpi: int = 110) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
