"""A backtest's inputs: its checkpoint and the data rebuilt exactly as that checkpoint needs it.

Why apart from the runs: everything here refuses before anything runs. A checkpoint that
lacks keys, a feature request other than its training features, data too short or of
another bar length, dates that leave no decision bars: each is a :class:`BacktestError`
naming the input and the fix. Scalers are the checkpoint's, never refitted (a scaler fitted
on the backtest period would leak its statistics into the inputs).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf

from hmarl.agent.checkpoint import Checkpoint, check_keys, checkpoint_file, load_checkpoint
from hmarl.config import BacktestError, DataConfig, DataSource
from hmarl.data.timestamps import as_utc
from hmarl.io import UnwritableOutputError
from hmarl.market.env import EnvParams
from hmarl.market.features import required_columns
from hmarl.market.market_data import (
    MarketData,
    candles_needed,
    longer_window,
    resolve_feature_names,
)
from hmarl.market.specialist_data import inputs_from_spec, market_for_model
from hmarl.tracking import BEST_CHECKPOINT, LAST_CHECKPOINT, fetch_run_checkpoint


def load_backtest_checkpoint(
    checkpoint: str | None,
    run_id: str | None,
    tracking_uri: str,
    device: torch.device | str = "cpu",
) -> tuple[Checkpoint, str]:
    """The checkpoint (loaded weights-only, never executing code) and where it came from."""
    if checkpoint is not None:
        path = checkpoint_file(checkpoint, (BEST_CHECKPOINT, LAST_CHECKPOINT))
        ckpt, source = load_checkpoint(path, map_location=device), str(path.resolve())
    elif run_id is not None:
        with tempfile.TemporaryDirectory(prefix="hmarl-ckpt-") as tmp:
            path, source = fetch_run_checkpoint(run_id, tracking_uri, Path(tmp))
            ckpt = load_checkpoint(path, map_location=device)
    else:
        raise BacktestError("give exactly one of checkpoint=<path> or run_id=<MLflow run id>")
    check_keys(ckpt, source, "backtested")
    return ckpt, source


def check_feature_request(
    spec: Mapping[str, Any],
    names: Sequence[str] | None,
    macro_window: int | None,
    micro_window: int | None,
) -> None:
    """Refuse features or windows other than the checkpoint's (what its weights expect)."""
    requested = {
        "names": None if names is None else resolve_feature_names(names),
        "macro_window": macro_window,
        "micro_window": micro_window,
    }
    problems = [
        f"features.{key}={value} but the checkpoint was trained with {spec[key]}"
        for key, value in requested.items()
        if value is not None and value != spec[key]
    ]
    if problems:
        raise BacktestError(
            "this backtest asks for a feature set the checkpoint was not trained on:\n  "
            + "\n  ".join(problems)
            + "\nA policy only understands its training inputs; drop the features.* overrides "
            "to use the checkpoint's, or backtest a checkpoint trained with these features"
        )


def checkpoint_env(
    env: Mapping[str, Any], commission: float | None = None, slippage_bps: float | None = None
) -> EnvParams:
    """The checkpoint's execution rules, with optional cost overrides."""
    params = EnvParams(**env)
    return replace(
        params,
        commission=params.commission if commission is None else commission,
        slippage_bps=params.slippage_bps if slippage_bps is None else slippage_bps,
    )


def data_config_for(ckpt: Mapping[str, Any], data: DataConfig | None) -> DataConfig:
    """``data`` as given, else the checkpoint's training data config (its test split by default)."""
    if data is not None:
        return data
    stored = ckpt.get("config", {}).get("data")
    if stored is None:
        raise BacktestError(
            "the checkpoint records no data config; pass data=... (e.g. data=csv data.path=...)"
        )
    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), stored))
    assert isinstance(obj, DataConfig)
    return obj


