"""The market's tensors: candles -> features -> macro/micro windows, scaled, split, cached.

Everything the trainer and the backtest read about a market is one :class:`MarketData`;
:mod:`hmarl.data` only hands it checked candles.

Why a cache: a sweep launches many jobs on the same market; features and windows are
deterministic in (data fingerprint, feature names, windows, split, scaler), so the first job
builds them and the others load them. An entry whose content hash or key does not match is
rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmarl import __version__
from hmarl.config import DataConfig, DataSource
from hmarl.data.candles import CANDLE_COLUMNS
from hmarl.data.fingerprint import data_fingerprint
from hmarl.data.reading import load_candles
from hmarl.data.resample import resample_candles
from hmarl.data.splits import chronological_split
from hmarl.data.synthetic import synthetic_candles
from hmarl.io import atomic_write
from hmarl.market.env import bar_returns
from hmarl.market.features import (
    DEFAULT_FEATURES,
    build_features,
    feature_lookback,
    required_columns,
)
from hmarl.market.windows import Scaler, window_stats

CACHE_FORMAT = 1  # bump when the cached content's meaning changes


@dataclass
class MarketData:
    """Everything the trainer and the backtest read; arrays are aligned on candle rows."""

    index: pd.DatetimeIndex  # [T] bar open times (UTC)
    close: np.ndarray  # [T] float64
    returns: np.ndarray  # [T] float64, return of the bar after t (earned by a decision at t)
    macro: np.ndarray  # [T, 3N] float32, scaled; NaN where the window is incomplete
    micro: np.ndarray  # [T, 3N] float32, scaled
    splits: dict[str, tuple[int, int]]  # decision rows [start, end) per split
    feature_names: list[str]
    macro_window: int
    micro_window: int
    scalers: dict[str, dict[str, list[float]]]  # {"macro": Scaler.to_dict(), "micro": ...}
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def bar_seconds(self) -> float:
        """Median bar spacing: windows are counted in bars, so a policy is tied to it."""
        return float(np.median(np.diff(self.index.asi8))) / 1e9

    def feature_spec(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild identical inputs elsewhere (plain types only)."""
        return {
            "bar_seconds": self.bar_seconds,
            "names": list(self.feature_names),
            "macro_window": self.macro_window,
            "micro_window": self.micro_window,
            "scalers": self.scalers,
        }


def resolve_feature_names(names: Sequence[str]) -> list[str]:
    return list(names) if names else list(DEFAULT_FEATURES)


