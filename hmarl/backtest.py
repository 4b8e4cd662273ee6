"""Backtest entry point: ``python -m hmarl.backtest checkpoint=<path>`` or ``run_id=<MLflow id>``.

A backtest answers one question honestly: what would this checkpoint have done on these
bars, net of these costs, and how does that compare with doing something trivial on the
same bars with the same costs? So it:

1. loads the checkpoint without executing code (:func:`hmarl.checkpoint.load_checkpoint`),
   from a file or from an MLflow run's ``checkpoints/best.pt`` (falling back to ``last.pt``);
2. rebuilds the inputs with the checkpoint's feature names, windows and scalers (never
   refitted: a scaler refitted on the backtest period would leak its statistics into the
   inputs), and refuses a feature request or data that cannot give those inputs;
3. runs the policy deterministically (argmax), optionally stochastically over K seeds, and
   at several cost multipliers (the policy never sees costs, so only settlement changes);
4. settles the baselines of :mod:`hmarl.baselines` on the same rows and costs;
5. writes one report folder (stats.json/csv, daily.csv, trades.csv, steps.csv, costs.csv,
   stochastic.csv, PNG figures), all atomically, and logs it to MLflow as a run tagged
   ``kind=backtest`` that links to its training run (tag ``train_run_id``).

Fill rule (from :mod:`hmarl.env`): the decision at bar t's close fills at that close plus
``slippage_bps``; commission and slippage are charged on traded notional; the position is
held over bar t+1. Every figure comes from :func:`hmarl.metrics.compute_stats`.

Only :func:`main` sees Hydra's config; it converts it to :class:`BacktestConfig` at once.
:func:`backtest` takes that typed config (like :func:`hmarl.train.train`) and passes plain
values to the functions below, which tests and notebooks can call directly.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hmarl import __version__
from hmarl.baselines import BASELINES, baseline_steps
from hmarl.checkpoint import (
    CheckpointError,
    checkpoint_episode,
    load_checkpoint,
    policy_from_checkpoint,
)
from hmarl.cli import reported_errors, run_cli
from hmarl.config import (
    RANGES,
    SEED,
    DataConfig,
    DataSource,
    Range,
    TrackingConfig,
    at_least,
    check_dates,
    check_device,
    check_values,
    conf_dir,
    flatten,
    register_configs,
)
from hmarl.dataset import MarketData, market_for_config, resolve_feature_names
from hmarl.env import EnvParams
from hmarl.evaluation import market_tensors, run_split
from hmarl.features import feature_lookback, required_columns
from hmarl.io import write_csv, write_json, write_png
from hmarl.metrics import Calendar, compute_stats, metric_keys, stats_table, trades
from hmarl.plots import drawdown_figure, equity_figure, positions_figure, probabilities_figure
from hmarl.policy import HierarchicalPolicy
from hmarl.rollout import MarketTensors
from hmarl.tracking import MlflowTracker, Tracker, git_commit, ui_command
from hmarl.train import resolve_device

Stats = dict[str, Any]
STRATEGY = "strategy"
FILL_RULE = (
    "decide at bar t's close; fill at that close plus slippage_bps; commission and slippage "
    "on traded notional; the position is held over bar t+1"
)
TAG_KEYS = (  # meta entries copied to the MLflow run's tags
    "train_run_id",
    "checkpoint",
    "split",
    "data_fingerprint",
    "train_data_fingerprint",
    "in_sample",
)
CHECKPOINT_KEYS = ("policy", "model", "env", "feature_spec", "train_state", "data_fingerprint")


class BacktestError(ValueError):
    """A backtest request that cannot be honoured (bad input, incompatible checkpoint)."""


# ----------------------------------------------------------------------------- config schema


class Split(str, Enum):
    """Which decision rows to run: a chronological split of the data, or all of them."""

    train = "train"
    val = "val"
    test = "test"
    all = "all"


@dataclass
class FeatureCheckConfig:
    """Optional expectations on the checkpoint's inputs; any value set must match it.

    A policy only understands the inputs it was trained on, so these never change what
    is built: they make a mismatch fail loudly instead of silently feeding other inputs.
    """

    names: list[str] | None = None  # null: the checkpoint's feature names
    macro_window: int | None = None
    micro_window: int | None = None


@dataclass
class CalendarConfig:
    """The market's clock for annualisation (see hmarl.metrics.Calendar)."""

    name: str = "crypto"
    trading_days_per_year: float = 365.25
    session_hours: float = 24.0


