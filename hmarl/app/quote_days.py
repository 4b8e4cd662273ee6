"""The page's per-day quoting demo, as plain functions: tick days to choose, a quoting
checkpoint run on them day by day, and the tables and files it wrote.

Why: the user's earlier tool let them pick tickers and days, run the market maker and read
each day's metrics and plots beside tables by day, ticker and liquidity. Here the run is
:func:`hmarl.backtest.tape_days.evaluate_days` (the per-day evaluator, called as a library)
with the checkpoint's greedy quotes (:mod:`hmarl.backtest.checkpoint_quotes`), and the
closed-form quotes on the same days beside it. The page (:mod:`hmarl.app.page`, tab *Quote
per day*) only lays this out; tests call these functions directly.

**Where days come from**: the bundled capture's folder (``shared/data`` beside the checkout)
and a folder of the user's (``--ticks DIR`` after ``--`` or ``HMARL_APP_TICKS``), each holding
any of: websocket captures (``*_ws.gz``, split into UTC days), the tick downloader's cache
(``<SYMBOL>/<YYYY-MM-DD>/quotes.parquet`` and ``trades.parquet``) and generic pairs
``<TICKER>_quotes.csv`` + ``<TICKER>_trades.csv`` (:func:`hmarl.sources.book.read_generic`, rows
checked). A file that cannot be read is listed as a problem, not a crash.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hmarl.app.backend import PageError, fetch_checkpoint
from hmarl.io import write_csv
from hmarl.sources.ticks import Ticks

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TICKS_ENV = "HMARL_APP_TICKS"  # the user's tick folder (set by hmarl.app.__main__ --ticks)
BUNDLED = Path(__file__).resolve().parents[3] / "shared" / "data"  # the bundled capture's folder
AGENT, CLOSED_FORM = "agent", "closed_form"  # the run's two sub-folders
SHOWN = ["ticker", "day", "liquidity", "Steps [#]", "PnL [quote]", "PnL [price x lots]",
         "Fills bid [#]", "Fills ask [#]", "Inventory |mean| [lots]", "Time at limits [%]",
         "Max. Drawdown [price x lots]"]  # fmt: skip
TABLES = {  # file -> what it holds (each a download button on the page)
    "daily_metrics.csv": "one row per ticker-day",
    "aggregated_by_day.csv": "per day, over the tickers",
    "aggregated_by_ticker.csv": "per ticker, over the days",
    "aggregated_by_liquidity.csv": "per liquidity bucket (terciles of traded notional)",
}


@dataclass(frozen=True)
class TickDay:
    """One (ticker, UTC day) a tick file offers."""

    ticker: str
    day: date
    path: str  # the capture, the cache folder, or the quotes CSV
    kind: str  # capture | cache | csv

    @property
    def label(self) -> str:
        return f"{self.ticker} {self.day} ({self.kind}: {Path(self.path).name})"


def tick_folders(extra: str | None = None) -> list[Path]:
    """The bundled capture's folder and the user's (the argument, else ``HMARL_APP_TICKS``)."""
    folders = [BUNDLED]
    chosen = extra if extra is not None else os.environ.get(TICKS_ENV, "")
    if chosen.strip():
        folders.append(Path(chosen.strip()).expanduser())
    return folders


@lru_cache(maxsize=16)
def _capture_days(path: str, mtime: float) -> dict[date, Ticks]:
    """A capture's ticks per UTC day, read once per file version (reading takes ~1 s)."""
    from hmarl.sources.book import split_days
    from hmarl.sources.ticks import read_ws_capture

    return split_days(read_ws_capture(path))


def _generic(quotes: Path) -> Ticks:
    from hmarl.sources.book import Repairs, read_generic

    trades = quotes.with_name(quotes.name.replace("_quotes.", "_trades."))
    return read_generic(quotes, trades, Repairs())


