"""Backtest figures, built on :class:`matplotlib.figure.Figure` (Agg rendering, no pyplot).

Why no pyplot: pyplot keeps global state and picks a GUI backend; a backtest running on a
headless server, in a test or inside a notebook must neither open windows nor leak
figures. A bare ``Figure`` is rendered by the Agg canvas when saved as PNG.

Every function takes steps tables (:mod:`hmarl.steps`; equity and drawdown from
:func:`hmarl.steps.curves`) and returns a Figure; the caller saves it (atomically).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hmarl.report.style import (
    BAND_COLOR,
    BAND_MEDIAN_COLOR,
    PROBABILITY_COLORS,
    SPLIT_COLOR,
    log_odds,
    probability_tick_labels,
    probability_tick_positions,
    run_color,
)
from hmarl.steps import ACTION, ACTIONS, BUY, POSITION, PRICE, PROB_COLUMNS, SELL, curves

MAX_POINTS = 4000  # line plots are thinned to about this many points (a year of 5-min bars is 105k)


def agg_figure(
    rows: int, cols: int, panel_width: float, panel_height: float, *, share_x: bool = False
) -> tuple[Figure, list[Axes]]:
    """A ``rows x cols`` grid of panels on a bare Figure with an Agg canvas (see the module
    docstring: no pyplot state, no GUI backend); every report figure starts here."""
    fig = Figure(figsize=(panel_width * cols, panel_height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    if share_x:
        for ax in axes[1:]:
            ax.sharex(axes[0])
    return fig, axes


def _figure(rows: int = 1, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """Panels stacked over one time axis, the width of a report page."""
    return agg_figure(rows, 1, 11.0, height, share_x=True)


def _thin(series: pd.Series) -> pd.Series:
    """Every k-th point so that a line plot stays light; the last point is always kept."""
    step = max(1, len(series) // MAX_POINTS)
    if step == 1:
        return series
    keep = np.zeros(len(series), dtype=bool)
    keep[::step] = True
    keep[-1] = True
    return series[keep]


def equity_figure(
    runs: Mapping[str, pd.DataFrame], title: str, band: pd.DataFrame | None = None
) -> Figure:
    """The strategy (first run, bold) against the baselines and the random-timing band.

    ``band`` (columns ``p05``, ``median``, ``p95``, indexed by time) is drawn underneath as
    a shaded 5-95% band with a dashed median, so no line hides another.
    """
    fig, (ax,) = _figure()
    if band is not None and len(band):
        ax.fill_between(
            band.index,
            band["p05"].to_numpy(),
            band["p95"].to_numpy(),
            color=BAND_COLOR,
            alpha=0.5,
            lw=0,
            label="random timing, 5-95%",
            zorder=1,
        )
        ax.plot(
            band.index,
            band["median"].to_numpy(),
            color=BAND_MEDIAN_COLOR,
            lw=0.9,
            ls="--",
            label="random timing, median",
            zorder=2,
        )
    for i, (name, steps) in enumerate(runs.items()):
        curve = _thin(curves(steps).equity)
        ax.plot(
            curve.index,
            curve.to_numpy(),
            label=name,
            color=run_color(name),
            lw=1.8 if i == 0 else 0.9,
            alpha=1.0 if i == 0 else 0.8,
            zorder=4 if i == 0 else 3,
        )
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax.set_ylabel("equity (x initial, net of fees)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def drawdown_figure(runs: Mapping[str, pd.DataFrame], title: str) -> Figure:
    """Drawdown from the running peak, strategy filled, baselines as lines."""
    fig, (ax,) = _figure()
    for i, (name, steps) in enumerate(runs.items()):
        dd = _thin(curves(steps).drawdown_pct)
        if i == 0:
            ax.fill_between(
                dd.index, dd.to_numpy(), 0.0, color=run_color(name), alpha=0.4, label=name
            )
        else:
            ax.plot(dd.index, dd.to_numpy(), color=run_color(name), lw=0.9, label=name)
    ax.set_ylabel("drawdown [%]")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def positions_figure(steps: pd.DataFrame, title: str) -> Figure:
    """Price with the trades that changed the position marked, and the position below."""
    fig, (ax_price, ax_pos) = _figure(rows=2, height=3.2)
    price = _thin(steps[PRICE])
    ax_price.plot(price.index, price.to_numpy(), color="black", lw=0.8, label="close")
    change = np.diff(steps[POSITION].to_numpy(), prepend=0.0) != 0.0
    for code, marker in ((BUY, "^"), (SELL, "v")):
        color = PROBABILITY_COLORS[code]
        at = change & (steps[ACTION].to_numpy() == code)
        ax_price.scatter(
            steps.index[at],
            steps[PRICE].to_numpy()[at],
            marker=marker,
            color=color,
            s=14,
            label=f"{ACTIONS[code]} ({int(at.sum())} position changes)",
            zorder=3,
        )
    ax_price.set_ylabel("price")
    ax_price.set_title(title)
    ax_price.legend(loc="best", fontsize="small")
    ax_pos.step(
        steps.index, steps[POSITION].to_numpy(), where="post", color=run_color("strategy"), lw=0.8
    )
    ax_pos.axhline(0.0, color="grey", lw=0.6, ls=":")
    ax_pos.set_ylabel("position (held over next bar)")
    return fig


def probabilities_figure(steps: pd.DataFrame, title: str) -> Figure:
    """Action probabilities over time on a log-odds axis labelled in probabilities (0.99 and
    0.999 were one flat line at the top of a linear 0-1 axis), smoothed with a rolling mean
    when the run is long."""
    fig, (ax,) = _figure()
    window = max(1, len(steps) // 500)
    for code, color in enumerate(PROBABILITY_COLORS):  # HOLD, BUY, SELL
        column = PROB_COLUMNS[code]
        if column not in steps.columns:
            continue
        smooth = _thin(steps[column].rolling(window, min_periods=1).mean())
        ax.plot(smooth.index, log_odds(smooth), color=color, lw=0.9, label=ACTIONS[code])
    ticks = probability_tick_positions()
    ax.set_yticks(ticks, probability_tick_labels())
    ax.set_ylim(ticks[0] - 0.5, ticks[-1] + 0.5)
    ax.set_ylabel(
        "probability, log-odds scale" + (f" (rolling mean of {window} bars)" if window > 1 else "")
    )
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def mark_figure(fig: Figure, notes: Sequence[str], marks: Sequence[tuple[str, str]]) -> Figure:
    """Draw a backtest's notes (flags, the in-sample warning) on the figure itself and its
    split boundaries (validation and test starts) on every panel: a PNG shared alone must
    carry what the report's header says."""
    for ax in fig.axes:
        for at, label in marks:
            when: Any = pd.Timestamp(at)  # matplotlib's date axis takes timestamps
            ax.axvline(when, color=SPLIT_COLOR, lw=0.9, ls="-.", zorder=5)
            ax.annotate(
                label, (when, 1.0), xycoords=("data", "axes fraction"), fontsize="x-small",
                rotation=90, va="top", ha="right", color=SPLIT_COLOR,
            )  # fmt: skip
    if notes:
        fig.suptitle("\n".join(notes), fontsize="small", color="#b00020", ha="center")
    return fig
