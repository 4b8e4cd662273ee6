"""Per-day, per-ticker evaluation of a quote stream on real ticks, as the user's earlier tool did.

Why: a market maker is judged day by day and instrument by instrument; one number over a
month hides the bad days. For every (ticker, day) this runs the Avellaneda-Stoikov
closed-form quotes (the baseline of docs/market_making.md; ``sigma``, ``A``, ``k`` estimated
on that day's ticks by :func:`hmarl.market.tape_replay.estimate_market`) closed-loop with the
tape fill rule, and writes::

    <out>/<TICKER>/<day>/metrics.json   the day's statistics (hmarl.stats.quoting.quote_stats
                                        keys, plus the day's size, the estimates, actions)
    <out>/<TICKER>/<day>/steps.csv      one row per decision step: book, quotes, fills,
                                        inventory, step and cumulative PnL
    <out>/<TICKER>/<day>/day.png        the book with our quotes and fills, inventory, PnL
                                        and actions (hmarl.report.quote_plots; plots=True)
    <out>/daily_metrics.csv             one row per (ticker, day)
    <out>/aggregated_by_ticker.csv      per ticker: days, PnL and fills summed, the rest averaged
    <out>/aggregated_by_liquidity.csv   the same per liquidity bucket

A trained checkpoint's days are written by the same two functions (:func:`day_result`,
:func:`write_days`) from :mod:`hmarl.backtest.quote_days`, so the files read the same whoever
quoted.

**Liquidity buckets**: the (ticker, day)s evaluated together are ranked by traded notional
(sum of price x size of the day's trades, quote currency) and cut into terciles ``low``,
``mid``, ``high`` (fewer buckets when fewer than three ticker-days are evaluated).

**Actions** of the closed-form policy: each step posts both sides, only the bid, only the ask
(the other withdrawn at the inventory limit) or nothing; ``Action <a> [#]`` counts them and
``Mean probability of <a> [%]`` is the policy's mean probability of each, which for this
deterministic policy is the share of steps. PnL is in price x lots (the stats module's unit)
and in quote currency (``x lot``), no fees, the final inventory marked at the final mid, and no
market impact (the market does not react to the quotes).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmarl.io import write_csv, write_json, write_png
from hmarl.market.avellaneda import ASParams
from hmarl.market.quoting import QuoteParams
from hmarl.market.tape_replay import (
    Grid,
    Replay,
    as_quote_prices,
    closed_loop,
    decision_grid,
    estimate_market,
    step_trades,
)
from hmarl.report.quote_plots import quote_day_figure
from hmarl.sources.ticks import Ticks
from hmarl.stats.quoting import quote_stats

ACTIONS = ("both", "bid only", "ask only", "none")
LIQUIDITY = ("low", "mid", "high")
_SUMMED = ("PnL [price x lots]", "PnL [quote]", "Fills bid [#]", "Fills ask [#]")
QuoteTable = Callable[[Ticks, Grid], tuple[np.ndarray, np.ndarray]]
"""A policy's quotes on a day: bid and ask prices ``[L, S]`` per step and inventory state (NaN:
no quote), e.g. a trained checkpoint's (hmarl.backtest.checkpoint_quotes.policy_quotes)."""


@dataclass(frozen=True)
class QuoteSetup:
    """The quoting rules of an evaluation (prices in quote currency, sizes in base units)."""

    dt: float = 1.0  # decision step, seconds
    tick: float = 0.01
    lot: float = 0.001  # one quote's size
    max_inventory: int = 5  # lots
    skew_ticks: float = 1.0  # closed-form skew per lot held (sets phi)
    fit_ticks: int = 200  # deepest offset of the A, k fit
    book_cross: bool = False  # also fill when the opposite best quote reaches ours
    quotes: QuoteTable | None = None  # a policy's quotes in place of the closed form
    label: str = "closed-form quotes"  # what quoted, in each day's plot title


@dataclass(frozen=True)
class DayResult:
    """One (ticker, day): its metrics and its step log."""

    metrics: dict[str, Any]
    steps: pd.DataFrame


def quote_run(
    ticks: Ticks,
    setup: QuoteSetup,
    *,
    A: float | None = None,
    k: float | None = None,
    offset: int | None = None,
) -> tuple[Replay, Grid, ASParams, QuoteParams]:
    """The closed-form quotes run closed-loop with the tape rule: (replay, grid, market, params).

    ``A`` / ``k`` replace the estimates; ``offset`` replaces the closed-form quotes by the fixed
    symmetric quote ``offset`` ticks behind each best quote (the same at every inventory).
    """
    grid = decision_grid(ticks, round(setup.dt * 1e9))
    trades = step_trades(ticks, grid, setup.tick, setup.lot)
    market = estimate_market(grid, trades, setup.tick, setup.lot, setup.dt, setup.fit_ticks)
    if A is not None or k is not None:
        market = replace(market, A=A or market.A, k=k or market.k)
    slope = setup.skew_ticks * setup.tick  # Gueant's slope sqrt(phi_rate e / (k A)) per lot
    phi = slope**2 * market.k * market.A / math.e * setup.dt
    params = QuoteParams(
        offsets=(0.0,), tick=setup.tick, max_inventory=setup.max_inventory, phi=phi
    )
    bid_all, ask_all = as_quote_prices(grid, market, params)
    if setup.quotes is not None:
        bid_all, ask_all = setup.quotes(ticks, grid)
    if offset is not None:
        bid_all = np.repeat((grid.bid - offset * setup.tick)[:, None], params.n_states, 1)
        ask_all = np.repeat((grid.ask + offset * setup.tick)[:, None], params.n_states, 1)
    replay = closed_loop(
        grid, trades, bid_all, ask_all, params, setup.lot, book_cross=setup.book_cross
    )
    return replay, grid, market, params


