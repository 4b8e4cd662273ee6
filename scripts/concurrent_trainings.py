"""Start N trainings at the same moment on one fresh sqlite store; report each run's status.

    python scripts/concurrent_trainings.py --n 10 --dir conc        # 10 small trainings
    python scripts/concurrent_trainings.py --n 3 --dir conc3 -- trainer.episodes=20

Why: two terminals, a SLURM array or a sweep's jobs may open one new ``mlflow.db``
together; before the store was created under a lock (``hmarl.tracking.open_experiment``)
the second one died in MLflow's schema migrations. Each training runs as a user runs it
(``python -m hmarl.train``), on a small synthetic market, with its own output folder and
seed; the store and the feature cache are shared. Exits 0 only when every process exited
0 and the store holds N FINISHED runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = (
    "data.n_candles=6000",
    "features.macro_window=48",
    "features.micro_window=12",
    "trainer.episodes=5",
    "trainer.n_envs=4",
    "trainer.episode_len=32",
    "trainer.eval_every=5",
    "trainer.checkpoint_every=5",
    "threads=1",
)


@dataclass(frozen=True)
class Outcome:
    """One process: its exit code, the tail of its stderr, and the store's run statuses."""

    returncodes: list[int]
    errors: list[str]
    statuses: list[str]
    seconds: float


def start_together(
    n: int, root: Path, overrides: Sequence[str] = (), timeout: float = 900.0
) -> Outcome:
    """Launch ``n`` trainings at once on the fresh store ``root/mlflow.db`` and wait."""
    root.mkdir(parents=True, exist_ok=True)
    store = root / "mlflow.db"
    if store.exists():
        raise SystemExit(f"error: {store} exists; the check needs a fresh store (new --dir)")
    uri = f"sqlite:///{store.resolve()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hmarl.train",
                *SMALL,
                *overrides,
                f"seed={i}",
                f"tracking.uri={uri}",
                f"cache_dir={root / 'cache'}",
                f"hydra.run.dir={root / f'run{i}'}",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    errors = [p.communicate(timeout=timeout)[1][-2000:] for p in procs]
    seconds = time.perf_counter() - t0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, max_results=1000) if ids else []
    return Outcome(
        [int(p.returncode) for p in procs], errors, [r.info.status for r in runs], seconds
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="trainings started together")
    parser.add_argument("--dir", type=Path, default=Path("concurrent"), help="a new folder")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args(argv)
    out = start_together(args.n, args.dir, args.overrides)
    for i, (code, err) in enumerate(zip(out.returncodes, out.errors, strict=True)):
        last = err.strip().splitlines()[-1] if code and err.strip() else ""
        print(f"training {i}: exit {code} {last}".rstrip())
    finished = out.statuses.count("FINISHED")
    print(
        f"{args.n} trainings started together on a fresh store: {finished} FINISHED runs of "
        f"{len(out.statuses)} ({out.seconds:.0f} s)"
    )
    ok = finished == args.n == len(out.statuses) and not any(out.returncodes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
