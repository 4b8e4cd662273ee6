"""Cross-check our tape fill rule against hftbacktest: the same quote stream on the same ticks.

    python scripts/hft_check.py                                   # the bundled capture
    python scripts/hft_check.py --cache data/ticks --symbol BTCUSDT --days 2024-01-02 2024-01-03 \
        --session 13:00-20:50 --tick 0.1 --lot 0.001
    python scripts/hft_check.py --quotes quotes.csv --trades trades.csv --dt 0.5

Per day: the Avellaneda-Stoikov closed-form quotes (sigma, A, k estimated on that day's ticks,
or given) are run closed-loop with our tape rule (hmarl/market/tape_replay.py) at a decision
step ``--dt``; the stream actually posted is then replayed through hftbacktest (zero latency,
no partial fills, each queue model of ``--queue``). Printed per day and engine: fills per
side, PnL (cash plus the final inventory at the final mid, quote currency, no fees), final
inventory, and the difference from our rule (absolute and percent). ``--out`` writes the table
as CSV. Needs the ``[hft]`` extra (docs/market_making.md says how to install it).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from hmarl.io import write_csv
from hmarl.market.avellaneda import ASParams
from hmarl.market.quoting import QuoteParams
from hmarl.market.tape_replay import (
    Replay,
    as_quote_prices,
    closed_loop,
    decision_grid,
    estimate_market,
    explain_differences,
    step_trades,
)
from hmarl.sources.book import Repairs, load_day, read_generic, session_filter, split_days
from hmarl.sources.ticks import Ticks, read_ws_capture

CAPTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "binance_spot_btcusdt_20240809_ws.gz"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_argument_group("ticks (one source; default: the bundled capture)")
    source.add_argument("--capture", type=Path, default=None, help="websocket capture (.gz)")
    source.add_argument("--cache", type=Path, default=None, help="scripts/download_ticks.py cache")
    source.add_argument("--symbol", default="BTCUSDT")
    source.add_argument("--days", nargs="*", type=date.fromisoformat, default=[])
    source.add_argument("--quotes", type=Path, default=None, help="generic quotes CSV")
    source.add_argument("--trades", type=Path, default=None, help="generic trades CSV")
    source.add_argument("--drop-crossed", action="store_true", help="repair: drop crossed quotes")
    parser.add_argument("--session", default=None, help="UTC window, e.g. 13:00-20:50")
    parser.add_argument("--dt", type=float, default=1.0, help="decision step, seconds")
    parser.add_argument("--tick", type=float, default=0.01, help="price tick")
    parser.add_argument("--lot", type=float, default=0.001, help="quote size (base units)")
    parser.add_argument("--max-inventory", type=int, default=5, help="Q, lots")
    parser.add_argument("--skew-ticks", type=float, default=1.0, help="quote skew per lot held")
    parser.add_argument(
        "--offset",
        type=int,
        default=None,
        help="instead of the closed-form quotes: both sides this many ticks behind the best",
    )
    parser.add_argument("--fit-ticks", type=int, default=200, help="deepest offset fitted")
    parser.add_argument("--A", type=float, default=None, help="arrival rate at the mid, 1/s")
    parser.add_argument("--k", type=float, default=None, help="decay per price unit")
    parser.add_argument("--queue", nargs="+", default=["risk_adverse", "power_prob"])
    parser.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    return parser.parse_args(argv)


def load_days(args: argparse.Namespace) -> dict[date, Ticks]:
    """The ticks of each day, from the one source the arguments name."""
    repairs = Repairs(drop_crossed=args.drop_crossed)
    if args.cache is not None:
        if not args.days:
            raise ValueError("--cache needs --days")
        days = {day: load_day(args.cache, args.symbol, day) for day in args.days}
    elif args.quotes is not None or args.trades is not None:
        if args.quotes is None or args.trades is None:
            raise ValueError("give both --quotes and --trades")
        days = split_days(read_generic(args.quotes, args.trades, repairs))
    else:
        path = args.capture or CAPTURE
        if not path.is_file():
            raise ValueError(f"{path} is absent: pass --capture, --cache or --quotes/--trades")
        days = split_days(read_ws_capture(path))
    if args.session:
        days = {day: session_filter(ticks, args.session) for day, ticks in days.items()}
    return days


def row(
    day: date,
    engine: str,
    replay: Replay,
    mid_end: float,
    lot: float,
    ours: dict[str, float] | None,
) -> dict[str, object]:
    out: dict[str, object] = {
        "day": str(day),
        "engine": engine,
        "bid_fills": int(replay.bid_fill.sum()),
        "ask_fills": int(replay.ask_fill.sum()),
        "pnl": replay.pnl(mid_end, lot),
        "final_inventory_lots": int(replay.inventory()[-1]),
    }
    if ours is not None:
        for key in ("bid_fills", "ask_fills", "pnl"):
            diff = float(out[key]) - ours[key]  # type: ignore[arg-type]
            out[f"{key}_diff"] = diff
            out[f"{key}_diff_pct"] = 100 * diff / abs(ours[key]) if ours[key] else float("nan")
        out["final_inventory_diff"] = (
            int(out["final_inventory_lots"]) - ours["final_inventory_lots"]
        )  # type: ignore[call-overload]
    return out


def check_day(day: date, ticks: Ticks, args: argparse.Namespace) -> list[dict[str, object]]:
    """The closed-loop stream with our rule, and its replay through hftbacktest."""
    from hmarl.market.hft_replay import hft_events, hft_replay

    dt_ns = round(args.dt * 1e9)
    grid = decision_grid(ticks, dt_ns)
    trades = step_trades(ticks, grid, args.tick, args.lot)
    market = estimate_market(grid, trades, args.tick, args.lot, args.dt, args.fit_ticks)
    if args.A is not None or args.k is not None:
        market = ASParams(
            sigma=market.sigma,
            A=args.A or market.A,
            k=args.k or market.k,
            dt=args.dt,
            steps=grid.steps,
        )
    # phi from the skew: Gueant's slope sqrt(phi_rate e / (k A)) = skew ticks per lot.
    slope = args.skew_ticks * args.tick
    phi = slope**2 * market.k * market.A / np.e * args.dt
    params = QuoteParams(offsets=(0.0,), tick=args.tick, max_inventory=args.max_inventory, phi=phi)
    bid_all, ask_all = as_quote_prices(grid, market, params)
    if args.offset is not None:  # the fixed symmetric quote, the same at every inventory
        bid_all = np.repeat((grid.bid - args.offset * args.tick)[:, None], params.n_states, 1)
        ask_all = np.repeat((grid.ask + args.offset * args.tick)[:, None], params.n_states, 1)
    ours = closed_loop(grid, trades, bid_all, ask_all, params, args.lot)
    ties = int(np.isin(ticks.trades["ts"].to_numpy(np.int64), grid.edges).sum())
    print(
        f"{day}: {len(ticks.quotes)} quotes, {len(ticks.trades)} trades, {grid.steps} steps of "
        f"{args.dt:g} s; sigma {market.sigma:.4g}/sqrt(s), A {market.A:.4g}/s, "
        f"k {market.k:.4g}/price, phi {phi:.3g}; {ties} trades stamped exactly at a decision time"
    )
    rows = [row(day, "ours (tape rule)", ours, grid.mid_end, args.lot, None)]
    base = {
        k: float(v)
        for k, v in rows[0].items()
        if k in ("bid_fills", "ask_fills", "pnl", "final_inventory_lots")
    }
    events = hft_events(ticks, args.tick)
    for queue in args.queue:
        started = time.perf_counter()
        replay, info = hft_replay(
            ticks,
            grid,
            ours.bid_px,
            ours.ask_px,
            tick=args.tick,
            lot=args.lot,
            queue=queue,
            events=events,
        )
        rows.append(row(day, f"hftbacktest {queue}", replay, grid.mid_end, args.lot, base))
        lots = info["hft_position"] / args.lot
        print(
            f"  hftbacktest {queue}: {time.perf_counter() - started:.1f} s; its own position "
            f"{lots:+.3f} lots (ours from its fills {rows[-1]['final_inventory_lots']:+d}), "
            f"{int(info['hft_steps'])} of {grid.steps} steps replayed"
        )
        why = explain_differences(ticks, grid, ours, replay, args.tick, args.lot)
        print(f"  side-steps filled by one engine only, by reason: {why or 'none'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import hftbacktest  # noqa: F401
    except ImportError:
        print(
            "error: hftbacktest is not installed: pip install -e '.[hft]' "
            "(see docs/market_making.md)",
            file=sys.stderr,
        )
        return 2
    try:
        days = load_days(args)
        rows = [r for day, ticks in days.items() for r in check_day(day, ticks, args)]
    except ValueError as exc:  # includes DataError: a bad row, named
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = pd.DataFrame(rows)
    with pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format
    ):
        print(table.to_string(index=False))
    if args.out is not None:
        write_csv(args.out, table, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
