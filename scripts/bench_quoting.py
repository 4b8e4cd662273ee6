"""Market making: the trained agent against the exact optimum (``--market as``, the default) or
against the baselines on a synthetic tick market (``--market ticks``) or a real capture
(``--market real``).

Avellaneda-Stoikov market, for each seed: train the hierarchical quoting agent
(hmarl/train/quoting.py), then print its test objective as a fraction of the exact optimum and
the share of the gap between the best fixed symmetric quote and the optimum it closed, beside
the optimum, the best fixed quote, the closed-form (Avellaneda-Stoikov / Gueant) quotes and no
quoting. Figures are expected wealth change per episode (price units x lots); the market does
not react to the quotes (no impact).

    OMP_NUM_THREADS=1 python scripts/bench_quoting.py --seeds 5 --episodes 150

Synthetic tick market (``TICKS`` below; fresh seeded train / validation / test tapes per seed):
the agent's test objective (settled reward per 100-step episode, mark-to-market included)
beside no quote, the best fixed symmetric quote chosen on validation and the closed-form quotes
with sigma, A, k estimated on the train tape; the count of seeds where the agent beats both.

    OMP_NUM_THREADS=1 python scripts/bench_quoting.py --market ticks --seeds 10 --episodes 500

Real capture (the bundled Binance BTCUSDT websocket capture, ``REAL_*`` below), one run, no edge
claimed: the point is that it runs end to end.

    OMP_NUM_THREADS=1 python scripts/bench_quoting.py --market real --episodes 100
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from hmarl.data.ticks_synthetic import TickParams
from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams
from hmarl.market.tape_market import TapeMarket, split_tape, synthetic_market
from hmarl.train.quote_tape import TapeResult
from hmarl.train.quoting import QuoteTraining, train_quotes

# The benchmark market: an inventory penalty strong enough that the best fixed symmetric quote
# reaches at most 75% of the optimum (printed below), and a short horizon.
MARKET = av.ASParams(sigma=2.0, A=140.0, k=1.5, dt=0.005, steps=100)
PARAMS = QuoteParams(offsets=(1, 2, 3, 4, 6), tick=0.2, max_inventory=5, phi=0.01, alpha=0.5)

# The synthetic tick market: price 100.00 on a 0.01 tick, a 1-s step; the best bid moves a tick
# in 20% of steps, the spread is 1, 2, 3 ticks (60/30/10%), 3 lots a level, 0.5 market orders
# of 2 lots (means) per side a step; 30% of steps with a net flow move the mid its way
# (adverse selection). 50,000 train steps, 20,000 validation and 20,000 test (199 episodes each:
# the mark-to-market of a quote is noisy, and a short validation tape picks lucky checkpoints).
TICKS = TickParams(informed=0.3)
TICK_STEPS = (50_000, 20_000, 20_000)
TICK_EPISODE = 100
# Quotes at the best or 1, 2, 4 ticks behind it; 5 lots a side; a light inventory penalty;
# liquidation at the end of each episode at half a tick a lot and alpha 1e-3 lot^-2.
TICK_PARAMS = QuoteParams(
    offsets=(0, 1, 2, 4), tick=0.01, max_inventory=5, phi=2e-5, alpha=1e-3, liquidation_cost=0.005
)
TICK_TRAINING = QuoteTraining(episodes=500, n_envs=8, eval_every=25)

# The real capture: sampled every 0.25 s, lots of 0.001 BTC, 60/20/20 time segments,
# 50-step episodes and shorter windows (the capture is five minutes long).
REAL_CAPTURE = (
    Path(__file__).resolve().parents[1] / "../shared/data/binance_spot_btcusdt_20240809_ws.gz"
)
REAL_DT_NS, REAL_LOT, REAL_EPISODE = 250_000_000, 0.001, 50


def tick_market(seed: int) -> TapeMarket:
    return synthetic_market(TICKS, seed, TICK_STEPS, episode_steps=TICK_EPISODE)


def real_market() -> TapeMarket:
    from hmarl.sources.tick_tape import tape_from_ticks
    from hmarl.sources.ticks import read_ws_capture

    ticks = read_ws_capture(REAL_CAPTURE.resolve())
    tape = tape_from_ticks(
        ticks, dt_ns=REAL_DT_NS, tick=0.01, lot=REAL_LOT, where=str(REAL_CAPTURE)
    )
    return split_tape(tape, 0.01, REAL_DT_NS / 1e9, (0.6, 0.2), episode_steps=REAL_EPISODE)


def print_tape(seed: int, r: TapeResult) -> None:
    print(
        f"seed {seed}: agent {r.test:.4f} (validation {r.validation:.4f}, episode "
        f"{r.best_episode}); best fixed level {r.best_fixed_level} {r.best_fixed:.4f} "
        f"(validation {r.best_fixed_validation:.4f}); closed form {r.closed_form:.4f} "
        f"(validation {r.closed_form_validation:.4f}; sigma {r.estimate.sigma:.3g}, "
        f"A {r.estimate.A:.3g}, k {r.estimate.k:.3g}); no quote {r.no_quote:.4f}; "
        f"beats both: {r.beats_baselines}; {r.env_steps} env-steps in {r.seconds:.0f} s",
        flush=True,
    )


def tape_table(rows: list[TapeResult]) -> None:
    def line(name: str, xs: list[float]) -> str:
        a = np.array(xs)
        return f"| {name} | {a.mean():.4f} | {a.std():.4f} | {a.min():.4f} | {a.max():.4f} |"

    print()
    print("| policy (test, per episode) | mean | std | min | max |")
    print("|---|---|---|---|---|")
    print(line("trained agent", [r.test for r in rows]))
    print(line("best fixed quote (chosen on validation)", [r.best_fixed for r in rows]))
    print(line("closed form, estimated sigma, A, k", [r.closed_form for r in rows]))
    print(line("no quote", [r.no_quote for r in rows]))
    wins = sum(r.beats_baselines for r in rows)
    print(f"\nagent beats the best fixed quote and the closed form on test: {wins}/{len(rows)}")
    stats = rows[0].stats
    keys = (
        "PnL [price x lots]",
        "Fills bid [#]",
        "Fills ask [#]",
        "Fill ratio [%]",
        "Inventory |mean| [lots]",
        "Time at limits [%]",
        "Max. Drawdown [price x lots]",
    )
    print("\nfirst seed's test statistics:")
    for name, st in stats.items():
        print(f"  {name}: " + ", ".join(f"{k} {st[k]:.4g}" for k in keys))
    for day, st in rows[0].per_day.items():
        print(f"  agent on {day}: " + ", ".join(f"{k} {st[k]:.4g}" for k in keys[:3]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=None, help="150 (as), 500 (ticks, real)")
    ap.add_argument("--n-envs", type=int, default=None, help="32 (as), 8 (ticks, real)")
    ap.add_argument("--estimator", default="expected")
    ap.add_argument("--market", choices=("as", "ticks", "real"), default="as")
    ap.add_argument("--lr", type=float, default=None, help="MicroNet and head learning rate")
    args = ap.parse_args()
    if args.market != "as":
        base = TICK_TRAINING
        if args.market == "real":
            base = dataclasses.replace(base, macro_window=32, micro_window=8)
        lr = args.lr if args.lr is not None else base.lr_head
        settings = dataclasses.replace(
            base,
            episodes=args.episodes or base.episodes,
            n_envs=args.n_envs or base.n_envs,
            estimator=args.estimator,
            lr_micro=lr,
            lr_head=lr,
        )
        tape_rows = []
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        for seed in seeds if args.market == "ticks" else [args.first_seed]:
            market = tick_market(seed) if args.market == "ticks" else real_market()
            _, tr = train_quotes(market, TICK_PARAMS, dataclasses.replace(settings, seed=seed))
            print_tape(seed, tr)
            tape_rows.append(tr)
        tape_table(tape_rows)
        return
    settings = QuoteTraining(
        episodes=args.episodes or 150, n_envs=args.n_envs or 32, estimator=args.estimator
    )
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        _, r = train_quotes(MARKET, PARAMS, dataclasses.replace(settings, seed=seed))
        rows.append(r)
        print(
            f"seed {seed}: test {r.test:.4f} = {r.fraction:.1%} of the optimum {r.optimum:.4f}, "
            f"gap closed {r.gap_closed:.1%} (best fixed {r.best_fixed:.4f} at level "
            f"{r.best_fixed_level}, closed form {r.closed_form:.4f}, no quote {r.no_quote:.4f}); "
            f"best episode {r.best_episode}, {r.env_steps} env-steps in {r.seconds:.0f} s",
            flush=True,
        )
    frac = np.array([r.fraction for r in rows])
    gap = np.array([r.gap_closed for r in rows])
    first = rows[0]
    print()
    print("| policy | objective | of the optimum |")
    print("|---|---|---|")
    print(f"| exact optimum | {first.optimum:.4f} | 100% |")
    print(
        f"| trained agent ({args.estimator}), mean over {len(rows)} seeds | "
        f"{np.mean([r.test for r in rows]):.4f} | {frac.mean():.1%} (min {frac.min():.1%}, "
        f"max {frac.max():.1%}) |"
    )
    print(
        f"| best fixed symmetric quote (level {first.best_fixed_level}) | {first.best_fixed:.4f} "
        f"| {first.best_fixed / first.optimum:.1%} |"
    )
    print(
        f"| closed-form quotes | {first.closed_form:.4f} | "
        f"{first.closed_form / first.optimum:.1%} |"
    )
    print(f"| no quote | {first.no_quote:.4f} | 0% |")
    print()
    print(
        f"gap closed: mean {gap.mean():.1%}, min {gap.min():.1%}; seeds reaching >= 95% of the "
        f"optimum and closing >= 80% of the gap: "
        f"{int(((frac >= 0.95) & (gap >= 0.8)).sum())}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
