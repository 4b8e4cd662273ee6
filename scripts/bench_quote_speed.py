"""Quoting env-steps per second: the factored rollout against a gym loop, same policy.

The gym loop steps :class:`hmarl.market.quote_env.QuoteEnv` (the environment the gymnasium
wrapper and PPO step) one env at a time, running the hierarchical policy on each observation
(batch 1, no gradient), as a gym-style trainer collects experience. The factored rollout
(:func:`hmarl.agent.quote_rollout.collect_quotes`) runs ``n_envs`` episodes in one batch. Both
on the Avellaneda-Stoikov benchmark market, measured in the same run; the ratio is printed.

    OMP_NUM_THREADS=1 python scripts/bench_quote_speed.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hmarl.agent.quote_policy import quote_policy
from hmarl.agent.quote_rollout import as_batch, collect_quotes
from hmarl.market import avellaneda as av
from hmarl.market.quote_env import QuoteEnv

MACRO, MICRO = 64, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-envs", type=int, default=64)
    ap.add_argument("--gym-episodes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bench_quoting import MARKET, PARAMS  # the learning benchmark's market

    torch.manual_seed(0)
    policy = quote_policy(len(av.FEATURES), PARAMS).eval()

    # ---- the factored rollout: one batch of n_envs episodes (sampling, no gradient) ----
    gen = torch.Generator().manual_seed(0)
    times = []
    for rep in range(args.repeats):
        start = time.perf_counter()
        paths = av.generate(MARKET, args.n_envs, rep, history=MACRO)
        batch = as_batch(MARKET, PARAMS, paths, macro_window=MACRO, micro_window=MICRO)
        with torch.no_grad():
            collect_quotes(policy, batch, PARAMS, generator=gen)
        times.append(time.perf_counter() - start)
    factored = args.n_envs * MARKET.steps / float(np.median(times))

    # ---- the gym loop: one env, one observation at a time, the same policy ----
    env = QuoteEnv(MARKET, PARAMS, macro_window=MACRO, micro_window=MICRO, seed=0)
    n_in = 3 * len(av.FEATURES)
    steps, start = 0, time.perf_counter()
    with torch.no_grad():
        for episode in range(args.gym_episodes):
            obs, _ = env.reset(seed=episode)
            done = False
            while not done:
                x = torch.from_numpy(obs).unsqueeze(0)
                logits = policy.head(
                    policy.macro(x[:, :n_in]),
                    policy.micro(x[:, n_in : 2 * n_in]),
                    x[:, -2],
                    x[:, -1],
                )
                action = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
                obs, _, done, _, _ = env.step(action)
                steps += 1
    gym = steps / (time.perf_counter() - start)
    print(f"factored rollout: {factored:,.0f} env-steps/s ({args.n_envs} envs x {MARKET.steps})")
    print(f"gym loop, one env: {gym:,.0f} env-steps/s ({steps} steps)")
    print(f"ratio: {factored / gym:.0f}x")


if __name__ == "__main__":
    main()
