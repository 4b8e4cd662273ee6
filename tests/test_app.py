"""The run browser (python -m hmarl.app): its functions, and the page in Streamlit's AppTest.

One tiny policy is trained into a sqlite store under tmp (and one without logged
checkpoints); the page is then run by ``streamlit.testing.v1.AppTest`` (the script runs in
this process, no browser): it lists the runs, backtests a period and embeds report.html,
and shows bad inputs as an error line, never an exception.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from app_store import QuoteStore, Store, make_quote_store, make_store

import hmarl.app.__main__ as launcher
from hmarl.app import backend as app
from hmarl.app import quote_days as demo

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

TIMEOUT = 240  # seconds the page may take per run (a backtest included)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("app"), with_bare_run=True)


def page(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    """The page opened on ``store``, working in ``tmp_path`` (its backtests land there)."""
    monkeypatch.setenv(app.STORE_ENV, store.uri)
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(launcher.PAGE), default_timeout=TIMEOUT)
    return at.run()


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# ----------------------------------------------------------------------------- functions


def test_missing_or_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(app.PageError, match=r"no MLflow store at .*nothing\.db"):
        app.open_page_store(f"sqlite:///{tmp_path}/nothing.db")
    with pytest.raises(app.PageError, match="give an MLflow store"):
        app.open_page_store("  ")


def test_runs_curves_checkpoints_and_comparison(store: Store) -> None:
    client = app.open_page_store(store.uri)
    assert "hmarl" in app.experiment_names(client)
    runs = app.training_runs(client, "hmarl")
    assert {store.run_id, store.bare_run_id} <= set(runs.index)
    assert runs.loc[store.run_id, "group"] == runs.loc[store.bare_run_id, "group"]
    assert app.checkpoints_of(client, store.run_id) == ["best.pt", "last.pt"]
    assert app.checkpoints_of(client, store.bare_run_id) == []
    curves = app.learning_curves(client, runs, [store.run_id])
    assert list(curves) == ["reward/mean", "val/sharpe"]
    assert len(curves["reward/mean"]) == 2  # one point per episode
    assert list(curves["val/sharpe"].columns) == [app.run_label(runs, store.run_id)]
    table = app.comparison_table(runs)
    assert int(table["n"].iloc[0]) == 2
    with pytest.raises(app.PageError, match=r"no checkpoints/best\.pt artifact .*none"):
        app.fetch_checkpoint(client, store.bare_run_id, "best.pt", store.root)
    with pytest.raises(app.PageError, match="no training runs in experiment 'empty'"):
        client.create_experiment("empty")
        app.training_runs(client, "empty")


def test_launcher_arguments() -> None:
    off = ["--browser.gatherUsageStats", "false"]  # usage statistics off unless asked for
    assert launcher.split_args(["--server.headless", "true"])[0] == [
        *off,
        "--server.headless",
        "true",
    ]
    opts, uri = launcher.split_args(["--server.port", "8600", "--", "--store", "sqlite:///x.db"])
    assert opts == [*off, "--server.port", "8600"] and uri == "sqlite:///x.db"
    on = ["--browser.gatherUsageStats", "true"]
    assert launcher.split_args(on)[0] == on
    assert launcher.split_args(["--browser.gatherUsageStats=true"])[0] == [
        "--browser.gatherUsageStats=true"
    ]
    with pytest.raises(SystemExit, match="only --store URI"):
        launcher.split_args(["--", "--stor", "x"])
    both = ["--", "--ticks", "data/ticks", "--store", "sqlite:///y.db"]
    assert launcher.split_args(both)[1] == "sqlite:///y.db"
    assert launcher.page_options(both[1:]) == {"--ticks": "data/ticks", "--store": "sqlite:///y.db"}
    with pytest.raises(SystemExit, match="--ticks DIR"):
        launcher.split_args(["--", "--ticks"])


def test_launcher_help_names_the_real_command(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed Streamlit's ``Usage: python -m hmarl.streamlit run``."""
    launcher.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m hmarl.app ") and "hmarl.streamlit" not in text
    assert "--store" in text and "gatherUsageStats" in text


def test_runs_show_the_verdict_buy_and_hold_and_a_readable_market(store: Store) -> None:
    """The runs table read ``flags: none`` for a no-edge run, without buy & hold; labels were
    cut to ``asym_1_10 @ data ...``."""
    runs = app.training_runs(app.open_page_store(store.uri), "hmarl")
    table = app.run_table(runs)
    assert list(table.columns[:5]) == ["name", "data", "edge", "val_return_pct",
                                       "val_buy_and_hold_pct"]  # fmt: skip
    row = runs.loc[store.run_id]
    assert row["edge"] == "edge found" or row["edge"].startswith("no edge")
    assert ("no_edge_found_in_training" in row["flags"]) == (row["edge"] != "edge found")
    assert row["val_buy_and_hold_pct"] == row["val_buy_and_hold_pct"]  # logged: not NaN
    label = app.run_label(runs, store.run_id)
    assert label.startswith(f"{row['name']} · synthetic seed 0 (") and "@" not in label


