"""What the page of ``python -m hmarl.app`` shows, as plain functions (Streamlit).

Why Streamlit: the page is a handful of inputs, tables and charts over Python functions we
already have; Streamlit turns a script into that page with no front-end code, embeds
``report.html`` as is, and ships its own test harness (``streamlit.testing.v1.AppTest``)
that runs the script without a browser. The page script (:mod:`hmarl.app.page`) only lays
out widgets; everything it shows comes from the plain functions below, which tests call
directly. The launcher is :mod:`hmarl.app.__main__`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hmarl.report.compare import (
    QUOTE,
    TRADE,
    aggregate,
    curve_keys,
    experiment_ids,
    load_runs,
    metric_histories,
    open_store,
    task_columns,
    tasks_of,
)
from hmarl.tracking import CHECKPOINT_DIR, DEFAULT_URI, run_checkpoints, search_all

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from hmarl.backtest.report import BacktestResult

STORE_ENV = "HMARL_APP_STORE"  # the store the page opens first (set by hmarl.app.__main__)
STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")  # the page lists every training run
# the verdict and buy & hold first: a no-edge run's figures are not advice to trade it
RUN_COLUMNS = ("name", "data", "edge", "val_return_pct", "val_buy_and_hold_pct", "flags",
               "val_sharpe", "val_n_trades", "test_sharpe", "test_return_pct", "seed", "status",
               "best_episode", "group", "market")  # fmt: skip
# a quoting run (task=quote): its objective beside no quote, the best fixed quote and the closed
# form on the same validation paths (and the optimum's share where one is known), fills, inventory
QUOTE_RUN_COLUMNS = ("name", "data", "edge", "val_objective", "val_of_optimum_pct",
                     "val_gap_closed_pct", "val_no_quote", "val_best_fixed", "val_closed_form",
                     "val_optimum", "val_pnl", "val_fills_bid", "val_fills_ask",
                     "val_inventory_abs_mean", "val_time_at_limits_pct", "flags", "test_objective",
                     "test_of_optimum_pct", "test_no_quote", "test_best_fixed", "test_closed_form",
                     "test_optimum", "seed", "status", "best_episode", "group",
                     "market")  # fmt: skip
# known only on the Avellaneda-Stoikov market (a tick market has no optimum): not shown as
# a column of NaN when no run of the table has them
OPTIONAL_QUOTE_COLUMNS = ("val_of_optimum_pct", "val_gap_closed_pct", "val_optimum",
                          "test_of_optimum_pct", "test_optimum")  # fmt: skip
TASK_TITLES = {TRADE: "Trading runs", QUOTE: "Quoting runs (task=quote; price x lots per episode)"}
PAGE_BACKTEST = (  # a page backtest: the report's figures, fewer repetitions (seconds, not tens)
    "fee_multipliers=[1.0]",
    "n_bootstrap=200",
    "plots=false",
    "progress=false",
)


class PageError(ValueError):
    """Bad input on the page (no store, no checkpoint, a period too short): shown, not raised."""


def message(exc: BaseException) -> str:
    """One line for the page: what is wrong, in the project's words (hmarl.cli.describe)."""
    from hmarl.cli import describe
    from hmarl.config import BacktestConfig

    return describe(exc, BacktestConfig)


# ----------------------------------------------------------------------------- store and runs


def open_page_store(uri: str) -> MlflowClient:
    """A client on an existing store; an empty uri or a missing sqlite file is a PageError."""
    if not uri.strip():
        raise PageError("give an MLflow store, e.g. sqlite:///mlflow.db")
    try:
        return open_store(uri.strip())
    except FileNotFoundError as exc:
        raise PageError(str(exc)) from exc


def experiment_names(client: MlflowClient) -> list[str]:
    """Active experiments of the store, by name."""
    return sorted(e.name for e in client.search_experiments())


