"""Compare training runs from MLflow: seeds aggregated per experiment, plots, Deflated Sharpe.

The question a sweep answers is "is 1:10 really better than symmetric, and by how much,
across seeds?". One seed proves nothing, so every figure here is a mean over the runs of
one experiment (the ``experiment_name`` tag) with its standard deviation and a 95%
Student-t confidence interval, and the best run's Sharpe is deflated for the number of
trials that were tried to find it (:func:`hmarl.stats.metrics.deflated_sharpe_ratio`): the best
of N skill-less runs has a positive Sharpe by luck alone.

Never pooled: a group is an experiment on one market, i.e. one data fingerprint, bar
spacing (``data.resample``) and cost setting (``env.commission``, ``env.slippage_bps``);
when the selection spans several markets the group's name carries the market, seeds are
paired only within a market, and a group whose runs differ in any other parameter is named
in the report with what differs.

Sources: training runs (tag ``kind=train``) log ``val/*`` metrics every evaluation; the
figures used are those of the evaluation that selected ``best.pt`` (tag ``best_episode``),
not the last one. Test figures come from backtests (tag ``kind=backtest``, ``split=test``)
linked by their ``train_run_id`` tag; without them only validation is reported, and the
report says so. Runs whose selected validation returns have no variance (a policy that
never trades) have no skew, kurtosis or PSR (NaN) and are left out of the Deflated Sharpe,
by name.

Quoting runs (``task=quote``) are compared on their own figures: the objective that selected
``best.pt`` (price x lots per episode, after fees, minus the inventory penalties), its share of
the exact optimum where one is known, PnL, fills and inventory, beside the baselines' objectives
on the same validation paths (tags ``baseline_*``) and the linked quoting backtest's figures;
never on trading's columns, which a quoting run leaves NaN. A selection mixing the two tasks is
refused with both named (:func:`one_task`) unless one task is chosen; the page shows such an
experiment as two tables.

``scripts/compare_runs.py`` and ``notebooks/compare_runs.ipynb`` both call :func:`compare`.
One pipeline (select runs, tabulate, aggregate, deflate, plot, write) that reads top to
bottom; MLflow access itself lives in :mod:`hmarl.tracking`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from hmarl.io import write_csv, write_png
from hmarl.report.plots import agg_figure
from hmarl.stats.metrics import deflated_sharpe_ratio, expected_max_sharpe
from hmarl.tracking import search_all, sqlite_path

if TYPE_CHECKING:  # mlflow is imported where a store is opened (it costs seconds to import)
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

GROUP_TAG = "experiment_name"
# what makes a market: the data's fingerprint (a tag), then run params
MARKET_PARAMS = {
    "bars": "data.resample",
    "commission": "env.commission",
    "slippage_bps": "env.slippage_bps",
}
# params that may differ between the seeds of one group without mixing anything
FREE_PARAMS = ("seed", "cache_dir", "device", "threads", "trainer.resume")
FREE_PREFIXES = ("tracking.",)
# column -> MLflow metric key of a training run (value at the `best_episode` step)
TRAIN_METRICS = {
    "val_sharpe": "val/sharpe",
    "val_return_pct": "val/return_pct",
    "val_n_trades": "val/n_trades",
    "val_random_timing_p": "val/random_timing_p_value",
    "val_psr": "val/probabilistic_sharpe",
    "val_volatility_ann_pct": "val/volatility_ann_pct",
    "val_bars": "val/bars",
    "val_periods_per_year": "val/periods_per_year",
    "val_skew": "val/skew",
    "val_kurtosis": "val/kurtosis",
}
UNDEFINED_WITHOUT_VARIANCE = ("val_skew", "val_kurtosis", "val_psr")
# column -> metric key of a backtest run (hmarl.backtest logs the strategy's keys bare, a
# baseline's as "<baseline>/<key>": the supervised classifier beside buy & hold on the same bars)
TEST_METRICS = {
    "test_sharpe": "sharpe",
    "test_return_pct": "return_pct",
    "test_buy_and_hold_return_pct": "buy_and_hold/return_pct",
    "test_supervised_sharpe": "supervised/sharpe",
    "test_supervised_return_pct": "supervised/return_pct",
}
SUMMARY_COLUMNS = (
    "val_sharpe",
    "val_return_pct",
    "val_n_trades",
    "test_sharpe",
    "test_return_pct",
    "test_buy_and_hold_return_pct",
    "test_supervised_sharpe",
    "test_supervised_return_pct",
    "wall_s",
    "steps_per_s",
)
CURVE_KEYS = ("reward/mean", "val/sharpe")
STEPS_KEY = "perf/steps_per_s"

# Quoting runs (``task=quote``, docs/market_making.md) log other figures: an objective (price x
# lots per episode, after fees, minus the inventory penalties), fills and inventory, and the
# baselines' validation objectives as tags. They get their own columns, never trading's.
TASK_PARAM = "task"  # a run's task: the tag ``task`` (quoting runs), else the param, else trade
TRADE, QUOTE = "trade", "quote"
QUOTE_TRAIN_METRICS = {
    "val_objective": "val/objective_price_x_lots",
    "val_of_optimum_pct": "val/of_the_optimum_pct",
    "val_gap_closed_pct": "val/gap_closed_pct",
    "val_pnl": "val/pnl_price_x_lots",
    "val_fills_bid": "val/fills_bid_n",
    "val_fills_ask": "val/fills_ask_n",
    "val_fill_ratio_pct": "val/fill_ratio_pct",
    "val_inventory_abs_mean": "val/inventory_abs_mean_lots",
    "val_time_at_limits_pct": "val/time_at_limits_pct",
}
# column -> tag of a quoting training run: each baseline's validation objective
QUOTE_BASELINE_TAGS = {
    "val_no_quote": "baseline_no_quote",
    "val_best_fixed": "baseline_best_fixed",
    "val_closed_form": "baseline_closed_form",
    "val_optimum": "baseline_optimum",
}
# column -> metric key of a quoting backtest (hmarl.backtest.quote_run: "<policy>/<key>")
QUOTE_TEST_METRICS = {
    "test_objective": "agent/objective_price_x_lots",
    "test_of_optimum_pct": "agent/of_the_optimum_pct",
    "test_pnl": "agent/pnl_price_x_lots",
    "test_fills_bid": "agent/fills_bid_n",
    "test_fills_ask": "agent/fills_ask_n",
    "test_inventory_abs_mean": "agent/inventory_abs_mean_lots",
    "test_no_quote": "no_quote/objective_price_x_lots",
    "test_best_fixed": "best_fixed/objective_price_x_lots",
    "test_closed_form": "closed_form/objective_price_x_lots",
    "test_optimum": "optimum/objective_price_x_lots",
}
QUOTE_SUMMARY_COLUMNS = (
    "val_objective",
    "val_of_optimum_pct",
    "val_gap_closed_pct",
    "val_pnl",
    "val_fills_bid",
    "val_fills_ask",
    "val_inventory_abs_mean",
    "val_best_fixed",
    "val_closed_form",
    "val_optimum",
    "test_objective",
    "test_of_optimum_pct",
    "test_best_fixed",
    "test_closed_form",
    "test_optimum",
    "wall_s",
    "steps_per_s",
)
QUOTE_CURVE_KEYS = ("reward/mean", "val/objective_price_x_lots")


class Comparison(NamedTuple):
    """Everything :func:`compare` found and wrote."""

    runs: pd.DataFrame  # one row per training run (index run_id)
    summary: pd.DataFrame  # one row per experiment: n, <col>_mean/_std/_ci95
    histories: pd.DataFrame  # long format: run_id, key, step, value
    differences: pd.DataFrame  # paired_differences of val (and test) Sharpe
    dsr: dict[str, dict[str, Any]]  # per market: best run with an edge and its DSR, or "error"
    has_test: bool  # False: no linked test backtests, validation only
    files: dict[str, Path]  # name -> written file
    task: str = TRADE  # the runs' task: trade, or quote (objective, fills, baselines)


# ----------------------------------------------------------------------------- selection


def open_store(uri: str) -> MlflowClient:
    """A client on an existing store; a missing sqlite file is an error, not a new empty store."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(
                f"no MLflow store at {path.resolve()} (tracking uri {uri!r}); run a training "
                "or pass the uri the runs were logged to"
            )
    return MlflowClient(tracking_uri=uri)


