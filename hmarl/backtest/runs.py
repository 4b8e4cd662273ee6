"""A backtest's runs: the policy and the baselines on the same rows and costs, and their stats.

Every run is a steps table (:mod:`hmarl.steps`) settled with the same
:class:`~hmarl.market.env.EnvParams`, and every figure comes from
:func:`hmarl.stats.metrics.compute_stats` with one calendar. The policy never sees costs, so
cost sensitivity only re-settles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from hmarl.agent.evaluation import run_split, settled_steps
from hmarl.config import BacktestError, SupervisedConfig
from hmarl.stats import supervised
from hmarl.stats.baselines import (
    BASELINE_DEFINITIONS,
    baseline_steps,
    choose_momentum_lookback,
    momentum_band,
)
from hmarl.stats.metrics import Calendar, compute_stats
from hmarl.steps import ACTION, POSITION, PROB_COLUMNS

if TYPE_CHECKING:
    from hmarl.agent.policy import HierarchicalPolicy
    from hmarl.agent.rollout import MarketTensors
    from hmarl.market.env import EnvParams
    from hmarl.market.market_data import MarketData

Stats = dict[str, Any]
STRATEGY = (
    "strategy"  # the policy's run; baselines keep their names (hmarl.stats.baselines.BASELINES)
)


def scaled_costs(env: EnvParams, multiplier: float) -> EnvParams:
    """Commission and slippage times ``multiplier`` (cost sensitivity)."""
    return replace(
        env, commission=env.commission * multiplier, slippage_bps=env.slippage_bps * multiplier
    )


def stats_of(
    runs: Mapping[str, pd.DataFrame], calendar: Calendar, n_bootstrap: int, seed: int
) -> dict[str, Stats]:
    """:func:`compute_stats` of each steps frame, one calendar and bootstrap for all."""
    return {
        name: compute_stats(steps, calendar=calendar, n_bootstrap=n_bootstrap, seed=seed)
        for name, steps in runs.items()
    }


class Acting(NamedTuple):
    """How the strategy acts in a backtest: argmax, or sampled actions with a seed."""

    greedy: bool = True
    seed: int = 0

    def describe(self) -> str:
        return "argmax actions" if self.greedy else f"sampled actions (seed {self.seed})"


ARGMAX = Acting()


def acting_for(ckpt: Mapping[str, Any], mode: str, seed: int | None) -> Acting:
    """``auto`` acts as the checkpoint was validated (``trainer.eval_policy``, its seed), so a
    backtest of the validation split reproduces the figures `best.pt` was selected on."""
    trained = ckpt.get("config", {})
    if mode == "auto":  # checkpoints from before eval_policy existed validated with argmax
        mode = str(trained.get("trainer", {}).get("eval_policy", "greedy"))
    if mode not in ("greedy", "sample"):
        raise BacktestError(f"policy={mode!r}: choose auto, greedy or sample")
    return Acting(mode == "greedy", int(trained.get("seed", 0)) if seed is None else seed)


def strategy_and_baselines(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    momentum_bars: int,
    acting: Acting = ARGMAX,
) -> dict[str, pd.DataFrame]:
    """Steps frames of the policy, then of each baseline: same rows, same costs."""
    strategy = run_split(policy, market, tensors, rows, env, greedy=acting.greedy, seed=acting.seed)
    runs = {STRATEGY: strategy}
    runs.update(baseline_steps(market, *rows, env, momentum_bars=momentum_bars))
    return runs


def choose_momentum(
    market: MarketData,
    env: EnvParams,
    rows: tuple[int, int],
    fixed: int | None,
    lookbacks: Sequence[int],
    calendar: Calendar,
) -> tuple[int, dict[str, Any]]:
    """The momentum baseline's lookback and how it was chosen (for the report's meta).

    Chosen on this data's validation split, like the policy's checkpoint, unless ``fixed``;
    ``in_sample`` says the reported bars overlap the bars it was chosen on.
    """
    info: dict[str, Any] = {"band": momentum_band(env), "rule": BASELINE_DEFINITIONS["momentum"]}
    if fixed is not None:
        return fixed, {**info, "lookback_bars": fixed, "chosen_on": "fixed (momentum_bars)"}
    best, sharpe = choose_momentum_lookback(market, env, lookbacks, "val", calendar)
    v_lo, v_hi = market.splits["val"]
    return best, {
        **info,
        "lookback_bars": best,
        "chosen_on": "val split, best Sharpe after costs",
        "val_sharpe_by_lookback": {str(k): v for k, v in sharpe.items()},
        "in_sample": rows[0] < v_hi and v_lo < rows[1],
    }


def stochastic_stats(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    seeds: int,
    calendar: Calendar,
    tick: Callable[[], object] = lambda: None,
) -> pd.DataFrame:
    """Numeric stats of ``seeds`` sampled runs (seeds 0..K-1), one row per seed."""
    records = {}
    for seed in range(seeds):
        steps = run_split(policy, market, tensors, rows, env, greedy=False, seed=seed)
        stats = compute_stats(steps, calendar=calendar, n_bootstrap=0)
        records[seed] = {k: v for k, v in stats.items() if not isinstance(v, str)}
        tick()
    frame = pd.DataFrame.from_dict(records, orient="index")
    frame.index.name = "seed"
    return frame


def summarise_seeds(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1; 0 with one seed) of each stochastic stat."""
    mean = frame.mean()
    std = frame.std(ddof=1) if len(frame) > 1 else mean * 0.0
    return {
        "mean": {str(k): float(v) for k, v in mean.items()},
        "std": {str(k): float(v) for k, v in std.items()},
    }


