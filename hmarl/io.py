"""Atomic file writes: every output goes to a temporary file beside its target, then is renamed.

Why: a crash, a full disk or an interrupt mid-write must never leave a half-written checkpoint,
cache entry or report under the final name, nor destroy the previous good one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
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
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_LOW_SPACE = 1 << 20  # bytes: below this after a failed write, the disk is the likely cause


class OutputError(OSError):
    """An output that could not be written: the message names the file and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


class UnwritableOutputError(OutputError, ValueError):
    """An output folder that is read-only or not ours: bad input (exit 2), choose another."""


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir()``: 0o777 less the umask."""
    files = file_mode()
    return files | ((files & 0o444) >> 2)


def _output_error(target: Path, exc: BaseException, key: str | None = None) -> OutputError | None:
    """A clear error for a write that failed for lack of space or a read-only folder.

    Some writers hide the cause (``torch.save`` to a path says "basic_ios::clear: iostream
    error"), so a failed write on a device with under 1 MiB free also counts as full.
    """
    code = exc.errno if isinstance(exc, OSError) else None
    try:
        free: int | None = shutil.disk_usage(target.parent).free
    except OSError:
        free = None
    if code in _UNWRITABLE:
        where = f"{key}={target}" if key else str(target)
        fix = f"choose a writable {key}=" if key else "choose a writable output folder"
        return UnwritableOutputError(
            code,
            f"cannot write {where}: {os.strerror(code)} in {target.parent}; {fix} "
            "(or make that folder writable)",
        )
    if code in _FULL or (free is not None and free < _LOW_SPACE):
        left = "" if free is None else f", {free} bytes free"
        return OutputError(
            errno.ENOSPC,
            f"disk full: cannot write {target} (no space left on the device of "
            f"{target.parent}{left}); free some space and re-run; the previous {target.name}, "
            "if any, is unchanged",
        )
    return None


def unwritable_output(exc: BaseException, key: str | None = None) -> BaseException:
    """``exc`` as :class:`UnwritableOutputError` (bad input, naming ``key``) when it is an OS
    error of writing a read-only or foreign path that no writer here caught, else ``exc``.

    Why: Hydra creates a run's output folder (``out=`` of a backtest) before any of our code
    runs, so a read-only one surfaced as ``[Errno 30] Read-only file system: '<dir>'``, exit 1.
    """
    if (
        isinstance(exc, OSError)
        and not isinstance(exc, OutputError)
        and exc.errno in _UNWRITABLE
        and exc.filename
    ):
        clear = _output_error(Path(exc.filename), exc, key)
        if clear is not None:
            clear.__cause__ = exc
            return clear
    return exc


# ----------------------------------------------------------------------------- temporaries

TMP_SUFFIX = ".tmp"
_ORPHAN_AGE_S = 3600.0  # a temporary without a writer pid (older releases) is debris after this


def temporary_prefix(name: str) -> str:
    """``.<name>.<pid>.``: every temporary of this project starts so and ends ``.tmp``.

    The writer's pid in the name is what lets a later writer tell debris (its writer is gone,
    e.g. killed with SIGKILL mid-write) from a temporary that another process is still writing.
    """
    return f".{name}.{os.getpid()}."


_TEMPORARY = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+))?\.(?P<rand>[^.]+)\.tmp$")


def _writer_alive(entry: Path, pid_text: str | None) -> bool:
    """Whether the process that made temporary ``entry`` may still be writing it."""
    if pid_text is None:  # no pid (an older release's temporary): judge by age
        try:
            return time.time() - entry.lstat().st_mtime < _ORPHAN_AGE_S
        except OSError:
            return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """Remove the debris of earlier writes of ``name`` in ``folder``; returns what went.

    Only this project's own pattern, ``.<name>.<pid>.<random>.tmp`` (files or folders; ``name``
    may be a glob such as ``market-*``), only in ``folder``, and only when its writer is gone:
    a kill during an atomic write leaves such a temporary, and nothing else would remove it.
    A temporary that a live process is writing (a parallel job) is left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).glob(f".{name}.*{TMP_SUFFIX}"))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _writer_alive(entry, match["pid"]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # a read-only folder: the write itself will say so
        removed.append(entry)
    return removed


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], key: str | None = None
) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place.

    The file ends with the mode a plain ``open()`` would give it (see :func:`file_mode`). A full
    disk or a read-only folder raises :class:`OutputError` naming ``path``; the temporary file
    is removed and a previous file under ``path`` stays as it was. Debris of earlier writes of
    the same name whose writer was killed is removed first (:func:`remove_stale_temporaries`).
    ``key``: the config key that chose the folder, named in those messages.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target.parent, target.name)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=temporary_prefix(target.name), suffix=TMP_SUFFIX
        )
        os.fchmod(fd, file_mode())
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, target)
    except Exception as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        clear = _output_error(target, exc, key)
        if clear is not None:
            raise clear from exc
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


# ----------------------------------------------------------------------------- folders


@contextmanager
def _named_errors(target: Path, key: str | None) -> Iterator[None]:
    """An OS error while preparing ``target``, re-raised as :func:`_output_error`'s clear one."""
    try:
        yield
    except OSError as exc:
        clear = _output_error(target, exc, key)
        if clear is not None:
            raise clear from exc
        raise


