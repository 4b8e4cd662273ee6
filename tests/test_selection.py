"""Checkpoint selection, collapse detection and the entropy schedule (hmarl/train/__main__.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import compose_config, tiny_overrides

import hmarl.train.trainer as train_mod
from hmarl.agent.checkpoint import load_checkpoint
from hmarl.train.selection import edge_found, improved, selection_score
from hmarl.train.trainer import Trainer, collapse_reason, train


@pytest.mark.parametrize(
    "score,edge,best,best_edge,expected",
    [
        (1.0, True, None, False, True),  # the first evaluation is always best
        (2.0, True, 1.0, True, True),  # better, both edges
        (0.5, True, 1.0, True, False),  # worse
        (1.0, True, 1.0, True, True),  # a tie goes to the later (more trained) network
        (9.0, False, 1.0, True, False),  # a higher score without an edge cannot beat an edge
        (0.1, True, 9.0, False, True),  # an edge beats no edge, whatever the scores
        (0.0, False, 0.0, False, True),  # flat tie: the later flat network replaces the early one
        (float("nan"), True, None, False, False),  # a NaN is never best
    ],
)
def test_selection_rule(
    score: float, edge: bool, best: float | None, best_edge: bool, expected: bool
) -> None:
    assert improved(score, edge, best, best_edge) is expected


def _stats(trades: int, ret: float, long_pct: float = 50.0, exposure: float = 60.0) -> dict:
    return {
        "# Trades": trades,
        "Return [%]": ret,
        "Long Exposure Time [%]": long_pct,
        "Exposure Time [%]": exposure,
    }


def test_an_edge_needs_trades_and_a_gain_over_flat_and_buy_and_hold() -> None:
    assert edge_found(_stats(5, 12.0), 5, buy_and_hold_pct=10.0)
    assert not edge_found(_stats(4, 50.0), 5, 10.0)  # a few lucky trades
    assert not edge_found(_stats(40, -3.0), 5, -10.0)  # beats buy & hold, loses to flat
    assert not edge_found(_stats(40, 8.0), 5, 10.0)  # gains, but less than buy & hold
    assert not edge_found(_stats(6, 12.0, long_pct=97.0), 5, 10.0)  # long all along
    assert not edge_found(_stats(0, 0.0, exposure=0.0), 5, -10.0)  # flat


def test_an_edge_beats_the_random_timing_null_when_asked() -> None:
    """With ``edge_null_percentile`` the return must also rank that high among the same trades
    entered at random times: exposure that happened to beat buy & hold is not timing."""
    lucky = {**_stats(12, 15.0), "Random-Timing Percentile [%]": 60.0}
    timed = {**_stats(12, 15.0), "Random-Timing Percentile [%]": 96.7}
    assert edge_found(lucky, 5, 10.0)  # the rule without the null
    assert not edge_found(lucky, 5, 10.0, null_percentile=90.0)
    assert edge_found(timed, 5, 10.0, null_percentile=90.0)
    assert edge_found({**timed, "Random-Timing Percentile [%]": 90.0}, 5, 10.0, 90.0)  # at it
    assert not edge_found(_stats(12, 15.0), 5, 10.0, 90.0)  # no null computed: no proof
    # the null never rescues a policy the other conditions reject
    assert not edge_found({**timed, "# Trades": 3}, 5, 10.0, 90.0)
    assert not edge_found(timed, 5, 20.0, 90.0)


def test_selection_score() -> None:
    # an edge ranks by the metric (negated when minimised) ...
    assert selection_score(_stats(9, 5.0), 2.5, True, "max") == 2.5
    assert selection_score(_stats(9, 5.0), -7.0, True, "min") == 7.0
    # ... no edge by caution: the less exposed policy (flat above all) wins
    flat, long = _stats(0, 0.0, exposure=0.0), _stats(5, 4.0, long_pct=99.0, exposure=99.0)
    assert selection_score(flat, 0.0, False, "max") > selection_score(long, 3.4, False, "max")


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
    constant = compose_config(
        *tiny_overrides(tmp_path, "trainer.entropy_coef=0.03", "trainer.entropy_coef_final=null")
    )
    assert Trainer(constant, tmp_path / "run2").entropy_coef(7) == pytest.approx(0.03)
    default = Trainer(
        compose_config(*tiny_overrides(tmp_path, "trainer.episodes=11")), tmp_path / "r3"
    )
    assert default.entropy_coef(0) == pytest.approx(0.003) and default.entropy_coef(10) == 0.0


def test_ties_keep_the_later_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every validation scores the same (flat, 0 trades): best.pt is the last one, not the first."""
    flat = {
        "Sharpe Ratio": 0.0,
        "Return [%]": 0.0,
        "# Trades": 0,
        "Exposure Time [%]": 0.0,
        "Mean P(HOLD)": 0.4,
    }
    real = train_mod.policy_stats
    monkeypatch.setattr(train_mod, "policy_stats", lambda *a, **k: {**real(*a, **k), **flat})
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=15", "trainer.eval_every=5"))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.state.best_episode == 14
    assert load_checkpoint(result.best_checkpoint)["train_state"]["best_episode"] == 14
    out = capsys.readouterr().out  # the summary says that nothing was found
    assert "no edge found on validation" in out and not result.state.best_edge
    # it names the conditions the flat policy failed, each on all 3 evaluations
    assert ">= 5 trades (3 of 3 evaluations failed it)" in out
    assert "above flat (0%) after costs (3 of 3 evaluations failed it)" in out
    assert "stay flat rather than trade it" in out
    assert "no trade on validation: no edge found at these costs" in out


