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
import io
import json
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from hmarl.data.timestamps import utc
from hmarl.io import remove_stale_temporaries, staged_folder, temporary_prefix, write_json
from hmarl.market.env import bar_returns
from hmarl.market.features import (
    DEFAULT_FEATURES,
    build_features,
    feature_lookback,
    required_columns,
)
from hmarl.market.windows import Scaler, window_blocks

CACHE_FORMAT = 2  # bump when the cached content's meaning changes (2: a folder of .npy files)
SPEC_BAR_SECONDS = 300.0  # SPEC.md's windows are counted in 5-minute bars (492 bars ~ 41 h)
SPAN_TOLERANCE = 2.0  # a window spanning over 2x more or less time than the specification's
CONSTANT_SHARE = 0.95  # warn when at least this share of bars has a zero return
ARRAYS = ("index", "close", "macro", "micro")  # the cache entry's .npy files


@dataclass
class MarketData:
    """Everything the trainer and the backtest read; arrays are aligned on candle rows."""

    index: pd.DatetimeIndex  # [T] bar open times (UTC)
    close: np.ndarray  # [T] float64
    returns: np.ndarray  # [T] float64, return of the bar after t (earned by a decision at t)
    # [T, 3N] float32, scaled; NaN where the window is incomplete. From the cache these are
    # read-only memory maps of its files: episodes gather their rows from the mapping, and
    # every process reading the entry (a sweep's jobs, backtests) shares one copy in memory
    macro: np.ndarray
    micro: np.ndarray  # [T, 3N] float32, scaled
    splits: dict[str, tuple[int, int]]  # decision rows [start, end) per split
    feature_names: list[str]
    macro_window: int
    micro_window: int
    scalers: dict[str, dict[str, list[float]]]  # {"macro": Scaler.to_dict(), "micro": ...}
    fingerprint: str
    meta: dict[str, Any] = field(default_factory=dict)
    # model=specialists: each specialist's features and window, in order; `micro` then holds
    # their scaled windows side by side (hmarl/market/specialist_data.py). Empty: SPEC's model
    specialists: list[dict[str, Any]] = field(default_factory=list)

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
            **({"specialists": self.specialists} if self.specialists else {}),
        }


def resolve_feature_names(names: Sequence[str]) -> list[str]:
    return list(names) if names else list(DEFAULT_FEATURES)


