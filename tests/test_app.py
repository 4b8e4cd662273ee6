"""The run browser (python -m hmarl.app): its functions, and the page in Streamlit's AppTest.

One tiny policy is trained into a sqlite store under tmp (and one without logged
checkpoints); the page is then run by ``streamlit.testing.v1.AppTest`` (the script runs in
this process, no browser): it lists the runs, backtests a period and embeds report.html,
and shows bad inputs as an error line, never an exception.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from app_store import Store, make_store

import hmarl.app.__main__ as launcher
from hmarl.app import backend as app

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
