"""``report.html``: the backtest as one self-contained, interactive page (Bokeh, JS inlined).

Why Bokeh: linked panels are one shared ``x_range`` (zooming one zooms all), the whole page
is written by :func:`bokeh.embed.file_html` with :data:`bokeh.resources.INLINE`, so it opens
from a file with no server and no network, and BokehJS inlined weighs ~1.5 MB (Plotly's
bundle is ~4.5 MB). It is also what backtesting.py, the reference for single-strategy
backtests, writes its interactive plots with.

Why min/max downsampling: a year of 5-minute bars is ~105k points per line; sent as is, a
dozen lines make a page of tens of MB that pans slowly. Each line keeps, per bucket of
consecutive bars, the bar with its minimum and the bar with its maximum (first and last bars
always kept), so a spike of one bar stays visible at any zoom while a line carries at most
``2 * DISPLAY_BUCKETS`` points. Entries and exits are drawn at their exact bars, never thinned.

Every figure comes from the steps frames and the stats table the backtest already computed
(:func:`hmarl.stats.metrics.compute_stats`, once); nothing here recomputes a statistic.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from hmarl.io import write_text
from hmarl.report.style import (
    BAND_COLOR,
    BAND_MEDIAN_COLOR,
    PALETTE,
    PROBABILITY_COLORS,
    SPLIT_COLOR,
    figure_notes,
    log_odds,
    probability_tick_labels,
    probability_tick_positions,
    run_color,
    split_marks,
)
from hmarl.stats import supervised
from hmarl.steps import (
    ACTIONS,
    POSITION,
    PRICE,
    PROB_COLUMNS,
    Curves,
    curves,
    gate_column,
    gate_names,
)

if TYPE_CHECKING:
    from bokeh.models import Range
    from bokeh.plotting import figure as Figure

DISPLAY_BUCKETS = 4000  # buckets per line: at most 2 x this many points drawn per line
PANELS = ("price", "equity", "drawdown", "position", "probabilities")  # panel names, top down
PANEL_HEIGHT = {"price": 260, "equity": 260, "drawdown": 160, "position": 140, "probabilities": 180}
GATES_PANEL, GATES_HEIGHT = "gates", 150  # specialists only: under the price
WIDTH = 900
STATS_VALUE_WIDTH = 175  # px: "2024-01-21T19:50:00+00:00" whole
COLORS = PALETTE  # one palette with the PNG figures (hmarl.report.style)


def minmax_rows(values: np.ndarray, buckets: int = DISPLAY_BUCKETS) -> np.ndarray:
    """Sorted row numbers to draw ``values`` with: each bucket's minimum and maximum bar.

    The first and last rows are always kept; with ``2 * buckets`` rows or fewer every row is.
    """
    n = int(values.size)
    if n <= 2 * buckets:
        return np.arange(n)
    size = math.ceil(n / buckets)
    padded = np.pad(values.astype(np.float64), (0, size * buckets - n), mode="edge")
    blocks = padded.reshape(buckets, size)
    base = np.arange(buckets) * size
    rows = np.concatenate(([0, n - 1], base + blocks.argmin(axis=1), base + blocks.argmax(axis=1)))
    return np.unique(np.minimum(rows, n - 1))


class Marks(NamedTuple):
    """Where the strategy's position changed: entries (long or short) and exits, by row."""

    long_entries: np.ndarray
    short_entries: np.ndarray
    exits: np.ndarray


def entries_and_exits(position: np.ndarray) -> Marks:
    """Rows whose decision opened a long, opened a short, or closed a position.

    A reversal (long to short) is an exit and an entry on the same bar, as it is two trades
    in :func:`hmarl.stats.metrics.trades`. A position still open at the end has no exit.
    """
    before = np.sign(np.concatenate(([0.0], position[:-1])))
    after = np.sign(position)
    changed = before != after
    return Marks(
        long_entries=np.flatnonzero(changed & (after > 0)),
        short_entries=np.flatnonzero(changed & (after < 0)),
        exits=np.flatnonzero(changed & (before != 0)),
    )


