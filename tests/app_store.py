"""A small MLflow store for the page's tests: tiny training runs tracked to sqlite under tmp."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers import compose_config, tiny_overrides


@dataclass
class Store:
    root: Path
    uri: str
    run_id: str  # logged checkpoints
    bare_run_id: str | None  # trained with tracking.log_checkpoints=false


def make_store(root: Path, with_bare_run: bool = False) -> Store:
    """Train a 2-episode run (and optionally one that logs no checkpoints) into root/mlflow.db."""
    from hmarl.train.trainer import train

    common = ("trainer.episodes=2", "trainer.eval_every=1")
    cfg = compose_config(*tiny_overrides(root, *common, tracking=True))
    run = train(cfg, root / "run", progress=False)
    assert run.run_id
    bare_id = None
    if with_bare_run:
        bare_cfg = compose_config(
            *tiny_overrides(root, *common, "tracking.log_checkpoints=false", tracking=True)
        )
        bare_id = train(bare_cfg, root / "bare", progress=False).run_id
    return Store(root, cfg.tracking.uri, run.run_id, bare_id)


# ----------------------------------------------------------------------------- quoting


QUOTE_TINY = (
    "+experiment=mm_asym_1_10",
    "data=ticks_synthetic",
    "data.ticks_synthetic.train_steps=600",
    "data.ticks_synthetic.val_steps=300",
    "data.ticks_synthetic.test_steps=300",
    "data.ticks_synthetic.episode_steps=20",
    "features.macro_window=16",
    "features.micro_window=4",
    "trainer.n_envs=4",
    "trainer.episodes=2",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=2",
    "threads=1",
)
DAY_SESSION = "13:00-13:05"  # 300 one-second steps a day: the tiny checkpoint's dt


@dataclass
class QuoteStore:
    root: Path
    uri: str
    run_id: str  # a quoting run (task=quote) on the synthetic tick market, with checkpoints
    ticks: Path  # a tick folder in the downloader's cache layout: 2 tickers, days below
    days: tuple[tuple[str, str], ...]  # its good (ticker, day)s
    bad: tuple[str, str]  # a (ticker, day) whose book crosses at data row 3


_QUOTE_STORES: dict[str, QuoteStore] = {}  # one per test process (module fixtures share it)


def make_quote_store(root: Path, uri: str | None = None, backtest: bool = True) -> QuoteStore:
    """A 2-episode quoting run on the synthetic tick market (experiment ``quoting``, in
    ``uri``'s store or a new one under ``root``), its test backtest (``backtest``), and a tick
    folder of tiny synthetic days (made once per test process and store)."""
    uri = uri or f"sqlite:///{root}/mlflow.db"
    if uri in _QUOTE_STORES:
        return _QUOTE_STORES[uri]
    import datetime as dt

    from hmarl.backtest.run import backtest as run_backtest
    from hmarl.config import BacktestConfig
    from hmarl.sources.book import synthetic_ticks
    from hmarl.train.quote_task import train_quote_task

    cfg = compose_config(*QUOTE_TINY, f"tracking.uri={uri}", "tracking.experiment=quoting")
    run = train_quote_task(cfg, root / "quote", progress=False)
    assert run.run_id and run.best_checkpoint is not None
    if backtest:
        bt = BacktestConfig(checkpoint=str(run.best_checkpoint), tracking=cfg.tracking, plots=False)
        run_backtest(bt, root / "quote-backtest")
    ticks = root / "ticks"
    days = (("AAA", "2024-01-02"), ("AAA", "2024-01-03"), ("BBB", "2024-01-02"))
    for i, (ticker, day) in enumerate((*days, ("BAD", "2024-01-02"))):
        one = synthetic_ticks(
            dt.date.fromisoformat(day), quotes=900, trades=300, seed=i, session=DAY_SESSION
        )
        if ticker == "BAD":
            one.quotes.loc[2, "bid_price"] = one.quotes.loc[2, "ask_price"] + 0.05
        folder = ticks / ticker / day
        folder.mkdir(parents=True)
        one.quotes.to_parquet(folder / "quotes.parquet")
        one.trades.to_parquet(folder / "trades.parquet")
    store = QuoteStore(root, uri, run.run_id, ticks, days, ("BAD", "2024-01-02"))
    _QUOTE_STORES[uri] = store
    return store
