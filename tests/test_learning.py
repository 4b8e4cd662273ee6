"""Learning: on the synthetic market the trained policy beats flat and random timing after fees.

Each run is sized to take well under 60 s on 2 cores (300 episodes of 32 x 256 decisions,
50,000 bars); the elapsed time is printed, not asserted (speed lives in scripts/bench_train.py).
The `best` checkpoint is selected on validation, so it is also checked on the test split,
which training and selection never saw.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import compose_config

from hmarl.baselines import baseline_steps
from hmarl.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.evaluation import market_tensors, run_split
from hmarl.metrics import compute_stats
from hmarl.random_timing import random_timing, random_timing_stats
from hmarl.train import env_params, load_market, train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trained_policy_beats_flat_and_random_timing(tmp_path: Path, seed: int) -> None:
    cfg = compose_config(
        "+experiment=asym_1_10",
        "data.n_candles=50000",
        "trainer.episodes=300",
        "trainer.eval_every=25",
        f"seed={seed}",
        "tracking=none",
        f"cache_dir={tmp_path}/cache",
    )
    t0 = time.perf_counter()
    result = train(cfg, tmp_path / "run", progress=False)
    print(f"seed {seed}: trained in {time.perf_counter() - t0:.1f} s")
    assert result.best_checkpoint is not None

    policy = policy_from_checkpoint(load_checkpoint(result.best_checkpoint))
    market = load_market(cfg, log=None)
    tensors, env = market_tensors(market), env_params(cfg)
    for split in ("val", "test"):
        steps = run_split(policy, market, tensors, split, env)
        ours = compute_stats(steps, n_bootstrap=0)
        lo, hi = market.splits[split]
        base = baseline_steps(market, lo, hi, env, names=("flat",))
        flat = compute_stats(base["flat"], n_bootstrap=0)["Return [%]"]
        null = random_timing_stats(random_timing(steps, market.returns[lo:hi], env, seed=seed))
        rand = null["Random-Timing Median Return [%]"]
        print(
            f"  {split}: policy {ours['Return [%]']:+.1f}% ({ours['# Trades']} trades, fees "
            f"{ours['Fees Paid [%]']:.2f}%), flat {flat:+.1f}%, random timing median "
            f"{rand:+.1f}% (policy's percentile {null['Random-Timing Percentile [%]']:.0f}%)"
        )
        assert ours["# Trades"] > 0
        assert ours["Return [%]"] > flat + 1.0, split
        assert ours["Return [%]"] > rand + 1.0, split