class FolderInUseError(ValueError):
    """Another process is writing the same output folder (bad input: choose another folder)."""


def lock_path(target: Path) -> Path:
    """The lock file of output folder ``target``: ``.<name>.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


@contextmanager
def folder_lock(target: Path, key: str = "out") -> Iterator[None]:
    """Hold the writer's lock of ``target`` or refuse at once, naming ``key`` and the holder.

    An advisory ``flock`` on a file beside the folder: the kernel drops it when the holder
    exits, however it exits, so a killed writer never leaves the folder locked.
    """
    lock = lock_path(target)
    with _named_errors(target, key):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise FolderInUseError(
                f"{key}={target}: another process (pid {holder}) is writing this folder now; "
                f"wait for it to finish or choose another {key}="
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the complete folder ``tmp`` to ``target``, replacing any previous one.

    A folder cannot be renamed over a non-empty one, so the previous folder is first renamed
    aside (to a temporary name that :func:`remove_stale_temporaries` recognises) and removed
    after: at every instant ``target`` is the previous whole folder, the new whole folder, or
    (between the two renames) absent; never a mixture.
    """
    old: Path | None = None
    if target.exists() or target.is_symlink():
        old = Path(
            tempfile.mkdtemp(
                dir=target.parent, prefix=temporary_prefix(target.name), suffix=TMP_SUFFIX
            )
        )
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` unless another writer placed ``target`` first (it wins)."""
    try:
        os.rename(tmp, target)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_folder(
    path: str | os.PathLike[str], key: str = "out", replace: bool = True
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block completes, it becomes ``path``.

    Why: a backtest writes a dozen files; killed half-way, a folder written in place would hold
    a new ``stats.json`` beside an earlier ``trades.csv``, and readers would take it as whole.
    Here ``path`` stays the previous whole folder until the new one is complete
    (:func:`_swap_into_place`); on any failure the temporary folder goes. Hold
    :func:`folder_lock` around it (:func:`atomic_folder` does both): debris of killed writers
    of ``path`` is removed first, which is only safe while no other writer can be at work.
    ``key`` is the config key that chose ``path``, for messages. ``replace=False`` (a cache
    entry, whose twin writers write the same content): a folder that another writer placed
    meanwhile is kept and the temporary one dropped, so no lock is needed.
    """
    target = Path(path)
    remove_stale_temporaries(target.parent, target.name)
    with _named_errors(target, key):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(
                dir=target.parent, prefix=temporary_prefix(target.name), suffix=TMP_SUFFIX
            )
        )
        os.chmod(tmp, dir_mode())
    try:
        yield tmp
        (_swap_into_place if replace else _publish)(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike[str], key: str = "out") -> Iterator[Path]:
    """:func:`staged_folder` under the writer's lock (:func:`folder_lock`): whole or absent."""
    with folder_lock(Path(path), key), staged_folder(path, key) as tmp:
        yield tmp


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


def _utc_text(values: pd.DatetimeIndex) -> pd.Index | None:
    """UTC timestamps as the text pandas writes them (``2024-01-01 00:05:00+00:00``), or None.

    Why: pandas formats a tz-aware timestamp for CSV in per-element code, about 20 s per
    million rows (measured: most of the time a 1 M-row backtest spent writing steps.csv);
    numpy's vectorised formatter gives the same text in a fraction of that. Only whole-second
    UTC times without NaT take this path (others, e.g. sub-second bars, are left to pandas).
    """
    if len(values) == 0 or str(values.tz) != "UTC" or values.hasnans:
        return None
    ns = values.as_unit("ns").asi8
    if (ns % 1_000_000_000).any():
        return None
    text = np.datetime_as_string(ns.astype("datetime64[ns]").astype("datetime64[s]"), unit="s")
    return pd.Index(np.char.add(np.char.replace(text, "T", " "), "+00:00"), dtype=object)


def csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its UTC timestamps (index and columns) as text: the same CSV, faster.

    A shallow copy when anything changes (the caller's frame is left as it was).
    """
    out = frame
    if isinstance(frame.index, pd.DatetimeIndex):
        text = _utc_text(frame.index)
        if text is not None:
            out = frame.copy(deep=False)
            out.index = text.rename(frame.index.name)
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            text = _utc_text(pd.DatetimeIndex(column))
            if text is not None:
                out = out.copy(deep=False) if out is frame else out
                out[name] = text.to_numpy()
    return out


CSV_CHUNK_ROWS = 65_536  # rows formatted at a time by write_csv


def write_csv(
    path: str | os.PathLike[str],
    frame: pd.DataFrame,
    index: bool = True,
    chunk_rows: int = CSV_CHUNK_ROWS,
) -> Path:
    """``frame.to_csv`` written atomically, the same bytes, ``chunk_rows`` rows at a time.

    UTC timestamps are formatted fast (:func:`csv_ready`); chunks keep that text (and pandas'
    own per-chunk strings) to one chunk's worth: a million-row steps.csv otherwise held its
    whole index as text at once, the peak of a long backtest's memory.
    """

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            for start in range(0, max(len(frame), 1), chunk_rows):
                part = csv_ready(frame.iloc[start : start + chunk_rows])
                part.to_csv(f, index=index, header=start == 0)

    return atomic_write(path, write)


def write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_parquet(p, index=True))


def write_png(path: str | os.PathLike[str], fig: Figure, dpi: int = 110) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
