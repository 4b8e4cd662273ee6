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

One module per job; each name is imported from its module
(``from hmarl.data.reading import load_candles``):

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
