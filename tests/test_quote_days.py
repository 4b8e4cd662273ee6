"""A quoting checkpoint per day and per ticker (issues 24 and 25): the Hydra backtest's day
files and aggregates (hmarl/backtest/quote_days.py through tape_days.py), its fee multipliers
and stochastic seeds, and training over several days and tickers (``data=ticks
data.paths=[...]``: one tape per (ticker, day), episodes drawn across them, validation pooled)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_binance import FakeBinance
from helpers import compose_config, load_script
from test_quote_task import run_main
from test_quote_ticks_task import TICKS_TINY, TINY

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.agent.quote_rollout import follow
from hmarl.backtest.__main__ import main as backtest_main
from hmarl.backtest.checkpoint_quotes import checkpoint_quotes
from hmarl.backtest.quote_run import checkpoint_config, scaled_costs
from hmarl.backtest.tape_days import ACTIONS
from hmarl.config import ConfigError
from hmarl.io import write_parquet
from hmarl.market.quoting import action_levels
from hmarl.market.tape_replay import closed_loop, decision_grid, step_trades
from hmarl.sources.book import load_day, synthetic_ticks
from hmarl.sources.ticks import Ticks, read_ws_capture
from hmarl.train import quote_tape as qt
from hmarl.train.__main__ import main as train_main
from hmarl.train.quote_tape import TapeQuoteMarket
from hmarl.train.quote_task import quote_market, quote_policy_from_checkpoint

DAYS = (date(2024, 1, 2), date(2024, 1, 3))


def train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> Path:
    """A tiny training run through ``python -m hmarl.train``; its best.pt."""
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    assert run_main(train_main, monkeypatch, *overrides, f"hydra.run.dir={run}") == 0
    return run / "checkpoints" / "best.pt"


def test_backtest_days_fee_multipliers_and_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The synthetic tick market: the agent's day folder, daily and aggregate tables agree
    with stats.json; each fee multiplier's objective is the same quotes settled at the scaled
    maker fee and liquidation cost; seeds=K gives K sampled runs."""
    best = train(tmp_path, monkeypatch, *TICKS_TINY, "trainer.episodes=2", "quote.maker_fee=0.001")
    out = tmp_path / "bt"
    args = (f"checkpoint={best}", f"out={out}", "tracking=none", "seeds=3")
    assert run_main(backtest_main, monkeypatch, *args, "fee_multipliers=[1,0,2.5]") == 0
    doc = json.loads((out / "stats.json").read_text())
    folder = out / "days" / "SYNTHETIC" / "2024-01-01"  # the generator's clock starts there
    metrics = json.loads((folder / "metrics.json").read_text())
    steps = pd.read_csv(folder / "steps.csv")
    assert (folder / "day.png").read_bytes()[:4] == b"\x89PNG"
    agent = doc["stats"]["agent"]
    for key in ("PnL [price x lots]", "Fills bid [#]", "Fills ask [#]", "Fees [price x lots]"):
        assert metrics[key] == pytest.approx(agent[key])
    assert len(steps) == doc["meta"]["episodes"] * 20 == metrics["Steps [#]"]
    assert steps["cum_pnl"].iloc[-1] == pytest.approx(agent["PnL [price x lots]"])
    shares = [metrics[f"Mean probability of {a} [%]"] for a in ACTIONS]
    assert sum(shares) == pytest.approx(100.0) and all(0 <= s <= 100 for s in shares)
    counts = sum(metrics[f"Action {a} [#]"] for a in ACTIONS)
    assert counts == len(steps)
    fixed = doc["stats"]["best_fixed"]["PnL [price x lots]"]
    assert metrics["PnL of best_fixed [price x lots]"] == pytest.approx(fixed)
    daily = pd.read_csv(out / "days" / "daily_metrics.csv")
    assert daily[["ticker", "day", "liquidity"]].values.tolist() == [
        ["SYNTHETIC", "2024-01-01", "mid"]
    ]
    by_ticker = pd.read_csv(out / "days" / "aggregated_by_ticker.csv", index_col=0)
    assert by_ticker.loc["SYNTHETIC", "PnL [price x lots]"] == pytest.approx(
        agent["PnL [price x lots]"]
    )
    assert (out / "days" / "aggregated_by_liquidity.csv").is_file()

    # fee multipliers: the agent's quotes settled with the scaled costs, baselines re-chosen
    costs = pd.read_csv(out / "cost_sensitivity.csv")
    assert costs["fee_multiplier"].unique().tolist() == [1.0, 0.0, 2.5]
    at = costs.set_index(["fee_multiplier", "policy"])["Objective [price x lots]"]
    assert at[(1.0, "agent")] == pytest.approx(doc["objectives"]["agent"])
    ckpt = load_checkpoint(best)
    market = quote_market(
        compose_config(*TICKS_TINY, "trainer.episodes=2", "quote.maker_fee=0.001")
    )
    assert isinstance(market, TapeQuoteMarket)
    policy = quote_policy_from_checkpoint(ckpt)
    test = market.eval_batch("test")
    choice = qt.greedy_choice(policy, test, market.params)
    for m in (0.0, 2.5):
        scaled = scaled_costs(market.params, m)
        assert scaled.maker_fee == pytest.approx(0.001 * m)
        assert scaled.liquidation_cost == pytest.approx(market.params.liquidation_cost * m)
        assert at[(m, "agent")] == pytest.approx(qt.score(scaled, test, choice))
        assert at[(m, "no_quote")] == 0.0
    fills = follow(market.params, test, choice)[2]
    traded = float((fills.bid_fill + fills.ask_fill).sum()) + float(fills.terminal.abs().sum())
    assert traded > 0 and at[(2.5, "agent")] < at[(1.0, "agent")] < at[(0.0, "agent")]

    # seeds: K sampled runs, their mean and std, a row each
    seeds = pd.read_csv(out / "seeds.csv")
    assert seeds["seed"].tolist() == [0, 1, 2]
    assert doc["seeds"]["mean"] == pytest.approx(seeds["Objective [price x lots]"].mean())
    assert doc["seeds"]["std"] == pytest.approx(seeds["Objective [price x lots]"].std())


