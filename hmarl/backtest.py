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
from typing import Any, NamedTuple

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from hmarl import __version__
from hmarl.baselines import (
    BASELINE_DEFINITIONS,
    MOMENTUM_LOOKBACKS,
    baseline_steps,
    choose_momentum_lookback,
    momentum_band,
)
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
from hmarl.io import append_text, write_csv, write_json, write_png
from hmarl.metrics import (
    STAT_DEFINITIONS,
    Calendar,
    compute_stats,
    flag_sentences,
    metric_keys,
    outcome_flags,
    stats_table,
    trades,
)
from hmarl.plots import drawdown_figure, equity_figure, positions_figure, probabilities_figure
from hmarl.policy import HierarchicalPolicy
from hmarl.random_timing import (
    RANDOM_TIMING_DEFINITION,
    RANDOM_TIMING_N,
    RandomTiming,
    random_timing,
    random_timing_stats,
)
from hmarl.rollout import MarketTensors
from hmarl.steps import (
    ACTION,
    ACTIONS,
    EQUITY,
    FEE,
    POSITION,
    PROB_COLUMNS,
    TURNOVER,
    drawdown,
    equity_points,
)
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
    "flags",
)
DEFAULT_MIN_TRADES = 5  # for checkpoints that record no trainer.min_val_trades
CHECKPOINT_KEYS = ("policy", "model", "env", "feature_spec", "train_state", "data_fingerprint")


AUTO_URI = "auto"  # tracking.uri=auto: log beside the training run (see backtest_tracking)
DEFAULT_URI = TrackingConfig().uri  # sqlite:///mlflow.db in the working directory


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
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(uri=AUTO_URI))
    split: Split = Split.test
    start: str | None = None  # UTC bounds [start, end) on decision bars inside the split
    end: str | None = None
    out: str | None = None  # report folder; None: backtests/<date>/<time>
    policy: str = "auto"  # auto (as validated in training) | greedy (argmax) | sample
    policy_seed: int | None = None  # seed of sampled actions; None: the checkpoint's training seed
    seeds: int = 0  # K > 0: also K stochastic runs (seeds 0..K-1), mean and std reported
    fee_multipliers: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    commission: float | None = None  # None: the checkpoint's env.commission
    slippage_bps: float | None = None  # None: the checkpoint's env.slippage_bps
    momentum_bars: int | None = None  # fixed momentum lookback; None: chosen on validation
    momentum_lookbacks: list[int] = field(default_factory=lambda: list(MOMENTUM_LOOKBACKS))
    random_timing: int = RANDOM_TIMING_N  # policies in the random-timing null; 0 skips it
    min_trades: int | None = None  # fewer trades: flagged few_trades; None: trainer.min_val_trades
    seed: int = 0  # random-timing null and Sharpe bootstrap
    n_bootstrap: int = 1000  # resamples of the Sharpe confidence interval; 0 skips it
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    device: str = "cpu"  # auto | cpu | cuda | cuda:N
    cache_dir: str | None = ".hmarl_cache"  # built tensors (keyed by data + features + scalers)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    plots: bool = True
    report_html: bool = True  # report.html: interactive, self-contained (hmarl.report_html)
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
        "momentum_lookbacks": at_least(1),
        "random_timing": at_least(0),
        "min_trades": at_least(0),
        "policy_seed": SEED,
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
    lookbacks = [obj.momentum_bars] if obj.momentum_bars is not None else obj.momentum_lookbacks
    if not lookbacks or any(n < 1 for n in lookbacks):
        problems.append(
            f"momentum lookbacks must be >= 1 bar and not empty, got momentum_bars="
            f"{obj.momentum_bars}, momentum_lookbacks={obj.momentum_lookbacks}"
        )
    if obj.policy not in ("auto", "greedy", "sample"):
        problems.append(f"policy must be auto, greedy or sample, got {obj.policy!r}")
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
    from mlflow.exceptions import MlflowException  # lazily: a local backtest never loads mlflow
    from mlflow.tracking import MlflowClient

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


class Acting(NamedTuple):
    """How the strategy acts in a backtest: argmax, or sampled actions with a seed."""

    greedy: bool = True
    seed: int = 0

    def describe(self) -> str:
        return "argmax actions" if self.greedy else f"sampled actions (seed {self.seed})"


ARGMAX = Acting()


