"""Cross-check our tape fill rule against hftbacktest: the same quote stream on the same ticks.

    python scripts/hft_check.py                                   # the bundled capture
    python scripts/hft_check.py --cache data/ticks --symbols BTCUSDT --days 2024-01-02 \
        2024-01-03 --session 13:00-20:50 --tick 0.1 --lot 0.001
    python scripts/hft_check.py --quotes quotes.csv --trades trades.csv --dt 0.5
    python scripts/hft_check.py --checkpoint runs/capture/checkpoints/best.pt   # a trained agent

Per ticker and day: the Avellaneda-Stoikov closed-form quotes (sigma, A, k estimated on that
day's ticks, or given; ``--offset N``: a fixed quote N ticks behind each best; ``--checkpoint``:
a quoting checkpoint trained on real ticks, its greedy quotes from its own features, with its
``dt``, tick, lot and inventory limit, hmarl/backtest/checkpoint_quotes.py) are run closed-
loop with our tape rule (hmarl/market/tape_replay.py) at a decision step ``--dt``; the stream
actually posted is then replayed through hftbacktest (zero latency, no partial fills, each
queue model of ``--queue``). Printed per day and engine: fills per side, PnL (cash plus the
final inventory at the final mid, quote currency, no fees), final inventory, and the difference
from our rule (absolute and percent). A row "ours, book_cross on" scores the same stream with
that reading of our rule. ``--out`` writes the table as CSV. Needs the ``[hft]`` extra
(docs/market_making_ticks.md says how to install it).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.backtest.checkpoint_quotes import checkpoint_market, checkpoint_quotes
from hmarl.backtest.tape_days import add_setup_arguments, quote_run, setup_from_arguments
from hmarl.io import write_csv
from hmarl.market.tape_replay import (
    Grid,
    Replay,
    closed_loop,
    decision_grid,
    explain_differences,
    replay_stream,
    step_trades,
)
from hmarl.sources.book import add_source_arguments, days_from_arguments
from hmarl.sources.ticks import Ticks

CAPTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "binance_spot_btcusdt_20240809_ws.gz"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_source_arguments(parser)
    add_setup_arguments(parser)
    parser.add_argument(
        "--offset",
        type=int,
        default=None,
        help="instead of the closed-form quotes: both sides this many ticks behind the best",
    )
    parser.add_argument("--A", type=float, default=None, help="arrival rate at the mid, 1/s")
    parser.add_argument("--k", type=float, default=None, help="decay per price unit")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a data=ticks quoting checkpoint's quotes"
    )
    parser.add_argument("--queue", nargs="+", default=["risk_adverse", "power_prob"])
    parser.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    return parser.parse_args(argv)


def row(
    ticker: str,
    day: date,
    engine: str,
    replay: Replay,
    mid_end: float,
    lot: float,
    ours: dict[str, float] | None,
) -> dict[str, object]:
    out: dict[str, object] = {
        "ticker": ticker,
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


def checkpoint_run(ticks: Ticks, args: argparse.Namespace) -> tuple[Replay, Grid, str]:
    """The checkpoint's greedy quotes run closed-loop with our tape rule on these ticks."""
    grid = decision_grid(ticks, round(args.dt * 1e9))
    trades = step_trades(ticks, grid, args.tick, args.lot)
    source = str(args.checkpoint)
    bid_all, ask_all, params = checkpoint_quotes(args.ckpt, ticks, grid, source)
    replay = closed_loop(
        grid, trades, bid_all, ask_all, params, args.lot, book_cross=args.book_cross
    )
    quoted = int(np.isfinite(bid_all[:, params.start]).sum())
    what = (
        f"checkpoint {source}: offsets {list(params.offsets)} ticks, Q {params.max_inventory} "
        f"lots; flat-inventory bid quoted on {quoted} steps"
    )
    return replay, grid, what


def check_day(
    ticker: str, day: date, ticks: Ticks, args: argparse.Namespace
) -> list[dict[str, object]]:
    """The closed-loop stream with our rule, and its replay through hftbacktest."""
    from hmarl.market.hft_replay import hft_events, hft_replay

    if args.checkpoint is not None:
        ours, grid, what = checkpoint_run(ticks, args)
    else:
        setup = setup_from_arguments(args)
        ours, grid, market, params = quote_run(ticks, setup, A=args.A, k=args.k, offset=args.offset)
        what = (
            f"sigma {market.sigma:.4g}/sqrt(s), A {market.A:.4g}/s, k {market.k:.4g}/price, "
            f"phi {params.phi:.3g}"
        )
    ties = int(np.isin(ticks.trades["ts"].to_numpy(np.int64), grid.edges).sum())
    print(
        f"{ticker} {day}: {len(ticks.quotes)} quotes, {len(ticks.trades)} trades, "
        f"{grid.steps} steps of {args.dt:g} s; {what}; {ties} trades stamped exactly at a "
        "decision time"
    )
    label = "ours (tape rule + book_cross)" if args.book_cross else "ours (tape rule)"
    rows = [row(ticker, day, label, ours, grid.mid_end, args.lot, None)]
    base = {
        k: float(v)
        for k, v in rows[0].items()
        if k in ("bid_fills", "ask_fills", "pnl", "final_inventory_lots")
    }
    # The other reading of our rule on the same stream, open loop like hftbacktest's replay.
    variant = replay_stream(
        ticks, grid, ours.bid_px, ours.ask_px, args.tick, args.lot, book_cross=not args.book_cross
    )
    other = "ours, book_cross off" if args.book_cross else "ours, book_cross on"
    rows.append(row(ticker, day, other, variant, grid.mid_end, args.lot, base))
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
        rows.append(row(ticker, day, f"hftbacktest {queue}", replay, grid.mid_end, args.lot, base))
        lots = info["hft_position"] / args.lot
        print(
            f"  hftbacktest {queue}: {time.perf_counter() - started:.1f} s; its own position "
            f"{lots:+.3f} lots (ours from its fills {rows[-1]['final_inventory_lots']:+d}), "
            f"{int(info['hft_steps'])} of {grid.steps} steps replayed"
        )
        why = explain_differences(ticks, grid, ours, replay, args.tick, args.lot)
        print(f"  side-steps filled by one engine only, by reason: {why or 'none'}")
        why = explain_differences(ticks, grid, variant, replay, args.tick, args.lot)
        print(f"  ... against '{other}': {why or 'none'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import hftbacktest  # noqa: F401
    except ImportError:
        print(
            "error: hftbacktest is not installed: pip install -e '.[hft]' "
            "(see docs/market_making_ticks.md)",
            file=sys.stderr,
        )
        return 2
    try:
        if args.checkpoint is not None:
            args.ckpt = load_checkpoint(args.checkpoint)
            market = checkpoint_market(args.ckpt, str(args.checkpoint))
            args.dt, args.tick, args.lot = market.dt, market.params.tick, market.lot
            print(
                "the checkpoint's settings replace --dt, --tick, --lot: "
                f"dt {args.dt:g} s, tick {args.tick:g}, lot {args.lot:g}"
            )
        days = days_from_arguments(args, CAPTURE)
        rows = [r for (ticker, day), t in days.items() for r in check_day(ticker, day, t, args)]
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