def epoch_ms(index: pd.Index) -> np.ndarray:
    """Bar times as float milliseconds since the epoch (UTC): what a Bokeh datetime axis
    plots, sent as one float array instead of timestamps converted one by one."""
    times = pd.DatetimeIndex(index)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    return times.to_numpy().astype("datetime64[ms]").astype(np.float64)


def format_cell(value: Any) -> str:
    """One stats value as the table shows it: 6 significant digits, integers whole."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "" if value is None or math.isnan(value) else str(value)
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


def _line(fig: Figure, index: pd.Index, values: np.ndarray, **kw: Any) -> None:
    from bokeh.models import ColumnDataSource

    rows = minmax_rows(values)
    source = ColumnDataSource({"time": epoch_ms(index)[rows], "y": values[rows]})
    fig.line("time", "y", source=source, **kw)


def _figure(name: str, x_range: Range | None, ylabel: str, **extra: Any) -> Figure:
    from bokeh.models import DatetimeTickFormatter
    from bokeh.plotting import figure

    kw: dict[str, Any] = (
        {"x_range": x_range} if x_range is not None else {"x_axis_type": "datetime"}
    )
    kw.setdefault("height", PANEL_HEIGHT.get(name))
    kw.update(extra)
    fig = figure(
        name=name,
        width=WIDTH,
        tools="xpan,xwheel_zoom,box_zoom,reset,save,crosshair",
        active_scroll="xwheel_zoom",
        active_drag="xpan",
        y_axis_label=ylabel,
        title=name,
        **kw,
    )
    fig.xaxis.formatter = DatetimeTickFormatter(days="%Y-%m-%d", hours="%m-%d %H:%M")
    return fig


def _price_panel(steps: pd.DataFrame) -> Figure:
    from bokeh.models import ColumnDataSource, HoverTool

    fig = _figure("price", None, "price (close)")
    _line(fig, steps.index, steps[PRICE].to_numpy(np.float64), color="black", line_width=1)
    marks = entries_and_exits(steps[POSITION].to_numpy(np.float64))
    price = steps[PRICE].to_numpy(np.float64)
    for rows, marker, color, label in (
        (marks.long_entries, "triangle", "#2ca02c", "long entry"),
        (marks.short_entries, "inverted_triangle", "#d62728", "short entry"),
        (marks.exits, "x", "black", "exit"),
    ):
        src = ColumnDataSource(
            {
                "time": epoch_ms(steps.index)[rows],
                "y": price[rows],
                "position": steps[POSITION].to_numpy(np.float64)[rows],
            }
        )
        renderer = fig.scatter(
            "time",
            "y",
            source=src,
            marker=marker,
            size=9,
            color=color,
            legend_label=f"{label} ({rows.size})",
        )
        fig.add_tools(
            HoverTool(
                renderers=[renderer],
                tooltips=[
                    ("", label),
                    ("time", "@time{%F %H:%M}"),
                    ("price", "@y{0,0.00}"),
                    ("position after", "@position"),
                ],
                formatters={"@time": "datetime"},
            )
        )
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _equity_panel(runs: Mapping[str, Curves], band: pd.DataFrame | None, x_range: Range) -> Figure:
    from bokeh.models import ColumnDataSource

    fig = _figure("equity", x_range, "equity (x initial, net of costs)")
    if band is not None and len(band):
        src = ColumnDataSource(
            {
                "time": epoch_ms(band.index),
                "lo": band["p05"].to_numpy(),
                "hi": band["p95"].to_numpy(),
            }
        )
        fig.varea(
            "time",
            "lo",
            "hi",
            source=src,
            fill_color=BAND_COLOR,
            fill_alpha=0.4,
            legend_label="random timing 5-95%",
        )
        _line(
            fig,
            band.index,
            band["median"].to_numpy(np.float64),
            color=BAND_MEDIAN_COLOR,
            line_dash="dashed",
            legend_label="random timing median",
        )
    for name, run in runs.items():
        first = name == next(iter(runs))
        _line(
            fig,
            run.equity.index,
            run.equity.to_numpy(),
            color=run_color(name),
            line_width=2.2 if first else 1.2,
            legend_label=name,
        )
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _drawdown_panel(runs: Mapping[str, Curves], x_range: Range) -> Figure:
    fig = _figure("drawdown", x_range, "drawdown [%]")
    for name in [n for n in ("strategy", "buy_and_hold") if n in runs]:
        dd = runs[name].drawdown_pct
        _line(
            fig,
            dd.index,
            dd.to_numpy(),
            color=COLORS[name],
            legend_label=name,
            line_width=1.6 if name == "strategy" else 1.0,
        )
    fig.legend.location = "bottom_left"
    return fig


def _position_panel(steps: pd.DataFrame, x_range: Range) -> Figure:
    from bokeh.models import ColumnDataSource

    fig = _figure("position", x_range, "position (held over next bar)")
    pos = steps[POSITION].to_numpy(np.float64)
    rows = minmax_rows(pos)
    fig.step(
        "time",
        "y",
        source=ColumnDataSource({"time": epoch_ms(steps.index)[rows], "y": pos[rows]}),
        mode="after",
        color=COLORS["strategy"],
    )
    return fig


def _probabilities_panel(steps: pd.DataFrame, x_range: Range) -> Figure:
    """P(action) on a log-odds axis labelled in probabilities, as the PNG figure draws it."""
    from bokeh.models import FixedTicker

    ticks = probability_tick_positions()
    fig = _figure(
        "probabilities", x_range, "P(action), log-odds scale",
        y_range=(ticks[0] - 0.5, ticks[-1] + 0.5),
    )  # fmt: skip
    fig.yaxis.ticker = FixedTicker(ticks=ticks)
    fig.yaxis.major_label_overrides = dict(zip(ticks, probability_tick_labels(), strict=True))
    for column, label, color in zip(PROB_COLUMNS, ACTIONS, PROBABILITY_COLORS, strict=True):
        if column in steps.columns:
            _line(
                fig,
                steps.index,
                log_odds(steps[column].to_numpy(np.float64)),
                color=color,
                legend_label=label,
                line_width=1,
            )
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _gates_panel(steps: pd.DataFrame, x_range: Range) -> Figure | None:
    """Who decides: the specialists' gate weights as a stacked band (they sum to 1), or None
    for a policy without a gate. Rows are thinned evenly to at most ``2 * DISPLAY_BUCKETS``."""
    from bokeh.models import ColumnDataSource
    from bokeh.palettes import Category10_10

    names = gate_names(steps)
    if not names:
        return None
    n = len(steps)
    rows = np.unique(np.linspace(0, n - 1, min(n, 2 * DISPLAY_BUCKETS)).astype(np.int64))
    data: dict[str, Any] = {"time": epoch_ms(steps.index)[rows]}
    data.update({n_: steps[gate_column(n_)].to_numpy(np.float64)[rows] for n_ in names})
    fig = _figure(GATES_PANEL, x_range, "gate weight", height=GATES_HEIGHT, y_range=(0, 1))
    fig.varea_stack(
        stackers=names,
        x="time",
        source=ColumnDataSource(data),
        color=[Category10_10[i % 10] for i in range(len(names))],
        legend_label=names,
        fill_alpha=0.7,
    )
    fig.legend.location = "top_left"
    return fig


def stats_rows(table: pd.DataFrame) -> dict[str, list[str]]:
    """The stats table (rows = statistics, columns = runs) as the page's table columns."""
    out = {"statistic": [str(k) for k in table.index]}
    for name in table.columns:
        out[str(name)] = [format_cell(v) for v in table[name]]
    return out


