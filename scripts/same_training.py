"""Do two source trees train the same quoting policy? Bit for bit, tensor by tensor.

Why: a change that should only make training cheaper (a collection that skips work the update
does not read) must leave every result as it was. This script exports ``--ref`` (a git ref,
default ``main``) into a temporary folder with ``git archive``, runs the same short training
commands in that tree and in this checkout (the same Python, one thread each), and compares
the policy and optimizer tensors of ``best.pt`` and ``last.pt`` with ``torch.equal``.
Exit status 1 if any run differs.

    OMP_NUM_THREADS=1 python scripts/same_training.py [--ref main] [--episodes 12]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
ESTIMATORS = ("reinforce", "baseline", "expected", "all_actions")
DATA = ("avellaneda", "ticks_synthetic")


def train(tree: Path, out: Path, overrides: list[str]) -> None:
    """One training run with ``tree``'s sources (``-m`` imports from the working directory)."""
    cmd = [sys.executable, "-m", "hmarl.train", *overrides, f"hydra.run.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True)


def tensors(x: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint record, by its path."""
    if isinstance(x, torch.Tensor):
        return {prefix: x}
    items = x.items() if isinstance(x, dict) else enumerate(x) if isinstance(x, list) else ()
    return {k: v for key, item in items for k, v in tensors(item, f"{prefix}/{key}").items()}


def differences(a: Path, b: Path) -> list[str]:
    """The tensor paths (policy and optimizers) that are not bit-identical."""
    ta, tb = (torch.load(p, weights_only=True) for p in (a, b))
    got, want = (tensors({k: c[k] for k in ("policy", "optimizers")}) for c in (ta, tb))
    if got.keys() != want.keys():
        return [f"tensor names differ: {sorted(got.keys() ^ want.keys())}"]
    return [k for k in got if not torch.equal(got[k], want[k])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="main")
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    ap.add_argument("--data", nargs="+", default=list(DATA))
    args = ap.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="same_training_") as tmp:
        ref = Path(tmp) / "ref"
        ref.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.ref], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)
        for estimator, data in itertools.product(args.estimators, args.data):
            overrides = [
                "+experiment=mm_asym_1_10",
                f"trainer.episodes={args.episodes}",
                "tracking=none",
                "threads=1",
                f"trainer.estimator={estimator}",
                *([] if data == "avellaneda" else [f"data={data}"]),
            ]
            runs = {}
            for name, tree in (("ref", ref), ("here", ROOT)):
                runs[name] = Path(tmp) / f"{estimator}-{data}-{name}"
                train(tree, runs[name], overrides)
            for ckpt in ("best.pt", "last.pt"):
                diff = differences(*(runs[n] / "checkpoints" / ckpt for n in ("ref", "here")))
                failed |= bool(diff)
                verdict = "bit-identical" if not diff else f"DIFFERS in {len(diff)}: {diff[:3]}"
                print(f"{estimator:>11} {data:>15} {ckpt:>7}: {verdict}", flush=True)
    print(f"reference: {args.ref} ({rev(args.ref)}); here: {rev('HEAD')} + working tree")
    return int(failed)


def rev(ref: str) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip()


if __name__ == "__main__":
    raise SystemExit(main())