def latest_experiment(client: MlflowClient, names: Sequence[str]) -> int:
    """Index in ``names`` of the experiment of the newest training run (0 when none): the
    page opens on it rather than on MLflow's empty ``Default``."""
    page = client.search_runs(
        experiment_ids(client),
        "tags.kind = 'train'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not page:
        return 0
    name = client.get_experiment(page[0].info.experiment_id).name
    return list(names).index(name) if name in names else 0


def training_runs(client: MlflowClient, experiment: str) -> pd.DataFrame:
    """Training runs of one experiment, grouped as ``compare_runs`` groups them (``group``:
    the experiment on one market), with the validation that selected ``best.pt`` and the
    newest linked test backtest."""
    ids = experiment_ids(client, [experiment])
    try:
        return load_runs(client, ids, statuses=STATUSES)
    except ValueError as exc:
        raise PageError(f"no training runs in experiment {experiment!r}") from exc


def run_label(runs: pd.DataFrame, run_id: str) -> str:
    """``name · data (abcdef12)``: how a run is listed on the page.

    Short on purpose: the group's name carries the whole market label, and a label that
    started with it was cut to ``asym_1_10 @ data ...`` in the sidebar.
    """
    row = runs.loc[run_id]
    return f"{row['name']} · {row['data']} ({run_id[:8]})"


def backtests_of(client: MlflowClient, run_ids: Sequence[str]) -> pd.DataFrame:
    """Backtest runs (``kind=backtest``) linked to the given training runs, newest first."""
    wanted = set(run_ids)
    runs = search_all(client, experiment_ids(client), "tags.kind = 'backtest'")
    rows = [
        {
            "train_run_id": r.data.tags.get("train_run_id"),
            "backtest_run_id": r.info.run_id,
            "split": r.data.tags.get("split"),
            "status": r.info.status,
            # FINISHED only once its report folder was renamed into place whole (a killed
            # backtest stays RUNNING, with no metrics): anything else is flagged incomplete
            "complete": r.info.status == "FINISHED",
            "flags": r.data.tags.get("flags", ""),
            "task": r.data.tags.get("task", TRADE),
            "sharpe": r.data.metrics.get("sharpe"),
            "return_pct": r.data.metrics.get("return_pct"),
            # a quoting backtest's figure: the agent's objective (price x lots per episode)
            "objective": r.data.metrics.get("agent/objective_price_x_lots"),
            "buy_and_hold/return_pct": r.data.metrics.get("buy_and_hold/return_pct"),
            "started": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC"),
        }
        for r in runs
        if r.data.tags.get("train_run_id") in wanted
    ]
    columns = ["train_run_id", "backtest_run_id", "split", "status", "complete", "flags", "task",
               "sharpe", "return_pct", "objective", "buy_and_hold/return_pct",
               "started"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("started", ascending=False, ignore_index=True)


def learning_curves(
    client: MlflowClient, runs: pd.DataFrame, run_ids: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Per curve key (``reward/mean``, ``val/sharpe``; quoting runs' validation objective when
    the runs hold some): a frame of episode x run label."""
    keys = list(dict.fromkeys(k for t in tasks_of(runs.loc[list(run_ids)]) for k in curve_keys(t)))
    history = metric_histories(client, run_ids, keys)
    out: dict[str, pd.DataFrame] = {}
    for key in keys:
        part = history[history["key"] == key]
        wide = part.pivot_table(index="step", columns="run_id", values="value", aggfunc="last")
        out[key] = wide.rename(columns=lambda rid: run_label(runs, rid))
    return out


def comparison_table(runs: pd.DataFrame, task: str = TRADE) -> pd.DataFrame:
    """Per group of one task's runs: mean, std and 95% CI over seeds of that task's figures
    (``hmarl.report.compare.aggregate``)."""
    return aggregate(of_task(runs, task), task_columns(task))


def of_task(runs: pd.DataFrame, task: str) -> pd.DataFrame:
    """The runs of one task (a frame without a ``task`` column holds trading runs)."""
    if "task" not in runs:
        return runs if task == TRADE else runs.iloc[:0]
    return runs[runs["task"] == task]


def run_table(runs: pd.DataFrame, task: str = TRADE) -> pd.DataFrame:
    """One task's runs as the page lists them: identity, validation and test figures (a
    quoting run's own figures, never trading columns of NaN)."""
    part = of_task(runs, task)
    if task != QUOTE:
        return part[[c for c in RUN_COLUMNS if c in part.columns]]
    empty = [c for c in OPTIONAL_QUOTE_COLUMNS if c in part and part[c].isna().all()]
    return part[[c for c in QUOTE_RUN_COLUMNS if c in part.columns and c not in empty]]


def run_tables(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per task the selection holds (trading first), its table: a mixed selection is shown as
    separate tables, never one table of two kinds of figures."""
    return {task: run_table(runs, task) for task in tasks_of(runs)}


def validation_table(runs: pd.DataFrame, task: str = TRADE) -> pd.DataFrame:
    """The validation that selected each run's ``best.pt``, in its task's figures."""
    table = run_table(runs, task)
    return table[[c for c in table.columns if c.startswith("val_")]]


def checkpoints_of(client: MlflowClient, run_id: str) -> list[str]:
    """The run's checkpoint artifacts (``best.pt`` first); empty when it logged none."""
    return run_checkpoints(client, run_id)[0]


# ----------------------------------------------------------------------------- period backtest


@dataclass
class Period:
    """What to backtest: the run's own data (``candles`` None) or a candle file, a split and
    optional UTC dates [start, end) on its decision bars."""

    split: str = "test"
    start: str | None = None
    end: str | None = None
    candles: str | None = None  # a CSV or Parquet candle file; None: the run's training data


def data_overrides(candles: str | None) -> list[str]:
    """Hydra overrides selecting a candle file by its suffix (CSV or Parquet)."""
    if not candles:
        return []
    path = Path(candles).expanduser()
    if not path.is_file():
        raise PageError(f"candle file {path} does not exist")
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    return [f"data={kind}", f"data.path={path.resolve()}"]


def backtest_overrides(uri: str, checkpoint: Path, experiment: str, period: Period) -> list[str]:
    """The backtest's overrides: the page's defaults, the period, logging to the page's store."""
    overrides = [
        f"checkpoint={checkpoint}",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"split={period.split}",
        *PAGE_BACKTEST,
        *data_overrides(period.candles),
    ]
    overrides += [f"{k}={v}" for k, v in (("start", period.start), ("end", period.end)) if v]
    return overrides


def fetch_checkpoint(client: MlflowClient, run_id: str, name: str, dst: Path) -> Path:
    """Download ``checkpoints/<name>`` of a run; a run without it is a PageError."""
    available = checkpoints_of(client, run_id)
    if name not in available:
        raise PageError(
            f"run {run_id} has no checkpoints/{name} artifact (it has: "
            f"{', '.join(available) or 'none'}); was it trained with "
            "tracking.log_checkpoints=false?"
        )
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, f"{CHECKPOINT_DIR}/{name}", str(dst)))


def run_period_backtest(
    client: MlflowClient,
    uri: str,
    experiment: str,
    run_id: str,
    checkpoint: str,
    period: Period,
    out_root: Path,
    step: Callable[[str], None] = lambda _: None,
) -> BacktestResult:
    """Fetch the checkpoint, backtest it on ``period`` and write the report under ``out_root``.

    ``step`` is told each stage (the page's progress indicator). The backtest is logged to
    the page's store as any backtest is (``kind=backtest``, linked by ``train_run_id``).
    """
    from hydra import compose, initialize_config_dir

    from hmarl.backtest.run import backtest
    from hmarl.config import conf_dir, register_backtest_configs, to_backtest_config

    step("fetching the checkpoint")
    out_root.mkdir(parents=True, exist_ok=True)
    # a folder named by the run, not a temporary one: report.html's header shows this path
    local = fetch_checkpoint(client, run_id, checkpoint, out_root / "checkpoints" / run_id)
    overrides = backtest_overrides(uri, local, experiment, period)
    register_backtest_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = to_backtest_config(compose("backtest", overrides=overrides))
    step("backtesting the policy and its baselines")
    out = Path(tempfile.mkdtemp(prefix="backtest-", dir=out_root))
    result = backtest(cfg, out)
    step("done")
    return result


def report_page(result: BacktestResult) -> str:
    """The backtest's ``report.html``, to embed in the page."""
    path = result.out_dir / "report.html"
    if not path.is_file():
        raise PageError(f"{path} was not written (report_html=false?)")
    return path.read_text(encoding="utf-8")


def backtest_line(result: BacktestResult) -> str:
    """The page's line on a finished backtest: its bars and period, or for a quoting
    checkpoint (which is scored on its own market's split) its episodes."""
    m, where = result.meta, f"report: {result.out_dir / 'report.html'}"
    if m.get("task") == "quote":
        return (
            f"quoting backtest on its market's {m['split']} split: {m['episodes']} episodes of "
            f"{m['steps_per_episode']} steps (no market impact); {where}"
        )
    return f"{m['bars']} bars, {m['first_decision']} .. {m['last_decision']}; {where}"


def page_store() -> str:
    """The store the page opens first."""
    return os.environ.get(STORE_ENV, DEFAULT_URI)


def frame_for_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns as text: Arrow (what Streamlit sends tables as) refuses mixed types."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "" if v is None else str(v))
    return out


def stats_for_display(result: BacktestResult) -> pd.DataFrame:
    """The backtest's stats table (the numbers of stats.json) with text cells."""
    from hmarl.report.html import stats_rows

    rows: dict[str, Any] = stats_rows(result.table)
    return pd.DataFrame(rows).set_index("statistic")
