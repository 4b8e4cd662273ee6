"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

Why schemas: every YAML file in ``conf/`` extends one of these dataclasses, so a mistyped key
(``trainer.macro_evry=3``) or a wrong-typed value (``trainer.episodes=abc``) fails when Hydra
composes the config, before any data is loaded. Only the entry points see the composed
``DictConfig``; they convert it once with :func:`to_config` and pass plain values down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class DataSource(str, Enum):
    """Where candles come from: the embedded synthetic market or a file."""

    synthetic = "synthetic"
    csv = "csv"
    parquet = "parquet"
    binance = "binance"


class GapPolicy(str, Enum):
    """What to do with missing bars: fail, or carry the last close forward (never backwards)."""

    error = "error"
    ffill = "ffill"


class ActionMode(str, Enum):
    """How BUY/SELL map to a position: jump to the target, or step by ``env.increment``."""

    target = "target"
    increment = "increment"


class Estimator(str, Enum):
    """The policy-gradient estimator (hmarl/reinforce.py); all are unbiased."""

    reinforce = "reinforce"  # SPEC.md's plain loss: batch-normalised returns
    baseline = "baseline"  # per-step leave-one-out baseline, one std scaling
    expected = "expected"  # exact expectation over the agent's own actions (position grid)


class EvalPolicy(str, Enum):
    """How validation acts: argmax (deterministic) or sampled with a fixed seed."""

    greedy = "greedy"
    sample = "sample"


class CollapseAction(str, Enum):
    """What a detected policy collapse does: warn, stop the run, or restore `best` and go on."""

    warn = "warn"
    stop = "stop"
    restore = "restore"


class MatmulPrecision(str, Enum):
    """``torch.set_float32_matmul_precision``: ``high`` allows TF32 on CUDA, ``medium`` bf16."""

    highest = "highest"
    high = "high"
    medium = "medium"


class MetricMode(str, Enum):
    max = "max"
    min = "min"


@dataclass
class DataConfig:
    """Candle source, validation policy and chronological splits."""

    source: DataSource = DataSource.synthetic
    path: str | None = None  # file, zip or directory (csv / parquet / binance)
    n_candles: int = 105_120  # synthetic: number of bars (one year of 5-minute bars)
    market_seed: int = 0  # synthetic: market seed (separate from `seed` so sweeps share a market)
    trend_drift: float = 3e-4  # synthetic: per-bar log drift of up/down regimes
    bar_vol: float = 0.0015  # synthetic: per-bar log-return volatility
    mean_regime_bars: float = 720.0  # synthetic: mean regime length in bars (2.5 days)
    freq: str | None = None  # expected bar spacing, e.g. "5min"; None infers it from the data
    resample: str | None = None  # optional resampling rule applied after loading, e.g. "15min"
    start: str | None = None  # optional UTC date bounds [start, end) applied after loading
    end: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> column in file
    timestamp_unit: str = "auto"  # auto | iso | s | ms | us | ns
    gap_policy: GapPolicy = GapPolicy.error
    train_frac: float = 0.7  # chronological split fractions (test gets the rest)
    val_frac: float = 0.15
    val_start: str | None = None  # date splits override the fractions when set
    test_start: str | None = None


@dataclass
class FeaturesConfig:
    """Feature names (parameters in the name, e.g. ``ret_12``) and the two window lengths."""

    names: list[str] = field(default_factory=list)  # empty -> hmarl.features.DEFAULT_FEATURES
    macro_window: int = 492  # bars summarised for MacroNet (~41 h of 5-minute bars)
    micro_window: int = 60  # bars summarised for MicroNet (~5 h)


@dataclass
class ModelConfig:
    """Layer sizes of SPEC.md's network; defaults give 83,811 parameters at N = 20."""

    macro_hidden: int = 256
    macro_dim: int = 128
    micro_hidden: int = 64
    micro_dim: int = 32
    head_hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.2


@dataclass
class EnvConfig:
    """Execution model: fills at the decision bar's close, costs on traded notional."""

    commission: float = 0.001  # fraction of traded notional (Binance spot: 0.1%)
    slippage_bps: float = 0.0  # extra adverse cost per unit traded, in basis points
    max_position: float = 1.0  # |exposure| cap as a fraction of equity
    allow_short: bool = True  # False: SELL goes flat instead of short
    action_mode: ActionMode = ActionMode.target
    increment: float = 0.5  # position step per BUY/SELL in increment mode


