"""Backtest entry point: ``python -m hmarl.backtest checkpoint=<path>`` or ``run_id=<MLflow id>``.

Only this module sees Hydra's config: it composes ``conf/backtest.yaml``, converts it to
:class:`hmarl.config.BacktestConfig` at once and calls :func:`hmarl.backtest.run.backtest`, where
the backtest itself lives (see that module for what a backtest does).
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hmarl.backtest.run import backtest
from hmarl.cli import reported_errors, run_cli
from hmarl.config import BacktestConfig, conf_dir, register_backtest_configs, to_backtest_config

register_backtest_configs()


@hydra.main(config_path=str(conf_dir()), config_name="backtest", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> None:
    """Compose, convert to :class:`BacktestConfig`, run."""
    with reported_errors(BacktestConfig):
        cfg = to_backtest_config(dcfg)
        backtest(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    """``python -m hmarl.backtest``: one ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(hydra_main, BacktestConfig, output_key="out")  # out= is Hydra's run dir


if __name__ == "__main__":
    main()