def acting_for(ckpt: Mapping[str, Any], mode: str, seed: int | None) -> Acting:
    """``auto`` acts as the checkpoint was validated (``trainer.eval_policy``, its seed), so a
    backtest of the validation split reproduces the figures `best.pt` was selected on."""
    trained = ckpt.get("config", {})
    if mode == "auto":  # checkpoints from before eval_policy existed validated with argmax
        mode = str(trained.get("trainer", {}).get("eval_policy", "greedy"))
    if mode not in ("greedy", "sample"):
        raise BacktestError(f"policy={mode!r}: choose auto, greedy or sample")
    return Acting(mode == "greedy", int(trained.get("seed", 0)) if seed is None else seed)


def strategy_and_baselines(
    policy: HierarchicalPolicy,
    market: MarketData,
    tensors: MarketTensors,
    rows: tuple[int, int],
    env: EnvParams,
    momentum_bars: int,
    acting: Acting = ARGMAX,
) -> dict[str, pd.DataFrame]:
    """Steps frames of the policy, then of each baseline: same rows, same costs."""
    strategy = run_split(policy, market, tensors, rows, env, greedy=acting.greedy, seed=acting.seed)
    runs = {STRATEGY: strategy}
    runs.update(baseline_steps(market, *rows, env, momentum_bars=momentum_bars))
    return runs


def choose_momentum(
    market: MarketData,
    env: EnvParams,
    rows: tuple[int, int],
    fixed: int | None,
    lookbacks: Sequence[int],
    calendar: Calendar,
) -> tuple[int, dict[str, Any]]:
    """The momentum baseline's lookback and how it was chosen (for the report's meta).

    Chosen on this data's validation split, like the policy's checkpoint, unless ``fixed``;
    ``in_sample`` says the reported bars overlap the bars it was chosen on.
    """
    info: dict[str, Any] = {"band": momentum_band(env), "rule": BASELINE_DEFINITIONS["momentum"]}
    if fixed is not None:
        return fixed, {**info, "lookback_bars": fixed, "chosen_on": "fixed (momentum_bars)"}
    best, sharpe = choose_momentum_lookback(market, env, lookbacks, "val", calendar)
    v_lo, v_hi = market.splits["val"]
    return best, {
        **info,
        "lookback_bars": best,
        "chosen_on": "val split, best Sharpe after costs",
        "val_sharpe_by_lookback": {str(k): v for k, v in sharpe.items()},
        "in_sample": rows[0] < v_hi and v_lo < rows[1],
    }


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
    acting: Acting = ARGMAX,
    tick: Callable[[], object] = lambda: None,
) -> pd.DataFrame:
    """Stats of the strategy and baselines at each cost multiplier, one row per (x, run).

    Only settlement changes: the policy never sees costs, and the momentum rule keeps the
    lookback chosen at 1x (its band follows the costs, as a cost-aware rule's would).
    """
    records = []
    for m in multipliers:
        env_m = scaled_costs(env, m)
        runs = strategy_and_baselines(policy, market, tensors, rows, env_m, momentum_bars, acting)
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
    equity = steps[EQUITY].to_numpy(dtype=np.float64)
    before = np.concatenate(([1.0], equity[:-1]))
    action = steps[ACTION].to_numpy()
    per_bar = pd.DataFrame(
        {
            "equity_start": before,
            "equity_end": equity,
            "drawdown": drawdown(equity_points(equity))[1:],
            POSITION: steps[POSITION].to_numpy(dtype=np.float64),
            "exposed": steps[POSITION].to_numpy() != 0.0,
            TURNOVER: steps[TURNOVER].to_numpy(dtype=np.float64),
            "fees": steps[FEE].to_numpy(dtype=np.float64) * before,
            **{name.lower(): action == code for code, name in enumerate(ACTIONS)},
        },
        index=pd.DatetimeIndex(steps.index).floor("D"),
    )
    probs = [c for c in PROB_COLUMNS if c in steps.columns]
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
    out["mean_position"] = g[POSITION].mean()
    out["exposure_pct"] = g["exposed"].mean() * 100.0
    out[TURNOVER] = g[TURNOVER].sum()
    out["fees"] = g["fees"].sum()
    for c in (name.lower() for name in ACTIONS):
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


