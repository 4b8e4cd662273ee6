"""The supervised baseline: fit on train only, chosen on validation, settled like the others."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hmarl.market.env import EnvParams, settle
from hmarl.market.market_data import MarketData
from hmarl.stats import supervised
from hmarl.stats.baselines import momentum_band, settled_frame
from hmarl.stats.metrics import compute_stats
from hmarl.steps import EQUITY, FEE, POSITION

pytest.importorskip("lightgbm", reason="the supervised baseline needs lightgbm")

SPLITS = {"train": (0, 1500), "val": (1500, 2000), "test": (2000, 2499)}
SMALL = supervised.SupervisedParams(n_estimators=30, min_child_samples=20)


def test_one_binned_dataset_fits_each_horizon_as_alone() -> None:
    m = planted_market()
    band = momentum_band(EnvParams())
    together = supervised.fit(m, (1, 12), band, SMALL)
    alone = supervised.fit(m, (12,), band, SMALL)[12]
    assert together[12].model_to_string() == alone.model_to_string()
    assert together[1].model_to_string() != alone.model_to_string()


def planted_market(seed: int = 0, n: int = 2500, flip_val: bool = False) -> MarketData:
    """Random-walk closes whose next-bar move is partly visible in feature 0.

    ``flip_val``: in the validation split the feature points the other way, so what
    validation prefers is visibly its own.
    """
    rng = np.random.default_rng(seed)
    ret = rng.normal(0.0, 0.004, n)
    close = 100.0 * np.cumprod(np.concatenate(([1.0], 1.0 + ret[:-1])))
    returns = np.append(close[1:] / close[:-1] - 1.0, 0.0)
    signal = np.sign(returns) + rng.normal(0.0, 0.8, n)
    if flip_val:
        lo, hi = SPLITS["val"]
        signal[lo:hi] *= -1.0
    macro = np.stack([signal, rng.normal(size=n), rng.normal(size=n)], axis=1).astype(np.float32)
    micro = rng.normal(size=(n, 3)).astype(np.float32)
    index = pd.date_range("2026-01-01", periods=n, freq="5min", tz="UTC")
    return MarketData(
        index, close, returns, macro, micro, dict(SPLITS), ["x"], 2, 2, {}, f"planted-{seed}"
    )


def test_labels_classes_and_the_cost_band() -> None:
    close = np.array([100.0, 100.1, 99.0, 101.0, 101.05])
    rows = np.arange(4)
    y = supervised.labels(close, rows, 1, band=0.002)
    assert y.tolist() == [supervised.NEUTRAL, supervised.DOWN, supervised.UP, supervised.NEUTRAL]
    assert supervised.labels(close, rows[:2], 3, band=0.002).tolist() == [supervised.UP] * 2
    # labels read closes inside their split only
    m = planted_market()
    rows = supervised.labelled_rows(m, "train", 12)
    assert rows[-1] + 12 == SPLITS["train"][1] - 1
    # balanced weights: each present class carries the same total weight
    y = np.array([1, 1, 1, 1, 1, 1, 0, 2])
    w = supervised.class_weights(y)
    totals = [w[y == k].sum() for k in range(3)]
    assert totals == pytest.approx([8 / 3] * 3)


def test_fit_uses_no_validation_or_test_rows() -> None:
    env = EnvParams()
    band = momentum_band(env)
    base = planted_market()
    changed = planted_market()
    hi = SPLITS["train"][1]
    rng = np.random.default_rng(9)
    changed.close[hi:] *= np.exp(np.cumsum(rng.normal(0, 0.01, changed.close.size - hi)))
    changed.macro[hi:] = rng.normal(size=changed.macro[hi:].shape)
    changed.micro[hi:] = rng.normal(size=changed.micro[hi:].shape)
    a = supervised.fit(base, (3,), band, SMALL)[3]
    b = supervised.fit(changed, (3,), band, SMALL)[3]
    assert a.model_to_string() == b.model_to_string()
    # and the test can fail: a change inside the train split changes the model
    changed.macro[hi - 100 : hi - 4, 0] *= -1.0
    c = supervised.fit(changed, (3,), band, SMALL)[3]
    assert a.model_to_string() != c.model_to_string()


def test_horizon_and_threshold_are_chosen_on_validation() -> None:
    env = EnvParams()
    m = planted_market()
    choice = supervised.choose(m, env, SMALL)
    key = f"h={choice.horizon} threshold={choice.threshold:g}"
    assert set(choice.val_sharpe) == {
        f"h={h} threshold={t:g}" for h in SMALL.horizons for t in SMALL.thresholds
    }
    finite = {k: v for k, v in choice.val_sharpe.items() if math.isfinite(v)}
    assert choice.val_sharpe[key] == max(finite.values())
    # the grid's figure is the validation run's Sharpe, recomputed here
    lo, hi = SPLITS["val"]
    probs = supervised.probabilities(choice.model, m, np.arange(lo, hi))
    frame = settled_frame(m, lo, hi, supervised.positions(probs, choice.threshold, env), env)
    assert compute_stats(frame, n_bootstrap=0)["Sharpe Ratio"] == pytest.approx(
        choice.val_sharpe[key], rel=1e-12
    )
    # the planted next-bar signal is found: h=1 wins, and it trades profitably on validation
    assert choice.horizon == 1 and choice.val_sharpe[key] > 0
    # test rows do not move the choice; validation rows do
    changed = planted_market()
    t_lo = SPLITS["test"][0]
    changed.macro[t_lo:] = -changed.macro[t_lo:]
    assert supervised.choose(changed, env, SMALL).val_sharpe == choice.val_sharpe
    flipped = supervised.choose(planted_market(flip_val=True), env, SMALL)
    assert flipped.val_sharpe != choice.val_sharpe
    assert flipped.val_sharpe[key] < choice.val_sharpe[key]


@pytest.mark.parametrize("allow_short", [True, False])
def test_positions_settle_with_the_same_rules(allow_short: bool) -> None:
    env = EnvParams(commission=0.0005, slippage_bps=1.0, allow_short=allow_short, max_position=0.5)
    m = planted_market()
    choice = supervised.choose(m, env, SMALL)
    lo, hi = SPLITS["test"]
    frame = supervised.supervised_steps(choice, m, lo, hi, env)
    held = frame[POSITION].to_numpy()
    allowed = {-0.5, 0.0, 0.5} if allow_short else {0.0, 0.5}
    assert set(np.unique(held)) <= allowed and (held != 0).any()
    s = settle(held[None, :], m.returns[lo:hi][None, :], env)
    np.testing.assert_array_equal(frame[EQUITY].to_numpy(), s.equity[0])
    np.testing.assert_array_equal(frame[FEE].to_numpy(), s.fee[0])


def test_scores_are_per_split_and_deterministic() -> None:
    env = EnvParams()
    m = planted_market()
    a = supervised.choose(m, env, SMALL)
    b = supervised.choose(m, env, SMALL)
    assert a.model.model_to_string() == b.model.model_to_string()
    info = supervised.describe(a, m, SPLITS["test"])
    assert info == supervised.describe(b, m, SPLITS["test"])
    assert info["in_sample"] is False
    assert supervised.describe(a, m, SPLITS["val"])["in_sample"] is True
    for split, s in info["scores"].items():
        assert sum(s["label_shares"].values()) == pytest.approx(1.0)
        assert sum(s["predicted_shares"].values()) == pytest.approx(1.0)
        assert 0.0 <= s["balanced_accuracy"] <= 1.0 and 0.0 <= s["accuracy"] <= 1.0
        assert s["rows"] == SPLITS[split][1] - SPLITS[split][0] - a.horizon
    # the planted signal: better than chance on held-out rows (3 classes, balanced: 1/3)
    assert info["scores"]["test"]["balanced_accuracy"] > 0.4
    lines = supervised.summary_lines(info)
    assert lines[0].startswith(f"supervised baseline (LightGBM): horizon {a.horizon} bars")
    assert len(lines) == 4


def test_balanced_accuracy_sees_through_a_majority_class() -> None:
    y = np.array([1] * 98 + [0, 2])
    always_neutral = np.ones_like(y)
    assert (always_neutral == y).mean() == 0.98
    assert supervised.balanced_accuracy(y, always_neutral) == pytest.approx(1 / 3)
    assert supervised.shares(y) == {"down": 0.01, "neutral": 0.98, "up": 0.01}


def test_config_defaults_are_the_librarys() -> None:
    from hmarl.config import SupervisedConfig

    cfg, params = SupervisedConfig(), supervised.SupervisedParams()
    assert tuple(cfg.horizons) == params.horizons and tuple(cfg.thresholds) == params.thresholds
    names = ("n_estimators", "learning_rate", "num_leaves", "min_child_samples", "max_bin")
    for name in (*names, "max_train_rows"):
        assert getattr(cfg, name) == getattr(params, name), name
    assert (cfg.subsample, cfg.colsample) == (params.subsample, params.colsample)


def test_a_long_train_split_fits_on_evenly_spaced_rows_and_predicts_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory bounded on markets of millions of rows: at most ``max_train_rows`` fit rows,
    spread over the whole split (first and last kept), and predictions gathered a block at a
    time equal to one pass."""
    m = planted_market()
    every = supervised.labelled_rows(m, "train", 12)
    some = supervised.labelled_rows(m, "train", 12, at_most=100)
    assert some.size == 100 and some[0] == every[0] and some[-1] == every[-1]
    assert np.isin(some, every).all() and (np.diff(some) > 0).all()
    assert np.diff(some).max() - np.diff(some).min() <= 1  # evenly spaced
    assert supervised.labelled_rows(m, "train", 12, at_most=10**6).size == every.size
    band = momentum_band(EnvParams())
    small = supervised.SupervisedParams(n_estimators=30, min_child_samples=20, max_train_rows=300)
    full, capped = supervised.fit(m, (3,), band, SMALL)[3], supervised.fit(m, (3,), band, small)[3]
    assert full.model_to_string() != capped.model_to_string()
    rows = np.arange(*SPLITS["val"], dtype=np.int64)
    whole = supervised.probabilities(full, m, rows)
    monkeypatch.setattr(supervised, "PREDICT_BLOCK_ROWS", 64)
    assert np.array_equal(supervised.probabilities(full, m, rows), whole)