def test_candle_file_overrides(tmp_path: Path) -> None:
    assert app.data_overrides(None) == []
    with pytest.raises(app.PageError, match="does not exist"):
        app.data_overrides(str(tmp_path / "missing.csv"))
    (tmp_path / "c.parquet").write_bytes(b"")
    assert app.data_overrides(str(tmp_path / "c.parquet"))[0] == "data=parquet"


# ----------------------------------------------------------------------------- the page


def test_page_lists_runs_and_backtests_a_period(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = page(store, monkeypatch, tmp_path)
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="experiment").value == "hmarl"
    assert len(at.sidebar.multiselect(key="runs").value) == 2
    assert [t.label for t in at.tabs] == [
        "Runs",
        "Learning curves",
        "Validation and comparison",
        "Backtest a period",
        "Quote per day",
    ]
    run = next(o for o in at.selectbox(key="bt_run").options if store.run_id[:8] in o)
    at.selectbox(key="bt_run").set_value(run)
    at = at.run()
    assert not errors(at), errors(at)
    assert at.selectbox(key="bt_checkpoint").options == ["best.pt", "last.pt"]
    at.selectbox(key="bt_checkpoint").set_value("last.pt")
    at = at.run()
    at.button(key="bt_go").click()
    at = at.run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    out = Path(at.session_state["report"])
    assert (out / "report.html").is_file() and (out / "stats.json").is_file()
    assert any("bars" in s.value for s in at.success)
    # report.html embedded with st.iframe (components.v1.html is past its removal date)
    assert len(at.get("iframe")) == 1
    # the report's header names the checkpoint by its run, not a temporary folder
    meta = json.loads((out / "stats.json").read_text())["meta"]
    assert f"/checkpoints/{store.run_id}/" in meta["checkpoint"]
    # the backtest is logged to the page's store, linked to its training run
    client = app.open_page_store(store.uri)
    linked = app.backtests_of(client, [store.run_id])
    assert len(linked) == 1 and linked["status"].iloc[0] == "FINISHED"