def report_figures(
    runs: Mapping[str, pd.DataFrame], label: str, band: pd.DataFrame | None = None
) -> dict[str, Figure]:
    """The four report figures: equity vs baselines and the random-timing band, drawdown,
    positions, probabilities."""
    steps = runs[STRATEGY]
    return {
        "equity.png": equity_figure(runs, f"Equity against baselines, {label}", band),
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
    null: RandomTiming | None = None,
    html: bool = False,
) -> list[Path]:
    """Every report file, each written atomically; figures unless ``plot_label`` is None,
    ``report.html`` when ``html`` (its table is ``table``, the numbers of stats.json)."""
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
    if null is not None:
        files.append(write_csv(out / "random_timing.csv", null_frame(null), index=False))
    if plot_label is not None:
        figures = report_figures(runs, plot_label, None if null is None else null.band)
        files += [write_png(out / name, fig) for name, fig in figures.items()]
    if html:
        from hmarl.report_html import write_report_html  # Bokeh loads only when asked

        band = None if null is None else null.band
        files.append(write_report_html(out / "report.html", runs, table, doc, band))
    return files


def null_frame(null: RandomTiming) -> pd.DataFrame:
    """random_timing.csv: one row per random-timing policy, return and Sharpe after costs."""
    return pd.DataFrame(
        {"return_pct": (null.final_equity - 1.0) * 100.0, "sharpe": null.sharpe},
        index=pd.RangeIndex(null.n, name="policy"),
    ).reset_index()


# ----------------------------------------------------------------------------- tracking


def backtest_tracking(
    tracking: TrackingConfig, ckpt: Mapping[str, Any], run_id: str | None
) -> tuple[TrackingConfig, str]:
    """Where the backtest logs, and why: beside its training run unless told otherwise.

    ``tracking.uri=auto`` (the default): a ``run_id=`` backtest logs to the store it fetched
    the checkpoint from; a ``checkpoint=`` backtest to the store and experiment its
    checkpoint records (absolute), or to ``sqlite:///mlflow.db`` when it records none (older
    checkpoints, training with ``tracking=none``) or its sqlite file is gone. Any other
    ``tracking.uri`` is used as given.
    """
    if not tracking.enabled or tracking.uri != AUTO_URI:
        return tracking, "as configured"
    if run_id is not None:
        return replace(tracking, uri=DEFAULT_URI), "the store the checkpoint was fetched from"
    rec = ckpt.get("tracking") or {}
    uri, experiment = rec.get("uri"), rec.get("experiment")
    if not uri:
        return replace(tracking, uri=DEFAULT_URI), "the checkpoint records no training store"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return replace(tracking, uri=DEFAULT_URI), f"the training store {uri} does not exist"
    return replace(tracking, uri=uri, experiment=experiment or tracking.experiment), (
        "the training run's store"
    )


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
        "baselines": dict(BASELINE_DEFINITIONS),
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
    fetch_uri = DEFAULT_URI if cfg.tracking.uri == AUTO_URI else cfg.tracking.uri
    ckpt, source = load_backtest_checkpoint(cfg.checkpoint, cfg.run_id, fetch_uri, device)
    tracking, store_reason = backtest_tracking(cfg.tracking, ckpt, cfg.run_id)
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
    acting = acting_for(ckpt, cfg.policy, cfg.policy_seed)
    meta["policy"] = acting.describe()
    tensors = market_tensors(market, device)
    calendar = calendar_of(cfg.calendar)
    momentum_bars, meta["momentum"] = choose_momentum(
        market, env, rows, cfg.momentum_bars, cfg.momentum_lookbacks, calendar
    )
    min_trades = cfg.min_trades
    if min_trades is None:
        stored = ckpt.get("config", {}).get("trainer", {}).get("min_val_trades")
        min_trades = DEFAULT_MIN_TRADES if stored is None else int(stored)

    tags = {"kind": "backtest", "git_commit": git_commit()}
    tracker = start_backtest_tracker(tracking, f"backtest {cfg.split.value} {source}", tags)
    meta["tracking"] = {"uri": tracking.uri if tracking.enabled else None, "why": store_reason}
    status = "FAILED"
    pbar = tqdm(
        total=3 + cfg.seeds + len(cfg.fee_multipliers),
        disable=not cfg.progress,
        desc="backtest",
        unit="run",
    )
    try:
        # ---- the policy (acting as validated) and baselines, same rows and costs ----
        runs = strategy_and_baselines(policy, market, tensors, rows, env, momentum_bars, acting)
        steps = runs[STRATEGY]
        pbar.update(1)
        stats = stats_of(runs, calendar, cfg.n_bootstrap, cfg.seed)
        meta["flags"] = outcome_flags(stats[STRATEGY], min_trades)
        meta["min_trades"] = min_trades

        # ---- the random-timing null: the strategy's trades at random times ----
        null, null_stats = None, {}
        if cfg.random_timing > 0:
            null = random_timing(
                steps,
                market.returns[rows[0] : rows[1]],
                env,
                n=cfg.random_timing,
                seed=cfg.seed,
                calendar=calendar,
            )
            null_stats = random_timing_stats(null)
        table = stats_table({**stats, STRATEGY: {**stats[STRATEGY], **null_stats}})
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
            momentum_bars=momentum_bars,
            seed=cfg.seed,
            acting=acting,
            tick=lambda: pbar.update(1),
        )

        # ---- report folder ----
        doc: dict[str, Any] = {"meta": {**meta, "mlflow_run_id": tracker.run_id}, "stats": stats}
        if null is not None:
            doc["random_timing"] = {"definition": RANDOM_TIMING_DEFINITION, **null_stats}
        if stochastic is not None:
            doc["stochastic"] = {"seeds": cfg.seeds, **stochastic}
        doc["flag_notes"] = flag_sentences(stats[STRATEGY], meta["flags"], cfg.split.value)
        doc["definitions"] = {k: STAT_DEFINITIONS[k] for k in table.index if k in STAT_DEFINITIONS}
        label = f"{cfg.split.value} {meta['first_decision'][:10]} .. {meta['last_decision'][:10]}"
        files = write_report(
            out,
            doc,
            runs,
            table,
            costs,
            seeds_frame,
            label if cfg.plots else None,
            null,
            html=cfg.report_html,
        )
        pbar.update(1)

        tracker.set_tags(_tags(meta))
        tracker.log_params(flatten(asdict(cfg)))
        metrics = backtest_metrics(stats, stochastic, costs)
        metrics.update(metric_keys(null_stats))
        tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=0)
        for path in files:
            tracker.log_artifact(path, "backtest")
        status = "FINISHED"
    finally:
        pbar.close()
        tracker.finish(status)
    result = BacktestResult(out, stats, table, steps, doc["meta"], files, tracker.run_id)
    append_text(out / "backtest.log", _print_summary(result, doc, tracking))
    return result


