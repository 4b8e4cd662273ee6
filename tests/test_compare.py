"""Comparison of sweep runs: statistics, the MLflow selection, plots, the CLI, the notebook.

The store is a real sweep's: a parent run from the sweep callback's functions, four
children trained by `hmarl.train.train` (asym_1_10 and sym_1_1, seeds 0 and 1) on a tiny
synthetic market, and test backtests (`hmarl.backtest.backtest`) of the asym_1_10 runs only.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_store import QuoteStore, make_quote_store
from helpers import load_script

from hmarl.config import Config
from hmarl.report.compare import (
    aggregate,
    best_lines,
    best_run_dsr,
    best_runs,
    ci95_halfwidth,
    compare,
    difference_line,
    format_summary,
    market_key,
    paired_differences,
    report,
)
from hmarl.tracking import PARENT_RUN_ENV, SWEEP_DIR_ENV, prepare_store
from hmarl.train.selection import best_evaluation
from hmarl.train.sweep import finish_sweep, start_parent_run

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (tables)


# ----------------------------------------------------------------------------- statistics


def test_ci95_is_the_student_t_half_width() -> None:
    assert ci95_halfwidth([1.0, 2.0, 3.0]) == pytest.approx(T_975_DF2 * 1.0 / math.sqrt(3))
    assert math.isnan(ci95_halfwidth([5.0]))
    assert math.isnan(ci95_halfwidth([5.0, float("nan")]))  # one finite value: no spread


def frame(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["group", "seed", "val_sharpe", "val_return_pct"])


def test_aggregate_per_group() -> None:
    runs = frame([("a", "0", 1.0, 10.0), ("a", "1", 2.0, 20.0), ("a", "2", 3.0, 30.0),
                  ("b", "0", 5.0, -1.0)])  # fmt: skip
    s = aggregate(runs, columns=["val_sharpe", "val_return_pct", "test_sharpe"])
    assert list(s.index) == ["a", "b"]
    assert s.loc["a", "n"] == 3
    assert s.loc["a", "val_sharpe_mean"] == pytest.approx(2.0)
    assert s.loc["a", "val_sharpe_std"] == pytest.approx(1.0)
    assert s.loc["a", "val_return_pct_ci95"] == pytest.approx(10 * T_975_DF2 / math.sqrt(3))
    assert s.loc[["b"], ["val_sharpe_std", "val_sharpe_ci95"]].isna().all(axis=None)
    assert s["test_sharpe_mean"].isna().all()  # a column the runs lack stays empty
    text = format_summary(s, columns=["val_sharpe", "test_sharpe"])
    assert "2 ± 2.48 (sd 1)" in text and "test_sharpe" not in text


def test_paired_differences_pair_by_seed() -> None:
    runs = frame([("a", "0", 1.0, 0.0), ("a", "1", 2.0, 0.0), ("a", "2", 9.0, 0.0),
                  ("b", "0", 2.0, 0.0), ("b", "1", 4.0, 0.0)])  # fmt: skip
    d = paired_differences(runs).iloc[0]
    assert (d["a"], d["b"], d["n_pairs"]) == ("a", "b", 2)  # seed 2 has no partner
    assert d["diff_mean"] == pytest.approx(1.5)  # (2-1 + 4-2) / 2
    assert d["diff_ci95"] == pytest.approx(ci95_halfwidth([1.0, 2.0]))


def dsr_runs(sharpes: list[float]) -> pd.DataFrame:
    n = len(sharpes)
    return pd.DataFrame(
        {
            "name": [f"r{i}" for i in range(n)],
            "group": ["g"] * n,
            "val_sharpe": sharpes,
            "val_periods_per_year": [105_192.0] * n,
            "val_bars": [15_000] * n,
            "val_skew": [0.0] * n,
            "val_kurtosis": [3.0] * n,
        },
        index=[f"id{i}" for i in range(n)],
    )


def test_dsr_deflates_more_with_more_trials() -> None:
    runs = dsr_runs([0.5, 1.0, 3.0, 2.0])
    few, many = best_run_dsr(runs), best_run_dsr(runs, n_trials=200)
    assert few["run_id"] == "id2" and few["n_trials"] == 4
    assert 0.0 <= many["dsr"] < few["dsr"] <= 1.0
    assert many["expected_max_sharpe"] > few["expected_max_sharpe"] > 0.0
    with pytest.raises(ValueError, match="validation metrics DSR needs"):
        best_run_dsr(runs.drop(columns="val_skew").assign(val_skew=np.nan))


def test_dsr_leaves_out_and_names_runs_without_variance() -> None:
    runs = dsr_runs([0.5, 1.0, 0.0, 2.0])
    runs.loc["id2", ["val_skew", "val_kurtosis"]] = np.nan  # a flat run: undefined moments
    d = best_run_dsr(runs)
    assert d["left_out"] == ["r2"] and d["n_trials"] == 3 and d["run_id"] == "id3"


def test_best_is_chosen_within_a_market_among_runs_with_an_edge() -> None:
    """A 4-run sweep where no run found an edge printed "best run by val Sharpe ... 3.19"; and
    a selection over three markets picked one "best" across them."""
    runs = dsr_runs([3.0, 1.0, 2.0, 0.5, 4.0])
    runs["market"] = ["a", "a", "a", "b", "b"]
    runs["edge_found"] = [False, True, True, False, False]
    best = best_runs(runs)
    assert best["a"]["run_id"] == "id2"  # not id0 (higher Sharpe, no edge)
    assert best["a"]["n_trials"] == 3  # every run of the market counts as a trial
    assert best["b"] == {
        "error": "no best run: none of its 2 runs found an edge on validation, and each one's "
        "advice is to stay flat"
    }
    lines = best_lines("b", best["b"]) + best_lines("a", best["a"])
    assert lines[0].startswith("b: no best run") and "r2" in lines[1]


def test_a_difference_without_seed_pairs_says_so() -> None:
    """It printed ``test_sharpe: +nan ± nan (95% CI, 0 seed pairs)``."""
    row = {"a": "x", "b": "y", "metric": "test_sharpe", "n_pairs": 0,
           "diff_mean": math.nan, "diff_ci95": math.nan}  # fmt: skip
    assert difference_line(row) == (
        "y - x test_sharpe: no paired difference (0 shared seeds with figures; 2 needed)"
    )


# ----------------------------------------------------------------------------- a real sweep


def tiny(tmp: Path, experiment: str, macro_every: int, seed: int) -> Config:
    cfg = Config(seed=seed, experiment_name=experiment, device="cpu", cache_dir=str(tmp / "cache"))
    cfg.data.n_candles = 6000
    cfg.features.macro_window, cfg.features.micro_window = 48, 12
    cfg.trainer.episodes, cfg.trainer.n_envs, cfg.trainer.episode_len = 4, 4, 32
    cfg.trainer.eval_every, cfg.trainer.macro_every = 1, macro_every
    cfg.tracking.uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return cfg


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(tracking uri, parent run id, folder) of a finished 4-run sweep with 2 backtests."""
    from hmarl.backtest.run import backtest
    from hmarl.config import BacktestConfig
    from hmarl.train.trainer import train

    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    parent = start_parent_run(uri, prepare_store(uri, "hmarl"), "sweep", {"sweep_dir": str(tmp)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PARENT_RUN_ENV, parent)
        mp.setenv(SWEEP_DIR_ENV, str(tmp))
        for experiment, every in (("asym_1_10", 11), ("sym_1_1", 1)):
            for seed in (0, 1):
                cfg = tiny(tmp, experiment, every, seed)
                overrides = [f"+experiment={experiment}", f"seed={seed}"]
                result = train(
                    cfg, tmp / f"{experiment}-{seed}", overrides=overrides, progress=False
                )
                if experiment == "asym_1_10":
                    assert result.best_checkpoint is not None
                    bt = BacktestConfig(
                        checkpoint=str(result.best_checkpoint), tracking=cfg.tracking,
                        n_bootstrap=0, plots=False, progress=False, fee_multipliers=[1.0],
                        cache_dir=cfg.cache_dir,
                    )  # fmt: skip
                    backtest(bt, tmp / f"backtest-{seed}")
    assert finish_sweep(uri, parent, 4) == ("FINISHED", [])  # (status, problems)
    return uri, parent, tmp


def test_compare_a_sweep(sweep: tuple[str, str, Path], tmp_path: Path) -> None:
    uri, parent, _ = sweep
    result = compare(uri, tmp_path / "out", parent_run_id=parent)
    runs, summary = result.runs, result.summary
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert list(summary.index) == ["asym_1_10", "sym_1_1"] and list(summary["n"]) == [2, 2]
    asym = runs[runs["group"] == "asym_1_10"]
    assert summary.loc["asym_1_10", "val_sharpe_mean"] == pytest.approx(asym["val_sharpe"].mean())
    assert (runs["wall_s"] > 0).all() and (runs["steps_per_s"] > 0).all()
    # test figures exist for the backtested group only
    assert result.has_test
    assert runs.loc[asym.index, "test_sharpe"].notna().all()
    # the supervised baseline and buy & hold on the same test bars, beside the policy
    for column in ("test_supervised_sharpe", "test_supervised_return_pct"):
        assert runs.loc[asym.index, column].notna().all(), column
        assert summary.loc["asym_1_10", f"{column}_mean"] == pytest.approx(
            runs.loc[asym.index, column].mean()
        )
    assert runs.loc[asym.index, "test_buy_and_hold_return_pct"].notna().all()
    assert runs[runs["group"] == "sym_1_1"]["test_sharpe"].isna().all()
    assert summary.loc[["sym_1_1"], "test_sharpe_mean"].isna().all()
    flat = sorted(runs.loc[~(runs["val_volatility_ann_pct"] > 0), "name"])
    everyone = best_run_dsr(runs)  # the statistics over all runs, edge or not
    assert everyone["left_out"] == flat  # flat runs: no skew, kurtosis, PSR; named
    assert (
        runs.loc[runs["name"].isin(flat), ["val_skew", "val_kurtosis", "val_psr"]]
        .isna()
        .all(axis=None)
    )
    assert everyone["n_trials"] == 4 - len(flat) and 0.0 <= everyone["dsr"] <= 1.0
    assert everyone["run_id"] == runs.loc[~runs["name"].isin(flat), "val_sharpe"].idxmax()
    # the verdict per run, the market by name, and "best" only among runs with an edge
    (market,) = runs["market"].unique()
    assert market.startswith("synthetic seed 0 [" + runs["data_fingerprint"].iloc[0][:8] + "]")
    assert runs["val_buy_and_hold_pct"].notna().all()
    assert set(runs["edge"]) <= {"edge found"} | {e for e in runs["edge"] if "no edge" in e}
    best = result.dsr[market]
    if runs["edge_found"].any():
        assert runs.loc[best["run_id"], "edge_found"]
    else:
        assert best["error"].startswith("no best run: none of its 4 runs found an edge")
    assert set(result.histories["key"]) == {"reward/mean", "val/sharpe"}
    assert len(result.histories) == 4 * 4 * 2  # 4 runs x 4 episodes x 2 keys
    for name in ("learning_curves", "bars"):
        assert result.files[name].read_bytes()[:8] == PNG
    saved = pd.read_csv(result.files["summary"], index_col=0)
    assert saved.loc["sym_1_1", "n"] == 2
    text = report(result)
    assert "asym_1_10" in text and "sym_1_1 - asym_1_10 val_sharpe" in text
    assert "validation only" not in text
    assert ("Deflated Sharpe Ratio" in text) == bool(runs["edge_found"].any())
    for r in runs.itertuples():
        assert f"{r.name} ({r.group}): {r.edge}; val return" in text
        assert f"vs buy & hold {r.val_buy_and_hold_pct:+.2f}%" in text


def test_compare_without_backtests_says_validation_only(
    sweep: tuple[str, str, Path], tmp_path: Path
) -> None:
    uri, _, _ = sweep
    result = compare(uri, tmp_path, experiments=["hmarl"], tags={"experiment_name": "sym_1_1"})
    assert list(result.summary.index) == ["sym_1_1"] and not result.has_test
    assert "validation only" in report(result)


def test_compare_errors_name_the_selection(sweep: tuple[str, str, Path], tmp_path: Path) -> None:
    uri, _, _ = sweep
    with pytest.raises(ValueError, match="experiment 'nope' not found"):
        compare(uri, tmp_path, experiments=["nope"])
    with pytest.raises(ValueError, match="no training runs"):
        compare(uri, tmp_path, tags={"experiment_name": "asym_1_2"})
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        compare(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path)


def test_validation_figures_are_the_selected_ones(sweep: tuple[str, str, Path]) -> None:
    from mlflow.tracking import MlflowClient

    uri, parent, _ = sweep
    result = compare(uri, Path(sweep[2]) / "sel", parent_run_id=parent)
    client = MlflowClient(tracking_uri=uri)
    for run_id, row in result.runs.iterrows():
        history = {
            key: {m.step: m.value for m in client.get_metric_history(str(run_id), f"val/{key}")}
            for key in ("sharpe", "edge", "exposure_time_pct")
        }
        assert row["best_episode"] is not None
        assert row["val_sharpe"] == history["sharpe"][row["best_episode"]]
        # best.pt is the episode the selection rule picks from the logged validations
        steps = sorted(history["sharpe"])
        chosen = best_evaluation(
            [
                (
                    {"Exposure Time [%]": history["exposure_time_pct"][step]},
                    history["sharpe"][step],
                    history["edge"][step] == 1.0,
                )
                for step in steps
            ]
        )
        assert chosen is not None and row["best_episode"] == steps[chosen]
    assert list(result.runs["market"].unique()) == [result.runs["market"].iloc[0]]
    assert "market: synthetic seed 0 [" in report(result) and "mixes" not in report(result)


def test_one_experiment_on_two_files_is_two_groups(tmp_path: Path) -> None:
    from hmarl.train.trainer import train

    for market_seed in (0, 1):
        cfg = tiny(tmp_path, "asym_1_10", 11, seed=0)
        cfg.data.market_seed = market_seed
        cfg.trainer.episodes = 2
        train(cfg, tmp_path / f"m{market_seed}", progress=False)
    result = compare(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out")
    assert len(result.summary) == 2 and list(result.summary["n"]) == [1, 1]
    names = {g.split(" [")[0] for g in result.summary.index}  # a readable market, hash beside
    assert names == {"asym_1_10 @ synthetic seed 0", "asym_1_10 @ synthetic seed 1"}
    assert result.differences.empty  # never paired across markets
    assert "2 markets (never pooled" in report(result)


@pytest.mark.slow
def test_compare_runs_cli(sweep: tuple[str, str, Path], tmp_path: Path) -> None:
    uri, _, _ = sweep
    cmd = [sys.executable, str(REPO / "scripts" / "compare_runs.py"), "--tracking-uri", uri,
           "--latest-sweep", "--out", str(tmp_path / "cli")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "asym_1_10" in proc.stdout and "found an edge" in proc.stdout
    assert (tmp_path / "cli" / "learning_curves.png").read_bytes()[:8] == PNG
    bad = subprocess.run([*cmd[:2], "--tag", "novalue"], capture_output=True, text=True)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


# ----------------------------------------------------------------------------- quoting runs


@pytest.fixture(scope="module")
def mixed(sweep: tuple[str, str, Path]) -> QuoteStore:
    """The sweep's store plus a quoting run (experiment ``quoting``) and its test backtest."""
    uri, _, tmp = sweep
    return make_quote_store(tmp / "quote", uri)


def test_compare_quoting_runs_on_their_own_figures(mixed: QuoteStore, tmp_path: Path) -> None:
    """Quoting runs were compared on trading's columns, all NaN."""
    result = compare(mixed.uri, tmp_path / "q", experiments=["quoting"])
    runs, summary = result.runs, result.summary
    assert result.task == "quote" and list(runs.index) == [mixed.run_id]
    assert "val_objective_mean" in summary and "val_sharpe_mean" not in summary
    assert not {"val_sharpe", "test_sharpe", "val_return_pct"} & set(runs.columns)
    row = runs.iloc[0]
    assert result.has_test and math.isfinite(row["test_objective"])
    assert row["test_no_quote"] == 0.0 and math.isfinite(row["test_best_fixed"])
    assert math.isnan(row["val_optimum"])  # a tick market: no known optimum
    assert set(result.histories["key"]) == {"reward/mean", "val/objective_price_x_lots"}
    text = report(result)
    assert "quoting runs (task=quote)" in text and "Deflated Sharpe" not in text
    assert f"val objective {row['val_objective']:+.4g} vs no quote +0, best fixed" in text
    assert "val_objective" in text.splitlines()[2]  # the summary table's header
    assert result.files["bars"].read_bytes()[:8] == PNG


def test_the_seeds_of_a_synthetic_tick_market_are_one_market() -> None:
    """Its tapes are drawn from each seed, so its fingerprint differs per seed; the seeds of a
    quoting sweep there were each a group of one."""
    base = {"data.source": "ticks_synthetic", "seed": "0", "data.ticks_synthetic.informed": "0.3",
            "quote.phi": "2e-05"}  # fmt: skip
    seed0 = market_key({"data_fingerprint": "a" * 64}, base)
    assert seed0 == market_key({"data_fingerprint": "b" * 64}, {**base, "seed": "1"})
    assert seed0 != market_key({}, {**base, "data.ticks_synthetic.informed": "0.0"})
    assert seed0 != market_key({}, {**base, "quote.phi": "0.01"})
    other = {"data.source": "avellaneda", "seed": "0"}
    assert market_key({"data_fingerprint": "c" * 64}, other) == "c" * 64


def test_a_mixed_selection_is_refused_unless_one_task_is_chosen(
    mixed: QuoteStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=r"mixes 4 trading runs .* and 1 quoting runs .*--task"):
        compare(mixed.uri, tmp_path / "all")
    trading = compare(mixed.uri, tmp_path / "trade", task="trade")
    assert len(trading.runs) == 4 and "val_objective" not in trading.runs
    quoting = compare(mixed.uri, tmp_path / "quote", task="quote")
    assert list(quoting.runs.index) == [mixed.run_id]
    cli = load_script("compare_runs")
    assert cli.main(["--tracking-uri", mixed.uri, "--out", str(tmp_path / "cli")]) == 2
    assert "--task trade or --task quote" in capsys.readouterr().err
    args = ["--tracking-uri", mixed.uri, "--out", str(tmp_path / "cli"), "--task", "quote"]
    assert cli.main(args) == 0
    assert "val objective" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the notebook


NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert any("from hmarl.report.compare import" in c.source for c in code)


@pytest.mark.slow
def test_notebook_executes_headless(
    sweep: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    uri, parent, _ = sweep
    monkeypatch.setenv("HMARL_TRACKING_URI", uri)
    monkeypatch.setenv("HMARL_PARENT_RUN", parent)
    monkeypatch.setenv("HMARL_COMPARE_OUT", str(tmp_path / "nb"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # jupyter_client starts the native python3 kernel with this interpreter (sys.executable)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "asym_1_10" in printed and "found an edge" in printed
    assert (tmp_path / "nb" / "groups.png").read_bytes()[:8] == PNG
