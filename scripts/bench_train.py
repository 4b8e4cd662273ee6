"""Training throughput: a plain gym-style reference against hmarl's factored trainer.

Prints env-steps per second (experience collected AND trained on) for

(a) the plain reference: one environment, the whole model forward per step, actions sampled
    one at a time, the environment stepped in Python, autograd over the episode, then the
    REINFORCE update of all three modules (how a gym-style trainer does it);
(b) hmarl's trainer at its defaults (``python -m hmarl.train +experiment=asym_1_10``),
    timed over its real training loop (validation excluded, reported separately);

their ratio, and the wall-clock ratio of one 11-episode cycle, symmetric (``sym_1_1``) over
asymmetric (``asym_1_10``), on the same market, model and batch.

Usage: python scripts/bench_train.py [--ref-episodes 10] [--cycles 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hmarl.config import Config, conf_dir, register_configs, to_config
from hmarl.evaluation import market_tensors
from hmarl.policy import HierarchicalPolicy
from hmarl.reinforce import discounted_returns, make_optimizers, normalise
from hmarl.train import load_market, train


def config(*overrides: str) -> Config:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=list(overrides)))


def plain_reference(cfg: Config, episodes: int) -> float:
    """Env-steps/s of a per-step, gym-style REINFORCE loop (one environment)."""
    market = load_market(cfg, log=None)
    t = market_tensors(market)
    torch.manual_seed(0)
    policy = HierarchicalPolicy(market.n_features, **asdict(cfg.model)).train()
    opts = make_optimizers(
        policy,
        lr_macro=cfg.trainer.lr_macro,
        lr_micro=cfg.trainer.lr_micro,
        lr_head=cfg.trainer.lr_head,
    )
    lo, hi = market.splits["train"]
    length, fee_rate = cfg.trainer.episode_len, cfg.env.commission
    gen = torch.Generator().manual_seed(0)
    steps, elapsed = 0, 0.0
    for _ in range(episodes + 1):  # the first episode is a warm-up, not timed
        t0 = time.perf_counter()
        start = int(torch.randint(lo, hi - length, (1,), generator=gen))
        position, logps, rewards = 0.0, [], []
        for k in range(length):
            row = start + k
            probs = policy(
                t.macro[row], t.micro[row], torch.tensor(position), torch.tensor(1 - abs(position))
            )
            action = int(torch.multinomial(probs, 1, generator=gen))
            logps.append(torch.log(probs[action]))
            target = {0: position, 1: 1.0, 2: -1.0}[action]
            fee = fee_rate * abs(target - position)
            r = float(t.returns[row])
            rewards.append(math.log((1 - fee) * (1 + target * r)))
            position = target * (1 + r) / (1 + target * r)  # drift, as hmarl.env
            position = target if abs(position - target) < 1e-12 else position
        adv = normalise(discounted_returns(torch.tensor([rewards]), cfg.trainer.gamma)).float()
        loss = -(torch.stack(logps) * adv[0]).sum()
        for o in opts.values():
            o.zero_grad()
        loss.backward()
        for o in opts.values():
            o.step()
        if _ > 0:
            elapsed += time.perf_counter() - t0
            steps += length
    return steps / elapsed


def timed_training(cfg: Config, out: Path) -> list[float]:
    """Per-episode wall time of the real training loop."""
    stamps: list[float] = []

    def on_episode(*_: object) -> None:
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    train(cfg, out, progress=False, on_episode=on_episode)
    return [b - a for a, b in zip([t0, *stamps[:-1]], stamps, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ref-episodes", type=int, default=10, help="timed episodes of the plain reference"
    )
    ap.add_argument("--cycles", type=int, default=2, help="timed 11-episode cycles per schedule")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            "tracking=none",
            f"cache_dir={tmp}/cache",
            "trainer.eval_every=100000",
            "trainer.checkpoint_every=100000",
        ]
        n_eps = 11 * (args.cycles + 1)  # the first cycle warms up
        asym = config("+experiment=asym_1_10", f"trainer.episodes={n_eps}", *common)
        sym = config("+experiment=sym_1_1", f"trainer.episodes={n_eps}", *common)
        print(
            f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; "
            f"batch {asym.trainer.n_envs} x {asym.trainer.episode_len}"
        )
        ref = plain_reference(asym, args.ref_episodes)
        print(f"(a) plain reference (1 env, per-step forward + autograd): {ref:,.0f} env-steps/s")
        t_asym = timed_training(asym, Path(tmp) / "asym")[11:]
        t_sym = timed_training(sym, Path(tmp) / "sym")[11:]
    steps = asym.trainer.n_envs * asym.trainer.episode_len
    fast = steps * len(t_asym) / sum(t_asym)
    print(
        f"(b) hmarl trainer, asym_1_10 defaults: {fast:,.0f} env-steps/s "
        f"(MacroNet-update episodes {steps / (sum(t_asym[::11]) / len(t_asym[::11])):,.0f}/s, "
        f"frozen {steps * 10 * args.cycles / (sum(t_asym) - sum(t_asym[::11])):,.0f}/s)"
    )
    print(f"    ratio (b)/(a): {fast / ref:,.1f}x")
    cyc_a, cyc_s = sum(t_asym) / args.cycles, sum(t_sym) / args.cycles
    print(
        f"one 11-episode cycle: sym_1_1 {cyc_s:.3f} s, asym_1_10 {cyc_a:.3f} s, "
        f"sym/asym wall-clock ratio {cyc_s / cyc_a:.2f}x "
        "(SPEC's note claims 2.30x from parameter counts)"
    )


if __name__ == "__main__":
    main()