def _tags(meta: Mapping[str, Any]) -> dict[str, str]:
    """MLflow tags of a backtest run: what it ran on, and its flags (``none`` when clean)."""
    tags = {k: str(meta[k]) for k in TAG_KEYS if k != "flags"}
    tags["flags"] = ",".join(meta["flags"]) or "none"
    tags["momentum_lookback_bars"] = str(meta["momentum"]["lookback_bars"])
    return tags


def _print_summary(result: BacktestResult, doc: Mapping[str, Any], tracking: TrackingConfig) -> str:
    """Print the backtest's console summary and return it (it is kept in ``backtest.log``)."""
    m = result.meta
    lines = [
        f"backtest of {m['checkpoint']} on {m['data']}, split={m['split']} "
        f"({m['first_decision']} .. {m['last_decision']}, {m['bars']} bars)",
        f"costs: commission {m['env']['commission']:g}, slippage {m['env']['slippage_bps']:g} bps; "
        f"{FILL_RULE}; every column is after these costs",
        format_table(result.table),
        f"momentum: lookback {m['momentum']['lookback_bars']} bars "
        f"({m['momentum']['chosen_on']}), {result.stats['momentum']['# Trades']} trades",
    ]
    null = doc.get("random_timing")
    if null:
        median, p05, p95, pct, p = (
            null[f"Random-Timing {k}"]
            for k in (
                "Median Return [%]",
                "Return p05 [%]",
                "Return p95 [%]",
                "Percentile [%]",
                "p-value",
            )
        )
        lines.append(
            f"random timing ({null['Random-Timing Policies']} policies with the strategy's trades "
            f"at random times): median return {median:+.2f}%, 5-95% [{p05:+.2f}%, {p95:+.2f}%]; "
            f"the strategy's percentile {pct:.1f}%, p-value {p:.3f}"
        )
    lines += [f"WARNING: {note}" for note in doc["flag_notes"]]
    lines.append(f"report: {result.out_dir.resolve()}")
    if m["in_sample"]:
        lines.append("IN-SAMPLE: these bars were used for training or checkpoint selection")
    if result.run_id:
        lines.append(
            f"MLflow run: {result.run_id} (kind=backtest, train_run_id={m['train_run_id']}) in "
            f"{tracking.uri}, experiment '{tracking.experiment}' ({m['tracking']['why']})"
        )
        lines.append(f"open the UI: {ui_command(tracking.uri)}")
    text = "\n".join(lines)
    print(text)
    return text


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