def experiment_ids(client: MlflowClient, names: Sequence[str] = ()) -> list[str]:
    """Ids of the named MLflow experiments (all active ones when ``names`` is empty)."""
    if not names:
        return [e.experiment_id for e in client.search_experiments()]
    ids = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"MLflow experiment {name!r} not found; known: {known}")
        ids.append(exp.experiment_id)
    return ids


def _quote(value: str, what: str) -> str:
    if "'" in value:
        raise ValueError(f"{what} {value!r} contains a single quote, which MLflow filters refuse")
    return f"'{value}'"


def run_filter(
    kind: str, parent_run_id: str | None = None, tags: Mapping[str, str] | None = None
) -> str:
    """The MLflow search filter for runs of ``kind``, optionally of one parent and tags."""
    parts = [f"tags.kind = {_quote(kind, 'kind')}"]
    if parent_run_id:
        parts.append(f"tags.`mlflow.parentRunId` = {_quote(parent_run_id, 'parent run id')}")
    for key, value in (tags or {}).items():
        parts.append(f"tags.`{key}` = {_quote(value, f'tag {key}')}")
    return " and ".join(parts)


def latest_sweep(client: MlflowClient, ids: Sequence[str]) -> str:
    """The run id of the most recently started sweep parent (tag ``kind=sweep``)."""
    page = client.search_runs(
        list(ids), "tags.kind = 'sweep'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not page:
        raise ValueError("no sweep parent run (tag kind=sweep) in the selected experiments")
    return str(page[0].info.run_id)


# ----------------------------------------------------------------------------- runs table


def _wall_s(run: Run) -> float:
    start, end = run.info.start_time, run.info.end_time
    return (end - start) / 1000.0 if start and end else math.nan


def run_row(run: Run) -> dict[str, Any]:
    """One training run as a flat row: identity, experiment, market, seed, status, wall time."""
    tags, params = run.data.tags, run.data.params
    best = tags.get("best_episode")
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "experiment": tags.get(GROUP_TAG, "default"),
        "data_fingerprint": tags.get("data_fingerprint", "unknown"),
        "market_key": market_key(tags, params),
        **{k: params.get(p, "None") for k, p in MARKET_PARAMS.items()},
        "seed": params.get("seed"),
        "status": run.info.status,
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "best_episode": int(best) if best not in (None, "", "-1") else None,
        "flags": tags.get("flags", ""),
        "data": data_name(params),
        # the training run's verdict (tags set at its end): an edge, or which conditions failed
        "edge_found": tags.get("edge_found") == "True",
        "edge": verdict(tags),
        "val_buy_and_hold_pct": _float(tags.get("val_buy_and_hold_pct")),
        "wall_s": _wall_s(run),
        "task": run_task(run),
    }
    if row["task"] == QUOTE:
        row.update({col: _float(tags.get(tag)) for col, tag in QUOTE_BASELINE_TAGS.items()})
    return row


