"""The tape fill rule on top-of-book ticks (hmarl/market/tape_replay.py) on hand-made ticks, and
the hftbacktest replay of the same stream (hmarl/market/hft_replay.py; skipped without the
``[hft]`` extra)."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import load_script

from hmarl.data.candles import DataError
from hmarl.market.quoting import QuoteParams
from hmarl.market.tape_replay import (
    Replay,
    as_quote_prices,
    closed_loop,
    decision_grid,
    estimate_market,
    explain_differences,
    replay_stream,
    step_trades,
)
from hmarl.sources.book import synthetic_ticks
from hmarl.sources.ticks import Ticks

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a whole second
TICK, LOT = 0.01, 0.001
NAN = float("nan")


def ticks(quotes: list[tuple[float, ...]], trades: list[tuple[float, float, float, bool]]) -> Ticks:
    """Quotes (seconds after T0, bid, bid qty, ask, ask qty) and trades (s, price, qty, is_buy)."""
    q = pd.DataFrame(quotes, columns=["ts", "bid_price", "bid_qty", "ask_price", "ask_qty"])
    q["ts"] = (T0 + q["ts"] * S).astype(np.int64)
    t = pd.DataFrame(trades, columns=["ts", "price", "qty", "is_buy"])
    t["ts"] = (T0 + t["ts"] * S).astype(np.int64)
    return Ticks(quotes=q, trades=t)


# Five 1-second steps from T0; the book 100.00 (2 lots) / 100.01 (3 lots) throughout.
BOOK = [
    (-0.5, 100.00, 0.002, 100.01, 0.003),
    (4.5, 100.00, 0.002, 100.01, 0.003),
    (5.0, 100.0, 0.002, 100.01, 0.003),
]
TRADES = [
    (0.2, 100.00, 0.002, False),  # step 0: 2 lots sold at the bid: the queue ahead (2) only
    (1.3, 100.00, 0.003, False),  # step 1: 3 lots: one beyond the queue -> a bid at 100.00 fills
    (2.1, 99.99, 0.001, False),  # step 2: prints below 100.00 -> through; at 99.99 beyond queue 0
    (3.0, 100.01, 0.004, True),  # step 3 starts: 4 lots bought at the ask (queue 3) -> fills
    (4.9, 100.03, 0.001, True),  # step 4: through an ask at 100.02; 1 lot at 100.03
]


def test_fill_rule_on_top_of_book() -> None:
    tape = ticks(BOOK, TRADES)
    grid = decision_grid(tape, S)
    assert grid.steps == 5 and grid.mid_end == pytest.approx(100.005)
    bid = np.array([100.00, 100.00, 100.00, 99.99, NAN])
    ask = np.array([100.01, 100.01, NAN, 100.01, 100.02])
    replay = replay_stream(tape, grid, bid, ask, TICK, LOT)
    assert replay.bid_fill.tolist() == [False, True, True, False, False]
    assert replay.ask_fill.tolist() == [False, False, False, True, True]
    assert replay.inventory().tolist() == [0, 1, 2, 1, 0]
    # cash: -100.00 - 100.00 + 100.01 + 100.02 lots of 0.001, flat at the end
    assert replay.pnl(grid.mid_end, LOT) == pytest.approx(0.03 * LOT)
    behind = replay_stream(tape, grid, np.full(5, 99.99), np.full(5, 100.03), TICK, LOT)
    assert behind.bid_fill.tolist() == [False, False, True, False, False]  # queue 0 behind the best
    assert behind.ask_fill.tolist() == [False, False, False, False, True]  # 1 lot at 100.03


# The same tape, but in step 0 the ask drops to 100.00 (our bid) for 0.2 s without a trade there.
CROSSING = sorted([*BOOK, (0.5, 99.99, 0.002, 100.00, 0.001), (0.7, 100.00, 0.002, 100.01, 0.003)])
BID = np.array([100.00, 100.00, 100.00, 99.99, NAN])
ASK = np.array([100.01, 100.01, NAN, 100.01, 100.02])


def test_differences_are_explained_by_convention() -> None:
    tape = ticks(CROSSING, TRADES)
    grid = decision_grid(tape, S)
    ours = replay_stream(tape, grid, BID, ASK, TICK, LOT)
    assert not ours.bid_fill[0]  # no trade beyond the queue: the book touching us is no fill
    crossed = replay_stream(tape, grid, BID, ASK, TICK, LOT, book_cross=True)
    assert crossed.bid_fill.tolist() == [True, *ours.bid_fill[1:].tolist()]  # unless asked to
    assert crossed.ask_fill.tolist() == ours.ask_fill.tolist()
    bid_fill, ask_fill = ours.bid_fill.copy(), ours.ask_fill.copy()
    bid_fill[0], ask_fill[3] = True, False
    other = Replay(BID, ASK, bid_fill, ask_fill)
    why = explain_differences(tape, grid, ours, other, TICK, LOT)
    assert why == {"other_only_book_crossed": 1, "ours_only_edge_trade": 1}


def test_closed_loop_posting_rule_and_estimates() -> None:
    tape = ticks(BOOK, TRADES)
    grid = decision_grid(tape, S)
    trades = step_trades(tape, grid, TICK, LOT)
    params = QuoteParams(offsets=(0.0,), tick=TICK, max_inventory=1)
    bid_all = np.full((5, 3), 100.00)
    ask_all = np.full((5, 3), 100.01)
    run = closed_loop(grid, trades, bid_all, ask_all, params, LOT)
    assert run.bid_fill.tolist() == [False, True, False, False, False]  # at q = 1 no bid is posted
    assert run.ask_fill.tolist() == [False, False, False, True, True]
    assert np.isnan(run.bid_px[2]) and run.inventory().tolist() == [0, 1, 1, 0, -1]
    with pytest.raises(DataError, match="cannot estimate A and k"):
        estimate_market(grid, trades, TICK, LOT, 1.0, max_offset=1)


def test_estimates_on_a_busy_tape_and_quotes_never_cross() -> None:
    rng = np.random.default_rng(0)
    n = 400
    bid = 100 + np.cumsum(rng.integers(-1, 2, n)) * TICK
    quotes = [(i * 1.0, b, 0.005, b + TICK, 0.005) for i, b in enumerate(bid)]
    trades = []
    for i, b in enumerate(bid):
        for _ in range(rng.poisson(3)):
            depth = int(rng.geometric(0.4)) - 1  # ticks through the book
            buy = bool(rng.random() < 0.5)
            trades.append(
                (
                    i + rng.random() * 0.99,
                    b + TICK + depth * TICK if buy else b - depth * TICK,
                    0.002,
                    buy,
                )
            )
    trades.sort()
    tape = ticks(quotes, trades)
    grid = decision_grid(tape, S)
    market = estimate_market(grid, step_trades(tape, grid, TICK, LOT), TICK, LOT, 1.0)
    assert market.A > 0 and market.k > 0 and market.sigma > 0
    params = QuoteParams(offsets=(0.0,), tick=TICK, max_inventory=3, phi=1e-6)
    bid_all, ask_all = as_quote_prices(grid, market, params)
    assert (bid_all < grid.ask[:, None]).all() and (ask_all > grid.bid[:, None]).all()
    assert (np.diff(bid_all, axis=1) <= 1e-12).all()  # longer inventory: a lower bid


def test_hftbacktest_replays_the_same_stream() -> None:
    if importlib.util.find_spec("hftbacktest") is None:
        pytest.skip("hftbacktest is not installed: the [hft] extra (docs/market_making_ticks.md)")
    from hmarl.market.hft_replay import hft_replay

    tape = ticks(CROSSING, TRADES)
    grid = decision_grid(tape, S)
    ours = replay_stream(tape, grid, BID, ASK, TICK, LOT)
    theirs, info = hft_replay(tape, grid, BID, ASK, tick=TICK, lot=LOT)
    # hftbacktest fills the bid when the ask reaches it (step 0), and it had processed step
    # 3's buy, stamped exactly at t_3, before the order arrived; otherwise the same fills.
    assert ours.bid_fill.tolist() == [False, True, True, False, False]
    assert theirs.bid_fill.tolist() == [True, True, True, False, False]
    assert ours.ask_fill.tolist() == [False, False, False, True, True]
    assert theirs.ask_fill.tolist() == [False, False, False, False, True]
    assert explain_differences(tape, grid, ours, theirs, TICK, LOT) == {
        "ours_only_edge_trade": 1,
        "other_only_book_crossed": 1,
    }
    assert info["hft_position"] == pytest.approx(LOT * theirs.inventory()[-1])
    assert info["hft_balance"] == pytest.approx(
        theirs.pnl(grid.mid_end, LOT) - LOT * theirs.inventory()[-1] * grid.mid_end
    )


def test_hft_check_script_on_a_csv_day(tmp_path: Path) -> None:
    if importlib.util.find_spec("hftbacktest") is None:
        pytest.skip("hftbacktest is not installed: the [hft] extra (docs/market_making_ticks.md)")
    day = synthetic_ticks(date(2024, 1, 2), quotes=3000, trades=1000, seed=1, session="13:00-13:20")
    quotes = day.quotes.rename(columns={"bid_price": "bid", "ask_price": "ask"})
    side = np.where(day.trades["is_buy"], "buy", "sell")
    quotes.to_csv(tmp_path / "q.csv", index=False)
    day.trades.assign(side=side).drop(columns="is_buy").to_csv(tmp_path / "t.csv", index=False)
    argv = [
        "--quotes",
        str(tmp_path / "q.csv"),
        "--trades",
        str(tmp_path / "t.csv"),
        "--offset",
        "0",
    ]
    assert load_script("hft_check").main([*argv, "--out", str(tmp_path / "check.csv")]) == 0
    table = pd.read_csv(tmp_path / "check.csv")
    assert table["engine"].tolist() == [
        "ours (tape rule)",
        "ours, book_cross on",
        "hftbacktest risk_adverse",
        "hftbacktest power_prob",
    ]
    assert (table["bid_fills"] > 0).all()
    assert (table["bid_fills"][1:] >= table["bid_fills"][0]).all()  # both fill at least as often
    ours, theirs = table.iloc[0], table.iloc[2]
    assert theirs["pnl_diff"] == pytest.approx(theirs["pnl"] - ours["pnl"])
    assert theirs["bid_fills_diff_pct"] == pytest.approx(
        100 * (theirs["bid_fills"] - ours["bid_fills"]) / ours["bid_fills"]
    )
