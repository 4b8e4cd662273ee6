"""Backtest entry point: ``python -m hmarl.backtest checkpoint=<path>`` or ``run_id=<MLflow id>``.

Only this module sees Hydra's config: it composes ``conf/backtest.yaml``, converts it to
:class:`hmarl.config.BacktestConfig` at once and calls :func:`hmarl.backtesting.backtest`, where
the backtest itself lives (see that module for what a backtest does). The names that used to be
defined here stay importable from here.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hmarl.backtesting import (
    ARGMAX,
    BACKTEST_RANGES,
    CHECKPOINT_KEYS,
    FILL_RULE,
    STRATEGY,
    Acting,
    BacktestConfig,
    BacktestError,
    BacktestResult,
    CalendarConfig,
    FeatureCheckConfig,
    Split,
    acting_for,
    backtest,
    backtest_market,
    backtest_metrics,
    backtest_tracking,
    check_feature_request,
    checkpoint_env,
    choose_momentum,
    cost_sensitivity,
    daily_frame,
    data_config_for,
    decision_range,
    describe_data,
    fetch_run_checkpoint,
    format_table,
    in_sample,
    load_backtest_checkpoint,
    null_frame,
    register_backtest_configs,
    report_figures,
    scaled_costs,
    stats_of,
    stochastic_stats,
    strategy_and_baselines,
    summarise_seeds,
    to_backtest_config,
    write_report,
)
from hmarl.cli import reported_errors, run_cli
from hmarl.config import conf_dir

__all__ = [  # the entry point, and the names that used to be defined here
    "ARGMAX",
    "BACKTEST_RANGES",
    "CHECKPOINT_KEYS",
    "FILL_RULE",
    "STRATEGY",
    "Acting",
    "BacktestConfig",
    "BacktestError",
    "BacktestResult",
    "CalendarConfig",
    "FeatureCheckConfig",
    "Split",
    "acting_for",
    "backtest",
    "backtest_market",
    "backtest_metrics",
    "backtest_tracking",
    "check_feature_request",
    "checkpoint_env",
    "choose_momentum",
    "cost_sensitivity",
    "daily_frame",
    "data_config_for",
    "decision_range",
    "describe_data",
    "fetch_run_checkpoint",
    "format_table",
    "hydra_main",
    "in_sample",
    "load_backtest_checkpoint",
    "main",
    "null_frame",
    "register_backtest_configs",
    "report_figures",
    "scaled_costs",
    "stats_of",
    "stochastic_stats",
    "strategy_and_baselines",
    "summarise_seeds",
    "to_backtest_config",
    "write_report",
]

register_backtest_configs()


@hydra.main(config_path=str(conf_dir()), config_name="backtest", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> None:
    """Compose, convert to :class:`BacktestConfig`, run."""
    with reported_errors(BacktestConfig):
        cfg = to_backtest_config(dcfg)
        backtest(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    """``python -m hmarl.backtest``: one ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(hydra_main, BacktestConfig)


if __name__ == "__main__":
    main()
