"""Training speed of each policy-gradient estimator against the specification's ``reinforce``.

    python scripts/bench_estimators.py [--device cpu|cuda] [--n-envs 32] [--cycles 3]
        [--estimators reinforce,expected,all_actions,baseline] [--threads 1]

Times ``Trainer.episode`` (what ``python -m hmarl.train`` runs; validation excluded) with the
defaults (``+experiment=asym_1_10``) and one ``trainer.estimator`` each, on the same market,
model and batch. Cycles of 11 episodes alternate between the estimators (A, B, C, A, B, C, ...)
after one warm-up cycle each, so load from other processes falls on all of them; prints
env-steps/s (wall), process CPU time per episode, and each estimator's ratio to ``reinforce``
in both. The learning issue's speed target: at most 10% slower than ``reinforce``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_train import CYCLE, config, run_cycle

from hmarl.train.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--n-envs", type=int, default=32, help="trajectories per episode (32)")
    ap.add_argument("--cycles", type=int, default=3, help="timed 11-episode cycles each (3)")
    ap.add_argument(
        "--estimators",
        default="reinforce,expected,all_actions,baseline",
        help="comma-separated trainer.estimator values; reinforce is the reference",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if "reinforce" not in names:
        names.insert(0, "reinforce")
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}, "
        f"n_envs {args.n_envs}, {args.cycles} timed cycles of {CYCLE} episodes each"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in names:
            cfg = config(
                "+experiment=asym_1_10",
                "tracking=none",
                f"cache_dir={tmp}/cache",
                f"device={args.device}",
                f"trainer.n_envs={args.n_envs}",
                f"trainer.episodes={CYCLE * (args.cycles + 1) + 1}",
                f"trainer.estimator={name}",
            )
            runs[name] = Trainer(cfg, Path(tmp) / name)
            runs[name].policy.train()
            run_cycle(runs[name], device)  # warm-up: allocator, kernels, the MacroNet cache
        wall = dict.fromkeys(names, 0.0)
        cpu = dict.fromkeys(names, 0.0)
        for _ in range(args.cycles):
            for name in names:
                times, cpu_s = run_cycle(runs[name], device)
                wall[name] += sum(times)
                cpu[name] += cpu_s
        steps = args.n_envs * runs[names[0]].cfg.trainer.episode_len * CYCLE * args.cycles
    episodes = CYCLE * args.cycles
    head = "| estimator | env-steps/s (wall) | CPU ms per episode | wall vs reinforce "
    print(head + "| CPU vs reinforce |")
    print("|---|---|---|---|---|")
    for name in names:
        print(
            f"| {name} | {steps / wall[name]:,.0f} | {1000 * cpu[name] / episodes:.1f} "
            f"| {wall[name] / wall['reinforce']:.2f}x | {cpu[name] / cpu['reinforce']:.2f}x |"
        )


if __name__ == "__main__":
    main()
