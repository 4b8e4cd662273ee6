"""Per-day, per-ticker evaluation on ticks (hmarl/backtest/tape_days.py, scripts/eval_days.py)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_binance import FakeBinance, zip_csv
from helpers import load_script

from hmarl.backtest.tape_days import QuoteSetup, evaluate_days, liquidity_buckets, quote_run
from hmarl.sources.book import dump_csv, synthetic_ticks, tick_file

DAYS = (date(2024, 1, 2), date(2024, 1, 3))
CAPTURE = "binance_spot_btcusdt_20240809_ws.gz"
SETUP = QuoteSetup(dt=1.0, tick=0.01, lot=0.001, max_inventory=3)


def test_daily_files_and_aggregates(tmp_path: Path) -> None:
    days = {
        (ticker, day): synthetic_ticks(day, quotes=n, trades=n // 3, seed=i, session="13:00-14:00")
        for i, (ticker, n) in enumerate([("AAA", 3000), ("BBB", 1500)])
        for day in DAYS
    }
    daily = evaluate_days(days, tmp_path, SETUP)
    assert daily[["ticker", "day"]].values.tolist() == [
        ["AAA", "2024-01-02"], ["AAA", "2024-01-03"], ["BBB", "2024-01-02"], ["BBB", "2024-01-03"]
    ]  # fmt: skip
    # BBB trades half as much: the low bucket; ranks break the tie inside a ticker.
    assert daily["liquidity"].tolist()[2:] == ["low", "low"] and set(daily["liquidity"]) == {
        "low", "mid", "high"
    }  # fmt: skip
    for (ticker, day), ticks in days.items():
        folder = tmp_path / ticker / f"{day:%Y-%m-%d}"
        metrics = json.loads((folder / "metrics.json").read_text())
        steps = pd.read_csv(folder / "steps.csv")
        assert (folder / "day.png").read_bytes()[:4] == b"\x89PNG"
        replay, grid, _, _ = quote_run(ticks, SETUP)
        # the step log adds up to the engine's PnL: spread captured plus mark-to-market
        assert steps["cum_pnl"].iloc[-1] * SETUP.lot == pytest.approx(
            replay.pnl(grid.mid_end, SETUP.lot)
        )
        assert metrics["PnL [quote]"] == pytest.approx(replay.pnl(grid.mid_end, SETUP.lot))
        assert metrics["Fills bid [#]"] == steps["bid_fill"].sum() > 0
        assert steps["inventory"].abs().max() <= SETUP.max_inventory
        shares = [
            metrics[f"Mean probability of {a} [%]"]
            for a in ("both", "bid only", "ask only", "none")
        ]
        assert sum(shares) == pytest.approx(100.0)
        assert metrics["Action both [#]"] + metrics["Action bid only [#]"] + metrics[
            "Action ask only [#]"
        ] == len(steps)
    by_ticker = pd.read_csv(tmp_path / "aggregated_by_ticker.csv", index_col=0)
    assert by_ticker["Days [#]"].tolist() == [2, 2]
    assert by_ticker.loc["AAA", "PnL [quote]"] == pytest.approx(daily["PnL [quote]"][:2].sum())
    assert by_ticker.loc["BBB", "Book updates [#]"] == 1500  # averaged, not summed
    by_liquidity = pd.read_csv(tmp_path / "aggregated_by_liquidity.csv", index_col=0)
    assert by_liquidity["Days [#]"].sum() == 4


def test_liquidity_buckets_with_few_days() -> None:
    assert liquidity_buckets(pd.Series([5.0])).tolist() == ["mid"]
    assert liquidity_buckets(pd.Series([5.0, 1.0])).tolist() == ["high", "low"]
    assert (
        liquidity_buckets(pd.Series(np.arange(6.0))).tolist()
        == ["low"] * 2 + ["mid"] * 2 + ["high"] * 2
    )


def test_cli_on_generic_csv_with_a_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks = synthetic_ticks(DAYS[0], quotes=2000, trades=600, seed=3, session="12:30-13:30")
    quotes = ticks.quotes.rename(columns={"bid_price": "bid", "ask_price": "ask"})
    trades = ticks.trades.assign(side=np.where(ticks.trades["is_buy"], "buy", "sell")).drop(
        columns="is_buy"
    )
    quotes.to_csv(tmp_path / "q.csv", index=False)
    trades.to_csv(tmp_path / "t.csv", index=False)
    cli = load_script("eval_days")
    argv = [
        "--quotes",
        str(tmp_path / "q.csv"),
        "--trades",
        str(tmp_path / "t.csv"),
        "--ticker",
        "XYZ",
    ]
    assert (
        cli.main([*argv, "--session", "13:00-20:50", "--no-plots", "--out", str(tmp_path / "out")])
        == 0
    )
    steps = pd.read_csv(tmp_path / "out" / "XYZ" / "2024-01-02" / "steps.csv")
    assert steps["ts"].iloc[0] >= "2024-01-02 13:00" and steps["ts"].iloc[-1] < "2024-01-02 13:30"
    quotes.loc[5, "ask"] = quotes.loc[5, "bid"] - 0.05
    quotes.to_csv(tmp_path / "q.csv", index=False)
    assert cli.main([*argv, "--no-plots", "--out", str(tmp_path / "bad")]) == 2
    assert "q.csv: data row 6: crossed book" in capsys.readouterr().err
    assert cli.main([*argv, "--drop-crossed", "--no-plots", "--out", str(tmp_path / "fixed")]) == 0


def test_pipeline_from_a_mirror(server: tuple[FakeBinance, str], tmp_path: Path) -> None:
    """download -> verify -> Parquet cache -> per-day evaluation -> aggregates, two tickers."""
    fake, base = server
    for i, ticker in enumerate(("AAAUSDT", "BBBUSDT")):
        ticks = synthetic_ticks(
            DAYS[0], quotes=2000, trades=700 * (i + 1), seed=i, session="13:00-14:00"
        )
        for kind, text in dump_csv(ticks).items():
            remote = tick_file(ticker, kind, DAYS[0], base_url=base)
            fake.publish(remote.url.removeprefix(base), remote.name, zip_csv(remote.name, text))
    cache = tmp_path / "cache"
    download = ["AAAUSDT", "BBBUSDT", "2024-01-02", "2024-01-02", "--cache", str(cache)]
    assert load_script("download_ticks").main([*download, "--base-url", base, "--no-progress"]) == 0
    argv = ["--cache", str(cache), "--symbols", "AAAUSDT", "BBBUSDT", "--days", "2024-01-02"]
    assert (
        load_script("eval_days").main(
            [*argv, "--session", "13:00-13:30", "--no-plots", "--out", str(tmp_path / "out")]
        )
        == 0
    )
    daily = pd.read_csv(tmp_path / "out" / "daily_metrics.csv")
    assert daily["ticker"].tolist() == ["AAAUSDT", "BBBUSDT"]
    assert daily["liquidity"].tolist() == ["low", "high"]  # BBB trades twice as often
    assert (daily["Steps [#]"] <= 1800).all() and (daily["Fills bid [#]"] > 0).all()


@pytest.mark.realdata
def test_bundled_capture_matches_the_documented_figures(shared_data: Path, tmp_path: Path) -> None:
    """docs/market_making_ticks.md: the closed-form quotes on the capture, dt 1 s."""
    assert (
        load_script("eval_days").main(
            ["--capture", str(shared_data / CAPTURE), "--no-plots", "--out", str(tmp_path)]
        )
        == 0
    )
    row = pd.read_csv(tmp_path / "daily_metrics.csv").iloc[0]
    assert (row["ticker"], row["Book updates [#]"], row["Steps [#]"]) == ("BTCUSDT", 45134, 303)
    assert (row["Fills bid [#]"], row["Fills ask [#]"]) == (25, 22)
    assert row["PnL [quote]"] == pytest.approx(-0.116375, abs=1e-9)
