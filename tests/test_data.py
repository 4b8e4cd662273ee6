"""Candles: loading, validation errors, gap policy, resampling, synthetic market, splits."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmarl.data.candles import CANDLE_COLUMNS, DataError
from hmarl.data.fingerprint import data_fingerprint
from hmarl.data.reading import load_candles
from hmarl.data.resample import resample_candles
from hmarl.data.splits import chronological_split
from hmarl.data.synthetic import synthetic_candles
from hmarl.data.timestamps import bar_spacing
from hmarl.data.validation import validate_candles

START = pd.Timestamp("2024-01-01", tz="UTC")
STEP = pd.Timedelta("5min")
FEE = 0.001  # Binance spot commission per unit of position traded

# --------------------------------------------------------------------------- helpers


def _rows(n: int = 8) -> list[list[str]]:
    """Hand-made, valid 5-minute bars: [timestamp, open, high, low, close, volume] as text."""
    return [
        [
            str(START + i * STEP),
            f"{100 + i}",
            f"{101 + i}",
            f"{99.5 + i}",
            f"{100.5 + i}",
            f"{10 + i}",
        ]
        for i in range(n)
    ]


def _write(
    path: Path, rows: list[list[str]], header: str = "timestamp,open,high,low,close,volume"
) -> Path:
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


def _expected(n: int = 8) -> pd.DataFrame:
    """The frame _rows(n) must load as."""
    i = np.arange(n, dtype=np.float64)
    index = pd.date_range(START, periods=n, freq=STEP, name="timestamp").as_unit("ns")
    data = {"open": 100 + i, "high": 101 + i, "low": 99.5 + i, "close": 100.5 + i, "volume": 10 + i}
    return pd.DataFrame(data, index=index)


def _epoch(ts: pd.Timestamp, unit: str) -> int:
    return int(ts.value // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit])


def _klines(frame: pd.DataFrame, unit: str) -> str:
    """A Binance kline dump of `frame`: 12 columns, no header, open/close time in `unit`."""
    lines = []
    per_bar = _epoch(START + STEP, unit) - _epoch(START, unit)
    for ts, row in frame.iterrows():
        t = _epoch(pd.Timestamp(ts), unit)
        o, h, lo, c, v = (row[k] for k in CANDLE_COLUMNS)
        closed = t + per_bar - 1
        quote = v * c
        lines.append(
            f"{t},{o:.8f},{h:.8f},{lo:.8f},{c:.8f},{v:.8f},{closed},{quote:.4f},42,"
            f"{v / 2:.8f},{quote / 2:.4f},0"
        )
    return "\n".join(lines) + "\n"


def _quiet() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


# --------------------------------------------------------------------------- generic CSV


@pytest.mark.parametrize(
    "header",
    [
        "timestamp,open,high,low,close,volume",
        "Time,Open,High,Low,Close,Volume",
        "DATE,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "open time,Open,high,LOW,Close,volume",
        "Datetime, Open , High, Low, Close, Volume",
    ],
)
def test_csv_header_cases(tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "bars.csv", _rows(), header)
    frame = load_candles(path, log=None)
    pd.testing.assert_frame_equal(frame, _expected())
    assert str(frame.index.tz) == "UTC" and frame.index.name == "timestamp"


def test_column_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", _rows(), "Open time,o,High,Low,Adj Close,Vol BTC")
    mapping = {"timestamp": "Open time", "open": "O", "close": "Adj Close", "volume": "vol btc"}
    pd.testing.assert_frame_equal(load_candles(path, columns=mapping, log=None), _expected())


def test_mapping_unknown_name_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", _rows())
    with pytest.raises(DataError, match=r"bars\.csv: columns= maps unknown names \['clsoe'\]"):
        load_candles(path, columns={"clsoe": "Close"}, log=None)


@pytest.mark.parametrize(
    ("render", "unit", "logged"),
    [
        (lambda ts: str(ts), "auto", "ISO 8601"),
        (lambda ts: ts.tz_localize(None).isoformat(), "auto", "ISO 8601"),
        (lambda ts: ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "auto", "ISO 8601"),
        (lambda ts: ts.tz_convert("America/New_York").isoformat(), "auto", "ISO 8601"),
        (lambda ts: str(_epoch(ts, "s")), "auto", "epoch seconds (detected)"),
        (lambda ts: str(_epoch(ts, "ms")), "auto", "epoch milliseconds (detected)"),
        (lambda ts: str(_epoch(ts, "us")), "auto", "epoch microseconds (detected)"),
        (lambda ts: str(_epoch(ts, "ns")), "auto", "epoch nanoseconds (detected)"),
        (lambda ts: f"{_epoch(ts, 's')}.0", "auto", "epoch seconds (detected)"),
        (lambda ts: str(_epoch(ts, "ms")), "ms", "epoch milliseconds (given)"),
    ],
)
def test_timestamp_forms_give_identical_frames(
    tmp_path: Path, render: Callable[[pd.Timestamp], str], unit: str, logged: str
) -> None:
    rows = _rows()
    for i, row in enumerate(rows):
        row[0] = render(START + i * STEP)
    lines, log = _quiet()
    frame = load_candles(_write(tmp_path / "bars.csv", rows), timestamp_unit=unit, log=log)
    pd.testing.assert_frame_equal(frame, _expected())
    assert any(logged in line for line in lines), lines


def test_bad_epoch_row_is_unparsable(tmp_path: Path) -> None:
    rows = _rows()
    for i, row in enumerate(rows):
        row[0] = str(_epoch(START + i * STEP, "ms")) if i != 4 else "12:00"
    with pytest.raises(
        DataError, match=r"bars\.csv row 5 \(line 6\): unparsable timestamp '12:00'"
    ):
        load_candles(_write(tmp_path / "bars.csv", rows), log=None)


def test_mixed_epoch_units_raise(tmp_path: Path) -> None:
    rows = _rows()
    for i, row in enumerate(rows):
        row[0] = str(_epoch(START + i * STEP, "ms" if i < 5 else "us"))
    with pytest.raises(DataError, match=r"bars\.csv row 6 \(line 7\): mixed epoch units"):
        load_candles(_write(tmp_path / "bars.csv", rows), log=None)


def test_parquet_round_trip_and_epoch_column(tmp_path: Path) -> None:
    expected = _expected()
    expected.to_parquet(tmp_path / "indexed.parquet")
    pd.testing.assert_frame_equal(load_candles(tmp_path / "indexed.parquet", log=None), expected)
    table = expected.reset_index(drop=True).rename(columns=str.upper)
    table.insert(0, "open_time", [_epoch(ts, "ms") for ts in expected.index])
    table.to_parquet(tmp_path / "epochs.parquet")
    pd.testing.assert_frame_equal(load_candles(tmp_path / "epochs.parquet", log=None), expected)


def test_extra_columns_kept_and_checked(tmp_path: Path) -> None:
    rows = [[*r, f"{i * 3}"] for i, r in enumerate(_rows())]
    header = "timestamp,open,high,low,close,volume,Trades"
    frame = load_candles(
        _write(tmp_path / "bars.csv", rows, header), extra_columns=["trades"], log=None
    )
    assert list(frame.columns) == [*CANDLE_COLUMNS, "trades"]
    assert frame["trades"].dtype == np.float64 and frame["trades"].iloc[-1] == 21.0
    rows[4][6] = "inf"
    with pytest.raises(
        DataError, match=r"bars\.csv row 5 \(line 6\).*non-finite inf in extra column 'trades'"
    ):
        load_candles(
            _write(tmp_path / "bars.csv", rows, header), extra_columns=["trades"], log=None
        )


def test_date_bounds_are_half_open(tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", _rows())
    frame = load_candles(path, start="2024-01-01 00:10", end="2024-01-01T00:25:00Z", log=None)
    pd.testing.assert_frame_equal(frame, _expected().iloc[2:5])
    with pytest.raises(DataError, match=r"no candles in \[2025-01-01, None\)"):
        load_candles(path, start="2025-01-01", log=None)


# --------------------------------------------------------------------------- Binance dumps


def test_binance_ms_us_header_zip_identical(tmp_path: Path) -> None:
    expected = _expected()
    (tmp_path / "ms.csv").write_text(_klines(expected, "ms"))
    (tmp_path / "us.csv").write_text(_klines(expected, "us"))
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\n"
    )
    (tmp_path / "header.csv").write_text(header + _klines(expected, "us"))
    with zipfile.ZipFile(tmp_path / "BTCUSDT-5m-2024-01.zip", "w") as archive:
        archive.writestr("BTCUSDT-5m-2024-01.csv", _klines(expected, "ms"))
    logs: dict[str, list[str]] = {}
    for name in ("ms.csv", "us.csv", "header.csv", "BTCUSDT-5m-2024-01.zip"):
        logs[name], log = _quiet()
        pd.testing.assert_frame_equal(load_candles(tmp_path / name, log=log), expected)
        assert any("Binance kline dump" in line for line in logs[name])
    assert any("epoch milliseconds (detected)" in line for line in logs["ms.csv"])
    assert any("epoch microseconds (detected)" in line for line in logs["us.csv"])
    kept = load_candles(tmp_path / "us.csv", fmt="binance", extra_columns=["trades"], log=None)
    assert (kept["trades"] == 42.0).all()


def test_binance_directory_and_list_in_time_order(tmp_path: Path) -> None:
    expected = _expected(12)
    folder = tmp_path / "klines"
    folder.mkdir()
    # 2024 dumps are in ms, 2025 ones in us: a folder may hold both; names sort the wrong way.
    (folder / "b-early.csv").write_text(_klines(expected.iloc[:5], "ms"))
    with zipfile.ZipFile(folder / "a-late.zip", "w") as archive:
        archive.writestr("a-late.csv", _klines(expected.iloc[5:], "us"))
    pd.testing.assert_frame_equal(load_candles(folder, log=None), expected)
    files = [folder / "a-late.zip", folder / "b-early.csv"]
    pd.testing.assert_frame_equal(load_candles(files, fmt="binance", log=None), expected)


def test_overlapping_files_name_the_second_file(tmp_path: Path) -> None:
    expected = _expected(8)
    (tmp_path / "one.csv").write_text(_klines(expected.iloc[:5], "ms"))
    (tmp_path / "two.csv").write_text(_klines(expected.iloc[4:], "ms"))
    with pytest.raises(
        DataError,
        match=r"two\.csv row 1 \(line 1\), timestamp 2024-01-01 00:20:00\+00:00: duplicate",
    ):
        load_candles(tmp_path, log=None)


def test_zip_with_two_csvs_raises(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", _klines(_expected(), "ms"))
        archive.writestr("b.csv", _klines(_expected(), "ms"))
    with pytest.raises(DataError, match=r"two\.zip: a zip must hold exactly one \.csv"):
        load_candles(tmp_path / "two.zip", log=None)


def test_binance_format_rejects_other_layouts(tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", _rows())
    with pytest.raises(
        DataError, match=r"bars\.csv line 1: expected a Binance kline dump .* found 6 columns"
    ):
        load_candles(path, fmt="binance", log=None)


@pytest.mark.parametrize(
    ("arg", "value"), [("fmt", "excel"), ("timestamp_unit", "days"), ("gap_policy", "bfill")]
)
def test_bad_arguments(tmp_path: Path, arg: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{arg}='{value}'"):
        load_candles(_write(tmp_path / "bars.csv", _rows()), log=None, **{arg: value})  # type: ignore[arg-type]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_candles(tmp_path / "nope.csv", log=None)


# --------------------------------------------------------------------------- validation errors


def _set(row: int, col: int, value: str) -> Callable[[list[list[str]]], None]:
    def mutate(rows: list[list[str]]) -> None:
        rows[row - 1][col] = value

    return mutate


def _swap(rows: list[list[str]]) -> None:
    rows[3][0], rows[4][0] = rows[4][0], rows[3][0]


def _dup(rows: list[list[str]]) -> None:
    rows[4][0] = rows[3][0]


def _gaps(rows: list[list[str]]) -> None:
    del rows[6]
    del rows[2:4]


def _off_grid(rows: list[list[str]]) -> None:
    rows[5][0] = str(START + 5 * STEP + pd.Timedelta("1min"))


def _at(row: int, bar: int | None = None) -> str:
    """The location an error must name: file, data row, line and the timestamp of `bar`."""
    stamp = re.escape(str(START + ((bar or row) - 1) * STEP))
    return rf"bars\.csv row {row} \(line {row + 1}\), timestamp {stamp}"


VALIDATION_CASES = [
    (
        "unparsable",
        _set(3, 0, "not-a-date"),
        r"bars\.csv row 3 \(line 4\): unparsable timestamp 'not-a-date'",
    ),
    ("empty timestamp", _set(2, 0, ""), r"bars\.csv row 2 \(line 3\): unparsable timestamp"),
    (
        "unsorted",
        _swap,
        r"bars\.csv row 5 \(line 6\), timestamp 2024-01-01 00:15:00\+00:00: timestamps not sorted",
    ),
    (
        "duplicate",
        _dup,
        _at(5, bar=4) + ": duplicate timestamp",
    ),
    ("nan price", _set(3, 1, ""), _at(3) + r": bad price open=nan"),
    ("inf price", _set(3, 4, "inf"), _at(3) + r": bad price close=inf"),
    ("zero price", _set(4, 3, "0"), _at(4) + r": bad price low=0\.0"),
    ("negative price", _set(5, 2, "-101"), _at(5) + r": bad price high=-101\.0"),
    (
        "text price",
        _set(2, 4, "abc"),
        r"bars\.csv row 2 \(line 3\), timestamp .*non-numeric value 'abc' in 'close'",
    ),
    ("negative volume", _set(6, 5, "-1"), _at(6) + r": bad volume -1\.0"),
    ("nan volume", _set(6, 5, "nan"), _at(6) + r": bad volume nan"),
    ("high < low", _set(2, 2, "99"), _at(2) + r": inconsistent candle, high < low"),
    (
        "high < open/close",
        _set(7, 2, "106.2"),
        _at(7) + r": inconsistent candle, high < max\(open, close\)",
    ),
    (
        "low > open/close",
        _set(8, 3, "107.2"),
        _at(8) + r": inconsistent candle, low > min\(open, close\)",
    ),
    (
        "gaps",
        _gaps,
        r"irregular spacing: 2 gap\(s\) in 5min bars, 3 missing bar\(s\): after .*"
        + _at(2)
        + r": gap 15min \(2 missing bar\(s\)\); after .*bars\.csv row 4 \(line 5\), .*gap 10min",
    ),
    (
        "off grid",
        _off_grid,
        _at(6).replace("00:25", "00:26") + r": irregular spacing, 6min .* not a multiple",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "message"), VALIDATION_CASES, ids=[c[0] for c in VALIDATION_CASES]
)
def test_validation_errors_name_file_and_row(
    tmp_path: Path, case: str, mutate: Callable[[list[list[str]]], None], message: str
) -> None:
    rows = _rows()
    mutate(rows)
    with pytest.raises(DataError, match=message):
        load_candles(_write(tmp_path / "bars.csv", rows), log=None)


def test_missing_columns_listed(tmp_path: Path) -> None:
    rows = [r[:4] + r[5:] for r in _rows()]
    path = _write(tmp_path / "bars.csv", rows, "Time,Open,High,Low,Volume")
    message = (
        r"bars\.csv: missing column\(s\) \['close'\]; "
        r"found \['Time', 'Open', 'High', 'Low', 'Volume'\]"
    )
    with pytest.raises(DataError, match=message):
        load_candles(path, log=None)
    path = _write(tmp_path / "bars.csv", [r[1:] for r in _rows()], "open,high,low,close,volume")
    with pytest.raises(
        DataError, match=r"missing column\(s\) \[\"timestamp \(looked for \['timestamp', 'time'"
    ):
        load_candles(path, log=None)


def test_min_candles_says_how_many_and_why(tmp_path: Path) -> None:
    path = _write(tmp_path / "bars.csv", _rows())
    with pytest.raises(
        DataError,
        match=r"bars\.csv: 8 candles, fewer than min_candles=592 "
        r"\(macro window 492 \+ warm-up 100\)",
    ):
        load_candles(path, min_candles=592, min_reason="macro window 492 + warm-up 100", log=None)
    assert len(load_candles(path, min_candles=8, log=None)) == 8


def test_validate_frame_reports_iloc() -> None:
    frame = _expected()
    frame.iloc[3, 1] = 50.0  # high below low
    with pytest.raises(
        DataError,
        match=r"my frame iloc 3, timestamp 2024-01-01 00:15:00\+00:00: "
        r"inconsistent candle, high < low",
    ):
        validate_candles(frame, name="my frame")
    with pytest.raises(DataError, match=r"<frame>: the index must be a DatetimeIndex"):
        validate_candles(_expected().reset_index())
    naive = _expected().tz_localize(None)
    pd.testing.assert_frame_equal(validate_candles(naive), _expected())


def test_validate_explicit_freq_finds_gaps() -> None:
    frame = _expected().iloc[::2]  # every other bar: regular at 10min, gappy at 5min
    assert len(validate_candles(frame)) == 4
    with pytest.raises(DataError, match=r"3 gap\(s\) in 5min bars, 3 missing bar\(s\)"):
        validate_candles(frame, freq="5min")


# --------------------------------------------------------------------------- gap policy


def test_ffill_carries_last_close_forward_only(tmp_path: Path) -> None:
    rows = _rows(10)
    del rows[3:6]  # bars 3, 4, 5 missing; bar 2 closes at 102.5, bar 6 opens at 106
    lines, log = _quiet()
    frame = load_candles(_write(tmp_path / "bars.csv", rows), gap_policy="ffill", log=log)
    expected = _expected(10)
    assert frame.index.equals(expected.index)
    inserted = frame.iloc[3:6]
    assert (inserted[["open", "high", "low", "close"]] == 102.5).all().all()
    assert (inserted["volume"] == 0.0).all()
    real = frame.index.difference(inserted.index)
    pd.testing.assert_frame_equal(frame.loc[real], expected.loc[real])
    later = set(expected.iloc[6:].to_numpy().ravel())  # values only known after the gap
    assert not later & set(frame.iloc[:6].to_numpy().ravel())
    assert any("inserted 3 bar(s)" in line for line in lines)
    validate_candles(frame)


def test_ffill_zeroes_extras_and_cannot_fix_off_grid() -> None:
    frame = _expected(6).drop(_expected(6).index[2])
    frame["trades"] = [5.0, 6.0, 8.0, 9.0, 10.0]
    filled = validate_candles(frame, gap_policy="ffill")
    assert filled["trades"].tolist() == [5.0, 6.0, 0.0, 8.0, 9.0, 10.0]
    shifted = _expected(6)
    shifted.index = shifted.index[:5].append(
        pd.DatetimeIndex([shifted.index[5] + pd.Timedelta("1min")])
    )
    with pytest.raises(DataError, match="not a multiple"):
        validate_candles(shifted, gap_policy="ffill")


# --------------------------------------------------------------------------- resampling


def _minute_bars() -> pd.DataFrame:
    """12 one-minute bars from 00:00, bars 05..09 missing (an empty 5-minute bin)."""
    index = pd.date_range(START, periods=15, freq="1min", name="timestamp").as_unit("ns")
    opens = [10, 11, 12, 13, 14, 0, 0, 0, 0, 0, 20, 21, 22, 23, 24]
    frame = pd.DataFrame(
        {
            "open": opens,
            "high": [o + 2 for o in opens],
            "low": [o - 1 for o in opens],
            "close": [o + 1 for o in opens],
            "volume": [1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 6, 7, 8, 9, 10],
        },
        index=index,
        dtype=np.float64,
    )
    frame.loc[frame.index[2], "high"] = 30.0  # the 5-min high must be this bar's
    frame.loc[frame.index[12], "low"] = 1.0
    return frame.drop(frame.index[5:10]).drop(frame.index[14])


def test_resample_matches_hand_aggregates() -> None:
    out = resample_candles(_minute_bars(), "5min")
    expected = pd.DataFrame(
        {
            # bin 00:00: bars 0-4; bin 00:05 empty (dropped); bin 00:10: bars 10-13 (partial)
            "open": [10.0, 20.0],
            "high": [30.0, 25.0],
            "low": [9.0, 1.0],
            "close": [15.0, 24.0],
            "volume": [15.0, 30.0],
        },
        index=pd.DatetimeIndex([START, START + pd.Timedelta("10min")], name="timestamp").as_unit(
            "ns"
        ),
    )
    pd.testing.assert_frame_equal(out, expected)


def test_resample_extras_and_bad_rule() -> None:
    frame = _minute_bars()
    frame["trades"] = np.arange(len(frame), dtype=np.int64)
    out = resample_candles(frame, "5min", extra_agg={"trades": "sum"})
    assert (
        out["trades"].tolist() == [0 + 1 + 2 + 3 + 4, 5 + 6 + 7 + 8]
        and out["trades"].dtype == np.int64
    )
    assert resample_candles(frame, "5min")["trades"].tolist() == [4, 8]
    with pytest.raises(
        DataError, match=r"rule '90s' is not a whole multiple of the source spacing"
    ):
        resample_candles(frame, "90s")


def test_resample_real_shape_round_trip() -> None:
    five = synthetic_candles(288 * 2, seed=3)
    hourly = resample_candles(five, "1h")
    assert len(hourly) == 48 and bar_spacing(hourly.index) == pd.Timedelta("1h")
    validate_candles(hourly)
    assert hourly["volume"].sum() == pytest.approx(five["volume"].sum())


# --------------------------------------------------------------------------- synthetic market


def _log_return(position: np.ndarray, close: np.ndarray) -> float:
    """Total log return of holding position[t] over bar t+1, paying FEE per unit traded."""
    gross = float((position[:-1] * np.diff(np.log(close))).sum())
    traded = np.abs(np.diff(np.concatenate([[0.0], position])))
    return gross + float(np.log1p(-FEE * traded).sum())


def test_synthetic_reproducible_and_valid() -> None:
    a, b = synthetic_candles(5_000, seed=7), synthetic_candles(5_000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert data_fingerprint(a) == data_fingerprint(b)
    c = synthetic_candles(5_000, seed=8)
    assert not a["close"].equals(c["close"]) and data_fingerprint(a) != data_fingerprint(c)
    pd.testing.assert_frame_equal(validate_candles(a), a)
    assert bar_spacing(a.index) == STEP and a.index[0] == pd.Timestamp("2023-01-01", tz="UTC")


def test_synthetic_default_is_a_fast_btc_like_year() -> None:
    began = time.perf_counter()
    frame = synthetic_candles(with_regime=True)
    assert time.perf_counter() - began < 1.0
    assert len(frame) == 105_120 and frame["open"].iloc[0] == 30_000.0
    returns = np.diff(np.log(frame["close"].to_numpy()))
    assert 0.001 < returns.std() < 0.002
    assert 5_000 < frame["close"].min() and frame["close"].max() < 150_000
    regime = frame["regime"].to_numpy()
    assert set(np.unique(regime)) == {-1, 0, 1}
    lengths = np.diff(np.flatnonzero(np.diff(regime) != 0))
    assert 300 < np.median(lengths) < 3_000  # days, not bars
    hour = frame.index.hour
    volume = frame["volume"]
    assert volume[hour == 15].mean() > 1.2 * volume[hour == 3].mean()  # intraday cycle
    assert np.corrcoef(np.abs(returns), volume.to_numpy()[1:])[0, 1] > 0.2  # vol-volume link


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_regimes_pay_and_coin_flips_lose(seed: int) -> None:
    frame = synthetic_candles(50_000, seed=seed, with_regime=True)
    close = frame["close"].to_numpy()
    oracle = _log_return(frame["regime"].to_numpy().astype(np.float64), close)
    coin = np.random.default_rng(1_000 + seed).integers(-1, 2, size=len(close)).astype(np.float64)
    flipped = _log_return(coin, close)
    assert oracle > 1.0, oracle  # ~ +3 expected; fees of a few dozen switches are small
    assert flipped < -10.0, flipped  # ~ -44: fees on ~0.9 units traded per bar dominate


# --------------------------------------------------------------------------- splits


def test_split_by_fractions() -> None:
    assert chronological_split(1_000) == {
        "train": (0, 700),
        "val": (700, 850),
        "test": (850, 1_000),
    }
    index = pd.date_range("2024-01-01", periods=10, freq="1D", tz="UTC")
    assert chronological_split(index, train=0.5, val=0.2) == {
        "train": (0, 5),
        "val": (5, 7),
        "test": (7, 10),
    }


def test_split_by_dates() -> None:
    index = pd.date_range("2024-01-01", periods=10, freq="1D", tz="UTC")
    both = chronological_split(index, val_start="2024-01-04", test_start="2024-01-08 00:00+00:00")
    assert both == {"train": (0, 3), "val": (3, 7), "test": (7, 10)}
    only_test = chronological_split(index, train=0.6, val=0.2, test_start="2024-01-09")
    assert only_test == {"train": (0, 6), "val": (6, 8), "test": (8, 10)}
    only_val = chronological_split(index, train=0.5, val=0.25, val_start="2024-01-03")
    assert only_val == {"train": (0, 2), "val": (2, 6), "test": (6, 10)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": 0.0}, "need 0 < train"),
        ({"train": 0.8, "val": 0.2}, "train \\+ val < 1"),
        ({"val": -0.1}, "need 0 < train, 0 < val"),
        ({"val_start": "2024-01-08", "test_start": "2024-01-04"}, "must be before test_start"),
        ({"test_start": "2030-01-01", "val_start": "2024-01-05"}, r"empty split\(s\) \['test'\]"),
        ({"val_start": "2023-06-01", "test_start": "2024-01-05"}, r"empty split\(s\) \['train'\]"),
        ({"test_start": "yesterday-ish"}, "test_start='yesterday-ish' is not a date"),
    ],
)
def test_split_errors(kwargs: dict[str, object], message: str) -> None:
    index = pd.date_range("2024-01-01", periods=10, freq="1D", tz="UTC")
    with pytest.raises(ValueError, match=message):
        chronological_split(index, **kwargs)  # type: ignore[arg-type]


def test_split_dates_need_an_index() -> None:
    with pytest.raises(ValueError, match="need a DatetimeIndex"):
        chronological_split(100, test_start="2024-01-01")
    with pytest.raises(ValueError, match=r"empty split\(s\) \['val', 'test'\]"):
        chronological_split(1)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_processes_and_sensitive() -> None:
    frame = synthetic_candles(1_000, seed=5)
    code = (
        "from hmarl.data.fingerprint import data_fingerprint; "
        "from hmarl.data.synthetic import synthetic_candles; "
        "print(data_fingerprint(synthetic_candles(1_000, seed=5)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == data_fingerprint(frame)
    assert re.fullmatch(r"[0-9a-f]{64}", data_fingerprint(frame))
    changed = frame.copy()
    changed.iloc[500, 3] += 0.01
    shifted = frame.set_axis(frame.index + STEP, axis=0)
    renamed = frame.rename(columns={"volume": "vol"})
    digests = {data_fingerprint(f) for f in (frame, changed, shifted, renamed)}
    assert len(digests) == 4


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_binance_kline_dump(shared_data: Path) -> None:
    lines, log = _quiet()
    frame = load_candles(shared_data / "BTCUSDT-5m-klines.csv", log=log)
    assert len(frame) == 9_792
    assert frame.index[0] == pd.Timestamp("2022-07-14", tz="UTC")
    assert any("Binance kline dump" in line for line in lines)
    assert any("epoch milliseconds (detected)" in line for line in lines)
    assert list(frame.columns) == list(CANDLE_COLUMNS)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "rows", "first"),
    [
        ("binance_spot_BTCUSDT_5m_2024Q1.csv", 26_209, "2024-01-01"),
        ("binance_spot_BTCUSDT_5m_2024Q4.csv", 26_497, "2024-10-01"),
    ],
)
def test_real_quarter_csvs(shared_data: Path, name: str, rows: int, first: str) -> None:
    frame = load_candles(shared_data / name, freq="5min", min_candles=592, log=None)
    assert len(frame) == rows
    assert frame.index[0] == pd.Timestamp(first, tz="UTC")
    assert bar_spacing(frame.index) == STEP