def action_kinds(bid_posted: np.ndarray, ask_posted: np.ndarray) -> np.ndarray:
    """Each step's action as one of :data:`ACTIONS` (what was posted)."""
    return np.select(
        [bid_posted & ask_posted, bid_posted, ask_posted], list(ACTIONS[:3]), ACTIONS[3]
    )


def day_result(
    ticker: str,
    day: date,
    *,
    ts: np.ndarray,
    best_bid: np.ndarray,
    best_ask: np.ndarray,
    bid_quote: np.ndarray,
    ask_quote: np.ndarray,
    bid_fill: np.ndarray,
    ask_fill: np.ndarray,
    inventory: np.ndarray,
    spread: np.ndarray,
    mtm: np.ndarray,
    fee: np.ndarray | None = None,
    terminal: np.ndarray | None = None,
    max_inventory: int,
    periods: float,
    lot: float,
    size: Mapping[str, Any],
    probabilities: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> DayResult:
    """One (ticker, day)'s metrics and step log from its per-step arrays ``[L]``, whoever
    chose the quotes (the closed form here, a trained checkpoint in
    :mod:`hmarl.backtest.quote_run`): the one place the files' columns are defined.

    ``bid_quote`` / ``ask_quote``: our prices, NaN where not posted; ``size``: the day's size
    (``Steps``, ``Traded notional [quote]`` at least; the liquidity buckets rank the latter);
    ``probabilities``: the policy's mean probability of each of :data:`ACTIONS` in percent
    (None: a deterministic policy, the share of steps); ``extra``: further metrics.
    """
    zeros = np.zeros(len(ts))
    fee = zeros if fee is None else fee
    terminal = zeros if terminal is None else terminal
    bid_posted, ask_posted = np.isfinite(bid_quote), np.isfinite(ask_quote)
    q = np.asarray(inventory, dtype=np.float64)
    stats = quote_stats(
        inventory=q,
        bid_fill=bid_fill,
        ask_fill=ask_fill,
        bid_posted=bid_posted,
        ask_posted=ask_posted,
        spread=spread,
        fee=fee,
        mtm=mtm,
        terminal=terminal,
        max_inventory=max_inventory,
        periods=periods,
    )
    step_pnl = spread - fee + mtm - terminal
    action = action_kinds(bid_posted, ask_posted)
    if probabilities is None:
        probabilities = {a: 100.0 * float((action == a).mean()) for a in ACTIONS}
    metrics: dict[str, Any] = {
        "ticker": ticker,
        "day": str(day),
        **size,
        **stats,
        "PnL [quote]": stats["PnL [price x lots]"] * lot,
        "Step PnL mean [price x lots]": float(step_pnl.mean()) if len(step_pnl) else 0.0,
        "Final inventory [lots]": float(q[-1]) if len(q) else 0.0,
        **(extra or {}),
        **{f"Action {a} [#]": int((action == a).sum()) for a in ACTIONS},
        **{f"Mean probability of {a} [%]": float(probabilities[a]) for a in ACTIONS},
    }
    steps = pd.DataFrame(
        {
            "ts": pd.to_datetime(np.asarray(ts, dtype=np.int64), utc=True),
            "best_bid": best_bid,
            "best_ask": best_ask,
            "mid": (np.asarray(best_bid) + np.asarray(best_ask)) / 2.0,
            "bid_quote": bid_quote,
            "ask_quote": ask_quote,
            "bid_fill": np.asarray(bid_fill, dtype=bool),
            "ask_fill": np.asarray(ask_fill, dtype=bool),
            "action": action,
            "inventory": q,
            "step_pnl": step_pnl,
            "cum_pnl": np.cumsum(step_pnl),
        }
    )
    return DayResult(metrics=metrics, steps=steps)


def evaluate_day(ticks: Ticks, ticker: str, day: date, setup: QuoteSetup) -> DayResult:
    """The closed-form quotes on one day's ticks: metrics and step log (module docstring)."""
    replay, grid, market, params = quote_run(ticks, setup)
    mid = np.append(grid.mid, grid.mid_end)
    q = replay.inventory().astype(np.float64)
    bid_edge = np.where(replay.bid_fill, grid.mid - replay.bid_px, 0.0)
    ask_edge = np.where(replay.ask_fill, replay.ask_px - grid.mid, 0.0)
    trades = ticks.trades
    size = {
        "Steps [#]": grid.steps,
        "Book updates [#]": len(ticks.quotes),
        "Trades [#]": len(trades),
        "Traded notional [quote]": float((trades["price"] * trades["qty"]).sum()),
    }
    return day_result(
        ticker,
        day,
        ts=grid.edges[:-1],
        best_bid=grid.bid,
        best_ask=grid.ask,
        bid_quote=replay.bid_px,
        ask_quote=replay.ask_px,
        bid_fill=replay.bid_fill,
        ask_fill=replay.ask_fill,
        inventory=q,
        spread=bid_edge + ask_edge,
        mtm=q * np.diff(mid),
        max_inventory=params.max_inventory,
        periods=365 * 86_400 / setup.dt,
        lot=setup.lot,
        size=size,
        extra={"sigma [price/sqrt(s)]": market.sigma, "A [1/s]": market.A, "k [1/price]": market.k},
    )


def liquidity_buckets(notional: pd.Series) -> pd.Series:
    """``low`` / ``mid`` / ``high``: terciles of traded notional (fewer with fewer rows)."""
    n = min(len(LIQUIDITY), len(notional))
    if n == 0:
        return pd.Series([], dtype=object)
    labels = {1: ["mid"], 2: ["low", "high"], 3: list(LIQUIDITY)}[n]
    ranks = notional.rank(method="first")
    return pd.qcut(ranks, q=n, labels=labels).astype(str)


def aggregate(daily: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per ``by`` group: ``Days [#]``, PnL and fills summed, the other numbers averaged."""
    numeric = daily.select_dtypes("number")
    grouped = numeric.groupby(daily[by], sort=True)
    out = grouped.mean()
    summed = [c for c in _SUMMED if c in numeric]
    out[summed] = grouped[summed].sum()
    out.insert(0, "Days [#]", grouped.size())
    return out


def write_days(
    results: Mapping[tuple[str, date], DayResult],
    out: Path,
    *,
    plots: bool = True,
    what: str = "closed-form quotes",
) -> pd.DataFrame:
    """Write every (ticker, day)'s files and the daily and aggregate tables of the module
    docstring under ``out``; return ``daily_metrics`` (one row per ticker-day). ``what``
    names the quotes in each figure's title."""
    rows = []
    for (ticker, day), result in sorted(results.items()):
        folder = out / ticker / f"{day:%Y-%m-%d}"
        write_json(folder / "metrics.json", result.metrics)
        write_csv(folder / "steps.csv", result.steps, index=False)
        if plots:
            title = f"{ticker} {day}: {what} on the tape rule (no market impact)"
            write_png(folder / "day.png", quote_day_figure(result.steps, title))
        rows.append(result.metrics)
    daily = pd.DataFrame(rows)
    daily.insert(2, "liquidity", liquidity_buckets(daily["Traded notional [quote]"]).to_numpy())
    write_csv(out / "daily_metrics.csv", daily, index=False)
    write_csv(out / "aggregated_by_ticker.csv", aggregate(daily, "ticker"))
    write_csv(out / "aggregated_by_liquidity.csv", aggregate(daily, "liquidity"))
    return daily


def evaluate_days(
    days: Mapping[tuple[str, date], Ticks], out: Path, setup: QuoteSetup, *, plots: bool = True
) -> pd.DataFrame:
    """Evaluate every (ticker, day), write the files of the module docstring under ``out`` and
    return ``daily_metrics`` (one row per ticker-day)."""
    results = {
        (ticker, day): evaluate_day(ticks, ticker, day, setup)
        for (ticker, day), ticks in sorted(days.items())
    }
    return write_days(results, out, plots=plots, what=setup.label)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The scripts' shared options of :class:`QuoteSetup` (``setup_from_arguments`` reads them)."""
    group = parser.add_argument_group("quoting")
    default = QuoteSetup()
    group.add_argument("--dt", type=float, default=default.dt, help="decision step, seconds")
    group.add_argument("--tick", type=float, default=default.tick, help="price tick")
    group.add_argument("--lot", type=float, default=default.lot, help="quote size, base units")
    group.add_argument("--max-inventory", type=int, default=default.max_inventory, help="lots")
    group.add_argument(
        "--skew-ticks", type=float, default=default.skew_ticks, help="quote skew per lot held"
    )
    group.add_argument(
        "--fit-ticks", type=int, default=default.fit_ticks, help="deepest offset of the A, k fit"
    )
    group.add_argument(
        "--book-cross",
        action="store_true",
        help="our rule also fills a quote the opposite best quote reaches (not the default)",
    )


def setup_from_arguments(args: argparse.Namespace) -> QuoteSetup:
    return QuoteSetup(
        dt=args.dt,
        tick=args.tick,
        lot=args.lot,
        max_inventory=args.max_inventory,
        skew_ticks=args.skew_ticks,
        fit_ticks=args.fit_ticks,
        book_cross=args.book_cross,
    )