def load_market_candles(
    data: DataConfig,
    *,
    min_candles: int = 0,
    extra_columns: Sequence[str] = (),
    log: Callable[[str], None] | None = print,
    need_reason: str = "the longer window + feature warm-up + room for validation and test splits",
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
        candles = within_dates(candles, data.start, data.end)  # files apply them as they load
    else:
        if not data.path and data.paths:
            raise ValueError(
                f"data.paths={list(data.paths)} names several markets: this reads one "
                "data.path; several are each built on their own (hmarl.market.many: "
                "python -m hmarl.train and python -m hmarl.walkforward take data.paths)"
            )
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
        loaded = len(candles)
        candles = resample_candles(candles, data.resample)
        if log:
            log(
                f"data.resample={data.resample}: {loaded} candles -> {len(candles)} bars "
                f"({candles.index[0]} .. {candles.index[-1]})"
                if len(candles)
                else f"data.resample={data.resample}: {loaded} candles -> 0 bars"
            )
    if len(candles) < min_candles:
        raise ValueError(
            f"{len(candles)} candles after loading, but {min_candles} are needed "
            f"({need_reason}); use more data or smaller windows"
        )
    return candles


def within_dates(candles: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    """The candles in ``[start, end)`` (UTC): ``data.start`` / ``data.end`` for the synthetic
    market, as :func:`hmarl.data.reading.load_candles` applies them to files (a walk-forward's
    folds are such bounds)."""
    if start is None and end is None:
        return candles
    index = pd.DatetimeIndex(candles.index)
    keep = np.ones(len(index), dtype=bool)
    if start is not None:
        keep &= index >= utc(start)
    if end is not None:
        keep &= index < utc(end)
    return candles[keep]


def candles_needed(feature_names: Sequence[str], macro_window: int, micro_window: int = 0) -> int:
    """The fewest candles a market can be built from: the longer window, the features'
    warm-up, and 10 rows so that the validation and test splits are not empty."""
    return max(macro_window, micro_window) + feature_lookback(feature_names) + 10


def longer_window(macro_window: int, micro_window: int) -> str:
    """``features.<key>=<bars>`` of the window that sets how many candles are needed."""
    if micro_window > macro_window:
        return f"features.micro_window={micro_window}"
    return f"features.macro_window={macro_window}"


def data_warnings(candles: pd.DataFrame, macro_window: int, micro_window: int) -> list[str]:
    """What about these candles makes training or a backtest suspect, though it can run.

    Constant prices give nothing to learn (every return 0: the policy learns only to pay
    fees). Windows are counted in bars, and the specification's 492 and 60 bars mean ~41 h
    and 5 h of 5-minute bars: on 1-minute bars the same counts span 8.2 h and 1 h, a
    different model; say so, and how to resample or rescale.
    """
    notes: list[str] = []
    close = candles["close"].to_numpy(dtype=np.float64)
    if len(close) > 1:
        flat = float(np.mean(np.diff(close) == 0.0))
        if flat >= CONSTANT_SHARE:
            what = "every close is the same" if flat == 1.0 else f"{flat:.0%} of bars do not move"
            notes.append(
                f"constant prices: {what} ({len(close)} candles): there is nothing to learn "
                "and every trade only pays fees; check data.path and data.columns (the close "
                "column)"
            )
    if len(candles) > 2:
        bar = float(np.median(np.diff(pd.DatetimeIndex(candles.index).as_unit("ns").asi8))) / 1e9
        for key, bars in (("macro_window", macro_window), ("micro_window", micro_window)):
            span, spec = bars * bar, bars * SPEC_BAR_SECONDS
            if bar > 0 and not 1 / SPAN_TOLERANCE <= span / spec <= SPAN_TOLERANCE:
                same = max(round(spec / bar), 1)
                notes.append(
                    f"features.{key}={bars} bars of {_duration(bar)} span {_duration(span)}, "
                    f"but the specification's {bars} 5-minute bars span {_duration(spec)}: "
                    f"resample with data.resample=5min, or set features.{key}={same} to keep "
                    "the specification's span"
                )
    return notes


def _duration(seconds: float) -> str:
    """``8.2 h``, ``5 min``, ``30 s``: a span for messages."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


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


def _rows_within(
    blocks: Iterator[tuple[int, np.ndarray]], lo: int, hi: int
) -> Iterator[np.ndarray]:
    """The parts of ``(start, block)`` row blocks that fall in rows ``[lo, hi)``."""
    for start, block in blocks:
        a, b = max(lo - start, 0), min(hi - start, len(block))
        if a < b:
            yield block[a:b]


class _NpyWriter:
    """A float32 [T, C] ``.npy`` file written block after block, hashed as it is written.

    Why: the window tensors of a large market never need to be in memory at once; the cache
    entry is written row block by row block and read back as a memory map.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.file = path.open("wb")
        self.digest = hashlib.sha256()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
        )
        self._write(header.getvalue())

    def _write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)

    def write(self, block: np.ndarray) -> None:
        self._write(np.ascontiguousarray(block).tobytes())

    def close(self) -> str:
        self.file.close()
        return self.digest.hexdigest()


