"""Replay a quote stream through hftbacktest on the same ticks (the ``[hft]`` extra).

Why: our fill rule (:mod:`hmarl.market.tape_replay`) is ours; hftbacktest is the field's
open-source engine for exactly this question (queue position, latency, full tick replay).
Replaying the same quotes on the same ticks through both and comparing fills, PnL and final
inventory says how optimistic or pessimistic our rule is (``scripts/hft_check.py``,
docs/market_making_ticks.md).

**The ticks as hftbacktest events** (:func:`hft_events`). The top-of-book quotes become depth
events: each quote sets its bid and ask level to the displayed size; when the best bid moves
down (the ask up), the levels above the new best bid (below the new best ask) are cleared (one
``DEPTH_CLEAR_EVENT``), since they are gone; a level the best moved away from the other way
keeps the size last displayed there (the level still exists; its size is no longer shown).
Trades become trade events with the aggressor's side (``BUY_EVENT`` when the buyer took).
Exchange and local time are both the tick's ``ts`` (the one clock of the source); at equal
stamps quotes come before trades.

**The engine's settings**: ``constant_order_latency(0, 0)`` (our convention: a decision at ``t_k``
acts at ``t_k``), ``no_partial_fill_exchange`` (our quotes fill in full or not), a queue model
(``risk_adverse``: the queue ahead shrinks only by trades at the price and by the displayed
size falling below it; ``power_prob``: hftbacktest's probabilistic model,
``power_prob_queue_model(3)``),
zero fees on both sides (the cross-check is about fills). Each step the stream's bid and ask
are submitted as post-only (GTX) limit orders of one lot at ``t_k``; at ``t_{k+1}`` an order
still open is cancelled and the step's fill read from its status.

hftbacktest is imported inside the functions: the rest of hmarl never needs it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from hmarl.market.tape_replay import Grid, Replay
from hmarl.sources.ticks import Ticks

QUEUE_MODELS = ("risk_adverse", "power_prob")


def hft_events(ticks: Ticks, tick: float) -> np.ndarray:
    """The ticks as an hftbacktest event array (see the module docstring), time-sorted.

    Vectorised: a quote whose best price retreats (the bid down, the ask up) is preceded by
    one ``DEPTH_CLEAR_EVENT`` that clears that side from the old best to one tick beyond the
    new one (hftbacktest clears every level between), then every quote sets its level.
    """
    import hftbacktest as hbt

    flags = hbt.EXCH_EVENT | hbt.LOCAL_EVENT
    q = ticks.quotes
    ts_q = q["ts"].to_numpy(np.int64)
    parts: list[tuple[np.ndarray, ...]] = []  # (ts, ev, px, qty, order key)
    sides = (
        (hbt.BUY_EVENT, q["bid_price"].to_numpy(), q["bid_qty"].to_numpy(), 1, 0),
        (hbt.SELL_EVENT, q["ask_price"].to_numpy(), q["ask_qty"].to_numpy(), -1, 1),
    )
    index = np.arange(len(q), dtype=np.int64)
    for flag, price, qty, sign, side in sides:  # sign: +1 bids (best is the highest), -1 asks
        p = np.round(price / tick).astype(np.int64)
        retreat = np.flatnonzero(sign * p[1:] < sign * p[:-1]) + 1
        parts.append(
            (
                ts_q[retreat],
                np.full(len(retreat), flags | hbt.DEPTH_CLEAR_EVENT | flag, np.uint64),
                (p[retreat] + sign) * tick,  # clear down to (bids) one tick above the new best
                np.zeros(len(retreat)),
                (side * len(q) + retreat) * 2,  # before the quote's own level
            )
        )
        parts.append(
            (
                ts_q,
                np.full(len(q), flags | hbt.DEPTH_EVENT | flag, np.uint64),
                p * tick,
                qty.astype(np.float64),
                (side * len(q) + index) * 2 + 1,
            )
        )
    t = ticks.trades
    is_buy = t["is_buy"].to_numpy(bool)
    trade_ev = flags | hbt.TRADE_EVENT | np.where(is_buy, hbt.BUY_EVENT, hbt.SELL_EVENT)
    parts.append(
        (
            t["ts"].to_numpy(np.int64),
            trade_ev.astype(np.uint64),
            t["price"].to_numpy(np.float64),
            t["qty"].to_numpy(np.float64),
            4 * len(q) + np.arange(len(t), dtype=np.int64),  # after the quotes at a tie
        )
    )
    ts, ev, px, size, key = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.lexsort((key, ts))
    events = np.zeros(len(ts), dtype=hbt.binding.event_dtype)
    events["ev"], events["exch_ts"], events["local_ts"] = ev[order], ts[order], ts[order]
    events["px"], events["qty"] = px[order], size[order]
    return events


@cache
def _driver() -> Any:
    """The numba-compiled stepping loop (compiled on first use, once per process)."""
    from hftbacktest import FILLED, GTX, LIMIT, NEW
    from numba import njit

    @njit
    def drive(
        hbt: Any,
        first: int,
        edges: Any,
        bid_px: Any,
        ask_px: Any,
        lot: float,
        bid_fill: Any,
        ask_fill: Any,
    ) -> int:
        # The clock starts at the first event: elapse from there to the first decision time.
        if hbt.elapse(edges[0] - first) != 0:
            return 0
        for k in range(len(edges) - 1):
            bid_id, ask_id = 2 * k + 1, 2 * k + 2
            if not np.isnan(bid_px[k]):
                hbt.submit_buy_order(0, bid_id, bid_px[k], lot, GTX, LIMIT, False)
            if not np.isnan(ask_px[k]):
                hbt.submit_sell_order(0, ask_id, ask_px[k], lot, GTX, LIMIT, False)
            ended = hbt.elapse(edges[k + 1] - edges[k]) != 0
            orders = hbt.orders(0)
            for oid, fills in ((bid_id, bid_fill), (ask_id, ask_fill)):
                order = orders.get(oid)
                if order is not None:
                    fills[k] = order.status == FILLED
                    if order.status == NEW:
                        hbt.cancel(0, oid, False)
            hbt.clear_inactive_orders(0)
            if ended:  # the data ended: steps after k were not replayed
                return k + 1
        return len(edges) - 1

    return drive


def hft_replay(
    ticks: Ticks,
    grid: Grid,
    bid_px: np.ndarray,
    ask_px: np.ndarray,
    *,
    tick: float,
    lot: float,
    queue: str = "risk_adverse",
    events: np.ndarray | None = None,
) -> tuple[Replay, dict[str, float]]:
    """The quote stream ``[L]`` replayed by hftbacktest: its fills, and the engine's own final
    position and balance (a check of the accounting: ``hft_position``, ``hft_balance``)."""
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    if queue not in QUEUE_MODELS:
        raise ValueError(f"queue={queue!r} is not one of {QUEUE_MODELS}")
    events = hft_events(ticks, tick) if events is None else events
    asset = (
        BacktestAsset()
        .data(events)
        .linear_asset(1.0)
        .constant_order_latency(0, 0)
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(tick)
        .lot_size(lot)
        .last_trades_capacity(0)
    )
    asset = (
        asset.risk_adverse_queue_model()
        if queue == "risk_adverse"
        else asset.power_prob_queue_model(3.0)
    )
    backtest = HashMapMarketDepthBacktest([asset])
    bid_fill = np.zeros(grid.steps, dtype=np.bool_)
    ask_fill = np.zeros(grid.steps, dtype=np.bool_)
    done = _driver()(
        backtest,
        int(events["exch_ts"][0]),
        grid.edges,
        np.ascontiguousarray(bid_px, np.float64),
        np.ascontiguousarray(ask_px, np.float64),
        lot,
        bid_fill,
        ask_fill,
    )
    state = backtest.state_values(0)
    info = {
        "hft_position": float(state.position),
        "hft_balance": float(state.balance),
        "hft_steps": float(done),
    }
    backtest.close()
    return Replay(bid_px, ask_px, bid_fill, ask_fill), info
