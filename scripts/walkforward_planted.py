"""Walk-forward on a planted edge: how much of the oracle the stitched record captures.

The planted market (hmarl/market/planted.py: real BTCUSDT 2024Q4 candles with a seeded regime
drift) has a known best policy, the oracle that knows the regime. This runs
``python -m hmarl.walkforward``'s :func:`hmarl.walkforward.run.walk_forward` on it and settles
the oracle on exactly the stitched test bars (same costs), then prints the capture: the
stitched return over the oracle's.

    python scripts/walkforward_planted.py --out /tmp/wf_planted walkforward.unit=days \
        walkforward.train=30 walkforward.val=14 walkforward.test=7 walkforward.folds=6 \
        walkforward.mode=expanding walkforward.jobs=2 threads=1 tracking=none

(14-day validations: they confirmed more folds than 7-day ones on two of three planted draws
tried; see docs/walkforward.md, "Planted capture".)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from hmarl.config import conf_dir, register_configs
from hmarl.data.reading import load_candles
from hmarl.market.env import EnvParams, settle
from hmarl.market.planted import late_oracle_positions, oracle_positions, plant_edge
from hmarl.steps import market_returns
from hmarl.walkforward.run import walk_forward
from hmarl.walkforward.schema import register_walkforward_configs, to_walkforward_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
Q4 = "binance_spot_BTCUSDT_5m_2024Q4.csv"
LATE_BARS = (50, 100, 150, 200)  # the late oracles printed beside the capture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the walk-forward folder")
    parser.add_argument("--seed", type=int, default=0, help="the planted regimes' seed")
    parser.add_argument("--drift", type=float, default=3e-4, help="planted log drift per bar")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("overrides", nargs="*", help="walk-forward overrides (key=value)")
    args = parser.parse_args()

    candles = load_candles(args.data_dir / Q4, log=None)
    planted, regime = plant_edge(candles, args.seed, drift=args.drift)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "planted.csv"
    planted.reset_index().to_csv(path, index=False)

    register_configs()
    register_walkforward_configs()
    overrides = ["data=csv", f"data.path={path}", f"walkforward.out={args.out}", *args.overrides]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg, wf = to_walkforward_config(compose("walkforward", overrides=overrides))
    walk_forward(cfg, wf, overrides=overrides)

    env = EnvParams.from_config(cfg.env)
    index = pd.DatetimeIndex(planted.index)
    stitched = args.out / "planted" / "stitched" / "steps.csv"
    steps = pd.read_csv(stitched, index_col=0, parse_dates=True)
    rows = index.get_indexer(pd.DatetimeIndex(steps.index))
    held = oracle_positions(regime, rows, env.allow_short)
    returns = market_returns(steps)
    oracle = settle(held[None, :], returns[None, :], env).equity[0]
    oracle_pct = (float(oracle[-1]) - 1.0) * 100.0
    stats = pd.read_csv(args.out / "planted" / "stitched" / "stats.csv", index_col=0)
    print(f"stitched test bars: {len(steps)}; oracle return {oracle_pct:.2f}%")
    for name in stats.columns:
        value = float(stats.loc["Return [%]", name])
        capture = value / oracle_pct if oracle_pct > 0 else np.nan
        # the same in log growth: compounding makes the ratio of returns punish any shortfall
        growth = (
            np.log1p(value / 100.0) / np.log1p(oracle_pct / 100.0) if oracle_pct > 0 else np.nan
        )
        print(
            f"{name:>14}: return {value:8.2f}%  capture of the oracle {capture:6.1%} "
            f"(of its log growth {growth:6.1%})"
        )
    # what a causal reader can at best capture: the oracle that learns each regime late
    for lag in LATE_BARS:
        late = late_oracle_positions(regime, rows, lag, env.allow_short)
        value = (float(settle(late[None, :], returns[None, :], env).equity[0][-1]) - 1.0) * 100.0
        print(
            f"oracle {lag:3d} bars late: return {value:8.2f}%  capture {value / oracle_pct:6.1%} "
            f"(of its log growth {np.log1p(value / 100) / np.log1p(oracle_pct / 100):6.1%})"
        )


if __name__ == "__main__":
    main()