@dataclass
class BacktestConfig:
    """The whole backtest configuration (``conf/backtest.yaml``)."""

    checkpoint: str | None = None  # path of a checkpoint (.pt); or run_id
    run_id: str | None = None  # MLflow run whose checkpoints/best.pt (else last.pt) to use
    data: DataConfig | None = None  # None: the checkpoint's training data config
    features: FeatureCheckConfig = field(default_factory=FeatureCheckConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    split: Split = Split.test
    start: str | None = None  # UTC bounds [start, end) on decision bars inside the split
    end: str | None = None
    out: str | None = None  # report folder; None: backtests/<date>/<time>
    seeds: int = 0  # K > 0: also K stochastic runs (seeds 0..K-1), mean and std reported
    fee_multipliers: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    commission: float | None = None  # None: the checkpoint's env.commission
    slippage_bps: float | None = None  # None: the checkpoint's env.slippage_bps
    momentum_bars: int = 12  # lookback of the momentum baseline
    seed: int = 0  # random baseline and Sharpe bootstrap
    n_bootstrap: int = 1000  # resamples of the Sharpe confidence interval; 0 skips it
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    device: str = "cpu"  # auto | cpu | cuda | cuda:N
    cache_dir: str | None = ".hmarl_cache"  # built tensors (keyed by data + features + scalers)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    plots: bool = True
    progress: bool = True


def register_backtest_configs() -> None:
    """Register ``base_backtest`` (and the shared group schemas) in Hydra's ConfigStore."""
    register_configs()
    ConfigStore.instance().store(name="base_backtest", node=BacktestConfig)


# Accepted values of the backtest's own numeric keys (data.* and tracking.* use config.RANGES).
BACKTEST_RANGES: dict[type, dict[str, Range]] = {
    **RANGES,
    BacktestConfig: {
        "seeds": at_least(0),
        "fee_multipliers": at_least(0),
        "commission": Range(0.0, 1.0, hi_open=True),
        "slippage_bps": Range(0.0, 1e4, hi_open=True),
        "momentum_bars": at_least(1),
        "seed": SEED,
        "n_bootstrap": at_least(0),
        "threads": at_least(0),
    },
    FeatureCheckConfig: {"macro_window": at_least(2), "micro_window": at_least(2)},
    CalendarConfig: {
        "trading_days_per_year": Range(0.0, 366.0, lo_open=True),
        "session_hours": Range(0.0, 24.0, lo_open=True),
    },
}


def to_backtest_config(cfg: DictConfig | BacktestConfig) -> BacktestConfig:
    """Convert a composed config into :class:`BacktestConfig`; check keys and value ranges."""
    obj = cfg if isinstance(cfg, BacktestConfig) else OmegaConf.to_object(cfg)
    if not isinstance(obj, BacktestConfig):  # composed without the schema
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BacktestConfig), cfg))
    assert isinstance(obj, BacktestConfig)
    problems = check_values(obj, BACKTEST_RANGES) + check_device(obj.device)
    if (obj.checkpoint is None) == (obj.run_id is None):
        problems.append("give exactly one of checkpoint=<path> or run_id=<MLflow run id>")
    if not obj.fee_multipliers:
        problems.append("fee_multipliers must be a non-empty list of numbers >= 0")
    if obj.data is not None:
        problems += check_dates(obj.data, "data.")
    if problems:
        raise BacktestError("invalid backtest configuration: " + "; ".join(problems))
    return obj


