"""The Streamlit page of ``python -m hmarl.app``: widgets only; the logic is in hmarl.app.backend.

Every call that reads user input runs inside :func:`shown`, which puts a bad input (no
store, a run without checkpoint, a period shorter than the windows) on the page as one
``error`` line instead of a traceback, and stops the script there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st

from hmarl.app import backend as app
from hmarl.walkforward.listing import walkforward_table

T = TypeVar("T")
OUT_ROOT = Path("backtests") / "app"


def shown(what: str, call: Callable[[], T]) -> T:
    """``call()``, or the reason it failed on the page (never a traceback), and stop."""
    try:
        return call()
    except Exception as exc:
        st.error(f"{what}: {app.message(exc)}")
        st.stop()
        raise  # st.stop() raises; this keeps type checkers sure nothing returns here


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else None


st.set_page_config(page_title="hmarl runs", layout="wide")
st.title("hmarl: runs and period backtests")

# ---- store, experiment, runs ----
uri = st.sidebar.text_input("MLflow store", value=app.page_store(), key="store")
client = shown("store", lambda: app.open_page_store(uri))
experiments = shown("store", lambda: app.experiment_names(client))
if not experiments:
    st.error(f"store: {uri} holds no experiments yet; train a run first")
    st.stop()
experiment = st.sidebar.selectbox(
    "Experiment", experiments, index=app.latest_experiment(client, experiments), key="experiment"
)
runs = shown("experiment", lambda: app.training_runs(client, experiment))
labels = {app.run_label(runs, rid): str(rid) for rid in runs.index}
chosen = st.sidebar.multiselect("Runs", list(labels), default=list(labels), key="runs")
run_ids = [labels[label] for label in chosen]
if not run_ids:
    st.info("Choose at least one run in the sidebar.")
    st.stop()
selected = runs.loc[run_ids]

runs_tab, curves_tab, compare_tab, backtest_tab = st.tabs(
    ["Runs", "Learning curves", "Validation and comparison", "Backtest a period"]
)
with runs_tab:
    st.subheader("Training runs (grouped by experiment and market, as compare_runs groups them)")
    st.dataframe(app.frame_for_display(app.run_table(selected)))
    st.subheader("Their backtests")
    st.dataframe(app.frame_for_display(app.backtests_of(client, run_ids)))
    st.subheader("Walk-forwards (python -m hmarl.walkforward; folders under walkforward/)")
    walks = walkforward_table("walkforward")
    if walks.empty:
        st.caption("none yet under walkforward/")
    else:
        st.dataframe(app.frame_for_display(walks))
        shown_report = st.selectbox("Stitched report", list(walks["report"]), key="wf_report")
        if shown_report and Path(shown_report).is_file():
            st.iframe(Path(shown_report).read_text(), height=1100)
with curves_tab:
    for key, frame in shown("curves", lambda: app.learning_curves(client, runs, run_ids)).items():
        st.markdown(f"**{key}** per episode")
        if frame.empty:
            st.caption(f"no {key} logged")
        else:
            st.line_chart(frame)
with compare_tab:
    st.subheader("Validation that selected best.pt, per run")
    st.dataframe(app.frame_for_display(selected.filter(like="val_")))
    st.subheader("Per group: mean, std and 95% CI over seeds")
    st.dataframe(app.frame_for_display(app.comparison_table(selected)))

# ---- backtest a period ----
with backtest_tab:
    left, right = st.columns(2)
    run_label = left.selectbox("Run", chosen, key="bt_run")
    run_id = labels[run_label]
    available = shown("checkpoint", lambda: app.checkpoints_of(client, run_id))
    if not available:
        st.error(
            f"checkpoint: run {run_id} logged no checkpoints (trained with "
            "tracking.log_checkpoints=false?); choose another run"
        )
        st.stop()
    checkpoint = right.selectbox("Checkpoint", available, key="bt_checkpoint")
    candles = st.text_input(
        "Candle file (CSV or Parquet; empty: the run's own data)", value="", key="bt_candles"
    )
    col_split, col_start, col_end = st.columns(3)
    split = col_split.selectbox("Split", ["test", "val", "train", "all"], key="bt_split")
    start = col_start.date_input("From (UTC, optional)", value=None, key="bt_start")
    end = col_end.date_input("To (UTC, exclusive, optional)", value=None, key="bt_end")
    if st.button("Run backtest", key="bt_go", type="primary"):
        period = app.Period(split, _date(start), _date(end), candles.strip() or None)
        with st.status("Backtesting...", expanded=True) as status:
            result = shown(
                "backtest",
                lambda: app.run_period_backtest(
                    client, uri, experiment, run_id, checkpoint, period, OUT_ROOT, st.write
                ),
            )
            status.update(label=f"Backtest written to {result.out_dir}", state="complete")
        st.session_state["report"] = str(result.out_dir)
        st.success(
            f"{result.meta['bars']} bars, {result.meta['first_decision']} .. "
            f"{result.meta['last_decision']}; report: {result.out_dir / 'report.html'}"
        )
        for note in result.meta.get("flags", []):
            st.warning(f"flag: {note}")
        st.iframe(app.report_page(result), height=1100)  # components.v1.html: removed 2026-06
        st.dataframe(app.frame_for_display(app.stats_for_display(result)))
