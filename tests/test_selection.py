"""Checkpoint selection, collapse detection and the entropy schedule (hmarl/train.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, tiny_overrides

import hmarl.train as train_mod
from hmarl.checkpoint import load_checkpoint
from hmarl.train import Trainer, _improved, collapse_reason, edge_found, train


@pytest.mark.parametrize(
    "value,edge,best,best_edge,expected",
    [
        (1.0, True, None, False, True),  # the first evaluation is always best
        (2.0, True, 1.0, True, True),  # better, both edges
        (0.5, True, 1.0, True, False),  # worse
        (1.0, True, 1.0, True, True),  # a tie goes to the later (more trained) network
        (9.0, False, 1.0, True, False),  # a higher ratio without an edge cannot beat an edge
        (0.1, True, 9.0, False, True),  # an edge beats a lucky few trades, whatever the ratio
        (0.0, False, 0.0, False, True),  # flat tie: the later flat network replaces the early one
        (0.9, False, -3.7, False, True),  # no edge either way: the better ratio
        (float("nan"), True, None, False, False),  # a NaN is never best
    ],
)
def test_selection_rule(
    value: float, edge: bool, best: float | None, best_edge: bool, expected: bool
) -> None:
    assert _improved(value, edge, best, best_edge, "max") is expected


def test_selection_rule_min_mode() -> None:
    assert _improved(-10.0, True, -5.0, True, "min")  # a deeper drawdown minimised
    assert not _improved(-1.0, True, -5.0, True, "min")


def test_an_edge_needs_enough_trades_and_a_gain_after_costs() -> None:
    assert edge_found(5, 0.1, 5)
    assert not edge_found(4, 50.0, 5)  # a few lucky trades
    assert not edge_found(40, -3.0, 5)  # active but losing to flat
    assert not edge_found(0, 0.0, 5)  # flat


TC = SimpleNamespace(collapse_entropy=0.05, collapse_share=0.99)


def test_collapse_reasons() -> None:
    healthy = {"Mean P(HOLD)": 0.5, "Mean P(BUY)": 0.3, "Mean P(SELL)": 0.2}
    assert collapse_reason(healthy, 0.8, TC) is None
    assert "entropy" in str(collapse_reason(healthy, 0.01, TC))
    hold = {"Mean P(HOLD)": 0.995, "Mean P(BUY)": 0.004, "Mean P(SELL)": 0.001}
    assert "P(HOLD)" in str(collapse_reason(hold, 0.8, TC))
    assert collapse_reason(healthy, float("nan"), TC) is None  # no training entropy yet


def test_entropy_schedule(tmp_path: Path) -> None:
    cfg = compose_config(
        *tiny_overrides(
            tmp_path,
            "trainer.episodes=11",
            "trainer.entropy_coef=0.1",
            "trainer.entropy_coef_final=0",
        )
    )
    run = Trainer(cfg, tmp_path / "run")
    assert run.entropy_coef(0) == pytest.approx(0.1)
    assert run.entropy_coef(5) == pytest.approx(0.05)
    assert run.entropy_coef(10) == pytest.approx(0.0)
    constant = compose_config(*tiny_overrides(tmp_path, "trainer.entropy_coef=0.03"))
    assert Trainer(constant, tmp_path / "run2").entropy_coef(7) == pytest.approx(0.03)


def test_ties_keep_the_later_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every validation scores the same (flat, 0 trades): best.pt is the last one, not the first."""
    flat = {"Sharpe Ratio": 0.0, "Return [%]": 0.0, "# Trades": 0, "Mean P(HOLD)": 0.4}
    real = train_mod.validate
    monkeypatch.setattr(train_mod, "validate", lambda *a, **k: {**real(*a, **k), **flat})
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=15", "trainer.eval_every=5"))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.state.best_episode == 14
    assert load_checkpoint(result.best_checkpoint)["train_state"]["best_episode"] == 14


@pytest.mark.parametrize("action", ["warn", "stop", "restore"])
def test_on_collapse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """A policy that collapses after a good validation: warn goes on, stop ends the run,
    restore continues from the best weights."""
    good = {"Sharpe Ratio": 3.0, "Return [%]": 9.0, "# Trades": 20, "Mean P(HOLD)": 0.4}
    collapsed = {"Sharpe Ratio": 0.0, "Return [%]": 0.0, "# Trades": 0, "Mean P(HOLD)": 0.999}
    calls = iter([good, collapsed, collapsed, collapsed])
    real = train_mod.validate
    monkeypatch.setattr(train_mod, "validate", lambda *a, **k: {**real(*a, **k), **next(calls)})
    restored: list[int] = []
    monkeypatch.setattr(Trainer, "restore_best", lambda self: restored.append(self.state.episode))
    cfg = compose_config(
        *tiny_overrides(
            tmp_path, "trainer.episodes=20", "trainer.eval_every=5", f"trainer.on_collapse={action}"
        )
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.state.best_episode == 4
    if action == "stop":
        assert result.stopped_early and result.state.episode == 10
        assert result.state.collapses == 1
    else:
        assert not result.stopped_early and result.state.episode == 20
        assert result.state.collapses == 3
        assert restored == ([10, 15, 20] if action == "restore" else [])


def test_restore_best_loads_the_best_weights(tmp_path: Path) -> None:
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=5"))
    result = train(cfg, tmp_path / "run", progress=False)
    run = Trainer(cfg, tmp_path / "other")
    run.best_path = result.best_checkpoint
    with torch.no_grad():
        for p in run.policy.parameters():
            p.add_(1.0)
    run.restore_best()
    best = load_checkpoint(result.best_checkpoint)["policy"]
    for name, value in run.policy.state_dict().items():
        assert torch.equal(value, best[name]), name
