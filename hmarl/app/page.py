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
from hmarl.app import quote_days as demo
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

runs_tab, curves_tab, compare_tab, backtest_tab, days_tab = st.tabs(
    ["Runs", "Learning curves", "Validation and comparison", "Backtest a period", "Quote per day"]
)
with runs_tab:
    st.subheader("Training runs (grouped by experiment and market, as compare_runs groups them)")
    tables = app.run_tables(selected)
    for task, table in tables.items():
        if len(tables) > 1 or task != "trade":
            st.markdown(f"**{app.TASK_TITLES[task]}**")
        st.dataframe(app.frame_for_display(table), key=f"runs_{task}")
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
    for task in tables:  # one table per task: a Sharpe and an objective never share a column
        title = app.TASK_TITLES[task]
        st.subheader(f"{title}: the validation that selected best.pt, per run")
        st.dataframe(app.frame_for_display(app.validation_table(selected, task)))
        st.subheader(f"{title}: per group, mean, std and 95% CI over seeds")
        st.dataframe(app.frame_for_display(app.comparison_table(selected, task)))

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
        st.success(app.backtest_line(result))
        for note in result.meta.get("flags", []):
            st.warning(f"flag: {note}")
        st.iframe(app.report_page(result), height=1100)  # components.v1.html: removed 2026-06
        st.dataframe(app.frame_for_display(app.stats_for_display(result)))

# ---- the per-day quoting demo ----
with days_tab:
    st.caption(
        "A quoting checkpoint (trained with data=ticks or data=ticks_synthetic) run day by day on "
        "tick files, beside the closed-form quotes (hmarl.backtest.tape_days). The market does "
        "not react to the quotes (no market impact)."
    )
    quoting = [label for label in chosen if selected.loc[labels[label], "task"] == "quote"]
    if not quoting:
        st.info(
            "No quoting run among the chosen runs: train one with python -m hmarl.train "
            "+experiment=mm_asym_1_10 data=ticks data.path=<capture>, or choose it in the sidebar."
        )
        st.stop()
    left, right = st.columns(2)
    q_label = left.selectbox("Quoting run", quoting, key="qd_run")
    q_run = labels[q_label]
    q_available = shown("checkpoint", lambda: app.checkpoints_of(client, q_run))
    if not q_available:
        st.error(f"checkpoint: run {q_run} logged no checkpoints; choose another run")
        st.stop()
    q_checkpoint = right.selectbox("Checkpoint", q_available, key="qd_checkpoint")
    folder = st.text_input(
        "Tick folder (captures *_ws.gz, the downloader's cache, *_quotes.csv + *_trades.csv; "
        "the bundled capture is always listed)",
        value=demo.tick_folders()[-1].as_posix() if len(demo.tick_folders()) > 1 else "",
        key="qd_folder",
    )
    offered, problems = demo.list_days(demo.tick_folders(folder))
    for line in problems:
        st.warning(f"tick files: {line}")
    tickers = sorted({d.ticker for d in offered})
    col_t, col_d = st.columns(2)
    picked_tickers = col_t.multiselect("Tickers", tickers, default=tickers[:1], key="qd_tickers")
    day_options = sorted({str(d.day) for d in offered if d.ticker in picked_tickers})
    picked_days = col_d.multiselect("Days", day_options, default=day_options, key="qd_days")
    col_s, col_tick, col_lot, col_b = st.columns(4)
    session = col_s.text_input(
        "UTC session (optional, e.g. 13:00-20:50)", value="", key="qd_session"
    )
    tick_text = col_tick.text_input("Tick (empty: the checkpoint's)", value="", key="qd_tick")
    lot_text = col_lot.text_input("Lot (empty: the checkpoint's)", value="", key="qd_lot")
    baseline = col_b.checkbox("Closed-form quotes beside it", value=True, key="qd_baseline")
    if st.button("Run per-day evaluation", key="qd_go", type="primary"):
        days = [d for d in offered if d.ticker in picked_tickers and str(d.day) in picked_days]
        tick = shown("tick", lambda: demo.optional_number(tick_text, "tick"))
        lot = shown("lot", lambda: demo.optional_number(lot_text, "lot"))
        if not days:
            st.error("days: choose at least one ticker and one of its days")
            st.stop()
        with st.status(f"Evaluating {len(days)} ticker-day(s)...", expanded=True) as status:
            ran = shown(
                "per-day evaluation",
                lambda: demo.run_days(
                    client, q_run, q_checkpoint, days, OUT_ROOT, session=session.strip() or None,
                    closed_form=baseline, tick=tick, lot=lot, step=st.write,
                ),
            )  # fmt: skip
            status.update(label=f"Per-day evaluation written to {ran.out}", state="complete")
        st.session_state["days"] = str(ran.out)
    if "days" in st.session_state and Path(st.session_state["days"]).is_dir():
        days_result = shown(
            "per-day results", lambda: demo.read_days(Path(st.session_state["days"]))
        )
        st.success(f"{len(days_result.daily)} ticker-day(s); files: {days_result.out}")
        st.subheader("By day and ticker (daily_metrics.csv)")
        st.dataframe(app.frame_for_display(days_result.daily[demo.SHOWN]), key="qd_daily")
        if len(days_result.versus.columns) > 5:
            st.subheader("The checkpoint beside the closed-form quotes, per ticker-day")
            st.dataframe(app.frame_for_display(days_result.versus), key="qd_versus")
        for title, frame in (
            ("Per day, over the tickers", days_result.by_day),
            ("Per ticker, over the days", days_result.by_ticker),
            ("Per liquidity bucket (terciles of traded notional)", days_result.by_liquidity),
        ):
            st.subheader(title)
            st.dataframe(app.frame_for_display(frame), key=f"qd_{title[:12]}")
        cols = st.columns(len(demo.TABLES))
        for col, (name, what) in zip(cols, demo.TABLES.items(), strict=True):
            path = days_result.out / demo.AGENT / name
            if path.is_file():
                col.download_button(
                    f"{name}", path.read_bytes(), file_name=name, mime="text/csv", help=what,
                    key=f"qd_dl_{name}",
                )  # fmt: skip
        keys = [f"{r.ticker} {r.day}" for r in days_result.daily.itertuples()]
        one = st.selectbox("One ticker-day: its metrics, plot and step log", keys, key="qd_one")
        ticker, day = one.split(" ")
        files = demo.day_files(days_result, ticker, day)
        left, right = st.columns([1, 2])
        left.dataframe(demo.day_metrics(days_result, ticker, day), key="qd_metrics", height=600)
        if "day.png" in files:
            right.image(str(files["day.png"]), caption=f"{ticker} {day}")
        for name in ("steps.csv", "metrics.json"):
            if name in files:
                st.download_button(
                    f"{ticker} {day} {name}", files[name].read_bytes(),
                    file_name=f"{ticker}_{day}_{name}", key=f"qd_dl_day_{name}",
                )  # fmt: skip