@pytest.mark.parametrize("action", ["warn", "stop", "restore"])
def test_on_collapse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """A policy that collapses after a good validation: warn goes on, stop ends the run,
    restore continues from the best weights."""
    good = {
        "Sharpe Ratio": 3.0,
        "Return [%]": 900.0,
        "# Trades": 20,
        "Long Exposure Time [%]": 50.0,
        "Mean P(HOLD)": 0.4,
        "Random-Timing Percentile [%]": 100.0,
    }
    collapsed = {"Sharpe Ratio": 0.0, "Return [%]": 0.0, "# Trades": 0, "Mean P(HOLD)": 0.999}
    calls = iter([good, collapsed, collapsed, collapsed])
    real = train_mod.policy_stats
    monkeypatch.setattr(train_mod, "policy_stats", lambda *a, **k: {**real(*a, **k), **next(calls)})
    restored: list[int] = []
    monkeypatch.setattr(Trainer, "restore_best", lambda self: restored.append(self.state.episode))
    cfg = compose_config(
        *tiny_overrides(
            tmp_path,
            "trainer.episodes=20",
            "trainer.eval_every=5",
            f"trainer.on_collapse={action}",
            "trainer.edge_confirmations=1",  # the one good evaluation is the edge `best` keeps
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


@pytest.mark.parametrize(
    "confirmations,best_episode,best_edge", [(1, 4, True), (2, 19, True), (3, 19, False)]
)
def test_an_edge_must_hold_on_consecutive_evaluations_when_asked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    confirmations: int,
    best_episode: int,
    best_edge: bool,
) -> None:
    """Evaluations: edge (the best ratio), none, edge, edge. One confirmation keeps the first;
    two keep only the second of the two in a row, as a lone lucky evaluation does not count;
    three (the default) find no edge, and the tie on exposure goes to the last evaluation."""
    edge = {
        "Return [%]": 900.0,
        "# Trades": 20,
        "Long Exposure Time [%]": 50.0,
        "Random-Timing Percentile [%]": 100.0,
    }
    none = {**edge, "Random-Timing Percentile [%]": 40.0}
    calls = iter(
        [
            {**edge, "Sharpe Ratio": 9.0},
            {**none, "Sharpe Ratio": 1.0},
            {**edge, "Sharpe Ratio": 3.0},
            {**edge, "Sharpe Ratio": 2.0},
        ]
    )
    real = train_mod.policy_stats
    monkeypatch.setattr(train_mod, "policy_stats", lambda *a, **k: {**real(*a, **k), **next(calls)})
    cfg = compose_config(
        *tiny_overrides(
            tmp_path,
            "trainer.episodes=20",
            "trainer.eval_every=5",
            f"trainer.edge_confirmations={confirmations}",
        )
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert (result.state.best_episode, result.state.best_edge) == (best_episode, best_edge)
    assert result.state.edge_streak == 2


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
