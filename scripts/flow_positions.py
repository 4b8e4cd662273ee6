"""Where a ``planted_flow`` network gains or loses against the oracle and an EMA rule, by regime.

Why: a seed that captures less than half the oracle may lose in every regime (a reader that
is slow or noisy) or in one (a habit, such as staying long on a market that rose in training);
the fix differs. This trains one seed of ``scripts/bench_learning.py``'s ``planted_flow`` (its
specialists and defaults; the run is kept under ``--work``), runs its ``best.pt`` on the test
split and splits the log growth after fees by the planted regime of each bar, beside the oracle
and an EMA rule on the flow column (span 10, long above +0.5, short below -0.5, hold between).

    python scripts/flow_positions.py --seed 4 --work /tmp/flow4

Figures: docs/specialists.md, "Where seeds 4 and 8 lose".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_learning as bl
from flow_rule_bounds import hysteresis

from hmarl.agent.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.agent.evaluation import run_split
from hmarl.agent.rollout import market_tensors
from hmarl.market.planted import FLOW_COLUMN, oracle_positions
from hmarl.train.trainer import env_params, load_market


def log_growth(positions: np.ndarray, returns: np.ndarray, fee: float) -> np.ndarray:
    """Per bar: ``log(1 + x_t r_t) + log(1 - fee |x_t - x_{t-1}|)`` (flat before the first)."""
    turnover = np.abs(np.diff(positions, prepend=0.0))
    return np.log1p(positions * returns) + np.log1p(-fee * turnover)


def by_regime(
    records: dict[str, np.ndarray], oracle: np.ndarray, returns: np.ndarray, fee: float
) -> pd.DataFrame:
    """Log growth of each position record summed over the bars of each oracle regime (and all),
    with the share of those bars each record is long and short."""
    rows = []
    growth = {name: log_growth(x, returns, fee) for name, x in records.items()}
    for label, mask in (
        ("down", oracle < 0),
        ("flat", oracle == 0),
        ("up", oracle > 0),
        ("all", np.ones_like(oracle, dtype=bool)),
    ):
        row: dict[str, object] = {"regime": label, "bars": int(mask.sum())}
        for name, x in records.items():
            row[name] = float(growth[name][mask].sum())
            row[f"{name} long %"] = 100.0 * float((x[mask] > 0).mean()) if mask.any() else 0.0
            row[f"{name} short %"] = 100.0 * float((x[mask] < 0).mean()) if mask.any() else 0.0
        rows.append(row)
    return pd.DataFrame(rows).set_index("regime")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--work", type=Path, required=True, help="kept: the run and its market")
    parser.add_argument("overrides", nargs="*", help="training overrides (key=value)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    market = bl.make_market("planted_flow", args.work, bl.PLANTED_DRIFT, args.seed)
    run_dir = args.work / f"planted_flow_seed{args.seed}"
    best = run_dir / "checkpoints" / "best.pt"
    if not best.exists():
        print(f"training seed {args.seed} ({args.episodes} episodes) in {run_dir} ...", flush=True)
        bl.one_run(market, args.seed, args.overrides, args.work, args.episodes)
    cfg = bl.compose_config(
        [
            "+experiment=asym_1_10",
            f"seed={args.seed}",
            "tracking=none",
            f"cache_dir={args.work / 'cache'}",
            *market.overrides,
            *args.overrides,
        ]
    )
    cfg.model.specialists = [bl.SpecialistConfig(**vars(s)) for s in market.specialists]
    data, env = load_market(cfg, log=None), env_params(cfg)
    policy = policy_from_checkpoint(load_checkpoint(best))
    greedy = cfg.trainer.eval_policy.value == "greedy"
    steps = run_split(policy, data, market_tensors(data), "test", env, greedy=greedy, seed=cfg.seed)
    lo, hi = data.splits["test"]
    flow = pd.read_csv(args.work / f"planted_flow_{args.seed}.csv")[FLOW_COLUMN].to_numpy()
    ema = pd.Series(flow).ewm(span=10, adjust=False).mean().to_numpy()
    assert market.regime is not None
    records = {
        "network": steps["position"].to_numpy(dtype=np.float64),
        "ema rule": hysteresis(ema, 0.5)[lo:hi],
        "oracle": oracle_positions(market.regime, np.arange(lo, hi), env.allow_short),
    }
    returns = (steps["next_price"] / steps["price"] - 1.0).to_numpy(dtype=np.float64)
    table = by_regime(records, records["oracle"], returns, env.cost_rate)
    print(f"seed {args.seed}, test bars {hi - lo}: log growth after fees by planted regime")
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