def resettled(
    runs: Mapping[str, pd.DataFrame],
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    momentum_bars: int,
) -> dict[str, pd.DataFrame]:
    """``runs`` under ``env``'s costs: the strategy's decisions settled anew, the baselines rerun.

    The policy never sees costs, so its actions, positions and probabilities stand; running it
    again would only repeat the pass (the slowest part of a backtest) for the same decisions.
    When ``env`` is the costs ``runs`` were settled with, they are returned as they are.
    """
    strategy = runs[STRATEGY]
    probs = [c for c in PROB_COLUMNS if c in strategy.columns]
    again = settled_steps(
        market,
        tensors,
        rows,
        strategy[ACTION].to_numpy(),
        strategy[POSITION].to_numpy(dtype=np.float64),
        strategy[probs].to_numpy(dtype=np.float64) if probs else None,
        env,
    )
    return {STRATEGY: again, **baseline_steps(market, *rows, env, momentum_bars=momentum_bars)}


def cost_sensitivity(
    runs: Mapping[str, pd.DataFrame],
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    multipliers: Iterable[float],
    *,
    calendar: Calendar,
    momentum_bars: int,
    seed: int,
    tick: Callable[[], object] = lambda: None,
) -> pd.DataFrame:
    """Stats of the strategy and baselines at each cost multiplier, one row per (x, run).

    ``runs``: the strategy's and baselines' steps at ``env``'s costs (1x). Only settlement
    changes (:func:`resettled`): the policy never sees costs, and the momentum rule keeps the
    lookback chosen at 1x (its band follows the costs, as a cost-aware rule's would).
    """
    records = []
    # the runs re-settled at every multiplier (the supervised baseline, refit per cost, is not)
    at_1x = {n: f for n, f in runs.items() if n == STRATEGY or n in BASELINE_DEFINITIONS}
    for m in multipliers:
        env_m = scaled_costs(env, m)
        runs_m = (
            at_1x if env_m == env else resettled(runs, market, tensors, rows, env_m, momentum_bars)
        )
        for name, stats in stats_of(runs_m, calendar, 0, seed).items():
            records.append({"fee_multiplier": float(m), "run": name, **stats})
        del runs_m  # one multiplier's frames at a time
        tick()
    return pd.DataFrame.from_records(records).set_index(["fee_multiplier", "run"])


def supervised_baseline(
    market: MarketData,
    env: EnvParams,
    rows: tuple[int, int],
    cfg: SupervisedConfig,
    calendar: Calendar,
    seed: int,
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """The supervised baseline's steps frame over ``rows`` and its stats.json entry.

    Fit on this data's train split and chosen on its validation split
    (:mod:`hmarl.stats.supervised`); None with the reason when it is off or LightGBM is
    missing (``enabled: null``), an error when it was required (``enabled: true``).
    """
    if cfg.enabled is False:
        return None, {"skipped": "baselines.supervised.enabled=false"}
    if not supervised.available():
        if cfg.enabled:
            raise BacktestError(
                "baselines.supervised.enabled=true but lightgbm is not installed: "
                "pip install lightgbm, or set baselines.supervised.enabled=false"
            )
        return None, {"skipped": "lightgbm is not installed (pip install lightgbm)"}
    params = supervised.SupervisedParams(
        horizons=tuple(cfg.horizons),
        thresholds=tuple(cfg.thresholds),
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        max_bin=cfg.max_bin,
        subsample=cfg.subsample,
        colsample=cfg.colsample,
        max_train_rows=cfg.max_train_rows,
        seed=seed,
    )
    choice = supervised.choose(market, env, params, calendar)
    return supervised.supervised_steps(choice, market, *rows, env), supervised.describe(
        choice, market, rows
    )
