"""Candles: load, validate, resample, split and synthesise OHLCV bars.

Everything downstream (features, windows, the environment) trusts the frame this package
returns, so every check that can fail on real data happens here, once, with an error that
names the file and the row.

Timestamp convention: the index holds each bar's OPEN time in UTC (the Binance kline
convention). The bar stamped ``index[t]`` covers ``[index[t], index[t] + freq)``; its close,
high, low and volume are only known at ``index[t] + freq``. A decision "at bar t" is taken at
that moment, so features at t may use rows ``<= t`` only.

Output frame: a UTC ``DatetimeIndex`` named ``"timestamp"`` (nanosecond unit), sorted and
unique; float64 columns ``open high low close volume`` followed by any extra columns.

One module per job; this package re-exports their public names, so ``from hmarl.data import
load_candles`` is the way in:

* ``candles``: the frame contract (column names, value bound, ``DataError``).
* ``provenance``: which file and row each candle came from, for error messages.
* ``timestamps``: UTC dates and bar spacings.
* ``parsing``: raw timestamp and value columns to nanoseconds and floats, bad rows named.
* ``reading``: CSV / Parquet / Binance kline files into one frame (``load_candles``).
* ``validation``: the rules a frame must meet, gap filling (``validate_candles``).
* ``resample``: coarser bars (``resample_candles``).
* ``synthetic``: the built-in regime-switching market (``synthetic_candles``).
* ``splits``: chronological train / val / test row ranges (``chronological_split``).
* ``fingerprint``: the digest a checkpoint records (``data_fingerprint``).
"""

from __future__ import annotations

from hmarl.data.candles import CANDLE_COLUMNS, MAX_ABS_VALUE, PRICE_COLUMNS, DataError
from hmarl.data.fingerprint import data_fingerprint
from hmarl.data.parsing import EpochUnit, epoch_unit
from hmarl.data.reading import BINANCE_KLINE_COLUMNS, TIMESTAMP_ALIASES, load_candles
from hmarl.data.resample import resample_candles
from hmarl.data.splits import chronological_split
from hmarl.data.synthetic import synthetic_candles
from hmarl.data.timestamps import bar_spacing, freq_ns
from hmarl.data.validation import validate_candles

__all__ = [
    "BINANCE_KLINE_COLUMNS",
    "CANDLE_COLUMNS",
    "MAX_ABS_VALUE",
    "PRICE_COLUMNS",
    "TIMESTAMP_ALIASES",
    "DataError",
    "EpochUnit",
    "bar_spacing",
    "chronological_split",
    "data_fingerprint",
    "epoch_unit",
    "freq_ns",
    "load_candles",
    "resample_candles",
    "synthetic_candles",
    "validate_candles",
]
