"""Real ticks -> a quoting tape sampled every ``dt`` (:class:`hmarl.data.ticks_synthetic.Tape`).

Why its own module: bars (:mod:`hmarl.sources.ticks`) summarise a bar for the trading task;
the quoting task's fill rule (:func:`hmarl.market.quoting.tape_fills`) needs, per step, the book
when the step starts and the trades printed in it, level by level. The grid and the clock are
those of the bars (:func:`hmarl.sources.ticks.bar_edges`: receive time, half-open steps
``[open, close)`` on an epoch-aligned grid, only steps the capture covers).

What a top-of-book capture gives, and what stands in for what it lacks:

* **best bid and ask** of a step: the last quote at or before the step's open, in ticks of
  ``tick`` (rounded);
* **queue ahead at the best**: the displayed size there, in lots of ``lot`` base units;
* **queues behind the best** are not in a top-of-book capture (its depth diffs come without a
  snapshot, so they cannot be rebuilt): the top's size stands in for every level behind it,
  a documented guess that makes deeper quotes neither free to fill nor impossible;
* **trades**: each print of the step at its level against the step's starting book, in lots
  (fractions kept): aggressive sells (Binance ``m`` true: the buyer was the maker) at ``bid -
  j`` ticks, aggressive buys at ``ask + j``. A sell printing above the starting bid (the book
  moved up within the step) reaches no quote behind it and is dropped, likewise a buy below
  the starting ask; a print deeper than the kept ``depth`` counts at the deepest level.

The capture is refused with the row named (:func:`hmarl.data.ticks_synthetic.check_top_of_book`)
for crossed quotes, negative sizes, times out of order or a quote gap over ``max_gap_ns``.
The market does not react to our quotes (no market impact).
"""

from __future__ import annotations

import numpy as np

from hmarl.data.ticks_synthetic import Tape, check_top_of_book
from hmarl.sources.ticks import Ticks, bar_edges


def tape_from_ticks(
    ticks: Ticks,
    *,
    dt_ns: int,
    tick: float,
    lot: float,
    depth: int = 8,
    max_gap_ns: int = 5_000_000_000,
    where: str = "ticks",
) -> Tape:
    """The tape of ``ticks`` every ``dt_ns`` (see the module docstring for each column)."""
    q = ticks.quotes
    check_top_of_book(
        q["ts"].to_numpy(),
        q["bid_price"].to_numpy(),
        q["ask_price"].to_numpy(),
        q["bid_qty"].to_numpy(),
        q["ask_qty"].to_numpy(),
        max_gap_ns=max_gap_ns,
        where=where,
    )
    edges = bar_edges(ticks, dt_ns)
    row = np.searchsorted(q["ts"].to_numpy(), edges[:-1], side="right") - 1  # book at the open
    bid = np.rint(q["bid_price"].to_numpy()[row] / tick).astype(np.int64)
    ask = np.rint(q["ask_price"].to_numpy()[row] / tick).astype(np.int64)
    n = len(row)
    bid_queue = np.repeat(q["bid_qty"].to_numpy()[row, None] / lot, depth, axis=1)
    ask_queue = np.repeat(q["ask_qty"].to_numpy()[row, None] / lot, depth, axis=1)

    t = ticks.trades
    step = np.searchsorted(edges, t["ts"].to_numpy(), side="right") - 1
    inside = (step >= 0) & (step < n)
    step = step[inside]
    price = np.rint(t["price"].to_numpy()[inside] / tick).astype(np.int64)
    size = t["qty"].to_numpy()[inside] / lot
    buy = t["is_buy"].to_numpy()[inside]

    def volume(level: np.ndarray, mine: np.ndarray) -> np.ndarray:
        out = np.zeros((n, depth))
        keep = mine & (level >= 0)
        np.add.at(out, (step[keep], np.minimum(level[keep], depth - 1)), size[keep])
        return out

    sells = volume(bid[step] - price, ~buy)
    buys = volume(price - ask[step], buy)
    return Tape(bid, ask, bid_queue, ask_queue, sells, buys, edges[:-1])
