"""The figure style shared by the PNG figures (:mod:`hmarl.report.plots`) and ``report.html``
(:mod:`hmarl.report.html`): one palette, the notes every figure carries, split boundaries,
and the log-odds scale of action probabilities.

Why one home: the PNGs drew momentum red and flat green while report.html drew them green
and grey, so the same line changed colour between two views of one backtest; and the PNGs
carried neither the no-edge flag nor the in-sample warning that the report's header shows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

# run name -> colour: the strategy, then the baselines of hmarl.stats.baselines
PALETTE = {
    "strategy": "#1f77b4",
    "buy_and_hold": "#ff7f0e",
    "flat": "#7f7f7f",
    "momentum": "#2ca02c",
}
OTHER_RUN = "#9467bd"  # any run the palette does not name
PROBABILITY_COLORS = ("#7f7f7f", "#2ca02c", "#d62728")  # HOLD, BUY, SELL (action-code order)
BAND_COLOR = "#bbbbbb"  # the random-timing 5-95% band
BAND_MEDIAN_COLOR = "#888888"
SPLIT_COLOR = "#444444"  # train / validation / test boundaries

# action probabilities are drawn as log-odds, labelled in probabilities: a policy at 0.99 vs
# 0.999 is a flat line at the top of a linear 0-1 axis, ten units apart in log-odds
PROBABILITY_TICKS = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
_EPS = 1e-4


def run_color(name: str) -> str:
    return PALETTE.get(name, OTHER_RUN)


def log_odds(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``log(p / (1 - p))``, with p clipped to [1e-4, 1 - 1e-4] so 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q / (1.0 - q))


def probability_tick_positions() -> list[float]:
    return [math.log(p / (1.0 - p)) for p in PROBABILITY_TICKS]


def probability_tick_labels() -> list[str]:
    return [f"{p:g}" for p in PROBABILITY_TICKS]


def figure_notes(doc: Mapping[str, Any]) -> list[str]:
    """What every figure of a backtest must say on itself: the flags' sentences (no edge
    found in training, few trades, ...) and the in-sample warning."""
    meta = doc.get("meta", {})
    notes = [str(n) for n in doc.get("flag_notes", [])]
    if meta.get("in_sample"):
        notes.append(
            f"IN SAMPLE: split={meta.get('split')} overlaps the bars this checkpoint was trained "
            "or selected on; these figures are not out-of-sample evidence"
        )
    return notes


def split_marks(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(timestamp, label)`` of the validation and test starts inside the backtest's bars
    (``meta.split_starts``, recorded when the data is the training data), to draw on
    ``split=all`` figures."""
    meta = doc.get("meta", {})
    first, last = meta.get("first_decision"), meta.get("last_decision")
    starts = meta.get("split_starts") or {}
    return [
        (str(at), f"{name} starts")
        for name, at in starts.items()
        if first is not None and last is not None and first < str(at) <= last
    ]
