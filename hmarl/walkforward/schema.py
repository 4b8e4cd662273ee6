"""The walk-forward's typed configuration: ``conf/walkforward.yaml`` = the training config plus
a ``walkforward:`` group (:class:`WalkForwardConfig`).

Why a subclass of :class:`hmarl.config.Config`: every training key (``trainer.episodes=...``,
``data=csv data.path=...``) is set exactly as for ``python -m hmarl.train`` and checked by the
same schema; the fold lengths live beside them in their own group, and the entry point splits
the two at once (:func:`to_walkforward_config`): each fold then trains on a plain ``Config``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from hmarl.config import (
    BACKTEST_RANGES,
    POSITIVE_INT,
    Config,
    ConfigError,
    Range,
    SupervisedConfig,
    at_least,
    check_values,
    describe_problems,
    to_config,
)


class Unit(str, Enum):
    """What the lengths count: bars, or days (converted with the market's bar spacing)."""

    bars = "bars"
    days = "days"


class WindowMode(str, Enum):
    """How the training window moves: a fixed length sliding forward, or growing from the start."""

    rolling = "rolling"
    expanding = "expanding"


@dataclass
class WalkForwardConfig:
    """Fold lengths and how folds run (``walkforward.*``).

    Fold k trains on ``train`` units, validates (selects ``best.pt``) on the next ``val`` and is
    tested on the next ``test``; fold k+1 starts ``step`` units later. ``step`` must be at
    least ``test`` (test segments never overlap: the stitched record counts each bar once).
    """

    train: float = 20_160  # training length (rolling; the first fold's in expanding mode)
    val: float = 4_032  # validation length: the fold's own selection of best.pt
    test: float = 4_032  # test length: the fold's out-of-sample segment
    step: float | None = None  # start-to-start distance of folds; None = test (back to back)
    unit: Unit = Unit.bars  # bars | days (days x bars per day of the market's median spacing)
    mode: WindowMode = WindowMode.rolling  # rolling | expanding (train grows by `step`)
    # folds wanted per market; None = as many as fit; more than fit is refused before training
    folds: int | None = None
    jobs: int = 1  # folds trained at once (joblib worker processes); 1 = in this process
    # train only fold number `fold` of every market, then stop without tables: one job of a
    # multirun that spreads the folds over a Hydra launcher (walkforward.fold=0,1,2 with -m);
    # the same command without it then trains nothing more and builds the tables
    fold: int | None = None
    out: str | None = None  # the walk-forward folder; None = walkforward/<date>/<time>
    random_timing: int = 1000  # random-timing policies per fold and for the stitched record
    momentum_lookbacks: list[int] = field(default_factory=lambda: [12, 48, 144, 288, 576])
    # the backtest's supervised baseline, fit on each fold's own train split and chosen on its
    # validation split (baselines.supervised of a backtest; the same keys)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)


WF_RANGES: dict[type, dict[str, Range]] = {
    WalkForwardConfig: {
        "train": at_least(1),
        "val": at_least(1),
        "test": at_least(1),
        "step": at_least(1),
        "folds": POSITIVE_INT,
        "jobs": POSITIVE_INT,
        "fold": at_least(0),
        "random_timing": at_least(0),
        "momentum_lookbacks": POSITIVE_INT,
    },
    SupervisedConfig: BACKTEST_RANGES[SupervisedConfig],
}


@dataclass
class WalkForwardRun(Config):
    """The whole walk-forward configuration (``conf/walkforward.yaml``)."""

    walkforward: WalkForwardConfig = field(default_factory=WalkForwardConfig)


def register_walkforward_configs() -> None:
    """Register ``base_walkforward`` and ``walkforward/base`` in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="base_walkforward", node=WalkForwardRun)
    cs.store(group="walkforward", name="base", node=WalkForwardConfig)


def to_walkforward_config(cfg: DictConfig) -> tuple[Config, WalkForwardConfig]:
    """The training config every fold starts from, and the walk-forward's own settings."""
    node = OmegaConf.to_object(cfg.walkforward)
    if not isinstance(node, WalkForwardConfig):
        node = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(WalkForwardConfig), node))
    assert isinstance(node, WalkForwardConfig)
    problems = check_values(node, WF_RANGES, "walkforward.")
    if problems:
        raise ConfigError(describe_problems(problems))
    train = copy.deepcopy(cfg)
    with open_dict(train):
        train.pop("walkforward")
        train.pop("hydra", None)
    plain = OmegaConf.merge(OmegaConf.structured(Config), train)
    assert isinstance(plain, DictConfig)
    return to_config(plain), node
