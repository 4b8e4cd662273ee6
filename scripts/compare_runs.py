"""Compare training runs in MLflow: per-experiment mean, std and 95% CI over seeds, plots, DSR.

Examples:
    python scripts/compare_runs.py --latest-sweep
    python scripts/compare_runs.py --parent-run <sweep run id> --out compare_out
    python scripts/compare_runs.py --experiment hmarl --tag experiment_name=asym_1_10
    python scripts/compare_runs.py --tracking-uri http://mlflow-host:5000 --latest-sweep
    python scripts/compare_runs.py --experiment hmarl --task quote   # quoting runs only

Quoting runs (task=quote) are compared on their objective, fills and inventory beside no
quote, the best fixed quote and the closed form; a selection mixing trading and quoting runs
is refused (exit 2) unless --task picks one.

All logic lives in hmarl.report.compare (the notebook notebooks/compare_runs.ipynb calls it too).
"""

from __future__ import annotations

import argparse
import sys

from hmarl.report.compare import compare, report


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--tag expects KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store or server")
    p.add_argument(
        "--experiment", action="append", default=[], help="MLflow experiment name (repeatable)"
    )
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--parent-run", help="only the children of this sweep parent run")
    sel.add_argument("--latest-sweep", action="store_true", help="the newest sweep's children")
    p.add_argument("--tag", action="append", default=[], type=parse_tag, help="KEY=VALUE filter")
    p.add_argument(
        "--task", choices=["trade", "quote"], help="only runs of this task (needed when mixed)"
    )
    p.add_argument("--n-trials", type=int, help="trials behind the best run (default: runs found)")
    p.add_argument("--out", default="compare_out", help="folder for CSVs and PNGs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = compare(
            args.tracking_uri,
            args.out,
            experiments=args.experiment,
            parent_run_id=args.parent_run,
            tags=dict(args.tag),
            latest=args.latest_sweep,
            n_trials=args.n_trials,
            task=args.task,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"compare_runs: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
