"""PPO (Stable-Baselines3) on the quoting benchmark market, scored exactly like the agent.

Trains SB3's PPO (defaults, one env) on the gymnasium wrapper of the quoting environment for
``--env-steps`` steps, then prints the exact test objective of its greedy policy beside the
optimum and the best fixed quote (the same test paths as scripts/bench_quoting.py), and its
time. Needs the ``[mm]`` extra.

    OMP_NUM_THREADS=1 python scripts/bench_quote_ppo.py --env-steps 20000

``--market ticks``: on the synthetic tick market of scripts/bench_quoting.py (the seed's tapes),
PPO on the train tape's episodes and the hierarchical agent trained for the same env-steps
(8 episodes a batch: ``env_steps / 800`` updates), both scored on the test tape beside the
best fixed quote (chosen on validation) and the estimated closed form, with their times.

    OMP_NUM_THREADS=1 python scripts/bench_quote_ppo.py --market ticks --env-steps 40000
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from hmarl.market import avellaneda as av
from hmarl.train.quote_ppo import ppo_objective, train_ppo
from hmarl.train.quoting import TEST_SEED, QuoteTraining, make_batch, train_quotes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env-steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--market", choices=("as", "ticks"), default="as")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.market == "ticks":
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            ticks(seed, args.env_steps)
        return
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


def ticks(seed: int, env_steps: int) -> None:
    """PPO and the agent at the same env-steps on one seed's synthetic tick market."""
    from bench_quoting import TICK_PARAMS, TICK_TRAINING, tick_market

    from hmarl.train import quote_tape as qt
    from hmarl.train.quote_ppo import learn, ppo_choice, tape_env

    market, params = tick_market(seed), TICK_PARAMS
    per_episode = TICK_TRAINING.n_envs * market.episode_steps
    settings = dataclasses.replace(
        TICK_TRAINING, episodes=max(1, env_steps // per_episode), seed=seed
    )
    _, agent = train_quotes(market, params, settings)
    data = qt.prepare(
        market, params, macro_window=settings.macro_window, micro_window=settings.micro_window
    )
    env = tape_env(data.train, params, market.episode_steps, seed)
    model, seconds = learn(env, env_steps, seed)
    ppo = qt.score(params, data.test.batch, ppo_choice(model, data.test.batch, params))
    print(
        f"ticks seed {seed}, {env_steps} env-steps: PPO test {ppo:.4f} in {seconds:.0f} s "
        f"({env_steps / seconds:,.0f} steps/s); agent test {agent.test:.4f} "
        f"({agent.env_steps} env-steps in {agent.seconds:.0f} s, validation included); "
        f"best fixed {agent.best_fixed:.4f}, closed form {agent.closed_form:.4f}, "
        f"no quote {agent.no_quote:.4f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