# ----------------------------------------------------------------------------- checkpoint


def fetch_run_checkpoint(run_id: str, tracking_uri: str, dst: Path) -> tuple[Path, str]:
    """Download an MLflow run's ``checkpoints/best.pt`` (else ``last.pt``) into ``dst``."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        names = {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoints")}
    except MlflowException as exc:
        raise BacktestError(f"MLflow run {run_id!r} not found at {tracking_uri}: {exc}") from exc
    for name in ("best.pt", "last.pt"):
        if name in names:
            local = client.download_artifacts(run_id, f"checkpoints/{name}", str(dst))
            return Path(local), f"runs:/{run_id}/checkpoints/{name}"
    raise BacktestError(
        f"MLflow run {run_id} at {tracking_uri} has no checkpoints/best.pt or "
        f"checkpoints/last.pt artifact (artifacts: {sorted(names) or 'none'}); was it trained "
        "with tracking.log_checkpoints=false? Pass checkpoint=<path> instead"
    )


def load_backtest_checkpoint(
    checkpoint: str | None,
    run_id: str | None,
    tracking_uri: str,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, Any], str]:
    """The checkpoint (loaded weights-only, never executing code) and where it came from."""
    if checkpoint is not None:
        ckpt, source = (
            load_checkpoint(checkpoint, map_location=device),
            str(Path(checkpoint).resolve()),
        )
    elif run_id is not None:
        with tempfile.TemporaryDirectory(prefix="hmarl-ckpt-") as tmp:
            path, source = fetch_run_checkpoint(run_id, tracking_uri, Path(tmp))
            ckpt = load_checkpoint(path, map_location=device)
    else:
        raise BacktestError("give exactly one of checkpoint=<path> or run_id=<MLflow run id>")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{source} lacks {missing}: it cannot be backtested")
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


def scaled_costs(env: EnvParams, multiplier: float) -> EnvParams:
    """Commission and slippage times ``multiplier`` (cost sensitivity)."""
    return replace(
        env, commission=env.commission * multiplier, slippage_bps=env.slippage_bps * multiplier
    )


# ----------------------------------------------------------------------------- data


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
        market = market_for_config(
            data,
            feature_names=names,
            macro_window=int(spec["macro_window"]),
            micro_window=int(spec["micro_window"]),
            cache_dir=cache_dir,
            scalers=spec["scalers"],
            log=log,
        )
    except ValueError as exc:
        need = int(spec["macro_window"]) + feature_lookback(names) + 10
        raise BacktestError(
            f"{describe_data(data)} cannot give this checkpoint's inputs: its {len(names)} "
            f"features {names} read columns {required_columns(names)} and need at least {need} "
            f"candles (macro window {spec['macro_window']} + warm-up).\n  {exc}"
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
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


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


# ----------------------------------------------------------------------------- runs and stats


def calendar_of(cal: CalendarConfig) -> Calendar:
    return Calendar(cal.name, cal.trading_days_per_year, cal.session_hours)


def stats_of(
    runs: Mapping[str, pd.DataFrame], calendar: Calendar, n_bootstrap: int, seed: int
) -> dict[str, Stats]:
    """:func:`compute_stats` of each steps frame, one calendar and bootstrap for all."""
    return {
        name: compute_stats(steps, calendar=calendar, n_bootstrap=n_bootstrap, seed=seed)
        for name, steps in runs.items()
    }


def strategy_and_baselines(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    momentum_bars: int,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Steps frames of the deterministic policy, then of each baseline: same rows, same costs."""
    steps = run_split(policy, market, tensors, rows, env)
    runs = {STRATEGY: steps}
    runs.update(
        baseline_steps(
            market,
            *rows,
            env,
            agent_actions=steps["action"].to_numpy(),
            momentum_bars=momentum_bars,
            seed=seed,
        )
    )
    return runs


