"""The tape fill rule on real top-of-book ticks, and a quote stream to replay through it.

Why: :func:`hmarl.market.quoting.tape_fills` states the fill rule on a synthetic tape that
shows the displayed size at every level. Real public data (Binance ``bookTicker`` dumps, the
websocket capture) shows only the best bid and ask with their sizes, plus the trades. This
module applies the same rule to that data, on a decision grid of step ``dt``, so that a quote
stream can be scored by our rule and, in ``scripts/hft_check.py``, by hftbacktest on the same
ticks.

**Grid.** Decision times ``t_k`` are multiples of ``dt`` (aligned to the epoch) from the first
one at or after the first quote to the last one at or before the last tick; step k covers the
half-open interval ``[t_k, t_{k+1})`` (the project's bar convention,
:mod:`hmarl.sources.ticks`). The book of step k is the last quote stamped at or before ``t_k``.

**The rule on top-of-book data** (one lot ``lot``, prices on the tick grid). A bid at P posted
at ``t_k`` fills in step k iff a seller-initiated trade in the step prints below P (through
it), or the sellers' volume printed at exactly P exceeds the queue ahead by at least one lot.
The queue ahead is the displayed best-bid size when P is the best bid, 0 when P improves the
best bid, and **0 when P is behind the best bid** (the level is not displayed by top-of-book
data; 0 is optimistic there, and it is also what a depth-based engine fed the same data sees).
The ask mirrors it with buyer-initiated trades. A quote lives for one step and fills at most
once (in full). Fills are priced at the quote. ``book_cross`` (an option, off by default) also
fills a quote that the opposite best quote reaches during the step, trade or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmarl.data.candles import DataError
from hmarl.market.avellaneda import ASParams, closed_form_depths
from hmarl.market.quoting import QuoteParams
from hmarl.sources.ticks import Ticks


@dataclass(frozen=True)
class Grid:
    """The decision grid and the book at each step's start, ``[L]`` (edges ``[L + 1]``)."""

    edges: np.ndarray  # int64 ns: t_0 .. t_L
    bid: np.ndarray  # best bid price at t_k
    ask: np.ndarray
    bid_qty: np.ndarray
    ask_qty: np.ndarray
    mid_end: float  # mid at t_L (the final mark)

    @property
    def steps(self) -> int:
        return len(self.edges) - 1

    @property
    def mid(self) -> np.ndarray:
        return (self.bid + self.ask) / 2


def book_at(quotes: pd.DataFrame, times: np.ndarray) -> tuple[np.ndarray, ...]:
    """bid, ask, bid qty, ask qty of the last quote stamped at or before each time."""
    ts = quotes["ts"].to_numpy(np.int64)
    row = np.searchsorted(ts, times, side="right") - 1
    if (row < 0).any():
        raise DataError("a decision time precedes the first quote: the book is unknown there")
    return tuple(
        quotes[c].to_numpy(np.float64)[row]
        for c in ("bid_price", "ask_price", "bid_qty", "ask_qty")
    )