def _stats_table(table: pd.DataFrame) -> Any:
    from bokeh.models import ColumnDataSource
    from bokeh.models.widgets.tables import DataTable, TableColumn

    data: dict[str, Any] = dict(stats_rows(table))
    # value columns wide enough for a full UTC timestamp (Start, End), the longest cell
    columns = [
        TableColumn(field=k, title=k, width=240 if k == "statistic" else STATS_VALUE_WIDTH)
        for k in data
    ]
    return DataTable(
        name="stats",
        source=ColumnDataSource(data),
        columns=columns,
        width=240 + STATS_VALUE_WIDTH * (len(columns) - 1),
        height=sum(PANEL_HEIGHT.values()),
        index_position=None,
    )


def _header(doc: Mapping[str, Any]) -> str:
    """What was run, on what, at what costs, and the flags: the report's first lines."""
    m = doc.get("meta", {})
    env = m.get("env", {})
    lines = [
        f"<b>{html.escape(str(m.get('checkpoint', '')))}</b> on {html.escape(str(m.get('data')))}",
        f"split={html.escape(str(m.get('split')))}: {m.get('first_decision')} .. "
        f"{m.get('last_decision')} ({m.get('bars')} bars); commission {env.get('commission')}, "
        f"slippage {env.get('slippage_bps')} bps; every curve is after these costs",
    ]
    momentum = m.get("momentum") or {}
    if momentum:
        lines.append(f"trend rule (momentum): lookback {momentum.get('lookback_bars')} bars")
    if supervised.NAME in doc:
        lines += [html.escape(line) for line in supervised.summary_lines(doc[supervised.NAME])]
    # the same notes the PNG figures carry (hmarl.report.style.figure_notes)
    lines += [f"<b>flag</b>: {html.escape(n)}" for n in figure_notes(doc)]
    return "<br>".join(lines)


