"""The backtest of a checkpoint trained on several markets (``data.paths``, hmarl.market.many).

Each market is backtested on its own, with its own scalers from the checkpoint, into
``<out>/<market>/`` (the whole single-market report: stats.json, steps.csv, report.html, ...).
Then the pooled record: every run (the policy and each baseline) of every market laid end to
end (:func:`hmarl.steps.end_to_end`, equity compounded across markets, as the training's
validation pooled them), its stats through the one :func:`~hmarl.stats.metrics.compute_stats`
and the policy's random-timing null, into ``<out>/pooled/``; and the tables by market and by
liquidity bucket (:mod:`hmarl.market.liquidity`: median daily traded value over the whole file),
``<out>/markets.csv`` and ``<out>/buckets.csv``.

Which markets: the checkpoint's own by default; ``data.paths`` (or ``data.path``) given, the
files named there, each matched by its name (file name without extension) to the market
whose scalers it needs. A name the checkpoint does not know is refused: its scaler would
have to be fitted on the backtest's own bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from hmarl.backtest.inputs import data_config_for
from hmarl.backtest.runs import STRATEGY, stats_of
from hmarl.config import BacktestConfig, BacktestError, DataConfig
from hmarl.io import staged_folder, write_csv, write_json
from hmarl.market.env import EnvParams
from hmarl.market.liquidity import aggregate, liquidity_bucket, median_daily_value
from hmarl.market.many import MARKETS_KEY, MarketsError, market_name, named_paths
from hmarl.market.market_data import load_market_candles
from hmarl.stats.metrics import Calendar, stats_table
from hmarl.stats.random_timing import RANDOM_TIMING_DEFINITION, random_timing, random_timing_stats
from hmarl.steps import end_to_end, market_returns

if TYPE_CHECKING:
    from hmarl.agent.checkpoint import Checkpoint
    from hmarl.backtest.report import BacktestResult

PERCENTILE = "Random-Timing Percentile [%]"
POOLED = "pooled"  # the folder of the pooled record, and its row in the tables


@dataclass
class MarketView:
    """One market of a many-market checkpoint, as a single-market backtest reads it."""

    name: str
    ckpt: Checkpoint  # the checkpoint with this market's scalers, fingerprint and splits
    data: DataConfig  # this market's file
    source: str


def market_views(ckpt: Checkpoint, data: DataConfig | None, source: str) -> list[MarketView]:
    """Each market to backtest, with the checkpoint seen as if trained on that market alone."""
    spec = dict(ckpt["feature_spec"])
    known = {m["name"]: m for m in spec.pop(MARKETS_KEY)}
    base = data_config_for(ckpt, data)
    try:
        if data is None:
            pairs = [(name, str(m["path"])) for name, m in known.items()]
        elif base.paths:
            pairs = named_paths(base.paths)
        elif base.path:
            pairs = [(market_name(base.path), base.path)]
        else:
            raise BacktestError("give data.paths=[...] (or data.path) of the checkpoint's markets")
    except MarketsError as exc:
        raise BacktestError(str(exc)) from exc
    views = []
    for name, path in pairs:
        if name not in known:
            raise BacktestError(
                f"market {name} ({path}) is not one this checkpoint was trained on "
                f"({sorted(known)}): its inputs need that market's own scalers; name the file "
                "as one of those markets, or backtest a checkpoint trained on it"
            )
        own = known[name]
        stored = dict(ckpt.get("config", {}))
        stored["data"] = {**dict(stored.get("data", {})), "path": path, "paths": []}
        view: dict[str, Any] = {
            **ckpt,
            "feature_spec": {**spec, "scalers": own["scalers"]},
            "data_fingerprint": own["fingerprint"],
            "data_splits": own["splits"],
            "config": stored,
        }
        views.append(
            MarketView(
                name,
                view,  # type: ignore[arg-type]  # the same keys, one market's values
                replace(base, path=path, paths=[]),
                f"{source} [{name}]",
            )
        )
    return views


def pooled_backtest(
    cfg: BacktestConfig,
    out: Path,
    results: Mapping[str, BacktestResult],
    views: Sequence[MarketView],
    source: str,
) -> BacktestResult:
    """The pooled record of the markets' backtests and the tables by market and bucket."""
    from hmarl.backtest.report import BacktestResult

    names = list(results)
    first = results[names[0]]
    common = [r for r in first.runs if all(r in results[n].runs for n in names)]
    runs = {r: end_to_end([results[n].runs[r] for n in names]) for r in common}
    calendar = Calendar(**asdict(cfg.calendar))
    stats = stats_of(runs, calendar, cfg.n_bootstrap, cfg.seed)
    null_stats: dict[str, Any] = {}
    if cfg.random_timing > 0:
        strategy = runs[STRATEGY]
        null = random_timing(
            strategy,
            market_returns(strategy),
            EnvParams(**first.meta["env"]),
            n=cfg.random_timing,
            seed=cfg.seed,
            calendar=calendar,
        )
        null_stats = random_timing_stats(null)
    table = stats_table({**stats, STRATEGY: {**stats[STRATEGY], **null_stats}})
    edge = first.meta.get("edge_found_in_training")
    meta = {
        "checkpoint": source,
        "markets": names,
        "split": cfg.split.value,
        "pooled": "each market's record laid end to end, equity compounded across markets",
        "edge_found_in_training": edge,
        "bars": len(runs[STRATEGY]),
    }
    doc: dict[str, Any] = {"meta": meta, "stats": stats}
    if null_stats:
        doc["random_timing"] = {"definition": RANDOM_TIMING_DEFINITION, **null_stats}
    per_market = market_rows(results, views, edge)
    files: list[Path] = []
    with staged_folder(out / POOLED, "out") as work:
        write_json(work / "stats.json", doc)
        write_csv(work / "stats.csv", table)
    files += [out / POOLED / "stats.json", out / POOLED / "stats.csv"]
    files.append(write_csv(out / "markets.csv", aggregate(per_market, "market", "markets")))
    files.append(write_csv(out / "buckets.csv", aggregate(per_market, "bucket", "markets")))
    _print(results, stats, null_stats, out)
    return BacktestResult(out, stats, table, runs[STRATEGY], meta, files, None, runs)