def decision_grid(ticks: Ticks, dt_ns: int) -> Grid:
    """Decision times every ``dt_ns`` covered by the ticks, and the book at each."""
    if dt_ns <= 0:
        raise ValueError(f"dt={dt_ns} ns must be > 0")
    first = int(ticks.quotes["ts"].iloc[0])
    last = int(
        max(ticks.quotes["ts"].iloc[-1], ticks.trades["ts"].max() if len(ticks.trades) else 0)
    )
    start, stop = -(-first // dt_ns) * dt_ns, last // dt_ns * dt_ns
    if stop - start < dt_ns:
        raise DataError(f"the ticks span less than one decision step of {dt_ns / 1e9:g} s")
    edges = np.arange(start, stop + 1, dt_ns, dtype=np.int64)
    bid, ask, bid_qty, ask_qty = book_at(ticks.quotes, edges)
    return Grid(
        edges, bid[:-1], ask[:-1], bid_qty[:-1], ask_qty[:-1], float((bid[-1] + ask[-1]) / 2)
    )


def _ticks(price: np.ndarray, tick: float) -> np.ndarray:
    """Prices as integer ticks (NaN, no quote, as a sentinel that matches nothing)."""
    out = np.full(np.shape(price), np.iinfo(np.int64).min // 2, dtype=np.int64)
    ok = np.isfinite(price)
    out[ok] = np.round(np.asarray(price)[ok] / tick).astype(np.int64)
    return out


@dataclass(frozen=True)
class StepTrades:
    """Each step's trades by side (the extreme price and the volume at each price) and the
    extremes of the opposite best quotes shown during the step (for ``book_cross``)."""

    low_sell: np.ndarray  # [L] lowest seller-initiated price in the step, in ticks (max: none)
    high_buy: np.ndarray  # [L] highest buyer-initiated price, in ticks (min: none)
    keys: dict[bool, np.ndarray]  # is_buy -> sorted keys step * span + price tick - base
    volume: dict[bool, np.ndarray]  # is_buy -> volume (lots) at each key
    base: int
    span: int
    low_ask: np.ndarray  # [L] lowest best ask quoted in [t_k, t_{k+1}), ticks (max: none)
    high_bid: np.ndarray  # [L] highest best bid quoted in the step, ticks (min: none)


def step_trades(ticks: Ticks, grid: Grid, tick: float, lot: float) -> StepTrades:
    """The trades of each step ``[t_k, t_{k+1})``, summarised for the fill rule."""
    trades = ticks.trades
    ts = trades["ts"].to_numpy(np.int64)
    step = np.searchsorted(grid.edges, ts, side="right") - 1
    keep = (step >= 0) & (step < grid.steps)
    step, price = step[keep], _ticks(trades["price"].to_numpy(np.float64)[keep], tick)
    qty, is_buy = (
        trades["qty"].to_numpy(np.float64)[keep] / lot,
        trades["is_buy"].to_numpy(bool)[keep],
    )
    big = np.iinfo(np.int64).max
    low_sell = np.full(grid.steps, big, dtype=np.int64)
    high_buy = np.full(grid.steps, -big, dtype=np.int64)
    np.minimum.at(low_sell, step[~is_buy], price[~is_buy])
    np.maximum.at(high_buy, step[is_buy], price[is_buy])
    base = int(price.min()) if len(price) else 0
    span = int(price.max()) - base + 1 if len(price) else 1
    keys: dict[bool, np.ndarray] = {}
    volume: dict[bool, np.ndarray] = {}
    for side in (True, False):
        k = step[is_buy == side] * span + (price[is_buy == side] - base)
        keys[side], inverse = np.unique(k, return_inverse=True)
        volume[side] = np.bincount(inverse, weights=qty[is_buy == side], minlength=len(keys[side]))
    q_step = np.searchsorted(grid.edges, ticks.quotes["ts"].to_numpy(np.int64), side="right") - 1
    inside = (q_step >= 0) & (q_step < grid.steps)
    low_ask = np.full(grid.steps, big, dtype=np.int64)
    high_bid = np.full(grid.steps, -big, dtype=np.int64)
    np.minimum.at(
        low_ask, q_step[inside], _ticks(ticks.quotes["ask_price"].to_numpy()[inside], tick)
    )
    np.maximum.at(
        high_bid, q_step[inside], _ticks(ticks.quotes["bid_price"].to_numpy()[inside], tick)
    )
    return StepTrades(low_sell, high_buy, keys, volume, base, span, low_ask, high_bid)


def _volume_at(trades: StepTrades, side: bool, steps: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Lots printed by ``side`` aggressors at exactly ``price`` (ticks) in each step."""
    inside = (price >= trades.base) & (price < trades.base + trades.span)
    key = steps * trades.span + np.clip(price - trades.base, 0, trades.span - 1)
    keys = trades.keys[side]
    if not len(keys):
        return np.zeros(len(key))
    pos = np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)
    return np.where(inside & (keys[pos] == key), trades.volume[side][pos], 0.0)


def tape_fills_top(
    grid: Grid,
    trades: StepTrades,
    bid_px: np.ndarray,
    ask_px: np.ndarray,
    tick: float,
    lot: float,
    *,
    book_cross: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether a one-lot bid at ``bid_px`` / ask at ``ask_px`` (``[L, ...]``, NaN: no quote)
    would fill in each step, by the rule of this module's docstring.

    ``book_cross`` (off by default, not the stated rule): a quote also fills when the
    opposite best quote reaches its price during the step (hftbacktest's convention; the
    seller who came down to our bid would have hit it), trade or not.
    """
    shape = np.shape(bid_px)
    steps = np.broadcast_to(np.arange(grid.steps).reshape((-1,) + (1,) * (len(shape) - 1)), shape)
    fills = []
    for px, side, best, best_qty in (
        (bid_px, False, grid.bid, grid.bid_qty),
        (ask_px, True, grid.ask, grid.ask_qty),
    ):
        p = _ticks(px, tick)
        best_t = _ticks(best, tick).reshape(steps.shape[:1] + (1,) * (len(shape) - 1))
        queue = np.where(p == best_t, (best_qty / lot).reshape(best_t.shape), 0.0)
        at = _volume_at(trades, side, steps.ravel(), p.ravel()).reshape(shape) - queue >= 1.0
        if side:  # the ask: buyers printing above it
            through = trades.high_buy.reshape(best_t.shape) > p
            if book_cross:
                through |= trades.high_bid.reshape(best_t.shape) >= p
        else:
            through = trades.low_sell.reshape(best_t.shape) < p
            if book_cross:
                through |= trades.low_ask.reshape(best_t.shape) <= p
        fills.append(np.isfinite(px) & (through | at))
    return fills[0], fills[1]


@dataclass(frozen=True)
class Replay:
    """What one engine did with a quote stream ``[L]`` (prices NaN where not quoted)."""

    bid_px: np.ndarray
    ask_px: np.ndarray
    bid_fill: np.ndarray  # bool
    ask_fill: np.ndarray

    def inventory(self) -> np.ndarray:
        """Lots held after each step."""
        return np.cumsum(self.bid_fill.astype(np.int64) - self.ask_fill.astype(np.int64))

    def pnl(self, mid_end: float, lot: float) -> float:
        """Cash from the fills plus the final inventory at the final mid (quote units)."""
        cash = lot * (
            np.where(self.ask_fill, self.ask_px, 0.0).sum()
            - np.where(self.bid_fill, self.bid_px, 0.0).sum()
        )
        return float(cash + self.inventory()[-1] * lot * mid_end) if len(self.bid_px) else 0.0


def replay_stream(
    ticks: Ticks,
    grid: Grid,
    bid_px: np.ndarray,
    ask_px: np.ndarray,
    tick: float,
    lot: float,
    *,
    book_cross: bool = False,
) -> Replay:
    """A fixed quote stream ``[L]`` scored by the tape rule (open loop: no inventory limit)."""
    trades = step_trades(ticks, grid, tick, lot)
    fb, fa = tape_fills_top(grid, trades, bid_px, ask_px, tick, lot, book_cross=book_cross)
    return Replay(bid_px, ask_px, fb, fa)


# --- the Avellaneda-Stoikov quote stream --------------------------------------------------


def estimate_market(
    grid: Grid, trades: StepTrades, tick: float, lot: float, dt: float, max_offset: int = 200
) -> ASParams:
    """``sigma``, ``A``, ``k`` of the Avellaneda-Stoikov market from the ticks (time unit: s).

    ``sigma``: standard deviation of the mid's step moves over ``sqrt(dt)``. ``A``, ``k``: the
    tape rule's fill frequency ``p_j`` of a one-lot quote ``j`` ticks behind the best quote
    (12 offsets ``j`` spaced geometrically over ``1 .. max_offset``, both sides pooled) is
    turned into an arrival intensity ``lambda_j = -log(1 - p_j) / dt`` at the mean distance
    ``d_j`` from the mid, and ``log lambda = log A - k d`` is fitted by least squares over the
    offsets with ``0 < p_j < 1``. In-sample on the ticks given (the cross-check replays the
    same day).
    """
    offsets = np.unique(np.round(np.geomspace(1, max(max_offset, 1), 12)).astype(np.int64))
    bid_px = grid.bid[:, None] - offsets[None, :] * tick
    ask_px = grid.ask[:, None] + offsets[None, :] * tick
    fb, fa = tape_fills_top(grid, trades, bid_px, ask_px, tick, lot)
    p = (fb.mean(0) + fa.mean(0)) / 2
    depth = ((grid.mid[:, None] - bid_px).mean(0) + (ask_px - grid.mid[:, None]).mean(0)) / 2
    ok = (p > 0) & (p < 1)
    if ok.sum() < 2:
        raise DataError(
            f"cannot estimate A and k: only {int(ok.sum())} of the offsets {offsets.tolist()} "
            "ticks filled sometimes but not always; use more ticks or pass --A and --k"
        )
    lam = -np.log1p(-p[ok]) / dt
    slope, intercept = np.polyfit(depth[ok], np.log(lam), 1)
    moves = np.diff(np.append(grid.mid, grid.mid_end))
    sigma = float(moves.std() / math.sqrt(dt)) or tick
    return ASParams(
        sigma=sigma,
        A=float(math.exp(intercept)),
        k=float(max(-slope, 1e-9)),
        dt=dt,
        steps=grid.steps,
    )


def as_quote_prices(
    grid: Grid, market: ASParams, params: QuoteParams
) -> tuple[np.ndarray, np.ndarray]:
    """The closed-form quotes as prices ``[L, S]`` for every inventory state: the mid minus
    (plus) Gueant's depth, rounded away from the mid to the tick grid and never crossing the
    book (a bid at most one tick below the best ask: post-only)."""
    bid_d, ask_d = closed_form_depths(market, params)
    tick = params.tick
    mid = grid.mid[:, None]
    bid = np.floor((mid - bid_d[None, :]) / tick + 1e-9) * tick
    ask = np.ceil((mid + ask_d[None, :]) / tick - 1e-9) * tick
    bid = np.minimum(bid, grid.ask[:, None] - tick)
    ask = np.maximum(ask, grid.bid[:, None] + tick)
    return bid, ask


def closed_loop(
    grid: Grid,
    trades: StepTrades,
    bid_all: np.ndarray,
    ask_all: np.ndarray,
    params: QuoteParams,
    lot: float,
    *,
    book_cross: bool = False,
) -> Replay:
    """Run an inventory-dependent quote table ``[L, S]`` with the tape rule: the inventory
    picks each step's quotes, the posting rule withdraws the side at its limit, and the
    stream actually posted is returned with its fills (what hftbacktest then replays)."""
    fb_all, fa_all = tape_fills_top(
        grid, trades, bid_all, ask_all, params.tick, lot, book_cross=book_cross
    )
    n = grid.steps
    bid_px, ask_px = np.full(n, np.nan), np.full(n, np.nan)
    fb, fa = np.zeros(n, bool), np.zeros(n, bool)
    s, top = params.start, params.n_states - 1
    for k in range(n):
        if s < top:
            bid_px[k], fb[k] = bid_all[k, s], fb_all[k, s]
        if s > 0:
            ask_px[k], fa[k] = ask_all[k, s], fa_all[k, s]
        s += int(fb[k]) - int(fa[k])
    return Replay(bid_px, ask_px, fb, fa)


def explain_differences(
    ticks: Ticks, grid: Grid, ours: Replay, other: Replay, tick: float, lot: float
) -> dict[str, int]:
    """Why another engine's fills of the same stream differ from the tape rule's, step by step.

    Each side-step where exactly one engine filled gets the first reason that applies (the
    conventions of docs/market_making_ticks.md): ``book_crossed`` (the opposite best quote reached
    our price during the step: an engine that fills on the book fills, ours needs a trade),
    ``queue_shrank`` (our price was the best, and its displayed size fell below the queue
    we started behind, by cancellations: an engine that lets the queue shrink with the
    displayed size is ahead sooner), ``half_lot`` (the volume beyond the queue was at least
    half a lot but less than one), ``edge_trade`` (a trade at or through our price stamped
    exactly at the step's start or end: the two engines give it to different steps),
    ``behind_best`` (our price was behind the best: the queue there is 0 for us and the
    last displayed size for a depth engine), else ``other``. Keys are
    ``<other|ours>_only_<reason>``: which engine alone filled, and why.
    """
    q_ts = ticks.quotes["ts"].to_numpy(np.int64)
    t_ts = ticks.trades["ts"].to_numpy(np.int64)
    t_px = _ticks(ticks.trades["price"].to_numpy(np.float64), tick)
    t_qty = ticks.trades["qty"].to_numpy(np.float64) / lot
    t_buy = ticks.trades["is_buy"].to_numpy(bool)
    counts: dict[str, int] = {}
    sides = (
        (ours.bid_px, ours.bid_fill, other.bid_fill, 1, "bid_price", "ask_price", "bid_qty"),
        (ours.ask_px, ours.ask_fill, other.ask_fill, -1, "ask_price", "bid_price", "ask_qty"),
    )
    for px, mine, theirs, sign, own, opposite, size in sides:
        own_t = _ticks(ticks.quotes[own].to_numpy(np.float64), tick)
        opp_t = _ticks(ticks.quotes[opposite].to_numpy(np.float64), tick)
        sizes = ticks.quotes[size].to_numpy(np.float64) / lot
        for k in np.flatnonzero(mine != theirs):
            p = round(float(px[k]) / tick)
            lo, hi = grid.edges[k], grid.edges[k + 1]
            qs = slice(np.searchsorted(q_ts, lo, "left"), np.searchsorted(q_ts, hi, "left"))
            ts = slice(np.searchsorted(t_ts, lo, "left"), np.searchsorted(t_ts, hi, "right"))
            hitting = t_buy[ts] == (sign < 0)  # sellers hit bids, buyers lift asks
            at_or_through = hitting & (sign * t_px[ts] <= sign * p)
            best = round(float((grid.bid if sign > 0 else grid.ask)[k]) / tick)
            queue = (grid.bid_qty if sign > 0 else grid.ask_qty)[k] / lot if p == best else 0.0
            inside = t_ts[ts] < hi
            at_p = float(t_qty[ts][hitting & (t_px[ts] == p) & inside].sum())
            shown = sizes[qs][own_t[qs] == p]
            if (sign * opp_t[qs] <= sign * p).any():
                reason = "book_crossed"
            elif p == best and len(shown) and shown.min() < queue and at_p > 0:
                reason = "queue_shrank"
            elif 0.5 <= at_p - queue < 1.0:
                reason = "half_lot"
            elif (at_or_through & ((t_ts[ts] == lo) | (t_ts[ts] == hi))).any():
                reason = "edge_trade"
            elif sign * p < sign * best:
                reason = "behind_best"
            else:
                reason = "other"
            key = f"{'ours' if mine[k] else 'other'}_only_{reason}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
