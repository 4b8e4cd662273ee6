"""A backtest's report: the daily table, the figures, the console summary, the files.

Takes what :mod:`hmarl.backtest.runs` computed (steps tables and stats) and writes it; it
computes no statistic of its own (equity and drawdown come from :func:`hmarl.steps.curves`
and :func:`hmarl.steps.drawdown`, every ratio from :func:`hmarl.stats.metrics.compute_stats`).
Every file is written atomically (:mod:`hmarl.io`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmarl.backtest.runs import STRATEGY
from hmarl.io import write_csv, write_json, write_png
from hmarl.report.plots import (
    drawdown_figure,
    equity_figure,
    mark_figure,
    positions_figure,
    probabilities_figure,
)
from hmarl.report.style import figure_notes, split_marks
from hmarl.stats import supervised
from hmarl.stats.metrics import metric_keys, trades
from hmarl.steps import (
    ACTION,
    ACTIONS,
    EQUITY,
    EQUITY_RANGE,
    FEE,
    POSITION,
    PROB_COLUMNS,
    TURNOVER,
    drawdown,
    equity_points,
)
from hmarl.tracking import ui_command

if TYPE_CHECKING:
    from hmarl.config import TrackingConfig
    from hmarl.stats.random_timing import RandomTiming

Stats = dict[str, Any]


FILL_RULE = (
    "decide at bar t's close; fill at that close plus slippage_bps; commission and slippage "
    "on traded notional; the position is held over bar t+1"
)


def daily_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """Per UTC day of decision bars: PnL, return, drawdown, trades, position, fees, actions.

    Columns: ``bars``; ``equity_start``/``equity_end`` (x initial equity, before the day's
    first fee / after its last bar); ``pnl`` (their difference, x initial equity);
    ``return_pct``; ``drawdown_pct`` (at the day's end, from the running peak since the
    start) and ``max_drawdown_pct`` (deepest point of the day); ``trades`` (trades entered
    that day, as in trades.csv); ``mean_position``; ``exposure_pct``; ``turnover`` (x
    equity); ``fees`` (fees paid, x initial equity); ``hold``/``buy``/``sell`` (action
    counts) and ``p_hold``/``p_buy``/``p_sell`` (mean probabilities, when present).
    """
    equity = np.clip(steps[EQUITY].to_numpy(dtype=np.float64), *EQUITY_RANGE)  # as check_steps
    before = np.concatenate(([1.0], equity[:-1]))
    action = steps[ACTION].to_numpy()
    per_bar = pd.DataFrame(
        {
            "equity_start": before,
            "equity_end": equity,
            "drawdown": drawdown(equity_points(equity))[1:],
            POSITION: steps[POSITION].to_numpy(dtype=np.float64),
            "exposed": steps[POSITION].to_numpy() != 0.0,
            TURNOVER: steps[TURNOVER].to_numpy(dtype=np.float64),
            "fees": steps[FEE].to_numpy(dtype=np.float64) * before,
            **{name.lower(): action == code for code, name in enumerate(ACTIONS)},
        },
        index=pd.DatetimeIndex(steps.index).floor("D"),
    )
    probs = [c for c in PROB_COLUMNS if c in steps.columns]
    for c in probs:
        per_bar[c] = steps[c].to_numpy(dtype=np.float64)
    g = per_bar.groupby(level=0, sort=True)
    out = pd.DataFrame(
        {
            "bars": g.size(),
            "equity_start": g["equity_start"].first(),
            "equity_end": g["equity_end"].last(),
        }
    )
    out["pnl"] = out["equity_end"] - out["equity_start"]
    out["return_pct"] = (out["equity_end"] / out["equity_start"] - 1.0) * 100.0
    out["drawdown_pct"] = g["drawdown"].last() * 100.0
    out["max_drawdown_pct"] = g["drawdown"].min() * 100.0
    entries = pd.DatetimeIndex(trades(steps)["entry"]).floor("D")
    out["trades"] = (
        pd.Series(1, index=entries).groupby(level=0).sum().reindex(out.index, fill_value=0)
    )
    out["mean_position"] = g[POSITION].mean()
    out["exposure_pct"] = g["exposed"].mean() * 100.0
    out[TURNOVER] = g[TURNOVER].sum()
    out["fees"] = g["fees"].sum()
    for c in (name.lower() for name in ACTIONS):
        out[c] = g[c].sum().astype(np.int64)
    for c in probs:
        out[c] = g[c].mean()
    out.index = pd.Index(pd.DatetimeIndex(out.index).strftime("%Y-%m-%d"), name="date")
    return out


def format_table(table: pd.DataFrame) -> str:
    """The stats table for a terminal: 4 significant digits, strings as they are."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    return table.map(cell).to_string()


