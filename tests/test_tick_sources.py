"""Real tick sources (hmarl/sources/book.py): Binance daily bookTicker / trades / aggTrades dumps
from a local mirror in the real formats, the generic CSV, row checks, repairs and sessions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_binance import FakeBinance, zip_csv
from helpers import load_script

from hmarl.data.candles import DataError
from hmarl.sources.book import (
    KINDS,
    Repairs,
    download_ticks,
    in_session,
    load_day,
    read_book_ticker,
    read_generic,
    session_filter,
    split_days,
    tick_file,
)

DAY0 = date(2024, 1, 2)
DAY1 = date(2024, 1, 3)


def _ms(day: date, seconds: float) -> int:
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000 + seconds * 1000)


def book_rows(day: date, seed: int, n: int = 40) -> list[list[object]]:
    """bookTicker rows: update_id, bid, bid qty, ask, ask qty, transaction ms, event ms."""
    rng = np.random.default_rng(seed)
    bid = 42_000 + np.cumsum(rng.integers(-2, 3, n)) * 0.1
    rows: list[list[object]] = []
    for i in range(n):
        t = _ms(day, 3600 * 13 + i * 900)  # 13:00 onwards, every 15 min
        spread = 0.1 * (1 + i % 2)
        rows.append(
            [1000 + i, round(bid[i], 1), 1.5 + i % 3, round(bid[i] + spread, 1), 2.0, t, t + 3]
        )
    return rows


def trade_rows(day: date, kind: str, n: int = 30) -> list[list[object]]:
    """trades (id, price, qty, quote_qty, time, is_buyer_maker) or aggTrades rows."""
    rows: list[list[object]] = []
    for i in range(n):
        t, price, qty, maker = (
            _ms(day, 3600 * 13 + i * 1100),
            42_000.0 + i,
            0.01 * (i + 1),
            i % 3 == 0,
        )
        flag = "true" if maker else "false"
        if kind == "trades":
            rows.append([i, price, qty, round(price * qty, 4), t, flag])
        else:
            rows.append([i, price, qty, 10 * i, 10 * i + 1, t, flag])
    return rows


def csv_text(kind: str, rows: list[list[object]], header: bool = True) -> str:
    lines = [",".join(KINDS[kind])] if header else []
    return "\n".join(lines + [",".join(str(v) for v in row) for row in rows]) + "\n"


def publish_day(
    fake: FakeBinance,
    base: str,
    symbol: str,
    day: date,
    rows: dict[str, list[list[object]]],
    header: bool = True,
) -> None:
    for kind, kind_rows in rows.items():
        remote = tick_file(symbol, kind, day, base_url=base)
        fake.publish(
            remote.url.removeprefix(base),
            remote.name,
            zip_csv(remote.name, csv_text(kind, kind_rows, header)),
        )


def test_download_caches_parquet_per_symbol_day_and_resumes(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    for seed, (symbol, day) in enumerate(
        [(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in (DAY0, DAY1)]
    ):
        rows = {"bookTicker": book_rows(day, seed), "aggTrades": trade_rows(day, "aggTrades")}
        publish_day(fake, base, symbol, day, rows, header=seed != 3)  # old dumps have no header
    files, report = download_ticks(
        ["BTCUSDT", "ethusdt"], DAY0, DAY1, tmp_path, base_url=base, progress=False, log=None
    )
    assert report.downloaded == 8 and [(f.symbol, f.day) for f in files] == [
        ("BTCUSDT", DAY0),
        ("BTCUSDT", DAY1),
        ("ETHUSDT", DAY0),
        ("ETHUSDT", DAY1),
    ]
    ticks = load_day(tmp_path, "ETHUSDT", DAY1)  # the headerless one
    expected = book_rows(DAY1, 3)
    assert len(ticks.quotes) == 40 and ticks.quotes["bid_price"].tolist() == [
        r[1] for r in expected
    ]
    assert ticks.quotes["ts"].iloc[0] == expected[0][5] * 1_000_000  # transaction_time, in ns
    assert ticks.quotes["ask_qty"].tolist() == [2.0] * 40
    assert ticks.trades["is_buy"].tolist() == [i % 3 != 0 for i in range(30)]  # maker = seller hit
    assert ticks.trades["qty"].iloc[4] == pytest.approx(0.05)
    requests = sum(fake.requests.values())
    again, report = download_ticks(
        ["BTCUSDT", "ETHUSDT"], DAY0, DAY1, tmp_path, base_url=base, progress=False, log=None
    )
    assert report.downloaded == 0 and sum(fake.requests.values()) == requests  # no request at all
    assert [f.n_quotes for f in again] == [40] * 4


def test_trades_layout_and_cli(
    server: tuple[FakeBinance, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, base = server
    publish_day(
        fake,
        base,
        "BTCUSDT",
        DAY0,
        {"bookTicker": book_rows(DAY0, 0), "trades": trade_rows(DAY0, "trades")},
    )
    cli = load_script("download_ticks")
    argv = ["BTCUSDT", "2024-01-02", "2024-01-02", "--cache", str(tmp_path), "--base-url", base]
    assert cli.main([*argv, "--trades", "trades", "--no-progress"]) == 0
    trades = load_day(tmp_path, "BTCUSDT", DAY0).trades
    assert trades["price"].tolist() == [42_000.0 + i for i in range(30)]
    assert (
        cli.main(
            [
                "BTCUSDT",
                "2024-01-05",
                "2024-01-05",
                "--cache",
                str(tmp_path),
                "--base-url",
                base,
                "--no-progress",
            ]
        )
        == 1
    )
    assert "not found" in capsys.readouterr().err
    crossed = book_rows(DAY1, 1)
    crossed[6][1] = crossed[6][3] + 1.0  # bid above ask in data row 7
    publish_day(
        fake, base, "BTCUSDT", DAY1, {"bookTicker": crossed, "trades": trade_rows(DAY1, "trades")}
    )
    day1 = [
        "BTCUSDT",
        "2024-01-03",
        "2024-01-03",
        "--cache",
        str(tmp_path),
        "--base-url",
        base,
        "--trades",
        "trades",
        "--no-progress",
    ]
    assert cli.main(day1) == 2
    err = capsys.readouterr().err
    assert (
        "BTCUSDT-bookTicker-2024-01-03.zip: data row 7: crossed book" in err
        and "drop_crossed" in err
    )
    assert cli.main([*day1, "--drop-crossed"]) == 0
    assert len(load_day(tmp_path, "BTCUSDT", DAY1).quotes) == 39


def write_generic(
    tmp_path: Path, quotes: list[list[object]], trades: list[list[object]]
) -> tuple[Path, Path]:
    q, t = tmp_path / "quotes.csv", tmp_path / "trades.csv"
    pd.DataFrame(quotes, columns=["ts", "bid", "bid_qty", "ask", "ask_qty"]).to_csv(q, index=False)
    pd.DataFrame(trades, columns=["ts", "price", "qty", "side"]).to_csv(t, index=False)
    return q, t


GOOD_QUOTES = [
    ["2024-01-02 12:59:59", 100.0, 1.0, 100.1, 2.0],
    ["2024-01-02 13:00:00", 100.0, 1.0, 100.1, 2.0],
    ["2024-01-02 20:49:59", 100.1, 3.0, 100.2, 1.0],
    ["2024-01-02 20:50:00", 100.1, 3.0, 100.2, 1.0],
    ["2024-01-03 14:00:00", 100.2, 3.0, 100.3, 1.0],
]
GOOD_TRADES = [
    ["2024-01-02 13:30:00", 100.1, 0.5, "buy"],
    ["2024-01-03 14:00:01", 100.2, 0.1, "SELL"],
]


def test_generic_csv_sessions_and_days(tmp_path: Path) -> None:
    ticks = read_generic(*write_generic(tmp_path, GOOD_QUOTES, GOOD_TRADES))
    assert ticks.trades["is_buy"].tolist() == [True, False]
    inside = session_filter(ticks, "13:00-20:50")
    assert len(inside.quotes) == 3 and len(inside.trades) == 2  # 12:59:59 and 20:50:00 are out
    days = split_days(inside)
    assert (
        list(days) == [DAY0, DAY1] and len(days[DAY0].quotes) == 2 and len(days[DAY1].trades) == 1
    )
    ts = pd.to_datetime(
        ["2024-01-02 23:30", "2024-01-02 01:59", "2024-01-02 02:00"], utc=True
    ).as_unit("ns")
    assert in_session(ts.asi8, "22:00-02:00").tolist() == [True, True, False]
    with pytest.raises(ValueError, match="must look like 13:00-20:50"):
        in_session(ts.asi8, "13h-20h")


@pytest.mark.parametrize(
    ("row", "value", "message"),
    [
        (2, ("bid", 100.5), "quotes.csv: data row 3: crossed book (bid 100.5 above ask 100.2)"),
        (1, ("ask_qty", -1.0), "quotes.csv: data row 2: negative size"),
        (3, ("ts", "2024-01-02 13:00:01"), "quotes.csv: data row 4: time goes back"),
    ],
)
def test_bad_quote_rows_are_named(
    tmp_path: Path, row: int, value: tuple[str, object], message: str
) -> None:
    quotes = [list(r) for r in GOOD_QUOTES]
    column = ["ts", "bid", "bid_qty", "ask", "ask_qty"].index(value[0])
    quotes[row][column] = value[1]
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_generic(*write_generic(tmp_path, quotes, GOOD_TRADES))


def test_repairs_drop_crossed_and_sort(tmp_path: Path) -> None:
    quotes = [list(r) for r in GOOD_QUOTES]
    quotes[2][1] = 100.5  # crossed
    quotes[3][0] = "2024-01-02 13:00:01"  # time goes back
    logged: list[str] = []
    ticks = read_generic(
        *write_generic(tmp_path, quotes, GOOD_TRADES),
        Repairs(drop_crossed=True, sort=True),
        logged.append,
    )
    assert len(ticks.quotes) == 4 and (ticks.quotes["bid_price"] <= ticks.quotes["ask_price"]).all()
    assert ticks.quotes["ts"].is_monotonic_increasing
    assert any("dropped 1 crossed quotes of 5" in line for line in logged)
    bad_trades = [GOOD_TRADES[0], ["2024-01-02 13:40:00", 100.0, 0.0, "buy"]]
    with pytest.raises(DataError, match=r"trades.csv: data row 2: trade price or size <= 0"):
        read_generic(*write_generic(tmp_path, GOOD_QUOTES, bad_trades))
    with pytest.raises(DataError, match="data row 2: column side: 'hold' is not buy or sell"):
        read_generic(
            *write_generic(
                tmp_path, GOOD_QUOTES, [GOOD_TRADES[0], ["2024-01-02 13:40:00", 100.0, 1.0, "hold"]]
            )
        )


def test_bad_dump_rows_are_named(server: tuple[FakeBinance, str], tmp_path: Path) -> None:
    fake, base = server
    book, trades = book_rows(DAY0, 0), trade_rows(DAY0, "aggTrades")
    book[4][2] = "n/a"  # data row 5: a size that is no number
    trades[2][6] = "maybe"  # data row 3: is_buyer_maker neither true nor false
    publish_day(fake, base, "BTCUSDT", DAY0, {"bookTicker": book, "aggTrades": trades})

    def run(cache: Path) -> None:
        download_ticks(["BTCUSDT"], DAY0, DAY0, cache, base_url=base, progress=False, log=None)

    with pytest.raises(
        DataError,
        match=r"2024-01-02.zip: data row 5: column best_bid_qty: not a finite number \(nan\)",
    ):
        run(tmp_path / "1")
    book[4][2] = 1.5
    publish_day(fake, base, "BTCUSDT", DAY0, {"bookTicker": book})
    with pytest.raises(
        DataError,
        match=r"aggTrades-2024-01-02.zip: data row 3: column is_buyer_maker: "
        r"not true/false \('maybe'\)",
    ):
        run(tmp_path / "2")
    remote = tick_file("BTCUSDT", "aggTrades", DAY0, base_url=base)
    fake.publish(remote.url.removeprefix(base), remote.name, zip_csv(remote.name, "1,2,3\n"))
    with pytest.raises(DataError, match=r"expected the 7 aggTrades columns"):
        run(tmp_path / "3")


def test_microsecond_dumps_read_to_the_same_times(tmp_path: Path) -> None:
    """Binance's 2025+ spot dumps stamp in microseconds: the unit comes from the magnitude."""
    rows = book_rows(DAY0, 0, n=5)
    micro = [[*r[:5], r[5] * 1000, r[6] * 1000] for r in rows]
    paths = []
    for name, table in (("ms", rows), ("us", micro)):
        path = tmp_path / f"{name}-bookTicker-2024-01-02.zip"
        path.write_bytes(zip_csv(path.name, csv_text("bookTicker", table, header=False)))
        paths.append(path)
    ms, us = (read_book_ticker(p) for p in paths)
    pd.testing.assert_frame_equal(ms, us)
    assert ms["ts"].iloc[0] == rows[0][5] * 1_000_000
