"""The error convention of the command-line entry points (``hmarl.train``, ``hmarl.backtest``).

A failure prints ONE line on stderr, ``error: <input>: <problem>; <fix>``, and exits with
2 for bad input or configuration (a typo, a value out of range, unreadable data, an
incompatible checkpoint, an unusable store) or 1 for a failure at run time (a full disk,
a crash). ``HYDRA_FULL_ERROR=1`` prints the traceback before that line; an interrupt
(Ctrl-C, SIGTERM) exits 130.

Why the entry points need this module: Hydra catches every exception raised while it
composes the config or runs the task function, prints a stripped traceback (~25 lines)
and exits 1 (``hydra/_internal/utils.py: run_and_report``), unless ``HYDRA_FULL_ERROR`` is
set. :func:`run_cli` sets it for the duration of the call so that exceptions reach it,
then reports them itself; inside the task function :func:`reported_errors` does the same
before Hydra's job runner can add its own "Error executing job" line. In a multirun the
task function leaves failures to Hydra (a failed job must not stop the others); the
sweep's first failure then reaches :func:`run_cli` when the sweep ends.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from typing import Any, NoReturn, get_type_hints

FULL_ERROR = "HYDRA_FULL_ERROR"
EXIT_FAILURE = 1  # a failure at run time
EXIT_BAD_INPUT = 2  # bad input or configuration: fix the command, then re-run
EXIT_INTERRUPTED = 130

_user_full_error: bool | None = None  # the user's HYDRA_FULL_ERROR, before run_cli set it


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM caught by a run that knows how to continue; its message says how
    (the checkpoint's path and the command), and :func:`run_cli` prints it instead of its
    generic line."""


def full_error_requested() -> bool:
    """True when the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    if _user_full_error is not None:
        return _user_full_error
    return os.environ.get(FULL_ERROR, "") not in ("", "0")


def is_bad_input(exc: BaseException) -> bool:
    """Bad input or configuration (exit 2) rather than a failure at run time (exit 1).

    Every input error of this project is a ``ValueError`` (``ConfigError``, ``DataError``,
    ``CheckpointError``, ``BacktestError``, ``TrackingError``, a bad split or device);
    Hydra's composition errors (unknown key, wrong type, missing config) are ``Compact``.
    """
    from hydra.errors import CompactHydraException

    return isinstance(exc, (ValueError, CompactHydraException))


def one_line(text: str) -> str:
    """A multi-line message as one line (lists of problems become ``a; b``)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return re.sub(r"\s+", " ", " ".join(parts))


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema (``trainer.macro_every``, ...)."""
    keys: list[str] = []
    hints = get_type_hints(schema)
    for f in fields(schema):
        keys.append(prefix + f.name)
        options = (hints[f.name], *getattr(hints[f.name], "__args__", ()))
        nested = [t for t in options if isinstance(t, type) and is_dataclass(t)]
        if nested:
            keys += schema_keys(nested[0], f"{prefix}{f.name}.")
    return keys


def _mapping_key(key: str, schema: type) -> str | None:
    """The mapping-valued schema key (``data.columns``) that ``key`` is or lies under, or None.

    Why: Hydra cannot assign a whole mapping to a key of a schema (``data.columns={close: p}``
    fails as "not in struct"), nor a new entry without ``+``; both used to be reported as an
    unknown key with the key itself as the suggestion.
    """
    hints: Any = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(hints, type) and is_dataclass(hints)):
            return None
        found = get_type_hints(hints).get(part)
        if found is None:
            return None
        options = (found, *getattr(found, "__args__", ()))
        if any(getattr(t, "__origin__", t) is dict for t in options):
            return ".".join(parts[: i + 1])
        nested = [t for t in options if isinstance(t, type) and is_dataclass(t)]
        hints = nested[0] if nested else None
    return None


def mapping_hint(key: str) -> str:
    """How to set entries of a mapping-valued key from the command line (one per entry)."""
    example = "+data.columns.close=price" if key == "data.columns" else f"+{key}.<name>=<value>"
    return (
        f"{key} is a mapping: set each entry with +{key}.<name>=<value> (note the +), "
        f"e.g. {example}"
    )


_NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'.*Key '[^']+' (is )?not in", re.S)


def describe(exc: BaseException, schema: type | None = None) -> str:
    """The ``error:`` line of an exception (without the prefix).

    A mistyped key gets a suggestion instead of Hydra's "To append to your config use
    +key=value", which would only trade the typo for an unknown key.
    """
    text = str(exc).split("Config search path:")[0]  # Hydra appends its search path
    cause = exc.__cause__
    if cause is not None and type(cause).__module__.startswith("omegaconf"):
        text = f"{text.rstrip('.')}: {str(cause).strip()}"  # the reason, e.g. a wrong type
    typo = _NOT_IN_STRUCT.search(text)
    if typo and schema is not None:
        key = typo.group(1)
        mapping = _mapping_key(key, schema)
        if mapping is not None:
            return mapping_hint(mapping)
        close = difflib.get_close_matches(key, schema_keys(schema), n=1)
        hint = f"did you mean {close[0]}?" if close else "see the YAML files in conf/"
        return f"unknown config key {key} ({hint})"
    if is_bad_input(exc) or isinstance(exc, OSError):
        return one_line(text.split("full_key:")[0]) or type(exc).__name__
    return f"{type(exc).__name__}: {one_line(text)} (HYDRA_FULL_ERROR=1 shows the traceback)"


def exit_with(exc: BaseException, schema: type | None = None) -> NoReturn:
    """Print the traceback if asked, then the one ``error:`` line; exit 2 or 1."""
    if full_error_requested():
        traceback.print_exception(exc)
    print(f"error: {describe(exc, schema)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT if is_bad_input(exc) else EXIT_FAILURE)


@contextmanager
def reported_errors(schema: type | None = None) -> Iterator[None]:
    """Inside a Hydra task function: report a failure of a single run and exit (see module)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        yield
        return
    try:
        yield
    except Exception as exc:
        exit_with(exc, schema)


def run_cli(
    hydra_main: Callable[[], Any],
    schema: type,
    interrupted: str = "interrupted",
    output_key: str | None = None,
) -> None:
    """Call a ``@hydra.main`` function with the error convention of this module.

    ``schema`` (the config dataclass) turns a mistyped key into a suggestion; ``interrupted``
    is the line printed on Ctrl-C or SIGTERM; ``output_key``: the key naming Hydra's run dir,
    for the message when that folder cannot be written (:func:`hmarl.io.unwritable_output`).
    """
    global _user_full_error
    previous = os.environ.get(FULL_ERROR)
    _user_full_error = full_error_requested()
    os.environ[FULL_ERROR] = "1"  # let Hydra's exceptions reach us (see the module docstring)
    try:
        hydra_main()
    except KeyboardInterrupt as exc:
        print(str(exc) if isinstance(exc, Interrupted) else interrupted, file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        from hmarl.io import unwritable_output  # here: io loads matplotlib

        exit_with(unwritable_output(exc, output_key), schema)
    finally:
        if previous is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = previous
        _user_full_error = None