def report_figures(
    runs: Mapping[str, pd.DataFrame],
    label: str,
    band: pd.DataFrame | None = None,
    doc: Mapping[str, Any] | None = None,
) -> dict[str, Figure]:
    """The four report figures: equity vs baselines and the random-timing band, drawdown,
    positions, probabilities; each carries the report's notes (flags, in sample) and split
    boundaries from ``doc`` (hmarl.report.style)."""
    steps = runs[STRATEGY]
    notes, marks = figure_notes(doc or {}), split_marks(doc or {})
    figures = {
        "equity.png": equity_figure(runs, f"Equity against baselines, {label}", band),
        "drawdown.png": drawdown_figure(
            {k: runs[k] for k in (STRATEGY, "buy_and_hold") if k in runs}, f"Drawdown, {label}"
        ),
        "positions.png": positions_figure(steps, f"Price, trades and position, {label}"),
        "action_probabilities.png": probabilities_figure(steps, f"Action probabilities, {label}"),
    }
    return {name: mark_figure(fig, notes, marks) for name, fig in figures.items()}


def write_report(
    out: Path,
    doc: Mapping[str, Any],
    runs: Mapping[str, pd.DataFrame],
    table: pd.DataFrame,
    costs: pd.DataFrame,
    seeds_frame: pd.DataFrame | None,
    plot_label: str | None,
    null: RandomTiming | None = None,
    html: bool = False,
) -> list[Path]:
    """Every report file, each written atomically; figures unless ``plot_label`` is None,
    ``report.html`` when ``html`` (its table is ``table``, the numbers of stats.json)."""
    steps = runs[STRATEGY]
    files = [
        write_json(out / "stats.json", doc),
        write_csv(out / "stats.csv", table),
        write_csv(out / "daily.csv", daily_frame(steps)),
        write_csv(out / "trades.csv", trades(steps), index=False),
        write_csv(out / "steps.csv", steps),
        write_csv(out / "costs.csv", costs),
    ]
    if seeds_frame is not None:
        files.append(write_csv(out / "stochastic.csv", seeds_frame))
    if null is not None:
        files.append(write_csv(out / "random_timing.csv", null_frame(null), index=False))
    if plot_label is not None:
        figures = report_figures(runs, plot_label, None if null is None else null.band, doc)
        files += [write_png(out / name, fig) for name, fig in figures.items()]
    if html:
        from hmarl.report.html import write_report_html

        band = None if null is None else null.band
        files.append(write_report_html(out / "report.html", runs, table, doc, band))
    return files


def null_frame(null: RandomTiming) -> pd.DataFrame:
    """random_timing.csv: one row per random-timing policy, return and Sharpe after costs."""
    return pd.DataFrame(
        {"return_pct": (null.final_equity - 1.0) * 100.0, "sharpe": null.sharpe},
        index=pd.RangeIndex(null.n, name="policy"),
    ).reset_index()


def backtest_metrics(
    stats: Mapping[str, Stats],
    stochastic: Mapping[str, Mapping[str, float]] | None,
    costs: pd.DataFrame | None,
) -> dict[str, float]:
    """MLflow metrics: strategy keys bare (``sharpe``), baselines as ``buy_and_hold/sharpe``,
    ``stochastic_mean/...``, ``stochastic_std/...`` and the strategy at ``fees_x2/...``."""
    out = metric_keys(stats[STRATEGY])
    for name, s in stats.items():
        if name != STRATEGY:
            out.update(metric_keys(s, prefix=f"{name}/"))
    for part, values in (stochastic or {}).items():
        out.update(metric_keys(values, prefix=f"stochastic_{part}/"))
    if costs is not None:
        for record in costs.reset_index().to_dict("records"):
            row = {str(k): v for k, v in record.items()}
            multiplier = row.pop("fee_multiplier")
            if row.pop("run") == STRATEGY:
                out.update(metric_keys(row, prefix=f"fees_x{multiplier:g}/"))
    return {k: v for k, v in out.items() if math.isfinite(v)}