def describe_data(data: DataConfig) -> str:
    if data.source == DataSource.synthetic:
        return f"data=synthetic (n_candles={data.n_candles}, market_seed={data.market_seed})"
    return f"data={data.source.value} data.path={data.path}"


def backtest_market(
    spec: Mapping[str, Any],
    data: DataConfig,
    cache_dir: str | None,
    log: Callable[[str], None] | None = print,
) -> MarketData:
    """Candles -> the checkpoint's features, windows and scalers (never refitted).

    Data the features cannot be built from (a missing column, too few candles, invalid
    rows) is refused with the checkpoint's needs spelled out beside the loader's reason.
    """
    names = list(spec["names"])
    try:
        market = market_for_model(
            data,
            feature_names=names,
            macro_window=int(spec["macro_window"]),
            micro_window=int(spec["micro_window"]),
            specialists=inputs_from_spec(spec),
            cache_dir=cache_dir,
            scalers=spec["scalers"],
            log=log,
        )
    except UnwritableOutputError:
        raise  # the cache folder, not the data: its own message names cache_dir=
    except ValueError as exc:
        macro, micro = int(spec["macro_window"]), int(spec["micro_window"])
        need = candles_needed(names, macro, micro)
        raise BacktestError(
            f"{describe_data(data)} cannot give this checkpoint's inputs: its {len(names)} "
            f"features {names} read columns {required_columns(names)} and need at least {need} "
            f"candles ({longer_window(macro, micro)} + warm-up).\n  {exc}"
        ) from exc
    trained = spec.get("bar_seconds")  # absent in checkpoints written before it was recorded
    if trained is not None and abs(market.bar_seconds - float(trained)) > 1e-6:
        raise BacktestError(
            f"{describe_data(data)} has {market.bar_seconds:g} s bars but the checkpoint was "
            f"trained on {float(trained):g} s bars: its windows ({spec['macro_window']} and "
            f"{spec['micro_window']} bars) would cover other spans of time. Resample the data "
            f"(data.resample=...) to the training bar length"
        )
    if market.feature_names != names or market.scalers != spec["scalers"]:
        raise BacktestError(
            "rebuilt inputs differ from the checkpoint's feature spec (names or scalers)"
        )
    return market


def _utc(value: str, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise BacktestError(f"{what}={value!r} is not a date") from exc
    return as_utc(ts)


def decision_range(
    market: MarketData, split: str, start: str | None = None, end: str | None = None
) -> tuple[int, int]:
    """Decision rows [lo, hi) of a split (``all``: every row with complete windows), cut to dates.

    Date bounds cut decision bars, not candles: the windows before ``start`` still see the
    history they need, so the first decision is as informed as any other.
    """
    if split == "all":
        lo, hi = market.splits["train"][0], market.splits["test"][1]
    elif split in market.splits:
        lo, hi = market.splits[split]
    else:
        raise BacktestError(f"split={split!r}; choose train, val, test or all")
    first, last = lo, hi
    if start is not None:
        lo = max(lo, int(market.index.searchsorted(_utc(start, "start"), side="left")))
    if end is not None:
        hi = min(hi, int(market.index.searchsorted(_utc(end, "end"), side="left")))
    if hi - lo < 2:
        raise BacktestError(
            f"split={split} start={start} end={end} leaves {max(hi - lo, 0)} decision bars; the "
            f"split's decisions span {market.index[first]} .. {market.index[last - 1]}"
        )
    return lo, hi


def in_sample(ckpt: Mapping[str, Any], market: MarketData, lo: int, hi: int) -> bool:
    """True when these rows overlap the training or model-selection (val) rows of this data.

    Only decidable on the training data itself (same fingerprint, so the same rows); on
    other data the report records both fingerprints instead.
    """
    if market.fingerprint != ckpt["data_fingerprint"]:
        return False
    used = [ckpt.get("data_splits", {}).get(k) for k in ("train", "val")]
    return any(r is not None and lo < int(r[1]) and int(r[0]) < hi for r in used)