@dataclass
class TrainerConfig:
    """REINFORCE with one optimizer per module and the asymmetric MacroNet schedule."""

    episodes: int = 300
    n_envs: int = 32  # parallel trajectories per episode (1 = the literal spec)
    episode_len: int = 256  # decisions per trajectory
    gamma: float = 0.99
    lr_macro: float = 1e-4
    lr_micro: float = 5e-4
    lr_head: float = 5e-4
    macro_every: int = 11  # MacroNet steps iff episode % macro_every == 0 (1 = symmetric)
    estimator: Estimator = Estimator.expected
    entropy_coef: float = 0.01
    entropy_coef_final: float | None = None  # decayed linearly to this; None = constant
    grad_clip: float = 1.0  # per-module gradient-norm clip; 0 disables
    cache_frozen_macro: bool = True  # reuse MacroNet embeddings while it is frozen
    macro_cache_chunk: int = 256  # rows per lazily computed cache chunk; 0 = whole split at once
    matmul_precision: MatmulPrecision = MatmulPrecision.highest  # high: TF32 matmuls on CUDA
    eval_every: int = 10  # validation (deterministic policy) every K episodes
    eval_policy: EvalPolicy = EvalPolicy.sample
    best_metric: str = "sharpe"  # key of hmarl.metrics.metric_keys() for the `best` checkpoint
    best_mode: MetricMode = MetricMode.max
    min_val_trades: int = 5  # fewer validation trades: never `best` by a ratio alone
    collapse_entropy: float = 0.05  # collapse: mean training entropy (nats) below this ...
    collapse_share: float = 0.99  # ... or one action above this share of validation decisions
    on_collapse: CollapseAction = CollapseAction.warn
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 = never
    checkpoint_every: int = 10  # write `last` every K episodes (and at the end)
    resume: str | None = None  # path of a checkpoint to continue from


@dataclass
class TrackingConfig:
    """MLflow tracking; ``tracking=none`` disables it."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"  # MLflow 3 refuses a plain ./mlruns file store
    experiment: str = "hmarl"
    run_name: str | None = None
    log_checkpoints: bool = True


@dataclass
class Config:
    """The whole training configuration (``conf/config.yaml``)."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    experiment_name: str = "default"  # set by conf/experiment/*.yaml
    cache_dir: str = ".hmarl_cache"  # built tensors, keyed by data + features + windows
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


_GROUPS: dict[str, type] = {
    "data": DataConfig,
    "features": FeaturesConfig,
    "model": ModelConfig,
    "env": EnvConfig,
    "trainer": TrainerConfig,
    "tracking": TrackingConfig,
}


def register_configs() -> None:
    """Register the schemas (``base_config`` and ``<group>/base``) in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, node in _GROUPS.items():
        cs.store(group=group, name="base", node=node)


def conf_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, else beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"hmarl config folder not found next to {here}")


def to_config(cfg: DictConfig | Config) -> Config:
    """Convert a composed Hydra config into the typed :class:`Config` (validates values)."""
    if isinstance(cfg, Config):
        return cfg
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # a config composed without the schema
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    assert isinstance(obj, Config)
    _check(obj)
    return obj


def _check(cfg: Config) -> None:
    """Range checks a type system cannot express; messages name the key."""
    problems: list[str] = []
    if cfg.features.macro_window < 2 or cfg.features.micro_window < 2:
        problems.append("features.macro_window and features.micro_window must be >= 2")
    if cfg.trainer.macro_every < 1:
        problems.append(f"trainer.macro_every must be >= 1, got {cfg.trainer.macro_every}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        problems.append(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
    if not 0.0 < cfg.trainer.gamma <= 1.0:
        problems.append(f"trainer.gamma must be in (0, 1], got {cfg.trainer.gamma}")
    if cfg.trainer.n_envs < 1 or cfg.trainer.episode_len < 2:
        problems.append("trainer.n_envs must be >= 1 and trainer.episode_len >= 2")
    if cfg.trainer.eval_every < 1 or cfg.trainer.checkpoint_every < 1:
        problems.append("trainer.eval_every and trainer.checkpoint_every must be >= 1")
    if not 0.0 < cfg.env.max_position <= 1.0:
        problems.append(f"env.max_position must be in (0, 1], got {cfg.env.max_position}")
    if cfg.env.commission < 0 or cfg.env.slippage_bps < 0:
        problems.append("env.commission and env.slippage_bps must be >= 0")
    if cfg.data.source != DataSource.synthetic and not cfg.data.path:
        problems.append(f"data.path is required for data={cfg.data.source.value}")
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))


def flatten(cfg: Config | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a config into ``{"trainer.lr_macro": 1e-4, ...}`` (MLflow params)."""
    node = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(node, dict)
    out: dict[str, Any] = {}

    def walk(d: dict[str, Any], pre: str) -> None:
        for k, v in d.items():
            key = f"{pre}{k}"
            if isinstance(v, dict) and v:
                walk(v, key + ".")
            else:
                out[key] = v

    walk({str(k): v for k, v in node.items()}, prefix)
    return out
