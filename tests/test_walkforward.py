"""Walk-forward: fold arithmetic, refusals before training, stitching, resume, end to end."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.market.many import MarketsError, market_paths
from hmarl.steps import chain
from hmarl.walkforward.folds import (
    Lengths,
    WalkForwardError,
    bar_lengths,
    plan_folds,
)
from hmarl.walkforward.schema import Unit, WalkForwardConfig, WindowMode
from hmarl.walkforward.stitch import ADVISED, NETWORK, stitched_runs
from tests.helpers import run_cli, tiny_overrides

# ----------------------------------------------------------------------------- fold arithmetic


def test_rolling_folds_slide_by_step_and_tests_are_back_to_back() -> None:
    folds = plan_folds(1000, Lengths(train=400, val=100, test=100, step=100), WindowMode.rolling)
    assert len(folds) == 5  # (1000 - 600) // 100 + 1
    for k, f in enumerate(folds):
        assert (f.start, f.val_start, f.test_start, f.end) == (
            100 * k,
            400 + 100 * k,
            500 + 100 * k,
            600 + 100 * k,
        )
    assert all(a.end == b.test_start for a, b in pairwise(folds))


def test_expanding_folds_train_from_the_start() -> None:
    folds = plan_folds(1000, Lengths(400, 100, 100, 150), WindowMode.expanding)
    assert [f.start for f in folds] == [0, 0, 0]
    assert [f.val_start - f.start for f in folds] == [400, 550, 700]
    assert [f.test_start for f in folds] == [500, 650, 800]


def test_wanted_folds_cap_the_count() -> None:
    assert len(plan_folds(1000, Lengths(400, 100, 100, 100), WindowMode.rolling, wanted=2)) == 2


def test_days_convert_with_the_bar_spacing() -> None:
    wf = WalkForwardConfig(train=10, val=2, test=1, step=None, unit=Unit.days)
    assert bar_lengths(wf, 300.0) == Lengths(2880, 576, 288, 288)


@pytest.mark.parametrize(
    ("lengths", "kwargs", "message"),
    [
        (Lengths(400, 100, 100, 50), {}, "test segments overlap"),
        (Lengths(400, 0, 100, 100), {}, "walkforward.val is 0 bars (empty folds)"),
        (Lengths(400, 100, 2, 100), {}, "walkforward.test is 2 bars; a segment needs at least 3"),
        (Lengths(400, 100, 100, 100), {"min_train": 500}, "shorter than the 500 candles"),
        (Lengths(400, 100, 100, 100), {"wanted": 6}, "1000 bars hold 5 fold(s)"),
        (Lengths(900, 100, 100, 100), {}, "hold 0 fold(s)"),
    ],
)
def test_bad_folds_are_refused(lengths: Lengths, kwargs: dict, message: str) -> None:
    with pytest.raises(WalkForwardError, match="walkforward on q1") as err:
        plan_folds(1000, lengths, WindowMode.rolling, market="q1", **kwargs)
    assert message in str(err.value)


def test_a_glob_matching_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x")
    assert market_paths([str(tmp_path / "*.csv")]) == [str(tmp_path / "a.csv")]
    with pytest.raises(MarketsError, match=r"nothing\*\.csv' matches no file"):
        market_paths([str(tmp_path / "nothing*.csv")])


# ----------------------------------------------------------------------------- stitching


def _segment(start: str, n: int, returns: list[float], position: float) -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq="5min", tz="UTC", name="time")
    equity = np.cumprod(1.0 + np.asarray(returns))
    return pd.DataFrame(
        {
            "price": 100.0,
            "next_price": 100.0,
            "action": 0,
            "position": position,
            "turnover": 0.0,
            "fee": 0.0,
            "equity": equity,
            "reward": 0.0,
        },
        index=index,
    )


def test_stitching_chains_the_fold_segments_and_goes_flat_without_an_edge() -> None:
    folds = [
        {
            "strategy": _segment("2024-01-01", 3, [0.1, 0.0, -0.05], 1.0),
            "flat": _segment("2024-01-01", 3, [0.0, 0.0, 0.0], 0.0),
            "buy_and_hold": _segment("2024-01-01", 3, [0.01, 0.01, 0.01], 1.0),
        },
        {
            "strategy": _segment("2024-01-02", 2, [-0.2, 0.1], -1.0),
            "flat": _segment("2024-01-02", 2, [0.0, 0.0], 0.0),
            "buy_and_hold": _segment("2024-01-02", 2, [0.02, 0.0], 1.0),
        },
    ]
    runs = stitched_runs(folds, [True, False])
    assert list(runs) == [NETWORK, ADVISED, "flat", "buy_and_hold"]  # baselines as the folds carry
    first = 1.1 * 0.95
    np.testing.assert_allclose(
        runs[NETWORK]["equity"], [1.1, 1.1, first, first * 0.8, first * 0.88]
    )
    np.testing.assert_allclose(runs[ADVISED]["equity"], [1.1, 1.1, first, first, first])
    assert list(runs[ADVISED]["position"]) == [1.0, 1.0, 1.0, 0.0, 0.0]  # flat on fold 1
    assert runs[NETWORK].index.equals(folds[0]["strategy"].index.append(folds[1]["strategy"].index))
    np.testing.assert_allclose(runs["buy_and_hold"]["equity"].iloc[-1], 1.01**3 * 1.02)


def test_overlapping_segments_cannot_be_stitched() -> None:
    a = _segment("2024-01-01", 3, [0.0] * 3, 0.0)
    with pytest.raises(ValueError, match="overlap or are out of order"):
        chain([a, a])


# ----------------------------------------------------------------------------- end to end

WF = (
    "data.n_candles=1500",
    "trainer.episodes=3",
    "trainer.eval_every=1",
    "trainer.edge_confirmations=1",
    "walkforward.train=700",
    "walkforward.val=200",
    "walkforward.test=150",
    "walkforward.folds=2",
    "walkforward.random_timing=20",
    "walkforward.momentum_lookbacks=[12,48]",
    "threads=1",
)


def _walkforward(tmp_path: Path, out: Path, *extra: str, tracking: bool = False):
    args = [*tiny_overrides(tmp_path, tracking=tracking), *WF, f"walkforward.out={out}", *extra]
    return run_cli("hmarl.walkforward", *args, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_two_folds_end_to_end_then_resume_skips_them(tmp_path: Path) -> None:
    out = tmp_path / "wf"
    done = _walkforward(tmp_path, out, "walkforward.jobs=2", tracking=True)
    assert done.returncode == 0, done.stderr[-3000:]
    folds = pd.read_csv(out / "folds.csv")
    assert list(folds["fold"]) == [0, 1]
    assert folds["test_start"].iloc[1] > folds["test_start"].iloc[0]
    for column in ("network [%]", "advised [%]", "buy_and_hold [%]", "flat [%]"):
        assert folds[column].notna().all()
    assert (folds["flat [%]"] == 0.0).all()
    # the advised record is the network's on edge folds and flat elsewhere
    expect = np.where(folds["edge_found"], folds["network [%]"], 0.0)
    np.testing.assert_allclose(folds["advised [%]"], expect)
    stitched = out / "synthetic" / "stitched"
    stats = json.loads((stitched / "stats.json").read_text())["stats"]
    assert {NETWORK, ADVISED, "buy_and_hold", "flat", "momentum"} <= set(stats)
    # the stitched return compounds the fold returns
    for name in (NETWORK, ADVISED, "buy_and_hold"):
        compounded = np.prod(1 + folds[f"{name} [%]"] / 100) * 100 - 100
        assert stats[name]["Return [%]"] == pytest.approx(compounded, abs=1e-9)
    assert 0 <= stats[ADVISED]["Random-Timing Percentile [%]"] <= 100
    assert (stitched / "report.html").stat().st_size > 10_000
    steps = pd.read_csv(stitched / "steps.csv")
    assert len(steps) == 2 * (150 - 1)  # each test segment's last bar makes no decision
    summary = json.loads((out / "walkforward.json").read_text())
    assert summary["stitched"][0]["bars"] == len(steps)
    assert (out / "markets.csv").is_file() and (out / "buckets.csv").is_file()
    from hmarl.walkforward.listing import walkforward_table

    listed = walkforward_table(tmp_path)  # what the page lists
    assert list(listed["market"]) == ["synthetic"] and list(listed["folds"]) == [2]
    assert Path(listed["report"].iloc[0]) == stitched / "report.html"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("hmarl").experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "walkforward"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2

    # resume: both folds finished, so nothing is trained again and the tables are rebuilt
    marker = out / "synthetic" / "fold_00" / "fold.json"
    before = marker.stat().st_mtime_ns
    again = _walkforward(tmp_path, out, tracking=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 fold(s) already trained, 0 to train" in again.stdout
    assert marker.stat().st_mtime_ns == before
    rebuilt = pd.read_csv(out / "folds.csv")
    assert not rebuilt["trained_now"].any()
    # the first run tested its folds in the two workers that trained them, the resume tests
    # them in the launching process (jobs=1): the same numbers, baselines and nulls included
    pd.testing.assert_frame_equal(
        rebuilt.drop(columns="trained_now"), folds.drop(columns="trained_now")
    )


def _plan(tmp_path: Path, *extra: str):  # -> list[MarketPlan]
    from hydra import compose, initialize_config_dir

    from hmarl.config import conf_dir, register_configs
    from hmarl.walkforward.run import plan_markets
    from hmarl.walkforward.schema import register_walkforward_configs, to_walkforward_config

    register_configs()
    register_walkforward_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        dcfg = compose("walkforward", overrides=[*tiny_overrides(tmp_path), *WF, *extra])
    return plan_markets(*to_walkforward_config(dcfg))


def test_the_plan_cuts_folds_by_dates_as_a_run_would(tmp_path: Path) -> None:
    from hmarl.config import DataConfig
    from hmarl.walkforward.folds import fold_data

    (plan,) = _plan(tmp_path)
    assert plan.name == "synthetic" and len(plan.folds) == 2
    data = fold_data(DataConfig(), plan.index, plan.folds[1], None)
    assert data.start == plan.index[150].isoformat()
    assert data.val_start == plan.index[850].isoformat()
    assert data.test_start == plan.index[1050].isoformat()
    assert data.end == plan.index[1200].isoformat()


def test_one_fold_of_a_multirun_is_cut_from_the_plan_or_refused(tmp_path: Path) -> None:
    from hmarl.walkforward.run import one_fold

    plans = _plan(tmp_path)
    (only,) = one_fold(plans, 1)  # walkforward.fold=1: that fold alone, as the plan numbers it
    assert [f.number for f in only.folds] == [1] and only.folds[0] == plans[0].folds[1]
    with pytest.raises(WalkForwardError, match=r"walkforward\.fold=2 .*synthetic \(2\)"):
        one_fold(plans, 2)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("walkforward.step=100",), "test segments overlap"),
        (("walkforward.folds=5",), "1500 bars hold 4 fold(s)"),
        (("walkforward.train=200",), "shorter than the 202 candles"),
        (("data=csv", "data.paths=[/nonexistent/*.csv]"), "matches no file"),
    ],
)
def test_bad_walkforwards_are_refused_before_training(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    with pytest.raises(WalkForwardError, match=re.escape(message)):
        _plan(tmp_path, *extra)


def test_a_market_too_short_for_the_windows_is_refused_by_name(tmp_path: Path) -> None:
    from hmarl.data.synthetic import synthetic_candles

    short = synthetic_candles(100, 0)
    short.index.name = "timestamp"
    short.to_csv(tmp_path / "tiny_market.csv")
    with pytest.raises(WalkForwardError, match=r"market tiny_market .*100 candles"):
        _plan(tmp_path, "data=csv", f"data.paths=[{tmp_path}/*.csv]")


def test_the_command_line_refuses_with_one_error_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "wf"
    done = _walkforward(tmp_path, out, "walkforward.step=100")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "test segments overlap" in lines[0], done.stderr[-2000:]
    assert not list(out.glob("*/fold_*"))  # nothing trained


# ----------------------------------------------------------------------------- data keys


def test_data_start_and_end_bound_the_synthetic_market_too() -> None:
    from hmarl.config import DataConfig
    from hmarl.market.market_data import load_market_candles

    full = load_market_candles(DataConfig(n_candles=1000), log=None)
    start, end = full.index[100], full.index[300]
    cut = load_market_candles(
        DataConfig(n_candles=1000, start=start.isoformat(), end=end.isoformat()), log=None
    )
    assert cut.index[0] == start and cut.index[-1] == full.index[299] and len(cut) == 200
    pd.testing.assert_frame_equal(cut, full.iloc[100:300])


def test_the_one_market_loader_refuses_several_markets_and_names_where_they_go() -> None:
    from hmarl.config import DataConfig, DataSource
    from hmarl.market.market_data import load_market_candles

    data = DataConfig(source=DataSource.csv, paths=["a.csv", "b.csv"])
    with pytest.raises(
        ValueError,
        match=r"this reads one data\.path.*hmarl\.train and python -m hmarl\.walkforward",
    ):
        load_market_candles(data, log=None)


def test_the_late_oracle_keeps_the_regime_before_for_lag_bars() -> None:
    from hmarl.market.planted import late_oracle_positions, oracle_positions

    regime = np.array([1, 1, 1, 1, -1, -1, -1, 0, 0, 0, 0])
    rows = np.arange(10)  # decision t is paid on bar t + 1
    np.testing.assert_array_equal(
        late_oracle_positions(regime, rows, 0), oracle_positions(regime, rows)
    )
    late = late_oracle_positions(regime, rows, 2)
    np.testing.assert_array_equal(late, [0, 1, 1, 1, 1, -1, -1, -1, 0, 0])
    long_only = late_oracle_positions(regime, rows, 2, allow_short=False)
    np.testing.assert_array_equal(long_only, np.maximum(late, 0))
