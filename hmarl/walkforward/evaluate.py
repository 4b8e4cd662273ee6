"""A trained fold on its test segment: the policy and every baseline, as a backtest runs them.

Why not call :func:`hmarl.backtest.run.backtest` per fold: the stitched record needs each
baseline's steps table, which a backtest keeps only in memory; the same building blocks
(:mod:`hmarl.backtest.inputs`, :mod:`hmarl.backtest.runs`) run here on the fold's test rows,
with the fold checkpoint's feature spec and scalers (never refitted) and its costs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from hmarl.agent.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.agent.rollout import market_tensors
from hmarl.backtest.inputs import backtest_market, checkpoint_env
from hmarl.backtest.runs import (
    STRATEGY,
    acting_for,
    choose_momentum,
    strategy_and_baselines,
    supervised_baseline,
)
from hmarl.config import Config, SupervisedConfig
from hmarl.stats import supervised
from hmarl.stats.metrics import Calendar
from hmarl.stats.random_timing import random_timing, random_timing_stats


@dataclass
class FoldTest:
    """A fold's test segment: steps frames by run name (``strategy`` first) and its null."""

    runs: dict[str, pd.DataFrame]
    null_percentile: float  # the policy's return against its random-timing null, in %
    momentum_bars: int


def evaluate_fold(
    cfg: Config,
    checkpoint: Path,
    *,
    momentum_lookbacks: list[int],
    random_timing_n: int,
    calendar: Calendar,
    supervised_cfg: SupervisedConfig | None = None,
) -> FoldTest:
    """Run ``checkpoint`` (the fold's ``best.pt``) and the baselines on its test split; the
    supervised baseline too (fit on the fold's train split, chosen on its validation split)
    unless ``supervised_cfg`` turns it off or LightGBM is missing."""
    ckpt = load_checkpoint(checkpoint)
    spec = ckpt["feature_spec"]
    data = replace(cfg.data)
    market = backtest_market(spec, data, cfg.cache_dir, log=None)
    rows = market.splits["test"]
    env = checkpoint_env(ckpt["env"])
    momentum_bars, _ = choose_momentum(market, env, rows, None, momentum_lookbacks, calendar)
    policy = policy_from_checkpoint(ckpt, "cpu", str(checkpoint))
    acting = acting_for(ckpt, "auto", None)
    runs = strategy_and_baselines(
        policy, market, market_tensors(market, "cpu"), rows, env, momentum_bars, acting
    )
    classifier, _ = supervised_baseline(
        market, env, rows, supervised_cfg or SupervisedConfig(), calendar, cfg.seed
    )
    if classifier is not None:
        runs[supervised.NAME] = classifier
    percentile = float("nan")
    if random_timing_n > 0:
        null = random_timing(
            runs[STRATEGY],
            market.returns[rows[0] : rows[1]],
            env,
            n=random_timing_n,
            seed=cfg.seed,
            calendar=calendar,
        )
        percentile = float(random_timing_stats(null)["Random-Timing Percentile [%]"])
    return FoldTest(runs, percentile, momentum_bars)
