"""Market making on the Avellaneda-Stoikov market: the trained agent against the exact optimum.

For each seed: train the hierarchical quoting agent (hmarl/train/quoting.py), then print its
test objective as a fraction of the exact optimum and the share of the gap between the best
fixed symmetric quote and the optimum it closed, beside the optimum, the best fixed quote, the
closed-form (Avellaneda-Stoikov / Gueant) quotes and no quoting. Figures are expected wealth
change per episode (price units x lots); the market does not react to the quotes (no impact).

    OMP_NUM_THREADS=1 python scripts/bench_quoting.py --seeds 5 --episodes 150
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams
from hmarl.train.quoting import QuoteTraining, train_quotes

# The benchmark market: an inventory penalty strong enough that the best fixed symmetric quote
# reaches at most 75% of the optimum (printed below), and a short horizon.
MARKET = av.ASParams(sigma=2.0, A=140.0, k=1.5, dt=0.005, steps=100)
PARAMS = QuoteParams(offsets=(1, 2, 3, 4, 6), tick=0.2, max_inventory=5, phi=0.01, alpha=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--n-envs", type=int, default=32)
    ap.add_argument("--estimator", default="expected")
    args = ap.parse_args()
    settings = QuoteTraining(episodes=args.episodes, n_envs=args.n_envs, estimator=args.estimator)
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