def list_days(folders: Iterable[Path]) -> tuple[list[TickDay], list[str]]:
    """Every (ticker, day) the folders offer, and one line per file that could not be read."""
    from hmarl.sources.book import capture_ticker, split_days

    days: list[TickDay] = []
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            problems.append(f"{folder}: no such folder")
            continue
        for path in sorted(folder.glob("*_ws.gz")):
            try:
                for day in _capture_days(str(path), path.stat().st_mtime):
                    days.append(TickDay(capture_ticker(path), day, str(path), "capture"))
            except (ValueError, OSError, EOFError) as exc:
                problems.append(f"{path}: {exc}")
        for quotes in sorted(folder.glob("*/*/quotes.parquet")):
            try:
                day = date.fromisoformat(quotes.parent.name)
            except ValueError:
                continue
            days.append(TickDay(quotes.parent.parent.name.upper(), day, str(folder), "cache"))
        for quotes in sorted(folder.glob("*_quotes.csv")):
            try:
                for day in split_days(_generic(quotes)):
                    ticker = quotes.name[: -len("_quotes.csv")]
                    days.append(TickDay(ticker, day, str(quotes), "csv"))
            except (ValueError, OSError) as exc:
                problems.append(f"{quotes}: {exc}")
    return days, problems


def load_ticks(
    chosen: Sequence[TickDay], session: str | None = None, max_gap: float = 5.0
) -> dict[tuple[str, date], Ticks]:
    """The ticks of each chosen (ticker, day), cut to the UTC ``session`` (``13:00-20:50``),
    each day's book checked as a quoting tape is (crossed quotes, negative sizes, times out
    of order, a quote gap over ``max_gap`` seconds: refused naming the day and the row)."""
    from hmarl.data.ticks_synthetic import check_top_of_book
    from hmarl.sources.book import load_day, session_filter, split_days

    if not chosen:
        raise PageError("choose at least one ticker and day")
    out: dict[tuple[str, date], Ticks] = {}
    for d in chosen:
        try:
            if d.kind == "capture":
                path = Path(d.path)
                ticks = _capture_days(d.path, path.stat().st_mtime)[d.day]
            elif d.kind == "cache":
                ticks = load_day(Path(d.path), d.ticker, d.day)
            else:
                ticks = split_days(_generic(Path(d.path)))[d.day]
            if session:
                ticks = session_filter(ticks, session)
            if ticks.quotes.empty:
                raise PageError(f"{d.label}: no quotes in the session {session}; widen it")
            q = ticks.quotes
            check_top_of_book(
                *(q[c].to_numpy() for c in ("ts", "bid_price", "ask_price", "bid_qty", "ask_qty")),
                max_gap_ns=round(max_gap * 1e9),
                where=d.label,
            )
        except (ValueError, OSError, KeyError) as exc:
            raise PageError(str(exc) if d.label in str(exc) else f"{d.label}: {exc}") from exc
        out[(d.ticker, d.day)] = ticks
    return out


@dataclass(frozen=True)
class DaysResult:
    """What a per-day run wrote (``out``) and its tables."""

    out: Path
    daily: pd.DataFrame  # the checkpoint's daily_metrics
    by_day: pd.DataFrame
    by_ticker: pd.DataFrame
    by_liquidity: pd.DataFrame
    versus: pd.DataFrame  # per ticker-day: the checkpoint's PnL and fills beside the closed form


