"""The data fingerprint: one digest per candle frame, recorded in every checkpoint."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from hmarl.data.candles import DataError
from hmarl.data.timestamps import as_utc

_BLOCK_ROWS = 1 << 16  # rows hashed at a time (a row-major frame's bytes, block after block)


def data_fingerprint(df: pd.DataFrame) -> str:
    """sha256 over the index (int64 UTC ns), column names and float64 values.

    Why: a checkpoint records which candles it was trained on; the same data gives the same
    hex digest in any process or run (explicit little-endian bytes, NaNs canonicalised).
    """
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError("data_fingerprint needs a DatetimeIndex")
    index = as_utc(df.index)
    digest = hashlib.sha256(b"hmarl-candles-v1\0")
    digest.update(np.asarray(df.shape, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(index.as_unit("ns").asi8, dtype="<i8").tobytes())
    digest.update("\0".join(str(c) for c in df.columns).encode("utf-8"))
    for start in range(0, len(df), _BLOCK_ROWS):  # row blocks: the same bytes, less memory
        values = df.iloc[start : start + _BLOCK_ROWS].to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(np.isnan(values), np.nan, values)
        digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()
