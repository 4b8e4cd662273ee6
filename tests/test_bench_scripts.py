"""The learning benchmark's offline tools: replaying selection rules on a trace, and re-printing
a benchmark's table from its JSON (scripts/replay_selection.py, scripts/bench_learning.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_learning
import flow_positions as fp
import flow_rule_bounds as frb
import planted_bounds as pb
import replay_selection as rs

BH = {"val": 2.0, "val_a": 1.0, "val_b": 1.0, "test": -5.0}


def _part(ret: float, pct: float = 100.0, trades: int = 20, sharpe: float = 1.0) -> dict[str, Any]:
    return {
        "return_pct": ret,
        "sharpe": sharpe,
        "trades": trades,
        "exposure_pct": 50.0,
        "long_exposure_pct": 50.0,
        "percentile": pct,
    }


def _point(
    episode: int, sharpe: float, test: float, *, val_pct: float = 100.0, half_b: float = 5.0
):
    val = _part(10.0, val_pct, sharpe=sharpe)
    return {
        "episode": episode,
        "trainer_val_percentile": val_pct,
        "trainer_val_return_pct": 10.0,
        "val": val,
        "val_a": _part(5.0),
        "val_b": _part(half_b),
        "test": _part(test),
    }


def _run(points: list[dict[str, Any]], best_episode: int, **trace: Any) -> dict[str, Any]:
    return {
        "market": "real_q4",
        "seed": 0,
        "best_episode": best_episode,
        "flat_test_return_pct": 0.0,
        "trace": {
            "min_val_trades": 5,
            "threshold": 1.0,
            "buy_and_hold_pct": BH,
            "points": points,
            **trace,
        },
    }


# edges at 9, 19, 29 (the best ratio first, and it loses on test), none at 39; episode 9 also
# fails the second half of validation
POINTS = [
    _point(9, sharpe=5.0, test=-10.0, half_b=0.5),
    _point(19, sharpe=3.0, test=1.0),
    _point(29, sharpe=4.0, test=2.0),
    _point(39, sharpe=9.0, test=0.0, val_pct=10.0),
]


@pytest.mark.parametrize(
    "rule,episode,edge,advised",
    [
        (rs.Rule("one"), 9, True, False),  # the lucky first evaluation, lost on test
        (rs.Rule("two", confirmations=2), 29, True, True),  # 19 and 29 qualify; 29's ratio wins
        (rs.Rule("three", confirmations=3), 29, True, True),  # only the third in a row
        (rs.Rule("four", confirmations=4), 39, False, True),  # no edge: the latest least exposed
        (rs.Rule("halves", halves=True), 29, True, True),  # 9 fails the second half
        (rs.Rule("null 95", 95.0, "trace"), 9, True, False),
    ],
)
def test_replay_follows_the_trainers_selection_rule(
    rule: rs.Rule, episode: int, edge: bool, advised: bool
) -> None:
    verdict = rs.judge(_run(POINTS, best_episode=episode), rule)
    assert (verdict["episode"], verdict["edge"], verdict["advised_no_harm"]) == (
        episode,
        edge,
        advised,
    )


def test_each_run_is_checked_against_the_rule_it_was_trained_with() -> None:
    old = _run(POINTS, best_episode=9)  # no recorded rule: one evaluation, as before
    new = _run(POINTS, best_episode=29, edge_confirmations=3, edge_null_percentile=90.0)
    assert rs.check_own_rule([old, new]) == []
    wrong = _run(POINTS, best_episode=9, edge_confirmations=3)
    assert rs.check_own_rule([wrong]) == ["real_q4 seed 0: kept 9, replay 29"]


def test_replay_refuses_a_benchmark_without_traces(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"runs": [{"market": "default", "seed": 0}]}))
    with pytest.raises(SystemExit, match="no traced runs"):
        rs.load([path])


def _record(market: str, seed: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"market": market, "seed": seed, "wall_s": 10.0, "env_steps_per_s": 1e4}
    for key in (
        "best_val_sharpe",
        "bh_val_sharpe",
        "test_return_pct",
        "bh_test_return_pct",
        "flat_test_return_pct",
        "random_timing_test_median_pct",
        "random_timing_test_percentile",
    ):
        rec[key] = float(seed)
    for key in (
        "success",
        "final_near_best",
        "collapsed",
        "no_trade",
        "no_harm",
        "best_edge",
        "advised_no_harm",
    ):
        rec[key] = seed == 0
    return rec


def test_table_reprints_a_cut_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bl.json"
    runs = [_record("hard", 1), _record("default", 0), _record("default", 1)]
    path.write_text(json.dumps({"complete": False, "overrides": ["x=1"], "runs": runs}))
    assert bench_learning.main(["--table", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 runs, NOT complete (cut short); overrides: x=1" in out
    lines = [line for line in out.splitlines() if line.startswith("| default")]
    assert len(lines) == 1 and "| 1/2 (> 10) |" in lines[0]
    assert out.index("| default") < out.index("| hard")  # the markets' order, not the file's
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="cannot read benchmark JSON"):
        bench_learning.main(["--table", str(tmp_path / "bad.json")])


def test_table_counts_seeds_that_win_and_capture_half_the_oracle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A planted market's row: test wins, oracle captures >= 50%, and both on one seed."""
    runs = []
    for seed, (win, capture) in enumerate([(True, 0.6), (True, 0.3), (False, 0.7), (True, 0.5)]):
        rec = _record("planted_flow", seed)
        rec.update(test_win=win, oracle_capture=capture, oracle_test_return_pct=50.0)
        runs.append(rec)
    print(bench_learning.markdown(bench_learning.summarise(runs)))
    row = next(line for line in capsys.readouterr().out.splitlines() if "| planted_flow" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-4] == "3/4" and cells[-1] == "2/4"  # test wins; wins with >= 50% captured
    assert "(3/4)" in cells[11]  # captures >= 50%, with or without a win


