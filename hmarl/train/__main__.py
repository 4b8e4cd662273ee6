"""Training entry point: ``python -m hmarl.train +experiment=asym_1_10``.

Only this module sees Hydra's config: it composes ``conf/config.yaml``, converts it to
:class:`hmarl.config.Config` at once and calls :func:`hmarl.train.trainer.train` with plain values
(which the benchmarks and tests call directly); ``task=quote`` (``+experiment=mm_asym_1_10``)
trains the quoting agent through the same call (:mod:`hmarl.train.quote_task`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hmarl.cli import reported_errors, run_cli
from hmarl.config import Config, conf_dir, register_configs, to_config
from hmarl.train.resume import resumed_config
from hmarl.train.sweep import register_launchers
from hmarl.train.trainer import train

register_configs()
register_launchers()


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> float | None:
    """Compose, convert to typed config, train. Returns the best validation value (for sweepers)."""
    with reported_errors(Config):
        hc = HydraConfig.get()
        if dcfg.trainer.resume:  # the checkpoint's own config, with the keys named laid over
            dcfg = resumed_config(dcfg, list(hc.overrides.task))
        cfg = to_config(dcfg)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):  # SIGTERM ends the run KILLED, unless a launcher handles it (submitit: requeue)
            signal.signal(signal.SIGTERM, _sigterm)
        result = train(
            cfg,
            hc.runtime.output_dir,
            overrides=list(hc.overrides.task),
            composed_yaml=OmegaConf.to_yaml(dcfg),
        )
    return result.state.best_value


def main() -> None:
    """``python -m hmarl.train``: one ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(hydra_main, Config, "interrupted before training began: nothing to resume")


if __name__ == "__main__":
    main()
