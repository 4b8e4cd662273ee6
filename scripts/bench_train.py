"""Training throughput: a plain gym-style reference against hmarl's factored trainer.

Prints env-steps per second (experience collected AND trained on) for

(a) the plain reference (CPU): one environment, the whole model forward per step, actions
    sampled one at a time, the environment stepped in Python, autograd over the episode, then
    the REINFORCE update of all three modules (how a gym-style trainer does it);
(b) hmarl's trainer (``Trainer.episode``, the loop ``python -m hmarl.train`` runs; validation
    and checkpoints excluded) under ``asym_1_10`` and ``sym_1_1`` on the same market, model
    and batch, for each ``--n-envs``;

their ratio, the wall-clock ratio of one 11-episode cycle (symmetric over asymmetric) and the
peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS so far).

``--specialists`` also times ``model=specialists`` (three specialists under one MacroNet,
conf/model/specialists.yaml) under both schedules, interleaved with the spec model's cycles, and
prints its time per env-step as a multiple of the spec model's (the target: <= 1.5x).

Why interleaved: the two schedules' cycles alternate (asym, sym, asym, sym, ...) and the
reference runs half before and half after them, so load from other processes on a shared
machine falls on both sides of each ratio instead of on one.

Usage: python scripts/bench_train.py [--device cpu|cuda] [--n-envs 32,256] [--cycles 2]
       [--ref-episodes 10] [--threads 0] [--precision highest|high|medium]
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hmarl.agent.reinforce import discounted_returns, make_optimizers, normalise
from hmarl.agent.rollout import market_tensors
from hmarl.agent.specialists import build_policy
from hmarl.config import Config, conf_dir, register_configs, to_config
from hmarl.train.trainer import Trainer, load_market

CYCLE = 11  # one asym_1_10 cycle: one MacroNet step, ten frozen episodes


def config(*overrides: str) -> Config:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=list(overrides)))


def plain_reference(cfg: Config, episodes: int, seed: int = 0) -> tuple[int, float]:
    """Env-steps and seconds of a per-step, gym-style REINFORCE loop (one environment, CPU)."""
    market = load_market(cfg, log=None)
    t = market_tensors(market)
    torch.manual_seed(seed)
    policy = build_policy(market.n_features, cfg.model).train()
    opts = make_optimizers(
        policy,
        lr_macro=cfg.trainer.lr_macro,
        lr_micro=cfg.trainer.lr_micro,
        lr_head=cfg.trainer.lr_head,
    )
    lo, hi = market.splits["train"]
    length, fee_rate = cfg.trainer.episode_len, cfg.env.commission
    gen = torch.Generator().manual_seed(seed)
    steps, elapsed = 0, 0.0
    for episode in range(episodes + 1):  # the first episode is a warm-up, not timed
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
            position = target * (1 + r) / (1 + target * r)  # drift, as hmarl.market.env
            position = target if abs(position - target) < 1e-12 else position
        adv = normalise(discounted_returns(torch.tensor([rewards]), cfg.trainer.gamma)).float()
        loss = -(torch.stack(logps) * adv[0]).sum()
        for o in opts.values():
            o.zero_grad()
        loss.backward()
        for o in opts.values():
            o.step()
        if episode > 0:
            elapsed += time.perf_counter() - t0
            steps += length
    return steps, elapsed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cycle(run: Trainer, device: torch.device) -> tuple[list[float], float]:
    """Wall time of each episode of the next 11-episode cycle (device work included), and
    the process's CPU time over the cycle."""
    times = []
    cpu0 = time.process_time()
    for _ in range(CYCLE):
        _sync(device)
        t0 = time.perf_counter()
        run.episode(run.state.episode)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu0


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB (CUDA peak allocated)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return f"{rss_kib / 2**20:.2f} GiB (process peak RSS so far)"