def _file_hash(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 23):
            digest.update(chunk)
    return digest.hexdigest()


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
    out_dir: Path | None = None,
) -> MarketData:
    """Features, windows, splits and scaling for one candle frame.

    ``scalers`` given (a checkpoint's): used as they are, never refitted. Otherwise each
    window tensor gets a z-score scaler fitted on the train split's decision rows only.
    The windows are computed in row blocks (:func:`hmarl.market.windows.window_blocks`, again
    for each pass: finiteness, the scaler's two, the output), so no [T, 3N] float64
    temporary is ever whole; ``out_dir`` given, the scaled tensors go block by block into its
    ``.npy`` files (the cache entry, :func:`cached_market`) and come back as read-only memory
    maps, so they are never in memory at once either. Either way the values are bit-identical.
    """
    names = resolve_feature_names(feature_names)
    feats = build_features(candles, names).to_numpy(dtype=np.float64)
    windows = {"macro": macro_window, "micro": micro_window}
    finite = np.ones(len(candles), dtype=bool)
    for window in windows.values():
        for start, block in window_blocks(feats, window):
            finite[start : start + len(block)] &= np.isfinite(block).all(axis=1)
    if not finite.any():
        raise ValueError(
            f"no row has complete windows: {len(candles)} candles, "
            f"{longer_window(macro_window, micro_window)}, feature warm-up "
            f"{feature_lookback(names)} rows; lower that window or use more data"
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
        lo, hi = splits["train"]

        def train_rows(window: int) -> Callable[[], Iterator[np.ndarray]]:
            return lambda: _rows_within(window_blocks(feats, window), lo, hi)

        fitted = {k: Scaler.fit_blocks(train_rows(w), splits["train"]) for k, w in windows.items()}
    else:
        fitted = {k: Scaler.from_dict(scalers[k]) for k in ("macro", "micro")}
    close = candles["close"].to_numpy(dtype=np.float64)
    index = pd.DatetimeIndex(candles.index)
    tensors: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    for k, window in windows.items():
        shape = (len(candles), 3 * len(names))
        if out_dir is None:
            tensors[k] = np.empty(shape, dtype=np.float32)
            for start, block in window_blocks(feats, window):
                tensors[k][start : start + len(block)] = fitted[k].transform(block)
            continue
        writer = _NpyWriter(out_dir / f"{k}.npy", shape, np.dtype(np.float32))
        try:
            for _, block in window_blocks(feats, window):
                writer.write(fitted[k].transform(block))
        finally:
            hashes[k] = writer.close()
    market = MarketData(
        index=index,
        close=close,
        returns=bar_returns(close),
        macro=tensors.get("macro", np.empty((0, 0), dtype=np.float32)),
        micro=tensors.get("micro", np.empty((0, 0), dtype=np.float32)),
        splits=splits,
        feature_names=names,
        macro_window=macro_window,
        micro_window=micro_window,
        scalers={k: v.to_dict() for k, v in fitted.items()},
        fingerprint=data_fingerprint(candles),
        meta={"first_valid": first_valid, "row_splits": dict(row_splits)},
    )
    if out_dir is not None:
        for k, array in (("index", index.as_unit("ns").asi8), ("close", close)):
            path = out_dir / f"{k}.npy"
            np.save(path, array)
            hashes[k] = _file_hash(path)
        market.macro, market.micro = (_mapped(out_dir / f"{k}.npy") for k in ("macro", "micro"))
        market.meta["hashes"] = hashes
    return market


def _mapped(path: Path) -> np.ndarray:
    """A cache file as a read-only memory map (pages are read when rows are gathered)."""
    array: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    return array


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


META_FILE = "meta.json"


def _entry_meta(market: MarketData, key: str) -> dict[str, Any]:
    meta = {k: v for k, v in market.meta.items() if k != "hashes"}
    return {
        "key": key,
        "hashes": market.meta["hashes"],
        "splits": market.splits,
        "feature_names": market.feature_names,
        "macro_window": market.macro_window,
        "micro_window": market.micro_window,
        "scalers": market.scalers,
        "fingerprint": market.fingerprint,
        "meta": meta,
    }


def _load(path: Path, key: str, verify: bool = True) -> MarketData | None:
    """The cached entry (tensors memory-mapped), or None when missing, stale or corrupt.

    ``verify``: check every file's hash first (read in blocks, so the check needs no memory);
    a corrupt or truncated entry is rebuilt, never trusted.
    """
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        hashes = meta["hashes"]
        if verify and any(_file_hash(path / f"{k}.npy") != hashes[k] for k in ARRAYS):
            return None
        arrays = {k: _mapped(path / f"{k}.npy") for k in ARRAYS}
        close = np.asarray(arrays["close"], dtype=np.float64)
        index = pd.DatetimeIndex(np.asarray(arrays["index"]).astype("datetime64[ns]"))
        market = MarketData(
            index=index.tz_localize("UTC"),
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
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return market


def _discard(path: Path) -> None:
    """Remove a stale entry: renamed aside first, so no reader ever sees it half-deleted."""
    aside = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp")
    )
    try:
        os.replace(path, aside / path.name)
    except FileNotFoundError:  # another process discarded it already
        pass
    shutil.rmtree(aside, ignore_errors=True)


def cached_market(
    candles: pd.DataFrame,
    *,
    cache_dir: str | os.PathLike[str] | None,
    log: Callable[[str], None] | None = print,
    **params: Any,
) -> MarketData:
    """:func:`build_market` through the on-disk cache (``cache_dir=None`` disables it).

    An entry is a folder ``market-<key>/`` of ``.npy`` files and ``meta.json``, written whole
    into a temporary folder and renamed into place (:func:`hmarl.io.staged_folder`), read
    back memory-mapped. Entries built with fitted scalers serve backtests too: a checkpoint's
    scalers are those the entry fitted, so a backtest of the training data reads the
    training run's entry instead of building a second copy of the same tensors.
    """
    if cache_dir is None:
        return build_market(candles, **params)
    folder = Path(cache_dir)
    remove_stale_temporaries(folder, "market-*")  # debris of builds killed mid-write
    fingerprint = data_fingerprint(candles)
    given = params.get("scalers")
    if given is not None:  # the entry that fitted these scalers, if the training run made it
        fitted_key = cache_key(fingerprint, {**params, "scalers": None})
        shared = _load(folder / f"market-{fitted_key}", fitted_key)
        if shared is not None and shared.scalers == _plain(given):
            if log:
                log(f"features: loaded from cache {folder / f'market-{fitted_key}'}")
            return shared
    key = cache_key(fingerprint, {**params, "scalers": given})  # scalers=None: fitted here
    path = folder / f"market-{key}"
    if path.exists():
        market = _load(path, key)
        if market is not None:
            if log:
                log(f"features: loaded from cache {path}")
            return market
        if log:
            log(f"features: cache entry {path} is stale or corrupt; rebuilding")
        _discard(path)
    with staged_folder(path, "cache_dir", replace=False) as work:
        built = build_market(candles, **params, out_dir=work)
        write_json(work / META_FILE, _entry_meta(built, key))
    market = _load(path, key, verify=False)  # the entry in place (ours, or a twin's)
    if market is None:
        raise OSError(f"cache entry {path} vanished right after it was written; re-run")
    if log:
        log(f"features: built and cached at {path}")
    return market


def _plain(scalers: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, Any]:
    """Scalers as the plain lists a cache entry's meta.json holds (for comparison)."""
    return {k: {s: [float(v) for v in vals] for s, vals in d.items()} for k, d in scalers.items()}


def extra_columns(data: DataConfig, feature_lists: Sequence[Sequence[str]]) -> list[str]:
    """Columns besides OHLCV a loader keeps: those the features read, then
    ``data.extra_columns`` (a missing one is the loader's error, naming it)."""
    wanted = [c for names in feature_lists for c in required_columns(names)]
    wanted += list(data.extra_columns)
    return list(dict.fromkeys(c for c in wanted if c not in CANDLE_COLUMNS))


def release_rows(array: np.ndarray, lo: int, hi: int) -> None:
    """Drop rows [lo, hi) of a read-only memory-mapped array from this process's resident set.

    Why: a pass over every row of a long market (a backtest's blockwise policy pass) touches
    every page of the cache's mapping, and touched pages count in the process's memory until
    it unmaps them: about 0.5 GB per million rows of windows. Released once a block is done,
    they stay in the OS page cache (reading them again costs no disk read) but no longer in
    this process. Anything but a read-only ``np.memmap`` (an array built in memory, which
    ``MADV_DONTNEED`` would zero) is left alone.
    """
    mapping = getattr(array, "_mmap", None)
    if not isinstance(array, np.memmap) or mapping is None or array.flags.writeable:
        return
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data  # where the mapping starts
    row = array.strides[0]
    start = array.ctypes.data - base + lo * row
    page = mmap.PAGESIZE
    a = max(0, start - start % page)
    b = min(len(mapping), start + (hi - lo) * row)
    if b > a:
        mapping.madvise(mmap.MADV_DONTNEED, a, b - a)


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
    extra = extra_columns(data, [names])
    min_candles = candles_needed(names, macro_window, micro_window)
    reason = (
        f"{longer_window(macro_window, micro_window)} + feature warm-up "
        f"{feature_lookback(names)} + room for validation and test splits"
    )
    candles = load_market_candles(
        data, min_candles=min_candles, extra_columns=extra, log=log, need_reason=reason
    )
    for note in data_warnings(candles, macro_window, micro_window):
        print(f"warning: {note}", file=sys.stderr)
    return cached_market(
        candles,
        cache_dir=cache_dir,
        log=log,
        feature_names=names,
        macro_window=macro_window,
        micro_window=micro_window,
        scalers=scalers,
        **split_args(data),
    )


def split_args(data: DataConfig) -> dict[str, Any]:
    """The split keys of a data config, as :func:`build_market` takes them."""
    return {
        "train_frac": data.train_frac,
        "val_frac": data.val_frac,
        "val_start": data.val_start,
        "test_start": data.test_start,
    }