def stochastic_stats(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    seeds: int,
    calendar: Calendar,
    tick: Callable[[], object] = lambda: None,
) -> pd.DataFrame:
    """Numeric stats of ``seeds`` sampled runs (seeds 0..K-1), one row per seed."""
    records = {}
    for seed in range(seeds):
        steps = run_split(policy, market, tensors, rows, env, greedy=False, seed=seed)
        stats = compute_stats(steps, calendar=calendar, n_bootstrap=0)
        records[seed] = {k: v for k, v in stats.items() if not isinstance(v, str)}
        tick()
    frame = pd.DataFrame.from_dict(records, orient="index")
    frame.index.name = "seed"
    return frame


def summarise_seeds(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1; 0 with one seed) of each stochastic stat."""
    mean = frame.mean()
    std = frame.std(ddof=1) if len(frame) > 1 else mean * 0.0
    return {
        "mean": {str(k): float(v) for k, v in mean.items()},
        "std": {str(k): float(v) for k, v in std.items()},
    }


def cost_sensitivity(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    multipliers: Iterable[float],
    *,
    calendar: Calendar,
    momentum_bars: int,
    seed: int,
    tick: Callable[[], object] = lambda: None,
) -> pd.DataFrame:
    """Stats of the strategy and baselines at each cost multiplier, one row per (x, run)."""
    records = []
    for m in multipliers:
        env_m = scaled_costs(env, m)
        runs = strategy_and_baselines(policy, market, tensors, rows, env_m, momentum_bars, seed)
        for name, stats in stats_of(runs, calendar, 0, seed).items():
            records.append({"fee_multiplier": float(m), "run": name, **stats})
        tick()
    return pd.DataFrame.from_records(records).set_index(["fee_multiplier", "run"])


# ----------------------------------------------------------------------------- tables


def daily_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """Per UTC day of decision bars: PnL, return, drawdown, trades, position, fees, actions.

    Columns: ``bars``; ``equity_start``/``equity_end`` (x initial equity, before the day's
    first fee / after its last bar); ``pnl`` (their difference, x initial equity);
    ``return_pct``; ``drawdown_pct`` (at the day's end, from the running peak since the
    start) and ``max_drawdown_pct`` (deepest point of the day); ``trades`` (trades entered
    that day, as in trades.csv); ``mean_position``; ``exposure_pct``; ``turnover`` (x
    equity); ``fees`` (fees paid, x initial equity); ``hold``/``buy``/``sell`` (action
    counts) and ``p_hold``/``p_buy``/``p_sell`` (mean probabilities, when present).
    """
    equity = steps["equity"].to_numpy(dtype=np.float64)
    before = np.concatenate(([1.0], equity[:-1]))
    peak = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    action = steps["action"].to_numpy()
    per_bar = pd.DataFrame(
        {
            "equity_start": before,
            "equity_end": equity,
            "drawdown": equity / peak - 1.0,
            "position": steps["position"].to_numpy(dtype=np.float64),
            "exposed": steps["position"].to_numpy() != 0.0,
            "turnover": steps["turnover"].to_numpy(dtype=np.float64),
            "fees": steps["fee"].to_numpy(dtype=np.float64) * before,
            "hold": action == 0,
            "buy": action == 1,
            "sell": action == 2,
        },
        index=pd.DatetimeIndex(steps.index).floor("D"),
    )
    probs = [c for c in ("p_hold", "p_buy", "p_sell") if c in steps.columns]
    for c in probs:
        per_bar[c] = steps[c].to_numpy(dtype=np.float64)
    g = per_bar.groupby(level=0, sort=True)
    out = pd.DataFrame(
        {
            "bars": g.size(),
            "equity_start": g["equity_start"].first(),
            "equity_end": g["equity_end"].last(),
        }
    )
    out["pnl"] = out["equity_end"] - out["equity_start"]
    out["return_pct"] = (out["equity_end"] / out["equity_start"] - 1.0) * 100.0
    out["drawdown_pct"] = g["drawdown"].last() * 100.0
    out["max_drawdown_pct"] = g["drawdown"].min() * 100.0
    entries = pd.DatetimeIndex(trades(steps)["entry"]).floor("D")
    out["trades"] = (
        pd.Series(1, index=entries).groupby(level=0).sum().reindex(out.index, fill_value=0)
    )
    out["mean_position"] = g["position"].mean()
    out["exposure_pct"] = g["exposed"].mean() * 100.0
    out["turnover"] = g["turnover"].sum()
    out["fees"] = g["fees"].sum()
    for c in ("hold", "buy", "sell"):
        out[c] = g[c].sum().astype(np.int64)
    for c in probs:
        out[c] = g[c].mean()
    out.index = pd.Index(pd.DatetimeIndex(out.index).strftime("%Y-%m-%d"), name="date")
    return out


def format_table(table: pd.DataFrame) -> str:
    """The stats table for a terminal: 4 significant digits, strings as they are."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    return table.map(cell).to_string()


