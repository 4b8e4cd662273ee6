"""A seeded synthetic tick market for the quoting task, sampled every decision step, and the
checks a top-of-book tape must pass before a quoting run reads it.

The generator's distributions (all per decision step, seeded):

* **best bid** (in ticks): a random walk, up or down one tick with probability ``move_prob / 2``
  each; **spread**: ``1 + j`` ticks with probability ``spread_probs[j]``, drawn afresh each step
  (the ask is the bid plus the spread, so quotes never cross);
* **displayed book**: at each of ``depth`` levels behind each best quote, ``1 + Poisson(queue_mean
  - 1)`` lots;
* **market orders**: per side ``Poisson(rate)`` orders, each of ``1 + Geometric`` lots (mean
  ``size_mean``); an order walks the book from the best level, taking each level's displayed
  size before the next, so its distance through the book follows from its size and the queues.
  The agent's own quotes are not in this book (no market impact): the tape is what the market
  did without us, and :func:`hmarl.market.quoting.tape_fills` says what would have filled;
* **adverse selection** (``informed``, 0 by default): with this probability a step with a net
  market-order flow moves the best bid one tick the flow's way after the step (buyers lift the
  price, sellers sink it), replacing the random walk's move. A quote filled by that flow then
  loses on the mid's next move, as on real books; at 0 the mid is independent of the flow;
* **timestamps**: step k is stamped ``start_ns + k * dt_ns`` (for per-day statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hmarl.data.candles import DataError, first_bad


@dataclass(frozen=True)
class TickParams:
    steps: int = 3600  # decision steps
    tick: float = 0.01  # price units per tick
    bid0: int = 10_000  # starting best bid, in ticks
    move_prob: float = 0.2  # probability that the best bid moves a tick in a step
    spread_probs: tuple[float, ...] = (0.6, 0.3, 0.1)  # spread of 1, 2, 3 ... ticks
    queue_mean: float = 3.0  # displayed lots per level (mean)
    rate: float = 0.5  # market orders per side per step (mean)
    size_mean: float = 2.0  # lots per market order (mean, >= 1)
    depth: int = 8  # book levels kept behind each best quote
    informed: float = 0.0  # probability that a step's net flow moves the mid its way
    dt_ns: int = 1_000_000_000  # one decision step (1 s)
    start_ns: int = 1_704_067_200_000_000_000  # 2024-01-01 00:00 UTC


class Tape(NamedTuple):
    """What happened in each step ``[L]`` / ``[L, depth]`` (prices in ticks, sizes in lots)."""

    bid: np.ndarray  # [L] best bid at the step's start
    ask: np.ndarray  # [L] best ask
    bid_queue: np.ndarray  # [L, D] displayed lots at bid - j
    ask_queue: np.ndarray  # [L, D] displayed lots at ask + j
    sell_volume: np.ndarray  # [L, D] lots sold by market orders at bid - j
    buy_volume: np.ndarray  # [L, D] lots bought by market orders at ask + j
    ts: np.ndarray | None = None  # [L] int64 ns since epoch at the step's start, if known


def _walk_orders(
    rng: np.random.Generator, queue: np.ndarray, rate: float, size_mean: float
) -> np.ndarray:
    """Volume printed per level ``[L, D]`` by Poisson orders walking the displayed ``queue``."""
    volume = np.zeros_like(queue)
    counts = rng.poisson(rate, len(queue))
    for step in np.flatnonzero(counts):
        left = queue[step].copy()
        for size in rng.geometric(1.0 / size_mean, counts[step]):
            taken = np.minimum(left, np.maximum(size - (np.cumsum(left) - left), 0))
            volume[step] += taken
            left -= taken
    return volume


def generate_tape(params: TickParams, seed: int) -> Tape:
    """A seeded tape of ``params.steps`` decision steps (the same seed: the same tape)."""
    rng = np.random.default_rng(seed)
    n, d = params.steps, params.depth
    move = rng.choice(
        [-1, 0, 1], n, p=[params.move_prob / 2, 1 - params.move_prob, params.move_prob / 2]
    )
    probs = np.asarray(params.spread_probs, dtype=np.float64)
    spread = 1 + rng.choice(len(probs), n, p=probs / probs.sum())
    queues = [1 + rng.poisson(params.queue_mean - 1, (n, d)) for _ in range(2)]
    sells = _walk_orders(rng, queues[0], params.rate, params.size_mean)
    buys = _walk_orders(rng, queues[1], params.rate, params.size_mean)
    if params.informed > 0:  # drawn after the rest: a tape without it keeps its draws
        flow = np.sign(buys.sum(1) - sells.sum(1))
        informed = (rng.random(n) < params.informed) & (flow != 0)
        move = np.where(informed, flow, move)
    bid = params.bid0 + np.concatenate([[0], np.cumsum(move[:-1])])
    ts = params.start_ns + params.dt_ns * np.arange(n, dtype=np.int64)
    return Tape(bid, bid + spread, queues[0], queues[1], sells, buys, ts)


def check_top_of_book(
    ts: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bid_size: np.ndarray,
    ask_size: np.ndarray,
    *,
    max_gap_ns: int,
    where: str,
) -> None:
    """Refuse a top-of-book tape a quoting run cannot read, naming the first bad row.

    Crossed quotes (bid above ask), negative sizes, times out of order, or a gap longer than
    ``max_gap_ns`` between consecutive rows (the book is unknown over a gap: resample it on
    a grid only where it was observed). Rows are counted from 0 in the given order.
    """
    checks = (
        (bid > ask, "crossed quotes (bid above ask): check the bid and ask columns"),
        ((bid_size < 0) | (ask_size < 0), "negative size: sizes are lots on the book, >= 0"),
    )
    for bad, what in checks:
        row = first_bad(np.asarray(bad))
        if row is not None:
            raise DataError(f"{where}: row {row}: {what}")
    step = np.diff(np.asarray(ts, dtype=np.int64))
    row = first_bad(step < 0)
    if row is not None:
        raise DataError(f"{where}: row {row + 1}: time goes backwards; sort the rows by time")
    row = first_bad(step > max_gap_ns)
    if row is not None:
        raise DataError(
            f"{where}: row {row + 1}: a gap of {step[row] / 1e9:g} s after the previous row, "
            f"longer than the limit of {max_gap_ns / 1e9:g} s; split the file at the gap or "
            "raise the limit"
        )