def market_key(tags: Mapping[str, str], params: Mapping[str, str]) -> str:
    """What makes two runs' market the same: the data fingerprint, except on the synthetic tick
    market (``data=ticks_synthetic``), whose tapes are drawn from each run's seed (so its
    fingerprint differs per seed): there it is a hash of the generator's and the quoting rules'
    params, so a sweep's seeds form one group as on every other market."""
    if params.get("data.source") != "ticks_synthetic":
        return tags.get("data_fingerprint", "unknown")
    keys = sorted(k for k in params if k.startswith(("data.ticks_synthetic.", "quote.")))
    doc = json.dumps({k: params[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def run_task(run: Run) -> str:
    """``trade`` or ``quote``: the run's ``task`` tag, else its ``task`` param (a run logged
    before the quoting task existed has neither and is a trading run)."""
    return str(run.data.tags.get(TASK_PARAM) or run.data.params.get(TASK_PARAM) or TRADE)


def tasks_of(runs: pd.DataFrame) -> list[str]:
    """The tasks a selection holds, trade first."""
    found = set(runs["task"]) if "task" in runs else {TRADE}
    return [t for t in (TRADE, QUOTE) if t in found]


def task_columns(task: str) -> tuple[str, ...]:
    """The summary columns of a task's runs."""
    return QUOTE_SUMMARY_COLUMNS if task == QUOTE else SUMMARY_COLUMNS


def curve_keys(task: str) -> tuple[str, ...]:
    """The learning curves of a task's runs (the validation score each is selected on)."""
    return QUOTE_CURVE_KEYS if task == QUOTE else CURVE_KEYS


def one_task(runs: pd.DataFrame) -> str:
    """The selection's task; a selection mixing trading and quoting runs is refused, naming
    both: their figures are different quantities (a Sharpe ratio and a return against an
    objective in price x lots), so one table or one mean over both would mean nothing."""
    tasks = tasks_of(runs)
    if len(tasks) > 1:
        counts = runs["task"].value_counts()
        names = {t: ", ".join(sorted(map(str, runs.loc[runs["task"] == t, "name"]))) for t in tasks}
        raise ValueError(
            f"the selection mixes {counts[TRADE]} trading runs ({names[TRADE]}) and "
            f"{counts[QUOTE]} quoting runs ({names[QUOTE]}), whose figures are different "
            "quantities; compare one task at a time: --task trade or --task quote"
        )
    return tasks[0]


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def data_name(params: Mapping[str, str]) -> str:
    """A market by a name a person reads: the file's stem (and date bounds) or the synthetic
    market's seed; the fingerprint goes beside it (:func:`market_label`)."""
    source = params.get("data.source", "?")
    if source == "synthetic":
        return f"synthetic seed {params.get('data.market_seed', '?')}"
    if source == "avellaneda":  # the quoting task's simulated market
        a = {k: params.get(f"data.avellaneda.{k}", "?") for k in ("sigma", "A", "k")}
        return f"avellaneda sigma={a['sigma']} A={a['A']} k={a['k']}"
    if source == "ticks_synthetic":  # its tapes are drawn from the run's seed
        return "ticks_synthetic (tapes drawn from each seed)"
    path = params.get("data.path") or "?"
    start, end = (params.get(k, "None") for k in ("data.start", "data.end"))
    if (start, end) == ("None", "None"):
        return Path(path).stem
    return f"{Path(path).stem} {start if start != 'None' else ''}..{end if end != 'None' else ''}"


def verdict(tags: Mapping[str, str]) -> str:
    """``edge found``, ``no edge (buy_and_hold 4/4, ...)`` or ``unknown`` (no tag: the run
    did not finish): the training run's own answer, shown beside its figures."""
    found = tags.get("edge_found")
    if found is None:
        return "unknown (run did not finish)"
    if found == "True":
        return "edge found"
    misses = tags.get("edge_misses", "none")
    return "no edge" + (f" (failed: {misses})" if misses not in ("", "none") else "")


def market_label(frame: pd.DataFrame) -> pd.Series:
    """Each run's market: its readable name, ``[fingerprint[:8]]``, bar and cost settings (a
    quoting run's: ``quote``; its fingerprint covers the market and the bars and costs of
    ``env.*`` do not apply)."""
    key = frame["market_key"] if "market_key" in frame else frame["data_fingerprint"]
    head = frame["data"].astype(str) + " [" + key.astype(str).str[:8] + "]"
    trading = (
        head
        + " bars="
        + frame["bars"].astype(str)
        + " costs="
        + frame["commission"].astype(str)
        + "+"
        + frame["slippage_bps"].astype(str)
        + "bps"
    )
    if "task" not in frame:
        return trading
    return trading.where(frame["task"] != QUOTE, head + " quote")


def name_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """``market`` and ``group`` columns: the group is the experiment, on one market.

    The market is spelled out in the group's name only when the selection holds several,
    so one sweep on one market keeps plain experiment names.
    """
    out = frame.copy()
    out["market"] = market_label(out)
    several = out["market"].nunique() > 1
    out["group"] = out["experiment"] + (" @ " + out["market"] if several else "")
    return out


def mixed_params(runs: pd.DataFrame, params: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Per group, the run params (besides seeds and bookkeeping) that differ between its runs."""
    out: dict[str, str] = {}
    for group, part in runs.groupby("group", sort=True):
        keys = sorted({k for rid in part.index for k in params[rid]})
        differ = []
        for key in keys:
            if key in FREE_PARAMS or key.startswith(FREE_PREFIXES):
                continue
            values = sorted({params[rid].get(key, "<unset>") for rid in part.index})
            if len(values) > 1:
                differ.append(f"{key} ({', '.join(values)})")
        if differ:
            out[str(group)] = "; ".join(differ)
    return out


def selected_validation(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """The validation figures of the evaluation that selected each run's ``best.pt``.

    That is the value logged at step ``best_episode``; a run without a best checkpoint
    gets NaN. Metrics undefined without variance (skew, kurtosis, PSR) are NaN for runs
    whose selected returns have none.
    """
    task = runs["task"] if "task" in runs else pd.Series(TRADE, index=runs.index)
    out = pd.DataFrame(index=runs.index)
    for name, metrics in ((TRADE, TRAIN_METRICS), (QUOTE, QUOTE_TRAIN_METRICS)):
        part = runs[task == name]
        if part.empty:  # no columns of a task the selection lacks (they would be all NaN)
            continue
        out = out.join(_at_best_episode(client, part, metrics), how="left")
        if name == TRADE:
            flat = part.index[~(out.loc[part.index, "val_volatility_ann_pct"] > 0)]
            out.loc[flat, list(UNDEFINED_WITHOUT_VARIANCE)] = math.nan
    return out


def _at_best_episode(
    client: MlflowClient, runs: pd.DataFrame, metrics: Mapping[str, str]
) -> pd.DataFrame:
    """``metrics`` (column -> key) at each run's ``best_episode`` step (NaN without one)."""
    history = metric_histories(client, runs.index, list(metrics.values()))
    best = runs["best_episode"].reindex(history["run_id"]).to_numpy()
    picked = history[history["step"].to_numpy() == best]
    wide = picked.pivot_table(index="run_id", columns="key", values="value", aggfunc="last")
    out = pd.DataFrame(index=runs.index)
    for col, key in metrics.items():
        out[col] = wide[key].reindex(runs.index) if key in wide else math.nan
    return out


def metric_histories(
    client: MlflowClient, run_ids: Iterable[str], keys: Sequence[str]
) -> pd.DataFrame:
    """Long frame (run_id, key, step, value) of each run's metric histories."""
    rows = [
        (rid, key, m.step, m.value)
        for rid in run_ids
        for key in keys
        for m in client.get_metric_history(rid, key)
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def backtest_metrics_by_run(
    client: MlflowClient,
    ids: Sequence[str],
    train_ids: Iterable[str],
    metrics: Mapping[str, str] = TEST_METRICS,
) -> pd.DataFrame:
    """Test-split backtest metrics per training run id (the newest backtest of each).

    Searched in ``ids`` whatever experiments the training runs were selected from: a
    backtest is linked by its ``train_run_id`` tag, not by where it was logged. ``metrics``
    (column -> key): :data:`TEST_METRICS`, or :data:`QUOTE_TEST_METRICS` for quoting runs.
    """
    wanted = set(train_ids)
    runs = search_all(client, ids, "tags.kind = 'backtest' and tags.split = 'test'")
    rows = [
        {"run_id": r.data.tags["train_run_id"], "start": r.info.start_time}
        | {col: r.data.metrics.get(key, math.nan) for col, key in metrics.items()}
        for r in runs
        if r.data.tags.get("train_run_id") in wanted and r.info.status == "FINISHED"
    ]
    if not rows:
        return pd.DataFrame(columns=["run_id", *metrics]).set_index("run_id")
    frame = pd.DataFrame(rows).sort_values("start").drop_duplicates("run_id", keep="last")
    return frame.drop(columns="start").set_index("run_id")


def load_runs(
    client: MlflowClient,
    ids: Sequence[str],
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    statuses: Sequence[str] = ("FINISHED",),
    task: str | None = None,
) -> pd.DataFrame:
    """Training runs of the selection, one row each (index run_id), with test metrics joined.

    Runs in other states (FAILED, KILLED, still RUNNING) are left out by default: a crashed
    run's last validation is not a result. ``steps_per_s`` is the median over episodes,
    robust to the first episode's warm-up. ``task`` (``trade`` / ``quote``) keeps that
    task's runs only; a ``task`` column says each run's, and each task's runs carry their own
    figures (trading: Sharpe, return; quoting: objective, fills, inventory, baselines).
    """
    query = run_filter("train", parent_run_id, tags)
    runs = [r for r in search_all(client, ids, query) if r.info.status in statuses]
    if task is not None:
        runs = [r for r in runs if run_task(r) == task]
    if not runs:
        which = f" of task={task}" if task is not None else ""
        raise ValueError(
            f"no training runs{which} with status in {list(statuses)} match {query!r} "
            f"in experiment ids {list(ids)}"
        )
    frame = name_groups(pd.DataFrame([run_row(r) for r in runs]).set_index("run_id"))
    mixes = mixed_params(frame, {r.info.run_id: dict(r.data.params) for r in runs})
    frame["mixes"] = [mixes.get(g, "") for g in frame["group"]]  # "" where a group is uniform
    frame = frame.join(selected_validation(client, frame))
    steps = metric_histories(client, frame.index, [STEPS_KEY])
    frame["steps_per_s"] = steps.groupby("run_id")["value"].median().reindex(frame.index)
    every = experiment_ids(client)
    for name, metrics in ((TRADE, TEST_METRICS), (QUOTE, QUOTE_TEST_METRICS)):
        part = frame.index[frame["task"] == name]
        if len(part):
            frame = frame.join(backtest_metrics_by_run(client, every, part, metrics))
    return frame.sort_values(["group", "seed"])


# ----------------------------------------------------------------------------- statistics


def ci95_halfwidth(values: Sequence[float] | np.ndarray) -> float:
    """Half width of the 95% Student-t interval of the mean: t(0.975, n-1) * std / sqrt(n).

    Student-t, not 1.96: with 3 seeds the normal interval is 2.2x too narrow. NaN for
    fewer than two finite values (no spread to estimate).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan
    t = float(scipy_stats.t.ppf(0.975, v.size - 1))
    return t * float(np.std(v, ddof=1)) / math.sqrt(v.size)


def aggregate(
    runs: pd.DataFrame, columns: Sequence[str] = SUMMARY_COLUMNS, by: str = "group"
) -> pd.DataFrame:
    """Per group: ``n`` runs and, per column, ``_mean``, ``_std`` (ddof=1) and ``_ci95``."""
    out: dict[str, dict[str, float]] = {}
    for group, part in runs.groupby(by, sort=True):
        row: dict[str, float] = {"n": float(len(part))}
        for col in columns:
            v = part[col].to_numpy(dtype=np.float64) if col in part else np.array([])
            finite = v[np.isfinite(v)]
            row[f"{col}_mean"] = float(finite.mean()) if finite.size else math.nan
            row[f"{col}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
            row[f"{col}_ci95"] = ci95_halfwidth(finite)
        out[str(group)] = row
    summary = pd.DataFrame.from_dict(out, orient="index")
    summary.index.name = by
    summary["n"] = summary["n"].astype(int)
    return summary


def paired_differences(runs: pd.DataFrame, column: str = "val_sharpe") -> pd.DataFrame:
    """For each pair of groups (a, b): mean over shared seeds of ``b - a`` and its 95% t CI.

    Why paired: runs with the same seed start from the same weights and episode draws,
    so the difference cancels much of the seed-to-seed spread that an unpaired
    comparison of two means has to carry. Pairs without two shared seeds get NaN. Groups
    on different markets (a ``market`` column) are never paired: their seeds saw other data.
    """
    rows = []
    groups = sorted(runs["group"].unique())
    market = runs.groupby("group")["market"].first() if "market" in runs else None
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            if market is not None and market[a] != market[b]:
                continue
            pa = runs[runs["group"] == a].groupby("seed")[column].mean()
            pb = runs[runs["group"] == b].groupby("seed")[column].mean()
            diff = (pb - pa).dropna().to_numpy(dtype=np.float64)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "metric": column,
                    "n_pairs": int(diff.size),
                    "diff_mean": float(diff.mean()) if diff.size else math.nan,
                    "diff_ci95": ci95_halfwidth(diff),
                }
            )
    return pd.DataFrame(rows, columns=["a", "b", "metric", "n_pairs", "diff_mean", "diff_ci95"])


def format_summary(summary: pd.DataFrame, columns: Sequence[str] = SUMMARY_COLUMNS) -> str:
    """Text table: ``mean ± ci95 (sd std)`` per column; columns without data are dropped."""
    cells: dict[str, list[str]] = {"n": [str(n) for n in summary["n"]]}
    for col in columns:
        if f"{col}_mean" not in summary or summary[f"{col}_mean"].isna().all():
            continue
        cells[col] = [
            _cell(m, c, s)
            for m, c, s in zip(
                summary[f"{col}_mean"], summary[f"{col}_ci95"], summary[f"{col}_std"], strict=True
            )
        ]
    return pd.DataFrame(cells, index=summary.index).to_string()


def _cell(mean: float, ci: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(ci):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {ci:.3g} (sd {std:.3g})"


def best_runs(runs: pd.DataFrame, n_trials: int | None = None) -> dict[str, dict[str, Any]]:
    """Per market: the best run among those that found an edge, with its Deflated Sharpe
    Ratio, or ``{"error": why there is none}``.

    Why per market and among edges only: a "best run" across markets compares Sharpe ratios
    of different data, and a best run that found no edge (its own advice: stay flat) read as
    a recommendation. All of a market's runs still count as the trials behind the best.
    """
    out: dict[str, dict[str, Any]] = {}
    for market, part in runs.groupby("market", sort=True):
        edges = part["edge_found"].fillna(False).astype(bool)
        if not edges.any():
            out[str(market)] = {
                "error": f"no best run: none of its {len(part)} runs found an edge on "
                "validation, and each one's advice is to stay flat"
            }
            continue
        try:
            out[str(market)] = best_run_dsr(part, n_trials, candidates=edges)
        except ValueError as exc:
            out[str(market)] = {"error": str(exc)}
    return out


def best_run_dsr(
    runs: pd.DataFrame, n_trials: int | None = None, candidates: pd.Series | None = None
) -> dict[str, Any]:
    """The best run by final validation Sharpe (among ``candidates`` when given: a boolean
    mask, e.g. the runs that found an edge) and its Deflated Sharpe Ratio.

    DSR works in per-bar units: SR_bar = annual Sharpe / sqrt(periods per year). The trials
    are the sweep's runs (``n_trials`` overrides, e.g. to count runs tried elsewhere);
    ``var_trials`` is the variance of their per-bar Sharpe; skew and kurtosis are the best
    run's validation returns'. Read DSR as the probability that the best run's true Sharpe
    beats what the best of ``n_trials`` luck-only runs would show.
    """
    cols = ["val_sharpe", "val_periods_per_year", "val_bars", "val_skew", "val_kurtosis"]
    ok = runs.dropna(subset=cols)
    ok = ok[ok["val_periods_per_year"] > 0]
    left_out = sorted(str(runs.loc[i, "name"]) for i in runs.index.difference(ok.index))
    if ok.empty:
        raise ValueError(
            "no run has the validation metrics DSR needs (" + ", ".join(cols) + "); left out "
            "(no variance in their selected validation returns, or no best checkpoint): "
            + ", ".join(left_out)
        )
    sr_bar = ok["val_sharpe"] / np.sqrt(ok["val_periods_per_year"])
    trials = int(n_trials if n_trials is not None else len(ok))
    if trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {trials}")
    var = float(np.var(sr_bar.to_numpy(), ddof=1)) if len(ok) > 1 else 0.0
    eligible = sr_bar if candidates is None else sr_bar[candidates.reindex(ok.index).fillna(False)]
    if eligible.empty:
        raise ValueError(
            "no best run: the runs that found an edge lack the validation metrics DSR needs"
        )
    best_id = str(eligible.idxmax())
    best = ok.loc[best_id].to_dict()
    ppy = float(best["val_periods_per_year"])
    dsr = deflated_sharpe_ratio(
        float(sr_bar[best_id]), trials, var, int(best["val_bars"]),
        float(best["val_skew"]), float(best["val_kurtosis"]),
    )  # fmt: skip
    return {
        "run_id": best_id,
        "name": best["name"],
        "group": best["group"],
        "val_sharpe": float(best["val_sharpe"]),
        "n_trials": trials,
        "var_trials_per_bar": var,
        "expected_max_sharpe": expected_max_sharpe(trials, var) * math.sqrt(ppy),
        "dsr": dsr,
        "left_out": left_out,
    }


# ----------------------------------------------------------------------------- plots


def panels(n: int) -> tuple[Figure, list[Axes]]:
    """A row of ``n`` panels on a bare Agg figure: no pyplot state, no GUI backend, so
    importing this module never changes a notebook's backend (the notebook shows the PNGs)."""
    return agg_figure(1, n, 5.5, 3.8)


def curve_band(values: pd.DataFrame) -> pd.DataFrame:
    """Per step (rows) over runs (columns): mean and the 95% t band (NaN band for one run)."""
    mean = values.mean(axis=1)
    half = values.apply(lambda row: ci95_halfwidth(row.to_numpy()), axis=1)
    return pd.DataFrame({"mean": mean, "low": mean - half, "high": mean + half})


def plot_learning_curves(
    runs: pd.DataFrame, histories: pd.DataFrame, path: Path, keys: Sequence[str] = CURVE_KEYS
) -> Path:
    """One panel per metric: each group's mean over seeds with its 95% band, by episode."""
    fig, axes = panels(len(keys))
    groups = runs["group"]
    for ax, key in zip(axes, keys, strict=True):
        part = histories[histories["key"] == key]
        for group in sorted(groups.unique()):
            ids = groups.index[groups == group]
            wide = part[part["run_id"].isin(ids)].pivot_table(
                index="step", columns="run_id", values="value"
            )
            if wide.empty:
                continue
            band = curve_band(wide)
            line = ax.plot(band.index, band["mean"], label=f"{group} (n={len(ids)})")[0]
            ax.fill_between(
                band.index, band["low"], band["high"], alpha=0.2, color=line.get_color()
            )
        ax.set_title(f"{key}: mean over seeds, 95% band")
        ax.set_xlabel("episode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return write_png(path, fig)


TRADE_BARS = (("sharpe", "Sharpe (ann.)"), ("return_pct", "Return [%]"))
QUOTE_BARS = (("objective", "Objective [price x lots]"), ("best_fixed", "Best fixed quote"))


def plot_group_bars(
    summary: pd.DataFrame,
    path: Path,
    has_test: bool,
    metrics: Sequence[tuple[str, str]] = TRADE_BARS,
) -> Path:
    """Bars per experiment with 95% error bars: Sharpe and return (a quoting selection: the
    objective and the best fixed quote's on the same paths), validation (and test)."""
    splits = ["val", "test"] if has_test else ["val"]
    fig, axes = panels(len(metrics))
    x = np.arange(len(summary))
    width = 0.8 / len(splits)
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for i, split in enumerate(splits):
            col = f"{split}_{metric}"
            err = summary[f"{col}_ci95"].fillna(0.0)
            ax.bar(x + i * width, summary[f"{col}_mean"], width, yerr=err, capsize=4, label=split)
        ax.set_xticks(x + width * (len(splits) - 1) / 2, [str(g) for g in summary.index])
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{label}: mean over seeds, 95% CI")
        ax.legend(fontsize=8)
    return write_png(path, fig)


# ----------------------------------------------------------------------------- the report


def compare(
    uri: str,
    out_dir: str | os.PathLike[str],
    *,
    experiments: Sequence[str] = (),
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    latest: bool = False,
    n_trials: int | None = None,
    task: str | None = None,
) -> Comparison:
    """Load, aggregate, plot and write ``runs.csv``, ``summary.csv`` and two PNGs.

    Selection: the training runs of ``experiments`` (MLflow experiment names; all when
    empty), optionally children of ``parent_run_id`` (or of the newest sweep when
    ``latest``), optionally with every tag of ``tags``, optionally of one ``task``. A
    selection holding trading and quoting runs is refused (:func:`one_task`) unless ``task``
    picks one: quoting runs are compared on their objective, fills and inventory beside no
    quote, the best fixed quote and the closed form (and the optimum where one is known).
    """
    client = open_store(uri)
    ids = experiment_ids(client, experiments)
    if latest and parent_run_id is None:
        parent_run_id = latest_sweep(client, ids)
    runs = load_runs(client, ids, parent_run_id=parent_run_id, tags=tags, task=task)
    kind = one_task(runs)
    score = "objective" if kind == QUOTE else "sharpe"
    has_test = bool(runs[f"test_{score}"].notna().any())
    summary = aggregate(runs, task_columns(kind))
    keys = curve_keys(kind)
    histories = metric_histories(client, runs.index, keys)
    columns = [f"val_{score}", f"test_{score}"] if has_test else [f"val_{score}"]
    differences = pd.concat([paired_differences(runs, c) for c in columns], ignore_index=True)
    out = Path(out_dir)
    bars = QUOTE_BARS if kind == QUOTE else TRADE_BARS
    files = {
        "runs": write_csv(out / "runs.csv", runs),
        "summary": write_csv(out / "summary.csv", summary),
        "learning_curves": plot_learning_curves(runs, histories, out / "learning_curves.png", keys),
        "bars": plot_group_bars(summary, out / "groups.png", has_test, bars),
    }
    dsr = best_quote_runs(runs) if kind == QUOTE else best_runs(runs, n_trials)
    return Comparison(runs, summary, histories, differences, dsr, has_test, files, kind)


def best_quote_runs(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per market: the quoting run with the best validation objective among those that found
    an edge (beat no quote and the best fixed quote on validation), or why there is none.

    No Deflated Sharpe here: the objective is not a Sharpe ratio, and a quoting run is selected
    on it, exact over the fills (Avellaneda-Stoikov) or the tape's one path.
    """
    out: dict[str, dict[str, Any]] = {}
    for market, part in runs.groupby("market", sort=True):
        edges = part[part["edge_found"].fillna(False).astype(bool)].dropna(subset=["val_objective"])
        if edges.empty:
            out[str(market)] = {
                "error": f"no best run: none of its {len(part)} runs beat no quote and the "
                "best fixed quote on validation"
            }
            continue
        best_id = str(edges["val_objective"].idxmax())
        row = edges.loc[best_id].to_dict()
        out[str(market)] = {
            "run_id": best_id,
            "name": row["name"],
            "group": row["group"],
            "val_objective": float(row["val_objective"]),
            "n_trials": len(part),
        }
    return out


def difference_line(r: Mapping[Any, Any]) -> str:
    """A paired difference, or why there is none (it printed ``+nan ± nan, 0 seed pairs``)."""
    head = f"{r['b']} - {r['a']} {r['metric']}"
    if int(r["n_pairs"]) < 2:
        return f"{head}: no paired difference ({r['n_pairs']} shared seeds with figures; 2 needed)"
    return (
        f"{head}: {r['diff_mean']:+.3g} ± {r['diff_ci95']:.3g} (95% CI, {r['n_pairs']} seed pairs)"
    )


def best_lines(market: str, d: Mapping[str, Any]) -> list[str]:
    """The report's lines on one market's best run (or why it has none)."""
    if "error" in d:
        return [f"{market}: {d['error']}"]
    if "val_objective" in d:  # a quoting selection (best_quote_runs)
        return [
            f"{market}: best run among those that found an edge, by val objective: "
            f"{d['name']} ({d['group']}, {d['run_id']}) val objective {d['val_objective']:.4g} "
            f"price x lots, best of {d['n_trials']} runs (no Deflated Sharpe: not a Sharpe)"
        ]
    lines = [
        f"{market}: best run among those that found an edge, by val Sharpe: {d['name']} "
        f"({d['group']}, {d['run_id']}) val Sharpe {d['val_sharpe']:.3g}; expected max Sharpe "
        f"of {d['n_trials']} luck-only trials {d['expected_max_sharpe']:.3g}; Deflated Sharpe "
        f"Ratio {d['dsr']:.3f}"
    ]
    if d["left_out"]:
        lines.append(
            "  left out of the DSR (no variance in their selected validation returns: skew, "
            "kurtosis and PSR undefined): " + ", ".join(d["left_out"])
        )
    return lines


def run_lines(runs: pd.DataFrame, task: str) -> list[str]:
    """Per run, its verdict beside the baselines of its task: buy & hold for trading; no
    quote, the best fixed quote and the closed form (and the optimum's share) for quoting."""
    if task != QUOTE:
        return [
            "per run: the training run's verdict; validation return vs buy & hold on the same bars",
            *(f"  {r.name} ({r.group}): {r.edge}; val return {r.val_return_pct:+.2f}% vs buy & "
              f"hold {r.val_buy_and_hold_pct:+.2f}%"
              + (f"; flags: {r.flags}" if r.flags not in ("", "none") else "")
              for r in runs.itertuples()),
        ]  # fmt: skip
    lines = ["per run: the verdict; validation objective vs the baselines on the same paths"]
    for r in runs.itertuples():
        share = float(r.val_of_optimum_pct)  # type: ignore[arg-type]
        optimum = f" ({share:.1f}% of the optimum)" if math.isfinite(share) else ""
        lines.append(
            f"  {r.name} ({r.group}): {r.edge}; val objective {r.val_objective:+.4g}{optimum} vs "
            f"no quote {r.val_no_quote:+.4g}, best fixed {r.val_best_fixed:+.4g}, closed form "
            f"{r.val_closed_form:+.4g}"
            + (f"; flags: {r.flags}" if r.flags not in ("", "none") else "")
        )
    return lines


def report(result: Comparison) -> str:
    """The printed report: the table, what each group holds, test source, the DSR, files."""
    d, runs = result.dsr, result.runs
    markets = sorted(runs["market"].unique())
    lines = [
        "mean ± 95% CI half-width (sd std) over seeds; val = the validation that selected "
        "best.pt (tag best_episode)",
        *(["quoting runs (task=quote): objective, PnL in price x lots per episode; "
           "no market impact assumed"] if result.task == QUOTE else []),
        format_summary(result.summary, task_columns(result.task)),
        "",
        f"market: {markets[0]}" if len(markets) == 1 else
        f"{len(markets)} markets (never pooled; the group name carries the market): "
        + "; ".join(markets),
        *(f"WARNING: group {g} mixes {what}" for g, what in
          runs.groupby("group")["mixes"].first().items() if what),
        *run_lines(runs, result.task),
        "test: from kind=backtest split=test runs linked by train_run_id"
        if result.has_test
        else "test: no linked test backtests found (run `python -m hmarl.backtest run_id=<id>`); "
        "validation only",
        *(difference_line(r) for r in result.differences.to_dict("records")),
    ]  # fmt: skip
    for market, best in d.items():
        lines += best_lines(market, best)
    lines.append("files: " + ", ".join(str(p) for p in result.files.values()))
    return "\n".join(lines)