# ----------------------------------------------------------------------------- writing


def report_figures(runs: Mapping[str, pd.DataFrame], label: str) -> dict[str, Figure]:
    """The four report figures: equity vs baselines, drawdown, positions, probabilities."""
    steps = runs[STRATEGY]
    return {
        "equity.png": equity_figure(runs, f"Equity against baselines, {label}"),
        "drawdown.png": drawdown_figure(
            {k: runs[k] for k in (STRATEGY, "buy_and_hold") if k in runs}, f"Drawdown, {label}"
        ),
        "positions.png": positions_figure(steps, f"Price, trades and position, {label}"),
        "action_probabilities.png": probabilities_figure(steps, f"Action probabilities, {label}"),
    }


def write_report(
    out: Path,
    doc: Mapping[str, Any],
    runs: Mapping[str, pd.DataFrame],
    table: pd.DataFrame,
    costs: pd.DataFrame,
    seeds_frame: pd.DataFrame | None,
    plot_label: str | None,
) -> list[Path]:
    """Every report file, each written atomically; figures unless ``plot_label`` is None."""
    steps = runs[STRATEGY]
    files = [
        write_json(out / "stats.json", doc),
        write_csv(out / "stats.csv", table),
        write_csv(out / "daily.csv", daily_frame(steps)),
        write_csv(out / "trades.csv", trades(steps), index=False),
        write_csv(out / "steps.csv", steps),
        write_csv(out / "costs.csv", costs),
    ]
    if seeds_frame is not None:
        files.append(write_csv(out / "stochastic.csv", seeds_frame))
    if plot_label is not None:
        figures = report_figures(runs, plot_label)
        files += [write_png(out / name, fig) for name, fig in figures.items()]
    return files


# ----------------------------------------------------------------------------- tracking


def start_backtest_tracker(
    tracking: TrackingConfig, run_name: str, tags: Mapping[str, str]
) -> Tracker:
    if not tracking.enabled:
        return Tracker()
    return MlflowTracker(
        tracking.uri, tracking.experiment, run_name=run_name[-250:], tags=dict(tags)
    )


def backtest_metrics(
    stats: Mapping[str, Stats],
    stochastic: Mapping[str, Mapping[str, float]] | None,
    costs: pd.DataFrame | None,
) -> dict[str, float]:
    """MLflow metrics: strategy keys bare (``sharpe``), baselines as ``buy_and_hold/sharpe``,
    ``stochastic_mean/...``, ``stochastic_std/...`` and the strategy at ``fees_x2/...``."""
    out = metric_keys(stats[STRATEGY])
    for name, s in stats.items():
        if name != STRATEGY:
            out.update(metric_keys(s, prefix=f"{name}/"))
    for part, values in (stochastic or {}).items():
        out.update(metric_keys(values, prefix=f"stochastic_{part}/"))
    if costs is not None:
        for record in costs.reset_index().to_dict("records"):
            row = {str(k): v for k, v in record.items()}
            multiplier = row.pop("fee_multiplier")
            if row.pop("run") == STRATEGY:
                out.update(metric_keys(row, prefix=f"fees_x{multiplier:g}/"))
    return {k: v for k, v in out.items() if math.isfinite(v)}