def load_market_candles(
    data: DataConfig,
    *,
    min_candles: int = 0,
    extra_columns: Sequence[str] = (),
    log: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Candles for a data config: the synthetic default or a validated file."""
    if data.source == DataSource.synthetic:
        candles = synthetic_candles(
            data.n_candles,
            data.market_seed,
            trend_drift=data.trend_drift,
            bar_vol=data.bar_vol,
            mean_regime_bars=data.mean_regime_bars,
        )
    else:
        if not data.path:
            raise ValueError(f"data.path is required for data={data.source.value}")
        candles = load_candles(
            data.path,
            fmt=data.source.value,
            columns=data.columns or None,
            timestamp_unit=data.timestamp_unit,
            gap_policy=data.gap_policy.value,
            freq=data.freq,
            extra_columns=extra_columns,
            start=data.start,
            end=data.end,
            log=log,
        )
    if data.resample:
        candles = resample_candles(candles, data.resample)
    if len(candles) < min_candles:
        raise ValueError(
            f"{len(candles)} candles after loading, but {min_candles} are needed "
            "(macro window + feature warm-up + room for validation and test splits)"
        )
    return candles


def candles_needed(feature_names: Sequence[str], macro_window: int) -> int:
    """The fewest candles a market can be built from: the macro window, the features'
    warm-up, and 10 rows so that the validation and test splits are not empty."""
    return macro_window + feature_lookback(feature_names) + 10


def decision_splits(
    row_splits: Mapping[str, tuple[int, int]], first_valid: int
) -> dict[str, tuple[int, int]]:
    """Decision rows per split: inside the split, after the warm-up, with a next bar inside too.

    A decision at t earns bar t+1's return, so the last row of a split makes no decision:
    no split's evaluation ever uses a price from the next split.
    """
    out: dict[str, tuple[int, int]] = {}
    for name, (s, e) in row_splits.items():
        lo, hi = max(s, first_valid), e - 1
        if hi - lo < 2:
            raise ValueError(
                f"split {name!r} has {max(hi - lo, 0)} usable decision rows (rows {s}..{e}, "
                f"windows and features valid from row {first_valid}); use more data or "
                "smaller windows"
            )
        out[name] = (lo, hi)
    return out


def build_market(
    candles: pd.DataFrame,
    *,
    feature_names: Sequence[str],
    macro_window: int,
    micro_window: int,
    train_frac: float = 0.7,
    val_frac: float = 0.15,
    val_start: str | None = None,
    test_start: str | None = None,
    scalers: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> MarketData:
    """Features, windows, splits and scaling for one candle frame (no cache).

    ``scalers`` given (a checkpoint's): used as they are, never refitted. Otherwise each
    window tensor gets a z-score scaler fitted on the train split's decision rows only.
    """
    names = resolve_feature_names(feature_names)
    feats = build_features(candles, names).to_numpy(dtype=np.float64)
    macro_raw = window_stats(feats, macro_window)
    micro_raw = window_stats(feats, micro_window)
    finite = np.isfinite(macro_raw).all(axis=1) & np.isfinite(micro_raw).all(axis=1)
    if not finite.any():
        raise ValueError(
            f"no row has complete windows: {len(candles)} candles, macro window {macro_window}, "
            f"feature warm-up {feature_lookback(names)} rows"
        )
    first_valid = int(np.argmax(finite))
    if not finite[first_valid:].all():
        bad = first_valid + int(np.argmin(finite[first_valid:]))
        raise ValueError(f"non-finite feature window at row {bad} ({candles.index[bad]})")
    row_splits = chronological_split(
        pd.DatetimeIndex(candles.index),
        train=train_frac,
        val=val_frac,
        val_start=val_start,
        test_start=test_start,
    )
    splits = decision_splits(row_splits, first_valid)
    if scalers is None:
        fitted = {
            "macro": Scaler.fit(macro_raw, splits["train"]),
            "micro": Scaler.fit(micro_raw, splits["train"]),
        }
    else:
        fitted = {k: Scaler.from_dict(scalers[k]) for k in ("macro", "micro")}
    close = candles["close"].to_numpy(dtype=np.float64)
    return MarketData(
        index=pd.DatetimeIndex(candles.index),
        close=close,
        returns=bar_returns(close),
        macro=fitted["macro"].transform(macro_raw),
        micro=fitted["micro"].transform(micro_raw),
        splits=splits,
        feature_names=names,
        macro_window=macro_window,
        micro_window=micro_window,
        scalers={k: v.to_dict() for k, v in fitted.items()},
        fingerprint=data_fingerprint(candles),
        meta={"first_valid": first_valid, "row_splits": dict(row_splits)},
    )


def cache_key(fingerprint: str, params: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {
            "fingerprint": fingerprint,
            "params": params,
            "format": CACHE_FORMAT,
            "version": __version__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _content_hash(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _save(path: Path, market: MarketData, key: str) -> None:
    arrays = {
        "index": market.index.asi8,
        "close": market.close,
        "macro": market.macro,
        "micro": market.micro,
    }
    meta = {
        "key": key,
        "hash": _content_hash(arrays),
        "splits": market.splits,
        "feature_names": market.feature_names,
        "macro_window": market.macro_window,
        "micro_window": market.micro_window,
        "scalers": market.scalers,
        "fingerprint": market.fingerprint,
        "meta": market.meta,
    }
    payload = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays}

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **payload)  # type: ignore[arg-type]

    atomic_write(path, write)


def _load(path: Path, key: str) -> MarketData | None:
    """The cached entry, or None when it is missing, unreadable, stale or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in ("index", "close", "macro", "micro")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError):
        return None
    if meta.get("key") != key or meta.get("hash") != _content_hash(arrays):
        return None
    close = arrays["close"]
    return MarketData(
        index=pd.DatetimeIndex(arrays["index"].astype("datetime64[ns]")).tz_localize("UTC"),
        close=close,
        returns=bar_returns(close),
        macro=arrays["macro"],
        micro=arrays["micro"],
        splits={k: (int(v[0]), int(v[1])) for k, v in meta["splits"].items()},
        feature_names=list(meta["feature_names"]),
        macro_window=int(meta["macro_window"]),
        micro_window=int(meta["micro_window"]),
        scalers=meta["scalers"],
        fingerprint=meta["fingerprint"],
        meta=meta["meta"],
    )


def cached_market(
    candles: pd.DataFrame,
    *,
    cache_dir: str | os.PathLike[str] | None,
    log: Callable[[str], None] | None = print,
    **params: Any,
) -> MarketData:
    """:func:`build_market` through the on-disk cache (``cache_dir=None`` disables it)."""
    if cache_dir is None:
        return build_market(candles, **params)
    fingerprint = data_fingerprint(candles)
    key = cache_key(fingerprint, params)
    path = Path(cache_dir) / f"market-{key}.npz"
    if path.exists():
        market = _load(path, key)
        if market is not None:
            if log:
                log(f"features: loaded from cache {path}")
            return market
        if log:
            log(f"features: cache entry {path} is stale or corrupt; rebuilding")
    market = build_market(candles, **params)
    _save(path, market, key)
    if log:
        log(f"features: built and cached at {path}")
    return market


def market_for_config(
    data: DataConfig,
    *,
    feature_names: Sequence[str],
    macro_window: int,
    micro_window: int,
    cache_dir: str | None,
    scalers: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    log: Callable[[str], None] | None = print,
) -> MarketData:
    """The entry points' one call: load candles for ``data`` and build (or load) tensors."""
    names = resolve_feature_names(feature_names)
    extra = [c for c in required_columns(names) if c not in CANDLE_COLUMNS]
    min_candles = candles_needed(names, macro_window)
    candles = load_market_candles(data, min_candles=min_candles, extra_columns=extra, log=log)
    return cached_market(
        candles,
        cache_dir=cache_dir,
        log=log,
        feature_names=names,
        macro_window=macro_window,
        micro_window=micro_window,
        train_frac=data.train_frac,
        val_frac=data.val_frac,
        val_start=data.val_start,
        test_start=data.test_start,
        scalers=scalers,
    )
