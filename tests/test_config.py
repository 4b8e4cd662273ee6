"""Typed configuration: composition-time errors and experiments (conf/ in a wheel: test_wheel)."""

from __future__ import annotations

import pytest
from helpers import compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException

from hmarl.config import ActionMode, DataSource, Estimator, Exploration, flatten
from hmarl.market.features import DEFAULT_FEATURES


def test_defaults_are_the_specification() -> None:
    cfg = compose_config()
    assert cfg.data.source == DataSource.synthetic and cfg.data.n_candles == 105_120
    assert (cfg.features.macro_window, cfg.features.micro_window) == (492, 60)
    assert (cfg.trainer.lr_macro, cfg.trainer.lr_micro, cfg.trainer.lr_head) == (1e-4, 5e-4, 5e-4)
    assert cfg.trainer.gamma == 0.99 and cfg.model.dropout == 0.2 and cfg.env.commission == 0.001
    assert cfg.tracking.uri == "sqlite:///mlflow.db" and cfg.env.action_mode == ActionMode.target
    assert cfg.features.names == []  # -> the 20 defaults
    assert len(DEFAULT_FEATURES) == 20


@pytest.mark.parametrize("experiment,every", [("asym_1_10", 11), ("asym_1_2", 3), ("sym_1_1", 1)])
def test_experiments_set_the_schedule(experiment: str, every: int) -> None:
    cfg = compose_config(f"+experiment={experiment}")
    assert cfg.trainer.macro_every == every and cfg.experiment_name == experiment


def test_the_specifications_plain_loss_is_one_override_away() -> None:
    """``trainer=spec``: the plain REINFORCE loss (tests/test_expected.py checks the estimator is
    exactly SPEC.md's loss), a constant entropy bonus and the original one-evaluation selection,
    and nothing else changed."""
    spec, default = (
        compose_config("+experiment=asym_1_10", "trainer=spec"),
        compose_config("+experiment=asym_1_10"),
    )
    t = spec.trainer
    assert t.estimator == Estimator.reinforce and t.exploration == Exploration.entropy
    assert (t.entropy_coef, t.entropy_coef_final) == (0.01, None)
    assert (t.edge_null_percentile, t.edge_confirmations) == (0, 1)
    changed = {"estimator", "exploration", "entropy_coef", "entropy_coef_final"}
    changed |= {"edge_null_percentile", "edge_confirmations"}
    kept = set(vars(t)) - changed
    assert kept and all(getattr(t, k) == getattr(default.trainer, k) for k in kept)
    assert t.macro_every == 11 and spec.model == default.model and spec.env == default.env


@pytest.mark.parametrize(
    "override,words",
    [
        ("trainer.macro_evry=3", "Could not override 'trainer.macro_evry'"),
        ("trainer.episodes=abc", "trainer.episodes=abc"),
        ("env.action_mode=sideways", "env.action_mode"),
        ("data=feather", "Could not find 'data/feather'"),
    ],
)
def test_typos_and_wrong_types_fail_at_composition(override: str, words: str) -> None:
    with pytest.raises((ConfigCompositionException, MissingConfigException), match=words):
        compose_config(override)


@pytest.mark.parametrize(
    "override,words",
    [
        ("trainer.macro_every=0", "trainer.macro_every must be >= 1"),
        ("model.dropout=1.5", "model.dropout must be in"),
        ("data=csv", "data.path is required for data=csv"),
    ],
)
def test_range_errors_name_the_key(override: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        compose_config(override)


def test_flatten_gives_dotted_plain_params() -> None:
    flat = flatten(compose_config("+experiment=asym_1_10"))
    assert flat["trainer.macro_every"] == 11 and flat["data.source"] == "synthetic"
    assert flat["model.head_hidden"] == [128, 64]