# ----------------------------------------------------------------------------- the backtest


@dataclass
class BacktestResult:
    out_dir: Path
    stats: dict[str, Stats]  # run name -> compute_stats (strategy first, then baselines)
    table: pd.DataFrame  # metrics.stats_table of stats
    steps: pd.DataFrame  # the strategy's steps frame (steps.csv)
    meta: dict[str, Any]
    files: list[Path]
    run_id: str | None = None  # the backtest's MLflow run


def default_out_dir() -> Path:
    return Path("backtests") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def _meta(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    data: DataConfig,
    market: MarketData,
    rows: tuple[int, int],
    env: EnvParams,
) -> dict[str, Any]:
    """Everything needed to know what was run, on what, and whether it is out of sample."""
    spec = ckpt["feature_spec"]
    lo, hi = rows
    sample = in_sample(ckpt, market, lo, hi)
    return {
        "checkpoint": source,
        "train_run_id": cfg.run_id or ckpt["train_state"].get("run_id"),
        "checkpoint_episode": checkpoint_episode(ckpt),  # the episode of the weights loaded
        "best_episode": ckpt["train_state"].get("best_episode"),  # the run's best when saved
        "data": describe_data(data),
        "data_fingerprint": market.fingerprint,
        "train_data_fingerprint": ckpt["data_fingerprint"],
        "same_data_as_training": market.fingerprint == ckpt["data_fingerprint"],
        "in_sample": sample,
        "split": cfg.split.value,
        "decision_rows": [lo, hi],
        "first_decision": market.index[lo].isoformat(),
        "last_decision": market.index[hi - 1].isoformat(),
        "bars": hi - lo,
        "features": list(spec["names"]),
        "macro_window": spec["macro_window"],
        "micro_window": spec["micro_window"],
        "env": asdict(env),
        "fill_rule": FILL_RULE,
        "calendar": asdict(cfg.calendar),
        "n_bootstrap": cfg.n_bootstrap,
        "seed": cfg.seed,
        "momentum_bars": cfg.momentum_bars,
        "baselines": list(BASELINES),
        "hmarl": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def backtest(cfg: BacktestConfig, out_dir: str | os.PathLike[str] | None = None) -> BacktestResult:
    """Run the whole backtest of ``cfg`` and write its report folder (see module docstring)."""
    out = Path(out_dir or cfg.out or default_out_dir())
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)

    # ---- checkpoint and the inputs it needs ----
    ckpt, source = load_backtest_checkpoint(cfg.checkpoint, cfg.run_id, cfg.tracking.uri, device)
    spec = ckpt["feature_spec"]
    check_feature_request(
        spec, cfg.features.names, cfg.features.macro_window, cfg.features.micro_window
    )
    data = data_config_for(ckpt, cfg.data)
    market = backtest_market(spec, data, cfg.cache_dir)
    rows = decision_range(market, cfg.split.value, cfg.start, cfg.end)
    env = checkpoint_env(ckpt["env"], cfg.commission, cfg.slippage_bps)
    meta = _meta(cfg, ckpt, source, data, market, rows, env)
    if meta["in_sample"]:
        print(
            f"warning: split={cfg.split.value} overlaps the rows this checkpoint was trained or "
            "selected on: these figures are in-sample and flatter the policy",
            file=sys.stderr,
        )
    policy = policy_from_checkpoint(ckpt, device, source)
    tensors = market_tensors(market, device)
    calendar = calendar_of(cfg.calendar)

    tags = {"kind": "backtest", **{k: str(meta[k]) for k in TAG_KEYS}, "git_commit": git_commit()}
    tracker = start_backtest_tracker(cfg.tracking, f"backtest {cfg.split.value} {source}", tags)
    status = "FAILED"
    pbar = tqdm(
        total=3 + cfg.seeds + len(cfg.fee_multipliers),
        disable=not cfg.progress,
        desc="backtest",
        unit="run",
    )
    try:
        # ---- deterministic policy and baselines, same rows and costs ----
        runs = strategy_and_baselines(
            policy, market, tensors, rows, env, cfg.momentum_bars, cfg.seed
        )
        steps = runs[STRATEGY]
        pbar.update(1)
        stats = stats_of(runs, calendar, cfg.n_bootstrap, cfg.seed)
        table = stats_table(stats)
        pbar.update(1)

        # ---- optional: stochastic runs, cost sensitivity ----
        seeds_frame = (
            stochastic_stats(
                policy, market, tensors, rows, env, cfg.seeds, calendar, lambda: pbar.update(1)
            )
            if cfg.seeds > 0
            else None
        )
        stochastic = summarise_seeds(seeds_frame) if seeds_frame is not None else None
        costs = cost_sensitivity(
            policy,
            market,
            tensors,
            rows,
            env,
            cfg.fee_multipliers,
            calendar=calendar,
            momentum_bars=cfg.momentum_bars,
            seed=cfg.seed,
            tick=lambda: pbar.update(1),
        )

        # ---- report folder ----
        doc: dict[str, Any] = {"meta": {**meta, "mlflow_run_id": tracker.run_id}, "stats": stats}
        if stochastic is not None:
            doc["stochastic"] = {"seeds": cfg.seeds, **stochastic}
        label = f"{cfg.split.value} {meta['first_decision'][:10]} .. {meta['last_decision'][:10]}"
        files = write_report(
            out, doc, runs, table, costs, seeds_frame, label if cfg.plots else None
        )
        pbar.update(1)

        tracker.log_params(flatten(asdict(cfg)))
        tracker.log_metrics(backtest_metrics(stats, stochastic, costs), step=0)
        for path in files:
            tracker.log_artifact(path, "backtest")
        status = "FINISHED"
    finally:
        pbar.close()
        tracker.finish(status)
    result = BacktestResult(out, stats, table, steps, doc["meta"], files, tracker.run_id)
    _print_summary(result, cfg)
    return result


