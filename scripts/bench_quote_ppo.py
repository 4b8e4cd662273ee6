"""PPO (Stable-Baselines3) on the quoting benchmark market, scored exactly like the agent.

Trains SB3's PPO (defaults, one env) on the gymnasium wrapper of the quoting environment for
``--env-steps`` steps, then prints the exact test objective of its greedy policy beside the
optimum and the best fixed quote (the same test paths as scripts/bench_quoting.py), and its
time. Needs the ``[mm]`` extra.

    OMP_NUM_THREADS=1 python scripts/bench_quote_ppo.py --env-steps 20000
"""

from __future__ import annotations

import argparse

import torch

from hmarl.market import avellaneda as av
from hmarl.train.quote_ppo import ppo_objective, train_ppo
from hmarl.train.quoting import TEST_SEED, QuoteTraining, make_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env-steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bench_quoting import MARKET, PARAMS

    settings = QuoteTraining()
    test = make_batch(MARKET, PARAMS, settings, settings.eval_paths, TEST_SEED)
    optimum = av.optimum(MARKET, PARAMS).value(PARAMS)
    _, fixed = av.best_fixed_quote(MARKET, PARAMS)
    for seed in range(args.seeds):
        model, seconds = train_ppo(
            MARKET,
            PARAMS,
            env_steps=args.env_steps,
            macro_window=settings.macro_window,
            micro_window=settings.micro_window,
            seed=seed,
        )
        score = ppo_objective(model, test, PARAMS)
        print(
            f"PPO seed {seed}: {args.env_steps} env-steps in {seconds:.0f} s "
            f"({args.env_steps / seconds:,.0f} steps/s); test {score:.4f} = "
            f"{score / optimum:.1%} of the optimum {optimum:.4f}, gap closed "
            f"{(score - fixed) / (optimum - fixed):.1%} (best fixed {fixed:.4f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
