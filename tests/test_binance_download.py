"""The Binance kline downloader against a local HTTP server that mimics data.binance.vision.

The server holds zips in the real dump format (a headerless 12-column CSV inside a zip) and
their ``.CHECKSUM`` files, counts every request, and can serve a corrupt body, drop a
connection or answer 404, so resume, verification and error messages are tested without
the internet.
"""

from __future__ import annotations

import hashlib
import socket
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_binance import FakeBinance, zip_csv
from helpers import load_script

from hmarl.data.reading import load_candles
from hmarl.sources.binance import (
    ChecksumError,
    DownloadResult,
    NetworkError,
    NotFoundError,
    RemoteFile,
    candles_from_zips,
    download_klines,
    plan_files,
)

HOUR_MS = 3_600_000
TODAY = date(2024, 6, 1)
DAY = date(2024, 1, 5)


def kline_rows(first: pd.Timestamp, hours: int, seed: int) -> list[list[float]]:
    """Hourly klines in the 12-column dump layout (open_time ms first, close_time ms 7th)."""
    rng = np.random.default_rng(seed)
    close = 40_000 + np.cumsum(rng.normal(0, 50, hours))
    start_ms = int(first.value // 1_000_000)
    rows: list[list[float]] = []
    for i in range(hours):
        open_ms = start_ms + i * HOUR_MS
        o, c = round(close[i] - rng.normal(0, 20), 2), round(close[i], 2)
        h, low = round(max(o, c) + 5.5, 2), round(min(o, c) - 4.25, 2)
        vol = round(float(rng.uniform(1, 10)), 5)
        rows.append([open_ms, o, h, low, c, vol, open_ms + HOUR_MS - 1, 1.0, 7, 0.5, 0.5, 0])
    return rows


def kline_zip(name: str, rows: list[list[float]]) -> bytes:
    """A zip holding ``<name>.csv`` without header, as Binance publishes klines."""
    return zip_csv(name, "".join(",".join(str(value) for value in row) + "\n" for row in rows))


def publish(fake: FakeBinance, base: str, remote: RemoteFile, rows: list[list[float]]) -> bytes:
    """Put a zip and its CHECKSUM on the server; returns the zip bytes."""
    body = kline_zip(remote.name, rows)
    fake.publish(remote.url.removeprefix(base), remote.name, body)
    return body


def publish_plan(
    fake: FakeBinance, base: str, start: date, end: date
) -> tuple[list[RemoteFile], pd.DataFrame]:
    """Serve every file of the plan for [start, end]; return the plan and the expected candles."""
    plan = plan_files("BTCUSDT", "spot", "1h", start, end, today=TODAY, base_url=base)
    rows: list[list[float]] = []
    for seed, remote in enumerate(plan):
        stamp = remote.name.removesuffix(".zip").split("-1h-")[1]
        first = pd.Timestamp(stamp + ("-01" if remote.period == "monthly" else ""), tz="UTC")
        last = first + (
            pd.offsets.MonthBegin(1) if remote.period == "monthly" else pd.Timedelta("1D")
        )
        file_rows = kline_rows(first, int((last - first) / pd.Timedelta("1h")), seed)
        publish(fake, base, remote, file_rows)
        rows += file_rows
    table = np.array([row[:6] for row in rows], dtype=np.float64)
    expected = pd.DataFrame(
        table[:, 1:6],
        columns=["open", "high", "low", "close", "volume"],
        index=pd.DatetimeIndex(
            pd.to_datetime(table[:, 0].astype(np.int64), unit="ms", utc=True)
        ).as_unit("ns"),
    )
    expected.index.name = "timestamp"
    return plan, expected


def publish_day(fake: FakeBinance, base: str) -> tuple[RemoteFile, pd.DataFrame, str]:
    """Serve the one daily file of DAY: (its plan entry, its candles, its URL path)."""
    plan, expected = publish_plan(fake, base, DAY, DAY)
    return plan[0], expected, plan[0].url.removeprefix(base)


def assert_parquet(result: DownloadResult, expected: pd.DataFrame) -> None:
    """The Parquet written holds exactly the expected candles."""
    pd.testing.assert_frame_equal(pd.read_parquet(result.parquet), expected, check_freq=False)


def run(base: str, out_dir: Path, start: date, end: date) -> DownloadResult:
    return download_klines(
        "BTCUSDT",
        "1h",
        start,
        end,
        out_dir,
        base_url=base,
        today=TODAY,
        progress=False,
        log=lambda _msg: None,
    )


# --- plan ---------------------------------------------------------------------------------


def test_plan_uses_monthly_for_whole_months_and_daily_for_the_rest() -> None:
    plan = plan_files("BTCUSDT", "spot", "1h", date(2024, 1, 30), date(2024, 3, 2), today=TODAY)
    assert [(r.period, r.name) for r in plan] == [
        ("daily", "BTCUSDT-1h-2024-01-30.zip"),
        ("daily", "BTCUSDT-1h-2024-01-31.zip"),
        ("monthly", "BTCUSDT-1h-2024-02.zip"),
        ("daily", "BTCUSDT-1h-2024-03-01.zip"),
        ("daily", "BTCUSDT-1h-2024-03-02.zip"),
    ]
    assert plan[2].url == (
        "https://data.binance.vision/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip"
    )
    assert plan[0].checksum_url.endswith(
        "/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-30.zip.CHECKSUM"
    )


def test_plan_current_month_is_daily_and_futures_use_their_path() -> None:
    today = date(2024, 5, 21)
    plan = plan_files("ETHUSDT", "um", "5m", date(2024, 4, 1), date(2024, 5, 20), today=today)
    assert plan[0].url.endswith("/data/futures/um/monthly/klines/ETHUSDT/5m/ETHUSDT-5m-2024-04.zip")
    assert [r.period for r in plan[1:]] == ["daily"] * 20
    assert plan[-1].name == "ETHUSDT-5m-2024-05-20.zip"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("BTCUSDT", "spot", "1h", date(2024, 5, 1), date(2024, 6, 1)), "not published yet"),
        (("BTCUSDT", "spot", "1h", date(2024, 5, 2), date(2024, 5, 1)), "before start"),
        (("BTCUSDT", "cm", "1h", date(2024, 5, 1), date(2024, 5, 2)), "market 'cm'"),
        (("BTCUSDT", "spot", "7m", date(2024, 5, 1), date(2024, 5, 2)), "interval '7m'"),
        (("btc/usdt", "spot", "1h", date(2024, 5, 1), date(2024, 5, 2)), "symbol"),
    ],
)
def test_plan_rejects_bad_requests(args: tuple[str, str, str, date, date], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_files(*args, today=TODAY)


# --- download -----------------------------------------------------------------------------


def test_parquet_equals_the_zips_and_second_run_downloads_nothing(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    start, end = date(2024, 1, 31), date(2024, 3, 1)
    plan, expected = publish_plan(fake, base, start, end)
    result = run(base, tmp_path, start, end)

    frame = pd.read_parquet(result.parquet)
    pd.testing.assert_frame_equal(frame, expected, check_freq=False)
    loaded = load_candles(result.parquet, fmt="parquet")
    np.testing.assert_array_equal(loaded["close"].to_numpy(), expected["close"].to_numpy())
    assert result.downloaded == len(plan) == 3
    assert all(count == 1 for count in fake.requests.values())
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.tmp"))

    fake.requests.clear()
    again = run(base, tmp_path, start, end)
    assert sum(fake.requests.values()) == 0, "a verified zip must cost no request"
    assert (again.downloaded, again.present) == (0, 3)
    assert_parquet(again, expected)


def test_candles_are_clipped_to_the_requested_days(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    plan, expected = publish_plan(fake, base, date(2024, 2, 1), date(2024, 2, 29))
    run(base, tmp_path, date(2024, 2, 1), date(2024, 2, 29))
    frame = candles_from_zips(
        [tmp_path / plan[0].name],
        date(2024, 2, 10),
        date(2024, 2, 11),
        interval="1h",
        log=lambda _msg: None,
    )
    assert frame.index[0] == pd.Timestamp("2024-02-10", tz="UTC")
    assert frame.index[-1] == pd.Timestamp("2024-02-11 23:00", tz="UTC")
    pd.testing.assert_frame_equal(frame, expected.loc[frame.index], check_freq=False)


def test_2025_microsecond_dumps_parse_to_the_same_open_times(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    day = date(2025, 1, 2)
    (remote,) = plan_files("BTCUSDT", "spot", "1h", day, day, today=date(2025, 2, 1), base_url=base)
    rows = kline_rows(pd.Timestamp(day, tz="UTC"), 24, seed=3)
    publish(fake, base, remote, [[r[0] * 1000, *r[1:6], r[6] * 1000, *r[7:]] for r in rows])
    result = download_klines(
        "BTCUSDT",
        "1h",
        day,
        day,
        tmp_path,
        base_url=base,
        today=date(2025, 2, 1),
        progress=False,
        log=None,
    )
    frame = pd.read_parquet(result.parquet)
    assert frame.index[0] == pd.Timestamp("2025-01-02", tz="UTC") and len(frame) == 24
    np.testing.assert_array_equal(frame["close"], [r[4] for r in rows])


def test_checksum_mismatch_is_refetched_once(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    remote, expected, path = publish_day(fake, base)
    good = fake.bodies[path][0]
    fake.bodies[path] = [good[:-7] + b"corrupt", good]
    result = run(base, tmp_path, DAY, DAY)
    assert fake.requests[path] == 2
    assert (tmp_path / remote.name).read_bytes() == good
    assert_parquet(result, expected)


def test_persistent_checksum_mismatch_names_both_hashes(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    remote, _, path = publish_day(fake, base)
    bad = fake.bodies[path][0] + b"x"
    fake.bodies[path] = [bad]
    expected_hash = fake.bodies[path + ".CHECKSUM"][0].split()[0].decode()
    with pytest.raises(ChecksumError) as info:
        run(base, tmp_path, DAY, DAY)
    message = str(info.value)
    assert expected_hash in message and hashlib.sha256(bad).hexdigest() in message
    assert remote.name in message and "re-fetch" in message
    assert fake.requests[path] == 2
    assert not (tmp_path / remote.name).exists() and not list(tmp_path.glob("*.part"))


def test_leftover_part_and_truncated_zip_are_refetched(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    start, end = date(2024, 1, 5), date(2024, 1, 6)
    plan, expected = publish_plan(fake, base, start, end)
    first, second = (fake.bodies[r.url.removeprefix(base)][0] for r in plan)
    (tmp_path / (plan[0].name + ".part")).write_bytes(first[: len(first) // 2])
    (tmp_path / plan[1].name).write_bytes(second[: len(second) // 2])
    (
        tmp_path / (plan[1].name + ".CHECKSUM")
    ).write_text(  # a saved checksum does not vouch for a cut zip
        fake.bodies[plan[1].url.removeprefix(base) + ".CHECKSUM"][0].decode()
    )
    result = run(base, tmp_path, start, end)
    assert result.downloaded == 2
    assert (tmp_path / plan[0].name).read_bytes() == first
    assert (tmp_path / plan[1].name).read_bytes() == second
    assert not list(tmp_path.glob("*.part"))
    assert_parquet(result, expected)


def test_complete_zip_without_saved_checksum_is_kept(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    remote, _, path = publish_day(fake, base)
    (tmp_path / remote.name).write_bytes(fake.bodies[path][0])
    result = run(base, tmp_path, DAY, DAY)
    assert (fake.requests[path], fake.requests[path + ".CHECKSUM"]) == (0, 1)
    assert result.present == 1


def test_404_names_the_url(server: tuple[FakeBinance, str], tmp_path: Path) -> None:
    _, base = server
    with pytest.raises(NotFoundError, match="not found: symbol or month missing") as info:
        run(base, tmp_path, DAY, DAY)
    assert f"{base}/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-05.zip" in str(info.value)


def test_network_failure_counts_done_files_and_rerun_resumes(
    server: tuple[FakeBinance, str], tmp_path: Path
) -> None:
    fake, base = server
    start, end = date(2024, 1, 5), date(2024, 1, 7)
    plan, expected = publish_plan(fake, base, start, end)
    broken = plan[1].url.removeprefix(base)
    fake.drop.add(broken)
    with pytest.raises(NetworkError, match=r"1 of 3 files .* re-run the same command to resume"):
        run(base, tmp_path, start, end)
    assert not (tmp_path / plan[1].name).exists()

    fake.drop.clear()
    fake.requests.clear()
    result = run(base, tmp_path, start, end)
    assert fake.requests[plan[0].url.removeprefix(base)] == 0
    assert fake.requests[broken] == 1
    assert (result.downloaded, result.present) == (2, 1)
    assert_parquet(result, expected)


def test_unreachable_server_is_a_network_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetworkError, match="0 of 1 files"):
        run(f"http://127.0.0.1:{port}", tmp_path, DAY, DAY)


# --- CLI ----------------------------------------------------------------------------------


def test_cli_writes_the_parquet_and_reports_errors(
    server: tuple[FakeBinance, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, base = server
    start = date(2024, 1, 5)
    _, expected = publish_plan(fake, base, start, start + timedelta(days=1))
    cli = load_script("download_binance")
    out = tmp_path / "btc.parquet"
    argv = ["BTCUSDT", "1h", "2024-01-05", "2024-01-06", "--out-dir", str(tmp_path)]
    assert cli.main([*argv, "--out", str(out), "--base-url", base, "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected, check_freq=False)
    assert cli.main(["ETHUSDT", *argv[1:], "--base-url", base, "--no-progress"]) == 1
    assert "not found: symbol or month missing" in capsys.readouterr().err
