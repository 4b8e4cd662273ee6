"""The walk-forward's cost target (issue 27): one training against a 6-fold walk-forward.

    python scripts/bench_walkforward.py                      # 2 pairs, default trainings
    python scripts/bench_walkforward.py --pairs 3 --dir /tmp/bwf -- trainer.episodes=60

Runs, back to back and alternating, ``python -m hmarl.train`` (the whole default synthetic
market) and ``python -m hmarl.walkforward walkforward.folds=6 walkforward.jobs=2`` (default
lengths), each as a user runs it: its own process, ``OMP_NUM_THREADS=1``, ``threads=1``,
``tracking=none``, a fresh output folder, one feature cache shared by all (so after the first
pair the caches are warm, as they are for a user who re-runs). Prints each command's wall time
and each pair's ratio (walk-forward / training; the target is <= 3.5x on the 2-core machine),
with the load average before and after each pair: on a shared machine the ratio is only as
good as the load was steady.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = ("threads=1", "tracking=none")
WALKFORWARD = ("walkforward.folds=6", "walkforward.jobs=2")
TARGET = 3.5  # the bound on the ratio


def commands(root: Path, pair: int, extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """The training and the walk-forward command of pair ``pair`` (fresh output folders)."""
    cache = f"cache_dir={root / 'cache'}"
    train = [
        sys.executable,
        "-m",
        "hmarl.train",
        *COMMON,
        cache,
        f"hydra.run.dir={root / f'train_{pair}'}",
        *extra,
    ]
    walk = [
        sys.executable,
        "-m",
        "hmarl.walkforward",
        *WALKFORWARD,
        *COMMON,
        cache,
        f"walkforward.out={root / f'wf_{pair}'}",
        *extra,
    ]
    return train, walk


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: Sequence[str], log: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``command`` (its output into ``log``); a failure stops here."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cpu0, t0 = children_cpu(), time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    seconds, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}; see {log}")
    return seconds, cpu


def ratio_line(
    pair: int, train: tuple[float, float], walk: tuple[float, float], load: tuple[float, float]
) -> str:
    """One pair's result as printed (and as docs/benchmarks.md quotes it): (wall, CPU) each."""
    ratio = walk[0] / train[0]
    verdict = "meets" if ratio <= TARGET else "misses"
    return (
        f"pair {pair}: one training {train[0]:.1f} s, 6-fold walk-forward (2 jobs) "
        f"{walk[0]:.1f} s, ratio {ratio:.2f}x ({verdict} <= {TARGET}x); "
        f"load average {load[0]:.1f} -> {load[1]:.1f}; "
        f"CPU {train[1]:.1f} s and {walk[1]:.1f} s, floor on 2 idle cores "
        f"{walk[1] / (2 * train[1]):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="training / walk-forward pairs")
    parser.add_argument("--dir", type=Path, default=Path("bench_walkforward"), help="outputs")
    parser.add_argument("extra", nargs="*", help="overrides for both commands (after --)")
    args = parser.parse_args()
    root = args.dir.resolve()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"error: {root} is not empty; give a fresh --dir")
    root.mkdir(parents=True, exist_ok=True)
    ratios = []
    for pair in range(args.pairs):
        train, walk = commands(root, pair, args.extra)
        before = os.getloadavg()[0]
        train_t = timed(train, root / f"train_{pair}.log")
        walk_t = timed(walk, root / f"wf_{pair}.log")
        ratios.append(walk_t[0] / train_t[0])
        print(ratio_line(pair, train_t, walk_t, (before, os.getloadavg()[0])), flush=True)
    print(f"ratios: {', '.join(f'{r:.2f}x' for r in ratios)} (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