def test_page_shows_bad_inputs_as_messages(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = page(store, monkeypatch, tmp_path)
    # a run without checkpoints
    bare = next(o for o in at.selectbox(key="bt_run").options if store.bare_run_id[:8] in o)
    at.selectbox(key="bt_run").set_value(bare)
    at = at.run()
    assert not at.exception
    assert any("logged no checkpoints" in e for e in errors(at)), errors(at)
    # a period that leaves no decision bar
    run = next(o for o in at.selectbox(key="bt_run").options if store.run_id[:8] in o)
    at.selectbox(key="bt_run").set_value(run)
    at = at.run()
    at.date_input(key="bt_start").set_value(dt.date(2031, 1, 1))
    at = at.run()
    at.button(key="bt_go").click()
    at = at.run()
    assert not at.exception, at.exception
    assert any("leaves 0 decision bars" in e for e in errors(at)), errors(at)
    # no store
    at.sidebar.text_input(key="store").set_value(f"sqlite:///{tmp_path}/none.db")
    at = at.run()
    assert not at.exception
    assert any("no MLflow store" in e for e in errors(at)), errors(at)


def test_candle_file_shorter_than_the_windows_is_refused(store: Store, tmp_path: Path) -> None:
    from hmarl.data.synthetic import synthetic_candles

    path = tmp_path / "short.csv"
    synthetic_candles(30, 0).to_csv(path)
    client = app.open_page_store(store.uri)
    period = app.Period(split="all", candles=str(path))
    with pytest.raises(ValueError, match="window") as info:
        app.run_period_backtest(
            client, store.uri, "hmarl", store.run_id, "best.pt", period, tmp_path / "bt"
        )
    assert "short.csv" in app.message(info.value)


# ----------------------------------------------------------------------------- quoting runs


@pytest.fixture(scope="module")
def quote_store(tmp_path_factory: pytest.TempPathFactory) -> QuoteStore:
    return make_quote_store(tmp_path_factory.mktemp("quote"))


def test_quoting_runs_list_with_their_own_figures(quote_store: QuoteStore) -> None:
    """Quoting runs were listed with trading's columns, every one NaN."""
    from mlflow.tracking import MlflowClient

    client = app.open_page_store(quote_store.uri)
    runs = app.training_runs(client, "quoting")
    tables = app.run_tables(runs)
    assert list(tables) == ["quote"]
    table = tables["quote"]
    assert list(table.columns[:5]) == ["name", "data", "edge", "val_objective", "val_no_quote"]
    assert not {"val_sharpe", "val_return_pct", "val_buy_and_hold_pct"} & set(table.columns)
    # a tick market has no optimum: no column of NaN for it
    assert not {"val_of_optimum_pct", "test_optimum"} & set(table.columns)
    row = runs.loc[quote_store.run_id]
    mlflow_run = MlflowClient(tracking_uri=quote_store.uri).get_run(quote_store.run_id)
    history = client.get_metric_history(quote_store.run_id, "val/objective_price_x_lots")
    at_best = {m.step: m.value for m in history}[int(row["best_episode"])]
    assert row["val_objective"] == at_best
    assert row["val_best_fixed"] == pytest.approx(
        float(mlflow_run.data.tags["baseline_best_fixed"])
    )
    assert row["val_no_quote"] == 0.0 and row["val_fills_bid"] >= 0
    backtests = app.backtests_of(client, [quote_store.run_id])
    assert len(backtests) == 1 and backtests["task"].iloc[0] == "quote"
    assert row["test_objective"] == pytest.approx(backtests["objective"].iloc[0])
    assert math.isfinite(row["test_best_fixed"]) and row["test_no_quote"] == 0.0
    summary = app.comparison_table(runs, "quote")
    assert summary["val_objective_mean"].iloc[0] == pytest.approx(row["val_objective"])
    assert "val_sharpe_mean" not in summary
    curves = app.learning_curves(client, runs, [quote_store.run_id])
    assert len(curves["val/objective_price_x_lots"]) == 2  # evaluations at episodes 0 and 2


def test_a_quoting_backtest_has_its_own_line(quote_store: QuoteStore) -> None:
    """The page's period backtest of a quoting run raised KeyError 'bars' after it ran."""
    from types import SimpleNamespace

    out = quote_store.root / "quote-backtest"
    meta = json.loads((out / "stats.json").read_text())["meta"]
    line = app.backtest_line(SimpleNamespace(meta=meta, out_dir=out))  # type: ignore[arg-type]
    assert line.startswith("quoting backtest on its market's test split: ")
    assert f"{meta['episodes']} episodes of 20 steps" in line and "report.html" in line


def test_a_mixed_selection_is_two_tables_and_compare_refuses_it() -> None:
    from hmarl.report.compare import one_task

    runs = pd.DataFrame(
        {
            "name": ["t0", "q0", "q1"],
            "task": ["trade", "quote", "quote"],
            "val_sharpe": [1.0, math.nan, math.nan],
            "val_objective": [math.nan, 2.0, 3.0],
            "val_of_optimum_pct": [math.nan, 90.0, math.nan],
            "test_optimum": [math.nan, math.nan, math.nan],
        },
        index=["a", "b", "c"],
    )
    tables = app.run_tables(runs)
    assert list(tables) == ["trade", "quote"]
    assert list(tables["trade"].index) == ["a"] and "val_objective" not in tables["trade"]
    assert list(tables["quote"].index) == ["b", "c"] and "val_sharpe" not in tables["quote"]
    assert "val_of_optimum_pct" in tables["quote"]  # known for one run: shown
    assert "test_optimum" not in tables["quote"]  # known for none: not a column of NaN
    with pytest.raises(ValueError, match=r"mixes 1 trading runs \(t0\) and 2 quoting runs"):
        one_task(runs)
    assert one_task(runs.loc[["b", "c"]]) == "quote"


def test_per_day_demo_functions(quote_store: QuoteStore, store: Store, tmp_path: Path) -> None:
    """The checkpoint's quotes day by day through tape_days: files, tables, the closed form
    beside it, quotes at the policy's offsets behind the best; bad choices are PageErrors."""
    client = app.open_page_store(quote_store.uri)
    offered, problems = demo.list_days([quote_store.ticks])
    assert not problems
    labels = {(d.ticker, str(d.day)) for d in offered}
    assert labels == {*quote_store.days, quote_store.bad}
    chosen = [d for d in offered if (d.ticker, str(d.day)) in quote_store.days]
    seen: list[str] = []
    result = demo.run_days(
        client, quote_store.run_id, "best.pt", chosen, tmp_path, step=seen.append
    )
    assert "the checkpoint on day 3 of 3" in seen
    assert len(result.daily) == 3 and set(result.daily["ticker"]) == {"AAA", "BBB"}
    assert list(result.by_day.index) == ["2024-01-02", "2024-01-03"]
    assert list(result.by_day["Days [#]"]) == [2, 1]  # ticker-days per day
    assert list(result.by_ticker.index) == ["AAA", "BBB"]
    assert set(result.by_liquidity.index) == {"low", "mid", "high"}
    assert result.by_ticker.loc["AAA", "PnL [quote]"] == pytest.approx(
        result.daily.loc[result.daily["ticker"] == "AAA", "PnL [quote]"].sum()
    )
    assert "PnL [quote] closed form" in result.versus
    for name in demo.TABLES:
        assert (result.out / demo.AGENT / name).is_file(), name
    files = demo.day_files(result, "AAA", "2024-01-02")
    assert set(files) == {"metrics.json", "steps.csv", "day.png"}
    steps = pd.read_csv(files["steps.csv"])
    warmup = 16 - 1  # the tiny checkpoint's macro window
    assert steps["bid_quote"].iloc[:warmup].isna().all()
    posted = steps.dropna(subset=["bid_quote"])
    behind = ((posted["best_bid"] - posted["bid_quote"]) / 0.01).round()
    assert len(posted) > 0 and set(behind) <= {0.0, 1.0, 2.0, 4.0}  # the trained offsets
    assert json.loads(files["metrics.json"].read_text())["ticker"] == "AAA"
    metrics = demo.day_metrics(result, "AAA", "2024-01-02").set_index("metric")["value"]
    pnl = result.daily.set_index(["ticker", "day"]).loc[("AAA", "2024-01-02"), "PnL [quote]"]
    assert metrics["PnL [quote]"] == f"{pnl:.6g}" and metrics["ticker"] == "AAA"
    # another tick (an instrument quoted on 0.02): the trained offsets in its ticks
    wide = demo.run_days(
        client, quote_store.run_id, "best.pt", chosen[:1], tmp_path, closed_form=False, tick=0.02
    )
    steps = pd.read_csv(demo.day_files(wide, "AAA", "2024-01-02")["steps.csv"])
    posted = steps.dropna(subset=["bid_quote"])
    behind = ((posted["best_bid"] - posted["bid_quote"]) / 0.02).round(6)
    assert len(posted) > 0 and set(behind) <= {0.0, 1.0, 2.0, 4.0}
    assert not (wide.out / demo.CLOSED_FORM).exists()
    with pytest.raises(app.PageError, match="tick must be > 0"):
        demo.run_days(client, quote_store.run_id, "best.pt", chosen[:1], tmp_path, tick=-1.0)
    with pytest.raises(app.PageError, match="'x' is not a number"):
        demo.optional_number("x", "lot")
    assert demo.optional_number(" ", "lot") is None
    bad = [d for d in offered if (d.ticker, str(d.day)) == quote_store.bad]
    with pytest.raises(app.PageError, match=r"BAD 2024-01-02 .*crossed"):
        demo.run_days(client, quote_store.run_id, "best.pt", bad, tmp_path)
    with pytest.raises(app.PageError, match="choose at least one"):
        demo.run_days(client, quote_store.run_id, "best.pt", [], tmp_path)
    with pytest.raises(app.PageError, match="no quotes in the session"):
        demo.load_ticks(chosen[:1], "01:00-02:00")
    trading = app.open_page_store(store.uri)
    with pytest.raises(ValueError, match="is a trading checkpoint") as info:
        demo.run_days(trading, store.run_id, "best.pt", chosen[:1], tmp_path)
    assert "Traceback" not in app.message(info.value)


def test_page_runs_the_per_day_demo(
    quote_store: QuoteStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(demo.TICKS_ENV, str(quote_store.ticks))
    at = page(quote_store, monkeypatch, tmp_path)  # type: ignore[arg-type]
    assert not at.exception, at.exception
    assert at.tabs[-1].label == "Quote per day"
    shown_runs = at.dataframe[0].value  # the runs tab's first table
    assert "val_objective" in shown_runs and "val_sharpe" not in shown_runs
    at.multiselect(key="qd_tickers").set_value(["AAA", "BBB"])
    at = at.run()
    assert at.multiselect(key="qd_days").options == ["2024-01-02", "2024-01-03"]
    at.checkbox(key="qd_baseline").uncheck()  # the functions' test runs the closed form
    at.button(key="qd_go").click()
    at = at.run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    assert any("3 ticker-day(s)" in s.value for s in at.success)
    daily = [d.value for d in at.dataframe if "liquidity" in d.value.columns]
    assert len(daily[0]) == 3
    assert len(at.get("download_button")) == len(demo.TABLES) + 2
    assert len(at.get("image")) == 1  # the chosen ticker-day's day.png
    # a file that fails validation: one line on the page
    at.multiselect(key="qd_tickers").set_value(["BAD"])
    at = at.run()
    at.button(key="qd_go").click()
    at = at.run()
    assert not at.exception, at.exception
    assert any("BAD 2024-01-02" in e and "crossed" in e for e in errors(at)), errors(at)