def report_layout(
    runs: Mapping[str, pd.DataFrame],
    table: pd.DataFrame,
    doc: Mapping[str, Any],
    band: pd.DataFrame | None = None,
) -> Any:
    """The page's Bokeh layout: header, five linked panels, and the stats table beside them.

    ``runs`` maps run names to steps frames, the strategy first; ``table`` is the backtest's
    :func:`hmarl.stats.metrics.stats_table` (what stats.csv holds).
    """
    from bokeh.layouts import column
    from bokeh.models.widgets.markups import Div

    steps = next(iter(runs.values()))
    price = _price_panel(steps)
    x_range = price.x_range
    run_curves = {name: curves(s) for name, s in runs.items()}  # equity and drawdown, once
    gates = _gates_panel(steps, x_range)
    panels: Sequence[Figure] = [
        price,
        *([gates] if gates is not None else []),
        _equity_panel(run_curves, band, x_range),
        _drawdown_panel(run_curves, x_range),
        _position_panel(steps, x_range),
        _probabilities_panel(steps, x_range),
    ]
    for panel in panels:
        _mark_splits(panel, split_marks(doc))
    # the table under the panels, not beside them: beside, its right-hand columns were cut off
    # inside the page's frame
    return column(
        Div(text=_header(doc), name="header", width=WIDTH),
        column(*panels),
        _stats_table(table),
    )


def _mark_splits(fig: Figure, marks: Sequence[tuple[str, str]]) -> None:
    """Validation and test starts as vertical lines (``split=all``), as the PNGs draw them."""
    from bokeh.models.annotations.geometry import Span

    for at, _label in marks:
        when = float(epoch_ms(pd.DatetimeIndex([pd.Timestamp(at)]))[0])
        fig.add_layout(
            Span(location=when, dimension="height", line_color=SPLIT_COLOR, line_dash="dashdot")
        )


def write_report_html(
    path: str | Path,
    runs: Mapping[str, pd.DataFrame],
    table: pd.DataFrame,
    doc: Mapping[str, Any],
    band: pd.DataFrame | None = None,
    title: str = "hmarl backtest",
) -> Path:
    """Write ``report.html`` (self-contained: BokehJS inlined, no network) atomically."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    page = file_html(report_layout(runs, table, doc, band), resources=INLINE, title=title)
    return write_text(path, page)