def test_ablation_plans() -> None:
    plan = bench_learning.plan_variants
    assert plan(["planted", "planted_flow"], None) == [("planted", None), ("planted_flow", None)]
    assert plan(["planted_flow"], ["flow"]) == [("planted_flow", None), ("planted_flow", "flow")]
    assert plan(["planted_flow"], [], ablations_only=True) == [
        ("planted_flow", "price"),
        ("planted_flow", "flow"),
        ("planted_flow", "volume"),
    ]
    with pytest.raises(SystemExit, match="--ablations-only needs --ablate"):
        plan(["planted_flow"], None, ablations_only=True)


def test_specialist_settings_change_one_field_of_one_specialist() -> None:
    flow = bench_learning.FLOW_SPECIALISTS
    specs = bench_learning.set_specialists(flow, ["flow.window=8", "flow.lr=1e-3"])
    by_name = {s.name: s for s in specs}
    assert by_name["flow"].window == 8 and by_name["flow"].lr == 1e-3
    assert by_name["price"] == flow[0] and by_name["volume"] == flow[2]
    assert flow[1].window == 12  # the module's definition is untouched
    for bad in ("flow.window", "nope.window=8", "flow.colour=x"):
        with pytest.raises(SystemExit, match=r"give NAME\.KEY=VALUE"):
            bench_learning.set_specialists(flow, [bad])
    # a feature list, comma-separated; an unknown name is refused before any run
    specs = bench_learning.set_specialists(flow, ["flow.features=col:flow,col_ema4:flow"])
    assert specs[1].features == ["col:flow", "col_ema4:flow"]
    assert flow[1].features == ["col:flow", "col_ema8:flow"]
    with pytest.raises(SystemExit, match=r"flow\.features=nope.*unknown feature name"):
        bench_learning.set_specialists(flow, ["flow.features=nope"])