def run_days(
    client: MlflowClient,
    run_id: str,
    checkpoint: str,
    chosen: Sequence[TickDay],
    out_root: Path,
    *,
    session: str | None = None,
    closed_form: bool = True,
    tick: float | None = None,
    lot: float | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> DaysResult:
    """Run a quoting checkpoint on each chosen day (and the closed-form quotes beside it),
    writing ``tape_days``' files under a new folder of ``out_root``; ``step`` is told each
    stage and each day (the page's progress box). ``tick`` / ``lot`` replace the checkpoint's
    (an instrument quoted on another tick, or sized in other lots)."""
    from hmarl.agent.checkpoint import load_checkpoint
    from hmarl.backtest.checkpoint_quotes import policy_quotes, policy_setup
    from hmarl.backtest.tape_days import QuoteSetup, evaluate_days

    if not chosen:
        raise PageError("choose at least one ticker and day")
    step("fetching the checkpoint")
    out_root.mkdir(parents=True, exist_ok=True)
    local = fetch_checkpoint(client, run_id, checkpoint, out_root / "checkpoints" / run_id)
    ckpt = load_checkpoint(local)
    done = [0]

    def on_day(_: Ticks) -> None:
        done[0] += 1
        step(f"the checkpoint on day {done[0]} of {len(chosen)}")

    for name, value in (("tick", tick), ("lot", lot)):
        if value is not None and not value > 0:
            raise PageError(f"{name} must be > 0, got {value}; leave it empty for the checkpoint's")
    quotes, market = policy_quotes(ckpt, str(local), tick=tick, lot=lot, on_day=on_day)
    step(f"reading {len(chosen)} ticker-day(s)")
    days = load_ticks(chosen, session, market.max_gap)
    out = Path(tempfile.mkdtemp(prefix="days-", dir=out_root))
    setup = policy_setup(market, f"checkpoint {run_id[:8]} {checkpoint}", quotes=quotes)
    evaluate_days(days, out / AGENT, setup)
    if closed_form:
        step("the closed-form quotes on the same days (the baseline)")
        base = QuoteSetup(setup.dt, setup.tick, setup.lot, setup.max_inventory)
        evaluate_days(days, out / CLOSED_FORM, base)
    step("tables")
    return read_days(out, write=True)


def optional_number(text: str, name: str) -> float | None:
    """A number typed on the page, or None when left empty; anything else is a PageError."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError as exc:
        why = f"{name}: {text!r} is not a number; leave it empty for the default"
        raise PageError(why) from exc


def read_days(out: Path, write: bool = False) -> DaysResult:
    """The tables of a per-day run folder (``write``: also write ``aggregated_by_day.csv``)."""
    from hmarl.backtest.tape_days import aggregate

    folder = out / AGENT
    daily = pd.read_csv(folder / "daily_metrics.csv")
    by_day = aggregate(daily.assign(day=daily["day"].astype(str)), "day")
    if write:
        write_csv(folder / "aggregated_by_day.csv", by_day)
    versus = daily[["ticker", "day", "PnL [quote]", "Fills bid [#]", "Fills ask [#]"]]
    base_file = out / CLOSED_FORM / "daily_metrics.csv"
    if base_file.is_file():
        base = pd.read_csv(base_file)[["ticker", "day", "PnL [quote]", "Fills bid [#]",
                                       "Fills ask [#]"]]  # fmt: skip
        versus = versus.merge(base, on=["ticker", "day"], suffixes=(" checkpoint", " closed form"))
    return DaysResult(
        out,
        daily,
        by_day,
        pd.read_csv(folder / "aggregated_by_ticker.csv", index_col=0),
        pd.read_csv(folder / "aggregated_by_liquidity.csv", index_col=0),
        versus,
    )


def day_files(result: DaysResult, ticker: str, day: str) -> dict[str, Path]:
    """One ticker-day's files (metrics.json, steps.csv, day.png) that exist."""
    folder = result.out / AGENT / ticker / day
    names = ("metrics.json", "steps.csv", "day.png")
    return {n: folder / n for n in names if (folder / n).is_file()}


def day_metrics(result: DaysResult, ticker: str, day: str) -> pd.DataFrame:
    """One ticker-day's metrics as a two-column table (name, value as text)."""
    row = result.daily[(result.daily["ticker"] == ticker) & (result.daily["day"] == day)]
    if row.empty:
        raise PageError(f"no metrics for {ticker} {day} in {result.out}")
    series = row.iloc[0]
    text = [f"{v:.6g}" if isinstance(v, float) else str(v) for v in series.to_numpy()]
    return pd.DataFrame({"metric": series.index, "value": text})