def _print_summary(result: BacktestResult, cfg: BacktestConfig) -> None:
    m = result.meta
    lines = [
        f"backtest of {m['checkpoint']} on {m['data']}, split={m['split']} "
        f"({m['first_decision']} .. {m['last_decision']}, {m['bars']} bars)",
        f"costs: commission {m['env']['commission']:g}, slippage {m['env']['slippage_bps']:g} bps; "
        f"{FILL_RULE}",
        format_table(result.table),
        f"report: {result.out_dir.resolve()}",
    ]
    if m["in_sample"]:
        lines.append("IN-SAMPLE: these bars were used for training or checkpoint selection")
    if result.run_id:
        lines.append(
            f"MLflow run: {result.run_id} (kind=backtest, train_run_id={m['train_run_id']})"
        )
        lines.append(f"open the UI: {ui_command(cfg.tracking.uri)}")
    print("\n".join(lines))


register_backtest_configs()


@hydra.main(config_path=str(conf_dir()), config_name="backtest", version_base="1.3")
def hydra_main(dcfg: DictConfig) -> None:
    """Compose, convert to :class:`BacktestConfig`, run."""
    with reported_errors(BacktestConfig):
        cfg = to_backtest_config(dcfg)
        backtest(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    """``python -m hmarl.backtest``: one ``error:`` line, exit 2 (bad input) or 1 (hmarl/cli.py)."""
    run_cli(hydra_main, BacktestConfig)


if __name__ == "__main__":
    main()
