"""The figure of one quoting day on ticks: the book with our quotes and fills, the inventory,
the cumulative PnL and the actions (``hmarl.backtest.tape_days`` writes it as ``day.png``).

Why one figure with four panels over one time axis: a day is read by lining up where the
quotes stood, what filled, what the inventory did and what that cost; four separate files
would need lining up by eye.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmarl.report.plots import MAX_POINTS, agg_figure

ACTION_ORDER = ("none", "ask only", "bid only", "both")


def quote_day_figure(steps: pd.DataFrame, title: str) -> Figure:
    """Four panels from a day's ``steps.csv`` frame (columns of ``tape_days.evaluate_day``):
    best bid and ask with our quotes (lines thinned to about ``MAX_POINTS``) and every fill,
    inventory, cumulative PnL, and the action of each step."""
    fig, (book, inventory, pnl, actions) = agg_figure(4, 1, 11.0, 2.4, share_x=True)
    every = max(1, len(steps) // MAX_POINTS)
    thin = steps.iloc[::every]
    ts = thin["ts"]
    book.plot(ts, thin["best_bid"], color="tab:green", lw=0.8, label="best bid")
    book.plot(ts, thin["best_ask"], color="tab:red", lw=0.8, label="best ask")
    book.plot(ts, thin["bid_quote"], color="tab:green", lw=0.6, ls=":", label="our bid")
    book.plot(ts, thin["ask_quote"], color="tab:red", lw=0.6, ls=":", label="our ask")
    bids, asks = steps[steps["bid_fill"]], steps[steps["ask_fill"]]
    book.scatter(
        bids["ts"], bids["bid_quote"], marker="^", s=14, color="tab:green", label="bid fill"
    )
    book.scatter(asks["ts"], asks["ask_quote"], marker="v", s=14, color="tab:red", label="ask fill")
    book.set_ylabel("price")
    book.legend(loc="upper left", fontsize=7, ncols=3)
    book.set_title(title)
    inventory.step(ts, thin["inventory"], where="post", color="tab:blue", lw=0.9)
    inventory.set_ylabel("inventory [lots]")
    pnl.plot(ts, thin["cum_pnl"], color="black", lw=0.9)
    pnl.set_ylabel("PnL [price x lots]")
    code = pd.Categorical(thin["action"], categories=ACTION_ORDER).codes
    actions.scatter(ts, code, s=2, color="tab:gray")
    actions.set_yticks(np.arange(len(ACTION_ORDER)), ACTION_ORDER)
    actions.set_ylabel("action")
    return fig