@dataclass
class BacktestResult:
    out_dir: Path
    stats: dict[str, Stats]  # run name -> compute_stats (strategy first, then baselines)
    table: pd.DataFrame  # metrics.stats_table of stats
    steps: pd.DataFrame  # the strategy's steps frame (steps.csv)
    meta: dict[str, Any]
    files: list[Path]
    run_id: str | None = None  # the backtest's MLflow run
    runs: dict[str, pd.DataFrame] = field(default_factory=dict)  # every run's steps frame


ADVISED_FIGURES = ("Return [%]", "Sharpe Ratio", "Max. Drawdown [%]", "# Trades")


def advised_record(
    stats: Mapping[str, Mapping[str, Any]], edge_found_in_training: bool | None
) -> dict[str, Any] | None:
    """What the training run advised, beside what the network did: flat when it found no edge.

    Why: a run that found no edge keeps its least exposed network and says "stay flat"; its
    backtest still reports the network's trades, which a reader may take for the advice. This
    record puts the advised figures (the ``flat`` baseline's, same bars) next to the network's.
    None when the run found an edge (its advice is the network) or did not record it.
    """
    if edge_found_in_training is not False:
        return None
    return {
        "run": "flat",
        "why": "the training run found no edge on validation, so its summary advised staying flat",
        "advised": {k: stats["flat"][k] for k in ADVISED_FIGURES},
        "network": {k: stats[STRATEGY][k] for k in ADVISED_FIGURES},
    }


def print_summary(result: BacktestResult, doc: Mapping[str, Any], tracking: TrackingConfig) -> str:
    """Print the backtest's console summary and return it (it is kept in ``backtest.log``)."""
    m = result.meta
    lines = [
        f"backtest of {m['checkpoint']} on {m['data']}, split={m['split']} "
        f"({m['first_decision']} .. {m['last_decision']}, {m['bars']} bars)",
        f"costs: commission {m['env']['commission']:g}, slippage {m['env']['slippage_bps']:g} bps; "
        f"{FILL_RULE}; every column is after these costs",
        format_table(result.table),
        f"momentum: lookback {m['momentum']['lookback_bars']} bars "
        f"({m['momentum']['chosen_on']}), {result.stats['momentum']['# Trades']} trades",
    ]
    if supervised.NAME in doc:
        lines += supervised.summary_lines(doc[supervised.NAME])
    null = doc.get("random_timing")
    if null:
        median, p05, p95, pct, p = (
            null[f"Random-Timing {k}"]
            for k in (
                "Median Return [%]",
                "Return p05 [%]",
                "Return p95 [%]",
                "Percentile [%]",
                "p-value",
            )
        )
        lines.append(
            f"random timing ({null['Random-Timing Policies']} policies with the strategy's trades "
            f"at random times): median return {median:+.2f}%, 5-95% [{p05:+.2f}%, {p95:+.2f}%]; "
            f"the strategy's percentile {pct:.1f}%, p-value {p:.3f}"
        )
    lines += [f"WARNING: {note}" for note in doc["flag_notes"]]
    advised = doc.get("advised")
    if advised:
        mine, theirs = advised["advised"], advised["network"]
        lines.append(
            f"advised record: {advised['run']} ({advised['why']}): return "
            f"{mine['Return [%]']:+.2f}%, {mine['# Trades']} trades; the network's column "
            f"({theirs['Return [%]']:+.2f}%, {theirs['# Trades']} trades) is what trading it "
            "against that advice would have done"
        )
    lines.append(f"report: {result.out_dir.resolve()}")
    if m["in_sample"]:
        lines.append("IN-SAMPLE: these bars were used for training or checkpoint selection")
    if result.run_id:
        lines.append(
            f"MLflow run: {result.run_id} (kind=backtest, train_run_id={m['train_run_id']}) in "
            f"{tracking.uri}, experiment '{tracking.experiment}' ({m['tracking']['why']})"
        )
        lines.append(f"open the UI: {ui_command(tracking.uri)}")
    text = "\n".join(lines)
    print(text)
    return text
