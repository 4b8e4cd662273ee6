"""Backtests from checkpoints: reports that agree with steps.csv, baselines, refusals.

One tiny policy is trained in-process for the module (synthetic 5-minute market, windows
48 / 12, MLflow in a sqlite file under tmp), then backtested through ``checkpoint=`` in
process and through ``run_id=`` on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO, compose_config, tiny_overrides
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.backtest.inputs import (
    backtest_market,
    check_feature_request,
    decision_range,
    in_sample,
    load_backtest_checkpoint,
)
from hmarl.backtest.report import BacktestResult, advised_record, daily_frame
from hmarl.backtest.run import backtest
from hmarl.backtest.runs import STRATEGY
from hmarl.config import (
    BacktestConfig,
    BacktestError,
    DataConfig,
    conf_dir,
    register_backtest_configs,
    to_backtest_config,
)
from hmarl.data.synthetic import synthetic_candles
from hmarl.market.env import EnvParams
from hmarl.market.market_data import MarketData
from hmarl.stats import supervised
from hmarl.stats.baselines import (
    BASELINES,
    actions_from_positions,
    baseline_steps,
    choose_momentum_lookback,
    momentum_positions,
)
from hmarl.stats.metrics import STAT_DEFINITIONS, Calendar, compute_stats
from hmarl.steps import BUY, HOLD, SELL
from hmarl.tracking import fetch_run_checkpoint
from hmarl.train.trainer import train

RUNS = [STRATEGY, *BASELINES, supervised.NAME]  # stats.json's columns
COST_RUNS = [STRATEGY, *BASELINES]  # costs.csv re-settles the policy and the fixed-rule baselines
FIGURES = ("equity.png", "drawdown.png", "positions.png", "action_probabilities.png")


@dataclass
class Trained:
    root: Path
    uri: str
    checkpoint: Path
    run_id: str


def compose_backtest(*overrides: str) -> BacktestConfig:
    register_backtest_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return to_backtest_config(compose("backtest", overrides=list(overrides)))


def backtest_overrides(trained: Trained, *extra: str) -> list[str]:
    return [
        f"tracking.uri={trained.uri}",
        f"cache_dir={trained.root}/cache",
        "progress=false",
        *extra,
    ]


def read_steps(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="time", parse_dates=["time"])


def assert_same_stats(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if isinstance(value, str):
            assert actual[key] == value, key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        *tiny_overrides(root, "trainer.episodes=3", "trainer.eval_every=1", tracking=True)
    )
    result = train(cfg, root / "run", progress=False)
    assert result.best_checkpoint is not None and result.run_id is not None
    return Trained(root, cfg.tracking.uri, result.best_checkpoint, result.run_id)


@pytest.fixture(scope="module")
def report(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    out = tmp_path_factory.mktemp("report")
    cfg = compose_backtest(
        *backtest_overrides(
            trained, f"checkpoint={trained.checkpoint}", "seeds=2", "n_bootstrap=200"
        )
    )
    return backtest(cfg, out)


# ----------------------------------------------------------------------------- checkpoint=


def test_report_files_exist_parse_and_match_steps(report: BacktestResult) -> None:
    out = report.out_dir
    doc = json.loads((out / "stats.json").read_text())
    assert list(doc["stats"]) == RUNS
    meta = doc["meta"]
    steps = read_steps(out / "steps.csv")
    assert str(steps.index.tz) == "UTC" and len(steps) == meta["bars"]
    recomputed = compute_stats(
        steps,
        calendar=Calendar(**meta["calendar"]),
        n_bootstrap=meta["n_bootstrap"],
        seed=meta["seed"],
    )
    assert_same_stats(doc["stats"][STRATEGY], recomputed)
    assert "Sharpe 95% CI Low" in recomputed  # the bootstrap ran and matches too
    # every figure of stats.json is defined once, in its definitions section
    shown = {k for run in doc["stats"].values() for k in run} | set(doc["random_timing"])
    assert shown - {"definition"} <= set(doc["definitions"])
    assert doc["definitions"] == {k: STAT_DEFINITIONS[k] for k in doc["definitions"]}
    assert set(meta["baselines"]) == {*BASELINES, supervised.NAME}
    assert "after the strategy's costs" in meta["baselines"]["buy_and_hold"]

    table = pd.read_csv(out / "stats.csv", index_col=0)
    assert list(table.columns) == RUNS
    assert float(table.loc["Sharpe Ratio", "momentum"]) == pytest.approx(
        doc["stats"]["momentum"]["Sharpe Ratio"], rel=1e-12
    )
    trades = pd.read_csv(out / "trades.csv")
    assert len(trades) == recomputed["# Trades"]
    if len(trades):
        assert trades["return"].mean() * 100 == pytest.approx(recomputed["Avg. Trade [%]"])
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_supervised_baseline_is_reported_beside_the_others(report: BacktestResult) -> None:
    out = report.out_dir
    doc = json.loads((out / "stats.json").read_text())
    info = doc[supervised.NAME]
    assert info["horizon_bars"] in (1, 3, 12) and info["threshold"] in (0.4, 0.5, 0.6)
    grid = {k: v for k, v in info["val_sharpe_by_choice"].items() if v is not None}
    assert grid[f"h={info['horizon_bars']} threshold={info['threshold']:g}"] == max(grid.values())
    assert set(info["scores"]) == {"train", "val", "test"} and not info["in_sample"]
    for split in info["scores"].values():
        assert set(split) >= {"accuracy", "balanced_accuracy", "label_shares", "predicted_shares"}
    steps = report.steps
    sup = doc["stats"][supervised.NAME]
    assert sup["Bars"] == len(steps) and sup["Start"] == doc["stats"][STRATEGY]["Start"]
    log = (out / "backtest.log").read_text()
    assert "supervised baseline (LightGBM): horizon" in log and "balanced accuracy" in log
    page = (out / "report.html").read_text()
    assert "supervised baseline (LightGBM)" in page and '"supervised"' in page


def test_supervised_baseline_can_be_turned_off(trained: Trained, tmp_path: Path) -> None:
    cfg = compose_backtest(
        *backtest_overrides(
            trained, f"checkpoint={trained.checkpoint}", "n_bootstrap=0", "random_timing=0",
            "plots=false", "report_html=false", "fee_multipliers=[1]",
            "baselines.supervised.enabled=false",
        )
    )  # fmt: skip
    result = backtest(cfg, tmp_path / "off")
    assert list(result.stats) == [STRATEGY, *BASELINES]
    doc = json.loads((tmp_path / "off" / "stats.json").read_text())
    assert doc[supervised.NAME] == {"skipped": "baselines.supervised.enabled=false"}
    with pytest.raises(BacktestError, match=r"baselines\.supervised\.horizons"):
        compose_backtest(f"checkpoint={trained.checkpoint}", "baselines.supervised.horizons=[]")


def test_daily_table_adds_up_to_the_run(report: BacktestResult) -> None:
    daily = pd.read_csv(report.out_dir / "daily.csv", index_col="date")
    stats = report.stats[STRATEGY]
    assert daily["bars"].sum() == stats["Bars"]
    assert daily["pnl"].sum() == pytest.approx(stats["Equity Final [x]"] - 1.0, abs=1e-12)
    assert daily["fees"].sum() * 100 == pytest.approx(stats["Fees Paid [%]"], rel=1e-9)
    assert daily["trades"].sum() == stats["# Trades"]
    assert daily["max_drawdown_pct"].min() == pytest.approx(stats["Max. Drawdown [%]"], rel=1e-9)
    assert (daily[["hold", "buy", "sell"]].sum(axis=1) == daily["bars"]).all()
    assert list(daily.index) == sorted(set(report.steps.index.strftime("%Y-%m-%d")))


def test_baselines_are_settled_on_the_same_bars_and_costs(report: BacktestResult) -> None:
    steps, stats, env = report.steps, report.stats, report.meta["env"]
    growth = steps["next_price"].iloc[-1] / steps["price"].iloc[0]
    # the entry fee is on the notional bought, 1 - fee of the equity: fee = c / (1 + c)
    assert stats["buy_and_hold"]["Equity Final [x]"] == pytest.approx(
        growth / (1 + env["commission"]), rel=1e-12
    )
    assert stats["flat"]["Equity Final [x]"] == 1.0 and stats["flat"]["# Trades"] == 0
    n = len(steps)
    mom = report.meta["momentum"]
    assert mom["chosen_on"].startswith("val split") and not mom["in_sample"]
    sharpe = mom["val_sharpe_by_lookback"]
    assert sharpe[str(mom["lookback_bars"])] == max(sharpe.values())
    assert mom["band"] == pytest.approx(2 * env["commission"])
    for name in RUNS:
        assert stats[name]["Start"] == stats[STRATEGY]["Start"] and stats[name]["Bars"] == n


def test_cost_sensitivity_and_stochastic_runs(report: BacktestResult) -> None:
    costs = pd.read_csv(report.out_dir / "costs.csv", index_col=["fee_multiplier", "run"])
    assert sorted(set(costs.index.get_level_values(0))) == [1.0, 2.0, 3.0]
    assert set(costs.index.get_level_values(1)) == set(COST_RUNS)
    strat = costs.xs(STRATEGY, level="run")
    assert strat.loc[1.0, "Return [%]"] == pytest.approx(
        report.stats[STRATEGY]["Return [%]"], rel=1e-12
    )
    # the policy never sees costs: same trades, only the bill changes (and, slightly, the
    # notional traded: a target is a fraction of the equity left after the fee)
    assert strat["# Trades"].nunique() == 1 and strat["Action BUY [%]"].nunique() == 1
    c = report.meta["env"]["commission"]
    assert strat["Turnover [x]"].to_numpy() == pytest.approx(
        strat.loc[1.0, "Turnover [x]"], rel=4 * c
    )
    if strat.loc[1.0, "Turnover [x]"] > 0:
        assert (
            strat.loc[1.0, "Equity Final [x]"]
            > strat.loc[2.0, "Equity Final [x]"]
            > strat.loc[3.0, "Equity Final [x]"]
        )
        assert strat.loc[2.0, "Fees Paid [%]"] > strat.loc[1.0, "Fees Paid [%]"]

    seeds = pd.read_csv(report.out_dir / "stochastic.csv", index_col="seed")
    assert list(seeds.index) == [0, 1]
    doc = json.loads((report.out_dir / "stats.json").read_text())
    assert doc["stochastic"]["seeds"] == 2
    assert doc["stochastic"]["mean"]["Sharpe Ratio"] == pytest.approx(seeds["Sharpe Ratio"].mean())
    assert doc["stochastic"]["std"]["Return [%]"] == pytest.approx(seeds["Return [%]"].std(ddof=1))


def test_backtest_is_logged_to_mlflow_and_linked_to_training(
    report: BacktestResult, trained: Trained
) -> None:
    client = MlflowClient(tracking_uri=trained.uri)
    assert report.run_id is not None
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["kind"] == "backtest"
    assert run.data.tags["train_run_id"] == trained.run_id == report.meta["train_run_id"]
    assert run.data.metrics["sharpe"] == pytest.approx(report.stats[STRATEGY]["Sharpe Ratio"])
    assert run.data.metrics["buy_and_hold/return_pct"] == pytest.approx(
        report.stats["buy_and_hold"]["Return [%]"]
    )
    logged = {Path(f.path).name for f in client.list_artifacts(report.run_id, "backtest")}
    assert {"stats.json", "stats.csv", "daily.csv", "trades.csv", "steps.csv", *FIGURES} <= logged
    assert report.meta["same_data_as_training"] and not report.meta["in_sample"]


def test_random_timing_flags_and_log_are_reported(report: BacktestResult, trained: Trained) -> None:
    out, doc = report.out_dir, json.loads((report.out_dir / "stats.json").read_text())
    null = pd.read_csv(out / "random_timing.csv")
    assert len(null) == 1000 == doc["random_timing"]["Random-Timing Policies"]
    strategy = report.stats[STRATEGY]["Return [%]"]
    below = (null["return_pct"] < strategy - 1e-7).sum()
    tied = (abs(null["return_pct"] - strategy) <= 1e-7).sum()
    assert doc["random_timing"]["Random-Timing Percentile [%]"] == pytest.approx(
        100 * (below + tied / 2) / 1000
    )
    assert doc["random_timing"]["Random-Timing Median Return [%]"] == pytest.approx(
        null["return_pct"].median()
    )
    assert (
        report.table.loc["Random-Timing p-value", STRATEGY]
        == doc["random_timing"]["Random-Timing p-value"]
    )
    flags = doc["meta"]["flags"]
    assert set(flags) <= {"no_trades", "few_trades", "same_as_buy_and_hold"} | {
        "no_edge_found_in_training"
    }
    assert ("no_trades" in flags) == (report.stats[STRATEGY]["# Trades"] == 0)
    # the checkpoint's run says whether it found an edge; without one the report advises flat
    edge = load_checkpoint(trained.checkpoint)["train_state"]["best_edge"]
    assert doc["meta"]["edge_found_in_training"] is edge
    assert ("no_edge_found_in_training" in flags) == (not edge)
    if not edge:
        assert any("advice is to stay flat" in note for note in doc["flag_notes"])
    assert ("advised" in doc) == (not edge)  # the advised (flat) record beside the network's
    assert ("advised record: flat" in (out / "backtest.log").read_text()) == (not edge)
    run = MlflowClient(tracking_uri=trained.uri).get_run(str(report.run_id))
    assert run.data.tags["flags"] == (",".join(flags) or "none")
    assert run.data.metrics["random_timing_p_value"] == pytest.approx(
        doc["random_timing"]["Random-Timing p-value"]
    )
    log = (out / "backtest.log").read_text()
    assert "random timing (1000 policies" in log and f"report: {out.resolve()}" in log
    assert all(f"WARNING: {note}" in log for note in doc["flag_notes"])


def test_backtest_logs_beside_its_training_run(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # another folder: ./mlflow.db is not the training store
    common = (f"cache_dir={trained.root}/cache", "progress=false", "plots=false")
    cfg = compose_backtest(f"checkpoint={trained.checkpoint}", *common, "n_bootstrap=0")
    assert cfg.tracking.uri == "auto"
    rep = backtest(cfg, tmp_path / "rep")
    run = MlflowClient(tracking_uri=trained.uri).get_run(str(rep.run_id))
    assert run.data.tags["train_run_id"] == trained.run_id
    exp = MlflowClient(tracking_uri=trained.uri).get_run(trained.run_id).info.experiment_id
    assert run.info.experiment_id == exp
    assert not (tmp_path / "mlflow.db").exists()
    assert rep.meta["tracking"]["uri"] == trained.uri

    # a checkpoint that records no store (older, or tracking=none) logs to ./mlflow.db
    old = torch.load(trained.checkpoint, weights_only=True)
    del old["tracking"]
    torch.save(old, tmp_path / "old.pt")
    cfg = compose_backtest("checkpoint=old.pt", *common, "n_bootstrap=0", "random_timing=0")
    rep = backtest(cfg, tmp_path / "rep_old")
    assert (tmp_path / "mlflow.db").exists() and "records no training store" in (
        rep.meta["tracking"]["why"]
    )
    assert not (tmp_path / "rep_old" / "random_timing.csv").exists()


# ----------------------------------------------------------------------------- run_id=


def test_run_id_backtest_on_the_command_line(
    trained: Trained, report: BacktestResult, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "hmarl.backtest", f"run_id={trained.run_id}",
            *backtest_overrides(trained, "out=rep", "n_bootstrap=0", "plots=false"),
            "fee_multipliers=[1]",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "buy_and_hold" in proc.stdout and "Sharpe Ratio" in proc.stdout
    doc = json.loads((tmp_path / "rep" / "stats.json").read_text())
    assert doc["meta"]["checkpoint"] == f"runs:/{trained.run_id}/checkpoints/best.pt"
    assert doc["meta"]["train_run_id"] == trained.run_id
    # the MLflow copy of best.pt is the same policy: the same decisions, bar for bar
    pd.testing.assert_frame_equal(
        read_steps(tmp_path / "rep" / "steps.csv"), read_steps(report.out_dir / "steps.csv")
    )


def test_run_without_best_falls_back_to_last_then_fails_clearly(
    trained: Trained, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=trained.uri)
    exp = client.get_run(trained.run_id).info.experiment_id
    only_last = client.create_run(exp).info.run_id
    shutil.copy(trained.checkpoint.parent / "last.pt", tmp_path / "last.pt")
    client.log_artifact(only_last, str(tmp_path / "last.pt"), "checkpoints")
    path, source = fetch_run_checkpoint(only_last, trained.uri, tmp_path / "dl")
    assert source.endswith("/checkpoints/last.pt") and path.is_file()
    empty = client.create_run(exp).info.run_id
    with pytest.raises(BacktestError, match=r"has no checkpoints/best\.pt or checkpoints/last\.pt"):
        load_backtest_checkpoint(None, empty, trained.uri)
    with pytest.raises(BacktestError, match="not found"):
        fetch_run_checkpoint("0" * 32, trained.uri, tmp_path / "dl")


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "features.macro_window=24",
            "features.macro_window=24 but the checkpoint was trained with 48",
        ),
        (
            "features.names=[ret_1,rsi_14]",
            r"features.names=\['ret_1', 'rsi_14'\] but the checkpoint",
        ),
    ],
)
def test_other_feature_set_is_refused(
    trained: Trained, tmp_path: Path, override: str, message: str
) -> None:
    cfg = compose_backtest(
        *backtest_overrides(trained, f"checkpoint={trained.checkpoint}", override)
    )
    with pytest.raises(BacktestError, match=message):
        backtest(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_matching_feature_request_passes() -> None:
    spec = {"names": ["ret_1"], "macro_window": 48, "micro_window": 12}
    check_feature_request(spec, ["ret_1"], 48, None)
    with pytest.raises(BacktestError, match="micro_window=6"):
        check_feature_request(spec, None, None, 6)


def test_data_lacking_a_needed_column_is_refused(trained: Trained, tmp_path: Path) -> None:
    candles = synthetic_candles(3000, 1).drop(columns="volume")
    candles.to_csv(tmp_path / "no_volume.csv")
    cfg = compose_backtest(
        *backtest_overrides(
            trained,
            f"checkpoint={trained.checkpoint}",
            "data=csv",
            f"data.path={tmp_path}/no_volume.csv",
        )
    )
    with pytest.raises(
        BacktestError, match=r"(?s)read columns \[.*'volume'.*\].*missing column.*volume"
    ):
        backtest(cfg, tmp_path / "out")


def test_config_mistakes_fail_early(trained: Trained) -> None:
    with pytest.raises(ConfigCompositionException, match="sedds"):
        compose_backtest("checkpoint=x.pt", "sedds=2")
    with pytest.raises(ConfigCompositionException):
        compose_backtest("checkpoint=x.pt", "split=everything")
    with pytest.raises(BacktestError, match="exactly one of checkpoint"):
        compose_backtest("checkpoint=x.pt", "run_id=abc")
    with pytest.raises(BacktestError, match="exactly one of checkpoint"):
        compose_backtest()
    with pytest.raises(BacktestError, match="fee_multipliers"):
        compose_backtest("checkpoint=x.pt", "fee_multipliers=[1,-2]")


# ----------------------------------------------------------------------------- rows and data


def test_splits_dates_and_in_sample_flag(trained: Trained) -> None:
    ckpt, _ = load_backtest_checkpoint(str(trained.checkpoint), None, trained.uri)
    data = DataConfig(n_candles=6000)
    market = backtest_market(ckpt["feature_spec"], data, str(trained.root / "cache"), log=None)
    assert market.scalers == ckpt["feature_spec"]["scalers"]  # reused, not refitted
    lo, hi = decision_range(market, "all")
    assert (lo, hi) == (market.splits["train"][0], market.splits["test"][1])
    t_lo, t_hi = decision_range(market, "test")
    day = market.index[t_lo + 300].floor("D")
    c_lo, c_hi = decision_range(
        market, "test", start=str(day.date()), end=str((day + pd.Timedelta("1D")).date())
    )
    assert (
        market.index[c_lo] == day
        and market.index[c_hi - 1] < day + pd.Timedelta("1D")
        and c_hi - c_lo == 288
    )
    with pytest.raises(BacktestError, match="leaves 0 decision bars"):
        decision_range(market, "test", start="2030-01-01")
    assert in_sample(ckpt, market, *decision_range(market, "train"))
    assert in_sample(ckpt, market, lo, hi)
    assert not in_sample(ckpt, market, t_lo, t_hi)
    other = backtest_market(ckpt["feature_spec"], replace(data, market_seed=7), None, log=None)
    assert other.fingerprint != ckpt["data_fingerprint"]
    assert not in_sample(ckpt, other, *decision_range(other, "all"))


# ----------------------------------------------------------------------------- baselines


def tiny_market(close: np.ndarray) -> MarketData:
    n = len(close)
    empty = np.zeros((n, 3), dtype=np.float32)
    index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    returns = np.append(close[1:] / close[:-1] - 1.0, 0.0)
    return MarketData(
        index, close, returns, empty, empty, {"all": (0, n - 1)}, ["x"], 2, 2, {}, "fp"
    )


def test_momentum_is_causal_and_follows_its_rule() -> None:
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 300)))
    rows, env = np.arange(250), EnvParams()
    pos = momentum_positions(close, rows, 12, 0.0, env)  # no band: the sign rule
    assert (pos[:12] == 0.0).all()
    up = close[12:250] > close[:238]
    assert (pos[12:] == np.where(up, 1.0, -1.0)).all()
    banded = momentum_positions(close, rows, 12, 0.02, env)
    mom = close[12:250] / close[:238] - 1
    assert (np.abs(np.diff(banded)) > 0).sum() < (np.abs(np.diff(pos)) > 0).sum()
    for t in range(12, 250):  # outside the band: its sign; inside: the previous position
        want = 1.0 if mom[t - 12] > 0.02 else -1.0 if mom[t - 12] < -0.02 else banded[t - 1]
        assert banded[t] == want, t
    no_short = momentum_positions(close, rows, 12, 0.0, EnvParams(allow_short=False))
    assert set(no_short) <= {0.0, 1.0}
    for t in (20, 100, 249):  # rewriting the future changes nothing decided at t
        future = close.copy()
        future[t + 1 :] *= 3.0
        assert momentum_positions(future, rows[: t + 1], 12, 0.02, env)[-1] == banded[t]


def test_momentum_lookback_is_chosen_on_validation() -> None:
    # trends of 200 bars under noise 4x the drift: 48-bar momentum rides them, 2-bar chases noise
    steps = np.tile(np.r_[np.full(200, 0.001), np.full(200, -0.001)], 5)
    close = 100 * np.exp(np.cumsum(steps + np.random.default_rng(0).normal(0, 0.004, steps.size)))
    market = tiny_market(close)
    market.splits["val"] = (100, close.size - 1)
    best, sharpe = choose_momentum_lookback(market, EnvParams(), (2, 48), "val")
    assert best == 48 and sharpe[48] > sharpe[2] + 10
    with pytest.raises(ValueError, match="grid is empty"):
        choose_momentum_lookback(market, EnvParams(), (), "val")


def test_baseline_positions_follow_the_action_rule() -> None:
    assert actions_from_positions(np.array([0.0, 1.0, 1.0, -1.0, 0.0])).tolist() == [
        HOLD,
        BUY,
        HOLD,
        SELL,
        BUY,
    ]


def test_baseline_frames_settle_with_the_given_costs() -> None:
    close = np.array([100.0, 110.0, 99.0, 100.0, 120.0, 90.0])
    market = tiny_market(close)
    env = EnvParams(commission=0.01, slippage_bps=10.0)
    runs = baseline_steps(market, 0, 5, env, momentum_bars=1)
    assert list(runs) == list(BASELINES)
    bh = runs["buy_and_hold"]
    # the entry fee f = c (1 - f) on the notional bought: f = c / (1 + c)
    assert bh["equity"].iloc[-1] == pytest.approx(90.0 / 100.0 / 1.011, rel=1e-12)
    assert bh["fee"].iloc[0] == pytest.approx(0.011 / 1.011, rel=1e-12)
    assert (bh["fee"].iloc[1:] == 0).all()
    assert (runs["flat"]["equity"] == 1.0).all()
    # row 0 has no past bar: flat; then +10%, -10%, +1% (inside the band of 2 * 1.1%: keep), up
    mom = runs["momentum"]
    assert mom["action"].tolist() == [HOLD, BUY, SELL, HOLD, BUY]
    assert mom["position"].tolist() == [0.0, 1.0, -1.0, -1.0, 1.0]
    for frame in runs.values():
        compute_stats(frame, n_bootstrap=0)  # the steps schema compute_stats reads


def test_daily_frame_on_a_hand_built_run() -> None:
    index = pd.DatetimeIndex(["2024-01-01 23:50", "2024-01-01 23:55", "2024-01-02 00:00"], tz="UTC")
    steps = pd.DataFrame(
        {
            "action": [BUY, HOLD, SELL],
            "position": [1.0, 1.0, -1.0],
            "turnover": [1.0, 0.0, 2.0],
            "fee": [0.001, 0.0, 0.002],
            "equity": [1.02, 0.99, 1.01],
        },
        index=index,
    )
    daily = daily_frame(steps)
    assert list(daily.index) == ["2024-01-01", "2024-01-02"]
    assert daily["pnl"].tolist() == pytest.approx([-0.01, 0.02])
    assert daily["drawdown_pct"].tolist() == pytest.approx(
        [(0.99 / 1.02 - 1) * 100, (1.01 / 1.02 - 1) * 100]
    )
    assert daily["fees"].tolist() == pytest.approx([0.001, 0.002 * 0.99])
    assert daily["trades"].tolist() == [1, 1] and daily["buy"].tolist() == [1, 0]


# ----------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.realdata
def test_train_on_q1_backtest_on_q4(shared_data: Path, tmp_path: Path) -> None:
    q1, q4 = (shared_data / f"binance_spot_BTCUSDT_5m_2024{q}.csv" for q in ("Q1", "Q4"))
    cfg = compose_config(
        "data=csv", f"data.path={q1}", "trainer.episodes=2", "trainer.n_envs=4",
        "trainer.episode_len=32", "trainer.eval_every=2", "tracking=none",
        f"cache_dir={tmp_path}/cache", "device=cpu",
    )  # fmt: skip
    result = train(cfg, tmp_path / "train", progress=False)
    bt = compose_backtest(
        f"checkpoint={result.last_checkpoint}", "data=csv", f"data.path={q4}", "split=all",
        "tracking=none", f"cache_dir={tmp_path}/cache", "n_bootstrap=100", "fee_multipliers=[1,2]",
        "progress=false",
    )  # fmt: skip
    rep = backtest(bt, tmp_path / "q4")
    for name in (
        "stats.json",
        "stats.csv",
        "daily.csv",
        "trades.csv",
        "steps.csv",
        "costs.csv",
        *FIGURES,
    ):
        assert (tmp_path / "q4" / name).stat().st_size > 0, name
    assert list(rep.stats) == RUNS
    meta = rep.meta
    assert not meta["same_data_as_training"] and not meta["in_sample"]
    assert meta["macro_window"] == 492 and meta["micro_window"] == 60
    assert (
        "2024-10-01" <= meta["first_decision"] < "2024-10-04"
        and meta["last_decision"] < "2025-01-01"
    )
    assert len(pd.read_csv(tmp_path / "q4" / "daily.csv")) >= 89
    steps = read_steps(tmp_path / "q4" / "steps.csv")
    assert_same_stats(rep.stats[STRATEGY], compute_stats(steps, n_bootstrap=100, seed=meta["seed"]))
    growth = steps["next_price"].iloc[-1] / steps["price"].iloc[0]
    assert rep.stats["buy_and_hold"]["Equity Final [x]"] == pytest.approx(growth / 1.001, rel=1e-12)


def test_schema_defaults_match_the_library_constants() -> None:
    """The backtest schema (hmarl.config) repeats three library defaults as literals (config
    stays free of torch and pandas); they must not drift apart."""
    from hmarl.config import CalendarConfig
    from hmarl.stats.baselines import MOMENTUM_LOOKBACKS
    from hmarl.stats.metrics import CRYPTO
    from hmarl.stats.random_timing import RANDOM_TIMING_N

    cfg = BacktestConfig()
    assert cfg.momentum_lookbacks == list(MOMENTUM_LOOKBACKS)
    assert cfg.random_timing == RANDOM_TIMING_N
    assert Calendar(**asdict(CalendarConfig())) == CRYPTO


def test_a_run_without_an_edge_shows_the_advised_flat_record_beside_the_networks() -> None:
    """The kept network of a no-edge run traded on 94% of bars; its advice was to stay flat."""
    figures = ("Return [%]", "Sharpe Ratio", "Max. Drawdown [%]", "# Trades")
    stats = {
        STRATEGY: dict(zip(figures, (-3.5, -0.8, -9.1, 41), strict=True)),
        "flat": dict(zip(figures, (0.0, 0.0, 0.0, 0), strict=True)),
    }
    record = advised_record(stats, edge_found_in_training=False)
    assert record is not None and record["run"] == "flat"
    assert record["advised"] == stats["flat"] and record["network"] == stats[STRATEGY]
    assert "found no edge" in record["why"]
    assert advised_record(stats, edge_found_in_training=True) is None  # its advice is the network
    assert advised_record(stats, edge_found_in_training=None) is None  # an older checkpoint
