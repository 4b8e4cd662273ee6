"""Walk-forward entry point: ``python -m hmarl.walkforward [key=value ...]``.

Only this module sees Hydra's config: it composes ``conf/walkforward.yaml`` (the training
config plus the ``walkforward:`` group), splits it into the training :class:`hmarl.config.Config`
every fold starts from and :class:`hmarl.walkforward.schema.WalkForwardConfig`, and calls
:func:`hmarl.walkforward.run.walk_forward`.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hmarl.cli import reported_errors, run_cli
from hmarl.config import conf_dir, register_configs
from hmarl.walkforward.run import walk_forward
from hmarl.walkforward.schema import (
    WalkForwardRun,
    register_walkforward_configs,
    to_walkforward_config,
)

register_configs()
register_walkforward_configs()


@hydra.main(config_path=str(conf_dir()), config_name="walkforward", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> None:
    """Compose, convert, run the walk-forward into ``walkforward.out`` (or a dated folder)."""
    with reported_errors(WalkForwardRun):
        cfg, wf = to_walkforward_config(dcfg)
        overrides = [
            o for o in HydraConfig.get().overrides.task if not o.startswith("walkforward.")
        ]
        walk_forward(cfg, wf, overrides=overrides)


def main() -> None:
    """One ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(
        hydra_main,
        WalkForwardRun,
        "interrupted: re-run with walkforward.out=<its folder> to resume",
    )


if __name__ == "__main__":
    main()