def cache_days(root: Path) -> None:
    """Two tickers x two days of synthetic top-of-book ticks in download_ticks' cache layout
    (BBB trades twice as much: the liquid one)."""
    for i, ticker in enumerate(("AAAUSDT", "BBBUSDT")):
        for j, day in enumerate(DAYS):
            ticks = synthetic_ticks(
                day, quotes=2400, trades=600 * (i + 1), seed=10 * i + j, session="13:00-13:10"
            )
            folder = root / ticker / f"{day:%Y-%m-%d}"
            write_parquet(folder / "quotes.parquet", ticks.quotes)
            write_parquet(folder / "trades.parquet", ticks.trades)


MANY = (
    *TINY,
    "data=ticks",
    "data.ticks.dt=1",
    "data.ticks.episode_steps=20",
    "quote.tick=0.01",
)


def test_many_days_and_tickers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.paths=[<glob>]: one tape per (ticker, day), never joined; training episodes come
    from every tape; validation pooled over them; the backtest per day and per ticker."""
    cache = tmp_path / "cache"
    cache_days(cache)
    paths = f"data.paths=[{cache}/*/*]"
    cfg = compose_config(*MANY, paths, "trainer.episodes=2", "trainer.n_envs=64")
    market = quote_market(cfg)
    assert isinstance(market, TapeQuoteMarket)
    names = [p.name for p in market.parts]
    assert names == [f"{t} {d}" for t in ("AAAUSDT", "BBBUSDT") for d in DAYS]
    for p in market.parts:  # each its own ten-minute day, cut 60 / 20 / 20 in time
        tapes = (p.market.train, p.market.validation, p.market.test)
        assert 590 <= sum(len(t.bid) for t in tapes) <= 600
        stamps = np.concatenate([t.ts for t in tapes])
        assert (np.diff(stamps) == 1_000_000_000).all()  # one day's grid, nothing joined
        assert str(pd.Timestamp(stamps[0], tz="UTC").date()) == p.name.split(" ")[1]
    val = market.eval_batch("val")
    per_part = [p.data.validation.batch for p in market.parts]
    assert val.dmid.shape[0] == sum(b.dmid.shape[0] for b in per_part)
    # episodes drawn from every tape, in proportion to their train starts (equal here)
    batch = market.train_batch(0)
    origin = []
    for r in batch.dmid.numpy():
        found = [
            i
            for i, p in enumerate(market.parts)
            if any(
                np.allclose(r, p.data.train.dmid[s : s + 20])
                for s in range(p.data.train.warmup, len(p.data.train.dmid) - 19)
            )
        ]
        assert found, "an episode that is no tape's"
        origin.append(found[0])
    assert set(origin) == {0, 1, 2, 3}
    # the baselines and selection pool the validation episodes of every tape
    fixed = market.baselines()["best_fixed"]
    level = market.best_fixed_level()
    pooled = np.concatenate(
        [
            follow(market.params, b, qt.fixed_choice(market.params, b, level))[2]
            .reward.sum(1)
            .numpy()
            for b in per_part
        ]
    )
    assert fixed == pytest.approx(pooled.mean())

    best = train(tmp_path, monkeypatch, *MANY, paths, "trainer.episodes=2")
    ckpt = load_checkpoint(best)
    assert ckpt["data_splits"]["test"][1] == sum(len(p.data.test.starts) for p in market.parts)
    out = tmp_path / "bt"
    args = (f"checkpoint={best}", f"out={out}", "tracking=none", "plots=false")
    assert run_main(backtest_main, monkeypatch, *args, "fee_multipliers=[1]") == 0
    doc = json.loads((out / "stats.json").read_text())
    assert doc["meta"]["tapes"] == {n: len(market.parts[0].data.test.starts) for n in names}
    daily = pd.read_csv(out / "days" / "daily_metrics.csv")
    assert daily[["ticker", "day"]].values.tolist() == [
        [t, f"{d}"] for t in ("AAAUSDT", "BBBUSDT") for d in DAYS
    ]
    notional = daily.set_index("ticker")["Traded notional [quote]"]
    assert notional.loc["BBBUSDT"].min() > notional.loc["AAAUSDT"].max() > 0  # twice the trades
    assert sorted(daily["liquidity"].iloc[:2]) == ["low", "low"]  # terciles of 4 ranks
    assert sorted(daily["liquidity"].iloc[2:]) == ["high", "mid"]
    per_day = doc["quote_stats_per_day"]["agent"]
    assert sorted(per_day) == sorted(f"{t} {d}" for t in ("AAAUSDT", "BBBUSDT") for d in DAYS)
    total = sum(v["PnL [price x lots]"] for v in per_day.values())
    assert total == pytest.approx(doc["stats"]["agent"]["PnL [price x lots]"])
    assert daily["PnL [price x lots]"].sum() == pytest.approx(total)
    by_ticker = pd.read_csv(out / "days" / "aggregated_by_ticker.csv", index_col=0)
    assert by_ticker["Days [#]"].tolist() == [2, 2]
    steps = pd.read_csv(out / "steps.csv")
    assert steps["tape"].unique().tolist() == names
    assert steps.groupby("path")["reward"].sum().mean() == pytest.approx(doc["objectives"]["agent"])


def test_many_days_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A glob matching nothing, or one day too short for the windows, is refused by name
    before training (exit 2)."""
    cache = tmp_path / "cache"
    cache_days(cache)
    nothing = f"{tmp_path}/nowhere/*"
    with pytest.raises(ConfigError, match=rf"data\.paths: '{re.escape(nothing)}' matches no file"):
        quote_market(compose_config(*MANY, f"data.paths=[{nothing}]"))
    with pytest.raises(ConfigError, match=r"data\.ticks\.session: session '25:00-26:00'"):
        compose_config(*MANY, f"data.paths=[{cache}/*/*]", "data.ticks.session=25:00-26:00")
    zips = tmp_path / "zips"
    zips.mkdir()
    (zips / "AAAUSDT-bookTicker-2024-01-02.zip").write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"AAAUSDT-bookTicker-2024-01-02\.zip is a dump zip"):
        quote_market(compose_config(*MANY, f"data.paths=[{zips}/*]"))
    short = synthetic_ticks(DAYS[0], quotes=300, trades=50, seed=3, session="13:00-13:01")
    folder = cache / "CCCUSDT" / "2024-01-02"
    write_parquet(folder / "quotes.parquet", short.quotes)
    write_parquet(folder / "trades.parquet", short.trades)
    with pytest.raises(
        ConfigError, match=r"CCCUSDT 2024-01-02: the validation tape .*data\.ticks\.dt"
    ):
        quote_market(compose_config(*MANY, f"data.paths=[{cache}/*/*]"))
    monkeypatch.chdir(tmp_path)
    code = run_main(train_main, monkeypatch, *MANY, f"data.paths=[{nothing}]")
    assert code == 2
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))