def bench_batch(
    configs: dict[str, Config], cycles: int, out: Path
) -> tuple[dict[str, list[float]], dict[str, float], str]:
    """Per-episode wall times of ``cycles`` timed cycles per config (interleaved: one cycle of
    each in turn), the CPU time of each over those cycles, and the peak memory."""
    runs = {name: Trainer(cfg, out / name) for name, cfg in configs.items()}
    device = next(next(iter(runs.values())).policy.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for run in runs.values():
        run.policy.train()
        run_cycle(run, device)  # warm-up cycle: allocator, kernels, caches
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu = dict.fromkeys(runs, 0.0)
    for _ in range(cycles):
        for name, run in runs.items():
            wall, cpu_s = run_cycle(run, device)
            times[name] += wall
            cpu[name] += cpu_s
    return times, cpu, peak_memory(device)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--n-envs", default="32", help="comma-separated batch sizes (default 32)")
    ap.add_argument("--cycles", type=int, default=2, help="timed 11-episode cycles per schedule")
    ap.add_argument(
        "--ref-episodes",
        type=int,
        default=None,
        help="timed episodes of the plain CPU reference (default 10 on cpu, 0 on cuda)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--precision", default="highest", help="trainer.matmul_precision: highest | high | medium"
    )
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for both schedules, e.g. trainer.macro_cache_chunk=0",
    )
    ap.add_argument(
        "--specialists",
        action="store_true",
        help="also time model=specialists (three specialists) against the spec model",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(x) for x in str(args.n_envs).split(",") if x.strip()]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    ref_episodes = args.ref_episodes
    if ref_episodes is None:
        ref_episodes = 10 if device.type == "cpu" else 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(
        f"machine: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {device}, matmul precision {args.precision}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        n_eps = CYCLE * (args.cycles + 1) + 1
        common = [
            "tracking=none",
            f"cache_dir={tmp}/cache",
            f"device={args.device}",
            f"trainer.episodes={n_eps}",
            *args.override,
        ]
        if args.precision != "highest":  # the default; older checkouts lack the key
            common.append(f"trainer.matmul_precision={args.precision}")
        ref_steps, ref_s = 0, 0.0
        base = config("+experiment=asym_1_10", *common)
        if ref_episodes > 0:
            s, e = plain_reference(base, ref_episodes - ref_episodes // 2)
            ref_steps, ref_s = ref_steps + s, ref_s + e
        results = []
        for n_envs in batches:
            batch = [*common, f"trainer.n_envs={n_envs}"]
            configs = {
                "asym": config("+experiment=asym_1_10", *batch),
                "sym": config("+experiment=sym_1_1", *batch),
            }
            if args.specialists:
                configs["spec_asym"] = config("+experiment=asym_1_10", "model=specialists", *batch)
                configs["spec_sym"] = config("+experiment=sym_1_1", "model=specialists", *batch)
            out = Path(tmp) / f"b{n_envs}"
            results.append((n_envs, *bench_batch(configs, args.cycles, out)))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if ref_episodes // 2 > 0:
            s, e = plain_reference(base, ref_episodes // 2, seed=1)
            ref_steps, ref_s = ref_steps + s, ref_s + e
    ref = ref_steps / ref_s if ref_s else float("nan")
    if ref_s:
        print(
            f"(a) plain reference (1 env, per-step forward + autograd, CPU): {ref:,.0f} env-steps/s"
        )
    for n_envs, times, cpu, memory in results:
        t_asym, t_sym, cpu_ratio = times["asym"], times["sym"], cpu["sym"] / cpu["asym"]
        steps = n_envs * base.trainer.episode_len
        fast = steps * len(t_asym) / sum(t_asym)
        macro_eps = t_asym[::CYCLE]
        frozen = sum(t_asym) - sum(macro_eps)
        cyc_a, cyc_s = sum(t_asym) / args.cycles, sum(t_sym) / args.cycles
        print(
            f"(b) n_envs={n_envs} x {base.trainer.episode_len}: asym_1_10 {fast:,.0f} env-steps/s "
            f"(MacroNet-update episodes {steps * len(macro_eps) / sum(macro_eps):,.0f}/s, "
            f"frozen {steps * (len(t_asym) - len(macro_eps)) / frozen:,.0f}/s), "
            f"sym_1_1 {steps * len(t_sym) / sum(t_sym):,.0f} env-steps/s; peak memory {memory}"
        )
        if ref_s:
            print(f"    ratio (b)/(a): {fast / ref:,.1f}x")
        print(
            f"    one 11-episode cycle: sym_1_1 {cyc_s:.3f} s, asym_1_10 {cyc_a:.3f} s, "
            f"sym/asym wall-clock ratio {cyc_s / cyc_a:.2f}x "
            "(SPEC's note claims 2.30x from parameter counts)"
        )
        print(f"    the same ratio in process CPU time (robust to other load): {cpu_ratio:.2f}x")
        if "spec_asym" in times:
            print_specialists(steps, times, cpu, args.cycles)


def print_specialists(
    steps: int, times: dict[str, list[float]], cpu: dict[str, float], cycles: int
) -> None:
    """model=specialists against the spec model: time per env-step and the schedules' ratio."""
    for schedule in ("asym", "sym"):
        mine, ref = sum(times[f"spec_{schedule}"]), sum(times[schedule])
        n = len(times[schedule])
        print(
            f"(c) model=specialists (3 specialists), {schedule}: "
            f"{steps * n / mine:,.0f} env-steps/s; time per env-step {mine / ref:.2f}x the spec "
            f"model's (CPU time {cpu[f'spec_{schedule}'] / cpu[schedule]:.2f}x)"
        )
    cyc_a, cyc_s = sum(times["spec_asym"]) / cycles, sum(times["spec_sym"]) / cycles
    print(
        f"    model=specialists, one 11-episode cycle: sym_1_1 {cyc_s:.3f} s, asym_1_10 "
        f"{cyc_a:.3f} s, sym/asym wall-clock ratio {cyc_s / cyc_a:.2f}x "
        f"(CPU time {cpu['spec_sym'] / cpu['spec_asym']:.2f}x)"
    )


if __name__ == "__main__":
    main()
