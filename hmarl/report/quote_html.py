"""``report.html`` of a quoting backtest: quotes against the mid, fills, inventory, and PnL
beside the baselines, with the statistics table. Self-contained (BokehJS inlined, opens
offline), written atomically.

Why a page of its own beside :mod:`hmarl.report.html`: a market maker's run is many short
episodes on generated paths, indexed by step, not one dated equity curve; the panels that
matter are the quotes around the mid and the inventory they leave. The market does not react
to the quotes (no market impact): the header says so.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmarl.io import write_text

WIDTH, HEIGHT = 1000, 260
COLOURS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#7f7f7f", "#d62728")


def _figure(title: str, ylabel: str, x_range: Any = None) -> Any:
    from bokeh.plotting import figure

    extra = {"x_range": x_range} if x_range is not None else {}
    fig = figure(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        tools="pan,xwheel_zoom,box_zoom,reset,save,hover",
        **extra,
    )
    fig.xaxis.axis_label = "step"
    fig.yaxis.axis_label = ylabel
    return fig


def _quotes_panel(path: pd.DataFrame) -> Any:
    """One episode: the mid, the bid and ask posted, and the quotes that filled."""
    fig = _figure(f"quotes vs mid (episode {int(path['path'].iloc[0])})", "price")
    x = path["step"].to_numpy()
    fig.line(x, path["mid"].to_numpy(), color="black", legend_label="mid")
    for side, colour in (("bid", COLOURS[1]), ("ask", COLOURS[5])):
        fig.scatter(x, path[side].to_numpy(), size=3, color=colour, legend_label=side)
        filled = path[f"{side}_fill"].to_numpy() > 0
        fig.scatter(
            x[filled],
            path[side].to_numpy()[filled],
            size=9,
            marker="triangle" if side == "bid" else "inverted_triangle",
            color=colour,
            legend_label=f"{side} filled",
        )
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _inventory_panel(path: pd.DataFrame, mean_abs: np.ndarray, x_range: Any) -> Any:
    fig = _figure("inventory (lots)", "lots", x_range)
    fig.step(path["step"].to_numpy(), path["inventory"].to_numpy(), legend_label="this episode")
    fig.line(
        np.arange(len(mean_abs)), mean_abs, color=COLOURS[2], legend_label="mean |q| over episodes"
    )
    fig.legend.location = "top_left"
    return fig


def _pnl_panel(curves: Mapping[str, np.ndarray], x_range: Any) -> Any:
    fig = _figure("mean cumulative PnL per episode vs baselines (price x lots)", "PnL", x_range)
    for (name, curve), colour in zip(curves.items(), COLOURS, strict=False):
        fig.line(np.arange(len(curve)), curve, color=colour, legend_label=name, line_width=2)
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _fills_panel(fills: Mapping[str, np.ndarray], x_range: Any) -> Any:
    fig = _figure("mean cumulative fills per episode", "fills", x_range)
    for (name, curve), colour in zip(fills.items(), (COLOURS[1], COLOURS[5]), strict=False):
        fig.line(np.arange(len(curve)), curve, color=colour, legend_label=name, line_width=2)
    fig.legend.location = "top_left"
    return fig


def write_quote_report_html(
    path: str | os.PathLike[str],
    steps: pd.DataFrame,
    curves: Mapping[str, np.ndarray],
    table: pd.DataFrame,
    header: str,
) -> Path:
    """Write the page. ``steps``: the agent's steps frame (steps.csv); ``curves``: each run's
    mean cumulative PnL per step; ``table``: the statistics, rows = keys, columns = runs."""
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models.widgets.markups import Div
    from bokeh.resources import INLINE

    first = steps[steps["path"] == steps["path"].iloc[0]]
    quotes = _quotes_panel(first)
    mean_abs = steps.groupby("step")["inventory"].apply(lambda q: q.abs().mean()).to_numpy()
    fills = {
        side: steps.groupby("step")[f"{side}_fill"].mean().cumsum().to_numpy()
        for side in ("bid", "ask")
    }
    layout = column(
        Div(text=f"<h2>Quoting backtest</h2><p>{html.escape(header)}</p>"),
        quotes,
        _inventory_panel(first, mean_abs, quotes.x_range),
        _pnl_panel(curves, quotes.x_range),
        _fills_panel(fills, quotes.x_range),
        Div(text=table.to_html(float_format=lambda v: f"{v:,.4f}"), width=WIDTH),
    )
    return write_text(path, file_html(layout, resources=INLINE, title="hmarl quoting backtest"))