def test_table_merges_the_parts_of_one_benchmark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "s0.json", tmp_path / "s1.json"
    first.write_text(
        json.dumps({"complete": True, "overrides": ["x=1"], "runs": [_record("default", 0)]})
    )
    second.write_text(
        json.dumps({"complete": False, "overrides": ["x=1"], "runs": [_record("default", 1)]})
    )
    assert bench_learning.main(["--table", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert "2 files: 2 runs, merged from" in out and "NOT complete (cut short)" in out
    lines = [line for line in out.splitlines() if line.startswith("| default")]
    assert len(lines) == 1 and "| 1/2 (> 10) |" in lines[0]
    # the same run twice, or two configurations, cannot make one table
    with pytest.raises(SystemExit, match=r"already in an earlier file: \[\('default', 0\)\]"):
        bench_learning.main(["--table", str(first), str(first)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"overrides": ["x=2"], "runs": [_record("default", 2)]}))
    with pytest.raises(SystemExit, match="its overrides"):
        bench_learning.main(["--table", str(first), str(other)])


def test_flow_rule_bounds_settle_hold_and_filter() -> None:
    # settlement: +1 over +10%, then -1 over -10%: (1.1 * 0.999) * (1.1 * 0.998) - 1
    got = frb.settle(np.array([1.0, -1.0]), np.array([0.1, -0.1]), 0.001)
    assert got == pytest.approx(1.1 * 0.999 * 1.1 * 0.998 - 1.0, rel=1e-12)
    # the rule holds its side between the thresholds and starts flat
    side = frb.hysteresis(np.array([0.0, 0.7, 0.2, -0.2, -0.9, 0.1]), 0.5)
    assert side.tolist() == [0.0, 1.0, 1.0, 1.0, -1.0, -1.0]
    # each rule takes part of what the oracle makes, on a market where the planted drift dominates
    n = 2000
    index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 2e-4, n)))
    candles = pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index
    )
    row = frb.bounds(candles, 0, 1e-3, 0.001)  # the planted drift well above the noise
    rules = ("mean12", "mean8", "ema10", "filter")
    assert row["oracle_pct"] > 0 and set(row) == {"oracle_pct", *rules}
    assert all(0.0 < row[k] < 1.0 for k in rules)


def test_flow_positions_split_log_growth_by_regime() -> None:
    oracle = np.array([1.0, 1.0, 0.0, -1.0])
    returns = np.array([0.01, -0.02, 0.03, -0.01])
    net = np.array([1.0, -1.0, -1.0, -1.0])
    # per bar: log(1 + x r) + log(1 - fee |dx|), flat before the first bar
    want = np.log1p(net * returns) + np.log1p(-0.001 * np.array([1.0, 2.0, 0.0, 0.0]))
    np.testing.assert_allclose(fp.log_growth(net, returns, 0.001), want, rtol=1e-15)
    table = fp.by_regime({"network": net, "oracle": oracle}, oracle, returns, 0.001)
    assert table.loc["up", "bars"] == 2 and table.loc["flat", "bars"] == 1
    assert table.loc["up", "network"] == pytest.approx(want[:2].sum(), rel=1e-15)
    assert table.loc["all", "network"] == pytest.approx(want.sum(), rel=1e-15)
    assert table.loc["up", "network long %"] == 50.0
    assert table.loc["down", "network short %"] == 100.0
    assert table.loc["flat", "oracle long %"] == 0.0 and table.loc["flat", "oracle short %"] == 0.0


def test_planted_bounds_score_the_benchmarks_bars_and_read_a_clear_drift() -> None:
    # the walk-forward's stitched rows: 6 test weeks after 30 + 14 days, each but its last bar
    rows = pb.walkforward_rows(30_000)
    week = 7 * 288
    assert len(rows) == 6 * (week - 1) and rows[0] == 44 * 288
    assert rows[week - 1] == 44 * 288 + week  # the next fold's first decision
    assert pb.three_way(np.array([0.5, 0.1, -0.1, -0.5]), 0.3).tolist() == [1.0, 0.0, 0.0, -1.0]
    # with the planted drift far above the noise the filter reads the regimes early, the oracle
    # 100 bars late does not; every rule takes about what the oracle makes or less (a rule that
    # is never flat may gain on the noise of a flat regime, where the oracle stands aside)
    n = 6000
    index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 2e-4, n)))
    candles = pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index
    )
    row = pb.bounds(candles, 0, 1e-3, 0.001, "split", 288)
    rules = ("markov", "duration", "duration+flat", "late100")
    assert row["oracle_pct"] > 0 and set(row) == {"oracle_pct", *rules}
    assert all(0.0 < row[k] < 1.05 for k in rules)
    assert row["duration"] > 0.9 and row["markov"] > 0.9 and row["late100"] < 0.9
