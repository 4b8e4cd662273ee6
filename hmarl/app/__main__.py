"""``python -m hmarl.app``: launch the Streamlit page (:mod:`hmarl.app.page`).

Options before ``--`` go to ``streamlit run``; ``--store URI`` after it is the MLflow store
the page opens first (default ``sqlite:///mlflow.db`` in the working directory), ``--ticks DIR``
a folder of tick files for the per-day quoting demo (beside the bundled capture)::

    python -m hmarl.app                                   # http://localhost:8501
    python -m hmarl.app --server.headless true --server.port 8600 -- --store sqlite:///x.db
    python -m hmarl.app -- --ticks data/ticks             # the tick downloader's cache

Streamlit's usage statistics are off unless asked for (``--browser.gatherUsageStats true``):
the page is a local tool and must not make the browser reach an outside host.
Every ``streamlit run`` option: ``streamlit run --help``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hmarl.app.backend import STORE_ENV
from hmarl.app.quote_days import TICKS_ENV
from hmarl.tracking import DEFAULT_URI

PAGE = Path(__file__).with_name("page.py")


USAGE_STATS = "--browser.gatherUsageStats"
HELP = ("-h", "--help")


def split_args(argv: Sequence[str]) -> tuple[list[str], str]:
    """Streamlit's options (before ``--``) and the page's store (``--store URI`` after it).

    Usage statistics are switched off unless the options set them (see the module docstring).
    """
    args = list(argv)
    page_args = args[args.index("--") + 1 :] if "--" in args else []
    streamlit_args = args[: args.index("--")] if "--" in args else args
    if not any(a.split("=")[0] == USAGE_STATS for a in streamlit_args):
        streamlit_args = [USAGE_STATS, "false", *streamlit_args]
    store = page_options(page_args).get("--store", os.environ.get(STORE_ENV, DEFAULT_URI))
    return streamlit_args, store


PAGE_OPTIONS = ("--store", "--ticks")


def page_options(page_args: Sequence[str]) -> dict[str, str]:
    """The page's own options after ``--``: ``--store URI`` and ``--ticks DIR``, each once."""
    args = list(page_args)
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    if len(args) % 2 or set(pairs) - set(PAGE_OPTIONS) or len(pairs) * 2 != len(args):
        raise SystemExit(
            f"error: after -- only --store URI and --ticks DIR are understood, got {args}"
        )
    return pairs


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``streamlit run hmarl/app/page.py`` with the given options, in this process."""
    from streamlit.web import cli as streamlit_cli

    argv = sys.argv[1:] if argv is None else argv
    if any(a in HELP for a in argv[: argv.index("--") if "--" in argv else len(argv)]):
        print(usage())  # streamlit's own help named "python -m hmarl.streamlit run"
        return
    streamlit_args, store = split_args(argv)
    os.environ[STORE_ENV] = store
    ticks = page_options(argv[argv.index("--") + 1 :] if "--" in argv else []).get("--ticks")
    if ticks:
        os.environ[TICKS_ENV] = ticks
    sys.argv = ["streamlit", "run", *streamlit_args, str(PAGE)]
    streamlit_cli.main()


def usage() -> str:
    """``python -m hmarl.app --help``: this module's docstring, with the real command."""
    return "usage: python -m hmarl.app [STREAMLIT OPTIONS] [-- --store URI --ticks DIR]\n" + (
        __doc__ or ""
    )


if __name__ == "__main__":
    main()
