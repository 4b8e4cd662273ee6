"""Quoting env-steps per second: the factored rollouts against a gym loop, same policy.

The gym loop steps :class:`hmarl.market.quote_env.QuoteEnv` (the environment the gymnasium
wrapper and PPO step) one env at a time, running the hierarchical policy on each observation
(batch 1, no gradient), as a gym-style trainer collects experience. The factored rollouts run
``n_envs`` episodes in one batch, the towers once over every step of the batch:

* ``sample`` (:func:`hmarl.agent.quote_rollout.sample_quotes`): the head at the visited
  inventory only, step by step: what a collection without gradients needs;
* ``all-states`` (:func:`hmarl.agent.quote_rollout.collect_quotes`): the head at every
  inventory state, what training collects (the exact estimators read every state).

Both on the Avellaneda-Stoikov benchmark market, without gradients. And training, with
gradients, the ``reinforce`` estimator, the task's settings (dropout 0, the 1:10 MacroNet
schedule), a copy of the same network:

* ``train collect`` (:func:`hmarl.agent.quote_rollout.collect_visited`): the collection alone
  as training uses it for ``reinforce`` and ``baseline`` (towers with gradient, the path walked
  at the visited inventory);
* ``train step`` (:func:`hmarl.train.quoting.quote_episode`): that collection and the update;
* ``train step all-states``: ``collect_quotes`` and the same update, the step before
  ``collect_visited`` (the same update, bit for bit: ``tests/test_quote_update.py``).

Each timed batch pays its own market generation and tensors, as the gym loop pays its env's. The
measurements are interleaved (one batch of each, then gym episodes, repeated) and each figure is
the median over the repeats. Two clocks: wall time, and this process's CPU time (one thread: the
time it actually ran). Why both: on a shared machine other jobs' load takes the CPU away from
many small steps (the gym loop) more than from a few large products (the rollouts), which
inflates the wall-clock ratio; the CPU-time ratio is the one that does not depend on the
neighbours.

    cd scripts && OMP_NUM_THREADS=1 python bench_quote_speed.py [--n-envs 64 256]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_policy import quote_policy
from hmarl.agent.quote_rollout import (
    QuoteBatch,
    as_batch,
    collect_quotes,
    collect_visited,
    sample_quotes,
)
from hmarl.agent.reinforce import macro_steps_at, make_optimizers
from hmarl.market import avellaneda as av
from hmarl.market.quote_env import QuoteEnv
from hmarl.train.quoting import QuoteTraining, quote_episode, settings_update

MACRO, MICRO = 64, 8


def gym_episode(env: QuoteEnv, policy: HierarchicalPolicy, seed: int, gen: torch.Generator) -> int:
    """One episode stepped one observation at a time; returns its number of steps."""
    n_in = 3 * len(av.FEATURES)
    obs, _ = env.reset(seed=seed)
    done, steps = False, 0
    while not done:
        x = torch.from_numpy(obs).unsqueeze(0)
        logits = policy.head(
            policy.macro(x[:, :n_in]), policy.micro(x[:, n_in : 2 * n_in]), x[:, -2], x[:, -1]
        )
        action = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        obs, _, done, _, _ = env.step(action)
        steps += 1
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-envs", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--gym-episodes", type=int, default=2, help="per repeat")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bench_quoting import MARKET, PARAMS  # the learning benchmark's market

    torch.manual_seed(0)
    policy = quote_policy(len(av.FEATURES), PARAMS).eval()
    torch.manual_seed(0)  # the same weights, the task's dropout (0), in training mode
    train_policy = quote_policy(len(av.FEATURES), PARAMS, dropout=0.0).train()
    settings = QuoteTraining(estimator="reinforce")
    optimizers = make_optimizers(
        train_policy,
        lr_macro=settings.lr_macro,
        lr_micro=settings.lr_micro,
        lr_head=settings.lr_head,
    )
    gen = torch.Generator().manual_seed(0)
    episode = 0

    def all_states_step(batch: QuoteBatch, update_macro: bool) -> None:
        traj = collect_quotes(train_policy, batch, PARAMS, generator=gen, train_macro=update_macro)
        settings_update(train_policy, optimizers, traj, batch, PARAMS, settings, update_macro)

    rollouts: dict[str, Callable[[QuoteBatch, bool], object]] = {
        "sample": lambda b, _: sample_quotes(policy, b, PARAMS, generator=gen),
        "all-states": lambda b, _: collect_quotes(policy, b, PARAMS, generator=gen),
        "train collect": lambda b, m: collect_visited(
            train_policy, b, PARAMS, generator=gen, train_macro=m
        ),
        "train step": lambda b, m: quote_episode(
            train_policy, optimizers, b, PARAMS, settings, m, gen
        ),
        "train step all-states": all_states_step,
    }
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (wall, cpu) env-steps/s
    gym_rates: list[tuple[float, float]] = []
    env = QuoteEnv(MARKET, PARAMS, macro_window=MACRO, micro_window=MICRO, seed=0)
    for rep in range(args.repeats):
        for n_envs in args.n_envs:
            for name, rollout in rollouts.items():
                training = name.startswith("train")
                update_macro = macro_steps_at(episode, settings.macro_every)
                episode += training
                start, cpu = time.perf_counter(), time.process_time()
                with torch.set_grad_enabled(training):
                    paths = av.generate(MARKET, n_envs, rep, history=MACRO)
                    batch = as_batch(MARKET, PARAMS, paths, macro_window=MACRO, micro_window=MICRO)
                    rollout(batch, update_macro)
                rates.setdefault((name, n_envs), []).append(
                    per_second(n_envs * MARKET.steps, start, cpu)
                )
        start, cpu, steps = time.perf_counter(), time.process_time(), 0
        with torch.no_grad():
            for k in range(args.gym_episodes):
                steps += gym_episode(env, policy, rep * args.gym_episodes + k, gen)
        gym_rates.append(per_second(steps, start, cpu))
    gym_wall, gym_cpu = np.median(gym_rates, axis=0)
    n_gym = args.repeats * args.gym_episodes * MARKET.steps
    print(
        f"gym loop, one env: {gym_wall:,.0f} env-steps/s wall, {gym_cpu:,.0f} per CPU second "
        f"({n_gym} steps)"
    )
    for (name, n_envs), values in sorted(rates.items(), key=lambda kv: kv[0][1]):
        wall, cpu = np.median(values, axis=0)
        print(
            f"factored {name:>21}, {n_envs:>4} envs x {MARKET.steps}: {wall:,.0f} env-steps/s "
            f"wall ({wall / gym_wall:.0f}x), {cpu:,.0f} per CPU second ({cpu / gym_cpu:.0f}x)"
        )


def per_second(steps: int, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """Env-steps per second of wall time and of this process's CPU time since the starts."""
    wall = time.perf_counter() - wall_start
    cpu = max(time.process_time() - cpu_start, 1e-9)
    return steps / wall, steps / cpu


if __name__ == "__main__":
    main()
