"""Benchmark: peak memory per million rows of building the cache, training and a backtest.

Each phase runs as a user runs it (``python -m hmarl.train`` / ``python -m hmarl.backtest`` in a
subprocess, synthetic candles of ``--rows`` bars, one cache folder) and its peak resident set
is the child's ``ru_maxrss`` (``os.wait4``): it counts the pages of the memory-mapped cache
that the process touched, so it is an upper bound on what the phase needs. Printed per size,
and per million rows both as peak / rows and as the slope between the two largest sizes (the
constant interpreter, torch and pandas footprint cancels in the slope).

    .venv/bin/python scripts/bench_scale.py [--rows 500000 1000000] [--episodes 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("build", "train", "backtest")


def peak_rss_gb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; its peak RSS in GB (ru_maxrss is in KiB on Linux) and wall seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e9, time.perf_counter() - start


def measure(rows: int, episodes: int, root: Path) -> dict[str, tuple[float, float]]:
    py = sys.executable
    common = [f"data.n_candles={rows}", f"cache_dir={root}/cache", "tracking=none"]
    run = root / f"run{rows}"
    train = [py, "-m", "hmarl.train", *common, f"trainer.episodes={episodes}",
             f"trainer.eval_every={episodes}", f"hydra.run.dir={run}"]  # fmt: skip
    out: dict[str, tuple[float, float]] = {}
    build = (
        "import sys; from hmarl.config import Config, DataConfig; "
        "from hmarl.market.market_data import market_for_config; c = Config().features; "
        "market_for_config(DataConfig(n_candles=int(sys.argv[1])), feature_names=c.names, "
        "macro_window=c.macro_window, micro_window=c.micro_window, cache_dir=sys.argv[2])"
    )
    out["build"] = peak_rss_gb([py, "-c", build, str(rows), f"{root}/cache"], root)
    out["train"] = peak_rss_gb(train, root)  # the cache is warm: read memory-mapped
    out["backtest"] = peak_rss_gb(
        [py, "-m", "hmarl.backtest", f"checkpoint={run}/checkpoints/last.pt",
         f"out={root}/bt{rows}",
         f"cache_dir={root}/cache", "tracking=none", "split=all", "random_timing=0",
         "n_bootstrap=0", "plots=false", "report_html=false", "fee_multipliers=[1.0]",
         "progress=false"],
        root,
    )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[500_000, 1_000_000])
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_args()
    results: dict[int, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hmarl-scale-") as tmp:
        for rows in sorted(args.rows):
            results[rows] = measure(rows, args.episodes, Path(tmp))
            cells = ", ".join(
                f"{p} {gb:.2f} GB ({gb / rows * 1e6:.2f} GB/M rows, {s:.0f} s)"
                for p, (gb, s) in results[rows].items()
            )
            print(f"{rows:>10,} rows: {cells}", flush=True)
        sizes = sorted(results)
        if len(sizes) >= 2:
            a, b = sizes[-2], sizes[-1]
            slope = ", ".join(
                f"{p} {(results[b][p][0] - results[a][p][0]) / (b - a) * 1e6:.2f} GB"
                for p in PHASES
            )
            print(f"slope per million rows ({a:,} -> {b:,}): {slope}")


if __name__ == "__main__":
    main()