def market_rows(
    results: Mapping[str, BacktestResult], views: Sequence[MarketView], edge: bool | None
) -> pd.DataFrame:
    """One row per market: its liquidity bucket and each run's return (%) on its bars."""
    rows = []
    for view in views:
        result = results[view.name]
        candles = load_market_candles(view.data, log=None)
        value = median_daily_value(candles)
        row: dict[str, Any] = {
            "market": view.name,
            "bucket": liquidity_bucket(value),
            "median_daily_value": value,
            "edge_found": bool(edge),
        }
        for run, s in result.stats.items():
            row[f"{run} [%]"] = float(s["Return [%]"])
        row[PERCENTILE] = (
            float(cast(float, result.table.loc[PERCENTILE, STRATEGY]))
            if PERCENTILE in result.table.index
            else math.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _print(
    results: Mapping[str, BacktestResult],
    stats: Mapping[str, Mapping[str, Any]],
    null_stats: Mapping[str, Any],
    out: Path,
) -> None:
    lines = [
        f"{name}: strategy {r.stats[STRATEGY]['Return [%]']:+.2f}% "
        f"(buy & hold {r.stats.get('buy_and_hold', {}).get('Return [%]', np.nan):+.2f}%)"
        for name, r in results.items()
    ]
    pct = null_stats.get(PERCENTILE)
    lines.append(
        f"pooled ({len(results)} markets end to end): strategy "
        f"{stats[STRATEGY]['Return [%]']:+.2f}%"
        + (f", random-timing percentile {pct:.1f}" if pct is not None else "")
        + f"; reports per market in {out}/<market>/, pooled in {out / POOLED}/, "
        f"tables {out / 'markets.csv'} and {out / 'buckets.csv'}"
    )
    print("\n".join(lines))