def write_capture(path: Path, ticks: Ticks, symbol: str) -> None:
    """``ticks`` as a websocket capture (``<ns> <json>`` lines, bookTicker and trade streams)."""
    stream = symbol.lower()
    lines = [
        (r.ts, 0, {"stream": f"{stream}@bookTicker", "data": {"s": symbol, "b": str(r.bid_price),
         "B": str(r.bid_qty), "a": str(r.ask_price), "A": str(r.ask_qty)}})
        for r in ticks.quotes.itertuples()
    ] + [
        (r.ts, 1, {"stream": f"{stream}@trade", "data": {"e": "trade", "s": symbol,
         "p": str(r.price), "q": str(r.qty), "m": not r.is_buy}})
        for r in ticks.trades.itertuples()
    ]  # fmt: skip
    text = "".join(f"{ts} {json.dumps(msg)}\n" for ts, _, msg in sorted(lines, key=lambda x: x[:2]))
    path.write_bytes(gzip.compress(text.encode()))


def test_pipeline_from_a_mirror_to_the_report(
    server: tuple[FakeBinance, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's pipeline, tiny: a capture -> scripts/tick_mirror.py (real-format zips and
    checksums; a shifted day and a synthetic ticker, both marked generated) -> served on
    127.0.0.1 -> scripts/download_ticks.py (verified) -> Parquet cache -> train over the
    days and tickers -> per-day backtest -> aggregates and report.html."""
    capture = tmp_path / "binance_spot_aaausdt_20240102_ws.gz"
    ticks = synthetic_ticks(DAYS[0], quotes=3000, trades=600, seed=5, session="13:00-13:10")
    write_capture(capture, ticks, "AAAUSDT")
    mirror = tmp_path / "mirror"
    argv = ["--out", str(mirror), "--capture", str(capture), "--shifted-days", "1"]
    assert load_script("tick_mirror").main([*argv, "--synthetic", "BBBUSDT"]) == 0
    provenance = (mirror / "MIRROR.md").read_text()
    assert "| AAAUSDT | 2024-01-02 | real rows of the capture" in provenance
    assert "| AAAUSDT | 2024-01-03 | GENERATED: the capture shifted 1 d" in provenance
    assert provenance.count("GENERATED: synthetic_ticks") == 2
    fake, base = server
    for f in mirror.rglob("*.zip*"):
        fake.bodies["/" + f.relative_to(mirror).as_posix()] = [f.read_bytes()]
    cache = tmp_path / "cache"
    download = ["AAAUSDT", "BBBUSDT", "2024-01-02", "2024-01-03", "--cache", str(cache)]
    assert load_script("download_ticks").main([*download, "--base-url", base, "--no-progress"]) == 0
    assert sum(path.endswith(".CHECKSUM") for path in fake.requests) == 8  # every zip verified
    cached = load_day(cache, "AAAUSDT", DAYS[0])  # the capture's rows, stamps to the ms
    assert np.allclose(cached.quotes["ask_price"], ticks.quotes["ask_price"], rtol=0, atol=1e-8)
    assert np.array_equal(cached.quotes["ts"], ticks.quotes["ts"] // 1_000_000 * 1_000_000)
    assert np.array_equal(cached.trades["is_buy"], ticks.trades["is_buy"])

    best = train(
        tmp_path, monkeypatch, *MANY, f"data.paths=[{cache}/*USDT/*]", "trainer.episodes=2"
    )
    out = tmp_path / "bt"
    args = (f"checkpoint={best}", f"out={out}", "tracking=none", "fee_multipliers=[1]")
    assert run_main(backtest_main, monkeypatch, *args) == 0
    daily = pd.read_csv(out / "days" / "daily_metrics.csv")
    assert daily[["ticker", "day"]].values.tolist() == [
        [t, f"{d}"] for t in ("AAAUSDT", "BBBUSDT") for d in DAYS
    ]
    assert (out / "days" / "AAAUSDT" / "2024-01-03" / "day.png").is_file()
    by_liquidity = pd.read_csv(out / "days" / "aggregated_by_liquidity.csv", index_col=0)
    assert by_liquidity["Days [#]"].sum() == 4
    assert "Quoting backtest" in (out / "report.html").read_text()


def test_a_checkpoint_quote_stream_on_raw_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/hft_check.py --checkpoint: the checkpoint's greedy quotes rebuilt from raw
    ticks are, price for price, the quotes its backtest plays on the test tape (in every
    inventory state); none in the feature warm-up; the closed loop keeps the limits."""
    capture = tmp_path / "binance_spot_aaausdt_20240102_ws.gz"
    ticks = synthetic_ticks(DAYS[0], quotes=3000, trades=900, seed=7, session="13:00-13:10")
    write_capture(capture, ticks, "AAAUSDT")
    best = train(tmp_path, monkeypatch, *MANY, f"data.path={capture}", "trainer.episodes=2")
    ckpt = load_checkpoint(best)
    raw = read_ws_capture(capture)
    grid = decision_grid(raw, 1_000_000_000)
    bid_all, ask_all, params = checkpoint_quotes(ckpt, raw, grid, "best.pt")
    assert np.isnan(bid_all[:15]).all() and np.isnan(ask_all[:15]).all()  # window 16
    market = quote_market(checkpoint_config(ckpt))
    assert isinstance(market, TapeQuoteMarket)
    test = market.data.test
    choice = qt.greedy_choice(quote_policy_from_checkpoint(ckpt), test.batch, params).numpy()
    first = len(market.tape.train.bid) + len(market.tape.validation.bid)  # test tape's row 0
    rows = first + test.starts[:, None] + np.arange(market.tape.episode_steps)  # [B, L]
    bid_lv, ask_lv = action_levels(params)
    offsets = np.concatenate([[np.nan], params.offsets])
    expect_bid = grid.bid[rows][None] - offsets[bid_lv[choice]] * params.tick  # [S, B, L]
    expect_ask = grid.ask[rows][None] + offsets[ask_lv[choice]] * params.tick
    got_bid, got_ask = bid_all[rows].transpose(2, 0, 1), ask_all[rows].transpose(2, 0, 1)
    assert np.allclose(got_bid, expect_bid, equal_nan=True)
    assert np.allclose(got_ask, expect_ask, equal_nan=True)
    assert np.isfinite(got_bid).any() or np.isfinite(got_ask).any()
    trades = step_trades(raw, grid, params.tick, 0.001)
    replay = closed_loop(grid, trades, bid_all, ask_all, params, 0.001)
    assert np.abs(replay.inventory()).max() <= params.max_inventory
    coarse = decision_grid(raw, 2_000_000_000)  # not the checkpoint's dt: refused, not misread
    with pytest.raises(ValueError, match=r"best\.pt: the tape has .* dt must be the checkpoint"):
        checkpoint_quotes(ckpt, raw, coarse, "best.pt")
    with pytest.raises(ValueError, match=r"trade\.pt is a trading checkpoint"):
        checkpoint_quotes({**ckpt, "task": "trade"}, raw, grid, "trade.pt")


def test_hft_check_replays_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/hft_check.py --checkpoint (in the [hft] environment): our row is the closed
    loop of the checkpoint's quotes, and hftbacktest replays the same stream."""
    if importlib.util.find_spec("hftbacktest") is None:
        pytest.skip("hftbacktest is not installed: the [hft] extra (docs/market_making_ticks.md)")
    capture = tmp_path / "binance_spot_aaausdt_20240102_ws.gz"
    ticks = synthetic_ticks(DAYS[0], quotes=3000, trades=900, seed=7, session="13:00-13:10")
    write_capture(capture, ticks, "AAAUSDT")
    best = train(tmp_path, monkeypatch, *MANY, f"data.path={capture}", "trainer.episodes=2")
    out = tmp_path / "check.csv"
    argv = ["--capture", str(capture), "--checkpoint", str(best), "--out", str(out)]
    assert load_script("hft_check").main(argv) == 0
    table = pd.read_csv(out).set_index("engine")
    raw = read_ws_capture(capture)
    grid = decision_grid(raw, 1_000_000_000)  # the checkpoint's dt, not --dt's default
    bid_all, ask_all, params = checkpoint_quotes(load_checkpoint(best), raw, grid, "best.pt")
    ours = closed_loop(grid, step_trades(raw, grid, 0.01, 0.001), bid_all, ask_all, params, 0.001)
    row = table.loc["ours (tape rule)"]
    assert (row["bid_fills"], row["ask_fills"]) == (ours.bid_fill.sum(), ours.ask_fill.sum())
    assert row["pnl"] == pytest.approx(ours.pnl(grid.mid_end, 0.001))
    assert {"hftbacktest risk_adverse", "hftbacktest power_prob"} <= set(table.index)
