"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore.

Why schemas: every YAML file in ``conf/`` extends one of these dataclasses, so a mistyped key
(``trainer.macro_evry=3``) or a wrong-typed value (``trainer.episodes=abc``) fails when Hydra
composes the config, before any data is loaded. Only the entry points see the composed
``DictConfig``; they convert it once with :func:`to_config` (training) or
:func:`to_backtest_config` (backtests) and pass plain values down.

Both entry points' schemas and their value ranges live together, so a key shared by training
and backtests (``data.*``, ``tracking.*``) is checked one way; and every key's default and
meaning is stated here, once (the YAML files only override).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
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
    avellaneda = "avellaneda"  # task=quote: the Avellaneda-Stoikov market (generated, no file)
    ticks_synthetic = "ticks_synthetic"  # task=quote: seeded synthetic tick tapes (no file)
    ticks = "ticks"  # task=quote: a real tick capture (data.path), cut into time segments


class Task(str, Enum):
    """What the agent does: take a position on candles, or quote a bid and an ask."""

    trade = "trade"  # SPEC.md's task: BUY / HOLD / SELL on a candle market
    quote = "quote"  # market making: a joint (bid, ask) quote (hmarl/train/quote_task.py)


QUOTE_MARKETS = (DataSource.avellaneda, DataSource.ticks_synthetic, DataSource.ticks)
"""The ``data.source`` values of quoting markets (``task=quote`` needs one; trading refuses them).
The market kind key: a tick market joins this tuple with its own ``data.<source>`` block."""


class GapPolicy(str, Enum):
    """What to do with missing bars: fail, or carry the last close forward (never backwards)."""

    error = "error"
    ffill = "ffill"


class ActionMode(str, Enum):
    """How BUY/SELL map to a position: jump to the target, or step by ``env.increment``."""

    target = "target"
    increment = "increment"


class Estimator(str, Enum):
    """The policy-gradient estimator (hmarl/agent/reinforce.py); all are unbiased."""

    reinforce = "reinforce"  # SPEC.md's plain loss: batch-normalised returns
    baseline = "baseline"  # per-step leave-one-out baseline, one std scaling
    expected = "expected"  # exact expectation over the agent's own actions (position grid)
    # exact over each step's action at the visited state (states sampled): reinforce's cost
    all_actions = "all_actions"


class EvalPolicy(str, Enum):
    """How validation acts: argmax (deterministic) or sampled with a fixed seed."""

    greedy = "greedy"
    sample = "sample"


class Exploration(str, Enum):
    """The exploration term ``trainer.entropy_coef`` weighs (agent.reinforce.exploration_bonus)."""

    entropy = "entropy"  # -sum pi log pi: its pull vanishes as an action's probability -> 0
    log_barrier = "log_barrier"  # -KL(uniform || pi): keeps every action's gradient alive


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


class Combine(str, Enum):
    """How the layer above the specialists decides (hmarl/agent/specialists.py)."""

    mixture = "mixture"  # gate over the specialists' own policies: pi = sum_k g_k pi_k
    concat = "concat"  # SPEC.md's form: embeddings concatenated into the DecisionHead


class GateInput(str, Enum):
    """What the gate over the specialists reads besides position and cash ratio."""

    macro = "macro"  # the MacroNet embedding: a lean toward a specialist by market context
    all = "all"  # the MacroNet embedding and every specialist's: *when* to follow which one


class SoloValues(str, Enum):
    """Whose exact grid values weigh a specialist's own term (``model.solo_coef``)."""

    mixture = "mixture"  # the team's: the best action given how the mixture acts on
    own = "own"  # the specialist's own policy's: the best action were it acting alone


@dataclass
class AvellanedaConfig:
    """The Avellaneda-Stoikov market (``data=avellaneda``): hmarl.market.avellaneda.ASParams.

    Defaults: the benchmark market of docs/market_making.md (the best fixed symmetric quote
    reaches 62.8% of the exact optimum there). Units: price, lots, the market's time unit.
    """

    sigma: float = 2.0  # mid volatility per unit time (price units)
    A: float = 140.0  # market-order arrival rate at the mid, per unit time
    k: float = 1.5  # decay of the arrival rate with the distance from the mid, per price unit
    dt: float = 0.005  # one decision step, in time units
    steps: int = 100  # decisions per episode
    mid0: float = 100.0  # the mid at each episode's start


@dataclass
class TicksSyntheticConfig:
    """The synthetic tick market (``data=ticks_synthetic``): hmarl.data.ticks_synthetic's
    generator, three independent seeded tapes (train / validation / test, seeds from ``seed``).

    Defaults: scripts/bench_quoting.py ``--market ticks`` (docs/market_making.md), so a run's
    seed-0 figures stand beside the benchmark's. Prices in ticks of ``quote.tick``, sizes in lots.
    """

    bid0: int = 10_000  # starting best bid, in ticks
    move_prob: float = 0.2  # probability that the best bid moves a tick in a step
    spread_probs: list[float] = field(default_factory=lambda: [0.6, 0.3, 0.1])  # 1, 2, 3 ticks
    queue_mean: float = 3.0  # displayed lots per level (mean)
    rate: float = 0.5  # market orders per side per step (mean)
    size_mean: float = 2.0  # lots per market order (mean, >= 1)
    depth: int = 8  # book levels kept behind each best quote
    informed: float = 0.3  # probability that a step's net flow moves the mid its way
    dt: float = 1.0  # seconds per decision step
    train_steps: int = 50_000  # decision steps of the train tape
    val_steps: int = 20_000  # of the validation tape
    test_steps: int = 20_000  # of the test tape
    episode_steps: int = 100  # decisions per episode (flat at its start, liquidated at its end)


@dataclass
class TicksConfig:
    """A real tick capture (``data=ticks``, file in ``data.path``: the websocket capture format
    of hmarl.sources.ticks) sampled every ``dt`` and cut into consecutive train / validation /
    test time segments (``data.train_frac``, ``data.val_frac``; test gets the rest).

    Defaults: scripts/bench_quoting.py ``--market real`` on the bundled five-minute capture.
    """

    dt: float = 0.25  # seconds per decision step (>= 1 ms: the capture's time resolution)
    lot: float = 0.001  # base-asset units per lot (0.001 BTC)
    depth: int = 8  # book levels kept behind each best quote (top-of-book size stands in)
    max_gap: float = 5.0  # seconds without a quote that make the capture refused
    episode_steps: int = 50  # decisions per episode
    session: str | None = None  # UTC window of the day kept, e.g. "13:00-20:50"; None: all


@dataclass
class DataConfig:
    """Candle source, validation policy and chronological splits.

    ``conf/data/<source>.yaml`` sets only ``source``; every other default is here.
    """

    source: DataSource = DataSource.synthetic  # synthetic | csv | parquet | binance
    path: str | None = None  # file, zip or directory; required unless synthetic
    # several markets (files or globs, each its own market); data=ticks: one tape per
    # (ticker, UTC day) of each capture file or cached day folder (docs/market_making_ticks.md)
    paths: list[str] = field(default_factory=list)
    n_candles: int = 105_120  # synthetic: number of bars (one year of 5-minute bars)
    market_seed: int = 0  # synthetic: market seed (separate from `seed` so sweeps share a market)
    # The synthetic market's planted trend is deliberately strong (~ +-20% over a 2.5-day
    # regime) so that a run of a minute shows the machinery learning regime-dependent
    # behaviour. synthetic_candles' own defaults (trend_drift=1e-4, mean_regime_bars=1440)
    # give a harder, more BTC-like market.
    trend_drift: float = 3e-4  # synthetic: per-bar log drift of up/down regimes
    bar_vol: float = 0.0015  # synthetic: per-bar log-return volatility (BTC 5-minute scale)
    mean_regime_bars: float = 720.0  # synthetic: mean regime length in bars (2.5 days)
    freq: str | None = None  # expected bar spacing, e.g. "5min"; None infers it from the data
    resample: str | None = None  # optional resampling rule applied after loading, e.g. "15min"
    start: str | None = None  # optional UTC date bounds [start, end) applied after loading
    end: str | None = None
    # canonical name -> column in file, e.g. {timestamp: "Open time", close: Close}
    columns: dict[str, str] = field(default_factory=dict)
    timestamp_unit: str = "auto"  # auto | iso | s | ms | us | ns (auto detects and reports)
    # further raw columns to keep when reading (besides those `col:<name>` features name)
    extra_columns: list[str] = field(default_factory=list)
    # error | ffill (carry the last close forward with zero volume)
    gap_policy: GapPolicy = GapPolicy.error
    train_frac: float = 0.7  # chronological split fractions (test gets the rest, 15%)
    val_frac: float = 0.15
    val_start: str | None = None  # date splits override the fractions, e.g. "2024-03-01"
    test_start: str | None = None
    avellaneda: AvellanedaConfig = field(default_factory=AvellanedaConfig)  # data=avellaneda
    # data=ticks_synthetic
    ticks_synthetic: TicksSyntheticConfig = field(default_factory=TicksSyntheticConfig)
    ticks: TicksConfig = field(default_factory=TicksConfig)  # data=ticks (file: data.path)


@dataclass
class FeaturesConfig:
    """Feature names (parameters in the name, e.g. ``ret_12``) and the two window lengths.

    The defaults are the reference feature set (N = 20) and the two windows of SPEC.md; see
    README "Features".
    """

    names: list[str] = field(
        default_factory=list
    )  # empty -> hmarl.market.features.DEFAULT_FEATURES
    macro_window: int = 492  # MacroNet: mean/std/last over 492 bars (~41 h of 5-minute bars)
    micro_window: int = 60  # MicroNet: mean/std/last over 60 bars (~5 h)


@dataclass
class SpecialistConfig:
    """One specialist agent: an encoder of its own features' window and its own action logits.

    Why its own window, learning rate and period: a tape reader looks at the last minutes, a
    trend reader at hours; the asymmetric schedule generalises to one clock per agent.
    """

    name: str = "price"
    # registered features, `col:<column>` raw columns, or `group:<name>` (hmarl/market/groups.py)
    features: list[str] = field(default_factory=lambda: ["group:price"])
    window: int = 60  # mean/std/last over this many bars
    hidden: int = 64  # encoder: Linear(3N_k, hidden) ReLU Dropout Linear(hidden, dim) ReLU
    dim: int = 32
    head_hidden: int = 32  # own logits: Linear(dim + 2, head_hidden) ReLU Dropout Linear(., 3)
    lr: float = 5e-4
    every: int = 1  # steps on episodes with episode % every == 0


@dataclass
class ModelConfig:
    """Layer sizes of SPEC.md's network; defaults give 83,811 parameters at N = 20.

    Parameters at N = 20: macro 48,512, micro 5,984, head 29,315, total 83,811.
    """

    macro_hidden: int = 256  # MacroNet: Linear(3N,256) ReLU Dropout Linear(256,128) ReLU
    macro_dim: int = 128
    micro_hidden: int = 64  # MicroNet: Linear(3N,64) ReLU Dropout Linear(64,32) ReLU
    micro_dim: int = 32
    # DecisionHead: Linear(162,128) ReLU Dropout Linear(128,64) ReLU Dropout Linear(64,3)
    head_hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.2
    # Specialists (model=specialists, hmarl/agent/specialists.py): empty = SPEC.md's network.
    # Given, each replaces the MicroNet by one agent on its own features and window.
    specialists: list[SpecialistConfig] = field(default_factory=list)
    combine: Combine = Combine.mixture  # mixture (gate over their policies) | concat
    gate_hidden: int = 32  # the gate: Linear(inputs + 2, gate_hidden) ReLU Dropout Linear(., K)
    # the gate's inputs (mixture only): macro (the MacroNet embedding) | all (and the
    # specialists' embeddings); concat's DecisionHead reads them all anyway
    gate_input: GateInput = GateInput.macro
    # weight of each specialist's own policy-gradient term (mixture only): every pi_k is also
    # pushed along the mixture's exact advantages as if it acted alone, whatever its gate
    # weight; 0 = the mixture's gradient only (docs/specialists.md)
    solo_coef: float = 0.0
    # whose values give that term's advantages: mixture (the team's) | own (each specialist's
    # own policy's on the grid: one more exact pass per specialist; docs/specialists.md)
    solo_values: SoloValues = SoloValues.mixture
    # weight of the gate's log-barrier, mean_k log g_k + log K, as a multiple of the action's
    # exploration weight at that episode (trainer.entropy_coef and its schedule): no specialist
    # is ruled out for good while the policy still explores; 0 = none (mixture only)
    gate_barrier: float = 0.0
    # the probability of HOLD that every specialist's own policy (mixture) or the DecisionHead
    # (concat) starts with, set through the output layer's bias (the weights keep their draw);
    # 0 = the layers' plain initialisation, about 1/3 each. Why: a policy that starts by
    # trading on every other bar loses so much to fees that it can learn "never trade" before
    # any specialist has found its signal (docs/specialists.md)
    hold_init: float = 0.0


@dataclass
class EnvConfig:
    """Execution model: fills at the decision bar's close, costs on traded notional.

    Decide at bar t's close, fill at that close (+ slippage), earn bar t+1's return. These
    are also :class:`hmarl.market.env.EnvParams`' defaults.
    """

    commission: float = 0.001  # fraction of traded notional (Binance spot: 0.1%)
    slippage_bps: float = 0.0  # extra adverse cost per unit traded, in basis points
    max_position: float = 1.0  # |exposure| cap: BUY -> +max_position, SELL -> -max_position
    allow_short: bool = True  # False: SELL goes flat instead of short
    # target | increment (BUY/SELL move the position by `increment`)
    action_mode: ActionMode = ActionMode.target
    increment: float = 0.5  # position step per BUY/SELL in increment mode


@dataclass
class TrainerConfig:
    """REINFORCE with one Adam per module; MacroNet steps iff episode % macro_every == 0."""

    episodes: int = 300
    n_envs: int = 32  # parallel trajectories per episode (1 = the literal spec)
    episode_len: int = 256  # decisions per trajectory
    gamma: float = 0.99
    lr_macro: float = 1e-4
    lr_micro: float = 5e-4
    lr_head: float = 5e-4
    macro_every: int = 11  # 11 = asymmetric 1:10, 3 = 1:2, 1 = symmetric
    # reinforce (SPEC.md's plain loss) | baseline (per-step leave-one-out) | expected (exact
    # over the agent's own actions) | all_actions (exact over each step's action, states sampled;
    # learns as well as expected at about reinforce's cost: README "What to expect from a run")
    estimator: Estimator = Estimator.all_actions
    entropy_coef: float = 0.003  # weight of the exploration term (below); 0 = the plain loss
    # the term entropy_coef weighs: log_barrier (-KL(uniform || pi)) | entropy
    exploration: Exploration = Exploration.log_barrier
    # decayed linearly to this by the last episode; None = constant. 0: explore early, act on
    # what was learned late (README "What to expect from a run": planted-edge capture 8/10
    # against 5/10 constant)
    entropy_coef_final: float | None = 0.0
    grad_clip: float = 1.0  # per-module gradient-norm clip; 0 disables
    # True: training episodes earn each bar's return less the training split's mean bar return
    # (each market's own): the policy is paid for timing, not for the drift of the training
    # period; validation and test settle the true returns (docs/training.md "Excess returns")
    excess_returns: bool = False
    # frozen MacroNet: embeddings computed in eval mode, kept until it steps
    cache_frozen_macro: bool = True
    # rows per cache chunk, computed when an episode first needs it; 0 = whole split at once
    macro_cache_chunk: int = 256
    # highest (fp32) | high (TF32 matmuls on CUDA) | medium (bf16 allowed)
    matmul_precision: MatmulPrecision = MatmulPrecision.highest
    eval_every: int = 10  # validate the policy every K episodes
    # sample (actions drawn with the run's seed, what training optimises) | greedy (argmax)
    eval_policy: EvalPolicy = EvalPolicy.sample
    # key of hmarl.stats.metrics.metric_keys() for the `best` checkpoint (see README "Metrics")
    best_metric: str = "sharpe"
    best_mode: MetricMode = MetricMode.max
    # fewer validation trades than this: flagged, and never `best` by a ratio alone
    min_val_trades: int = 5
    # an edge also beats this % of the random-timing null on validation; 0 = off
    edge_null_percentile: float = 90.0
    # evaluations in a row that must pass the edge test before one counts as an edge: one
    # lucky evaluation among ~30 is likely without skill, three in a row are not (README
    # "What to expect from a run": 0 false edges in 40 real-candle runs, none lost elsewhere)
    edge_confirmations: int = 3
    collapse_entropy: float = 0.05  # collapse: mean training entropy (nats) below this ...
    collapse_share: float = 0.99  # ... or one action's mean validation probability above this
    on_collapse: CollapseAction = CollapseAction.warn  # warn | stop | restore (from `best`)
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 = never
    checkpoint_every: int = 10  # write `last` every K episodes (and at the end)
    resume: str | None = None  # path of a checkpoint to continue from


@dataclass
class QuoteConfig:
    """The quoting task's rules (``task=quote``): hmarl.market.quoting.QuoteParams' fields.

    Market-agnostic: every quoting market (``data.source`` in :data:`QUOTE_MARKETS`) reads
    them; ``conf/data/<market>.yaml`` sets the values that suit its tick and prices. Defaults:
    the benchmark Avellaneda-Stoikov market of docs/market_making.md.
    """

    offsets: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0, 6.0])  # ticks
    tick: float = 0.2  # price units per tick
    max_inventory: int = 5  # Q: the inventory stays in [-Q, Q] lots (one-lot quotes)
    maker_fee: float = 0.0  # per lot filled, price units; negative: a rebate
    phi: float = 0.01  # running inventory penalty per step per lot^2
    alpha: float = 0.5  # terminal inventory penalty per lot^2
    liquidation_cost: float = 0.0  # per lot liquidated at the end (taker fee + half spread)
    no_quote_penalty: float = 0.0  # per side left empty, per step
    w_mtm: float = 1.0  # reward weight of the mark-to-market change
    w_spread: float = 1.0  # reward weight of the realised spread net of fees
    eval_paths: int = 128  # fixed seeded paths of validation, and of test (backtest)


@dataclass
class TrackingConfig:
    """MLflow tracking; ``tracking=none`` disables it.

    Share one server among machines with ``tracking.uri=http://host:5000``.
    """

    enabled: bool = True
    # in the working directory; MLflow 3 refuses a plain ./mlruns file store
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "hmarl"
    run_name: str | None = None  # None: named from the experiment and overrides
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
    task: Task = Task.trade  # trade | quote (conf/task/; quote reads `quote` and a quoting market)
    quote: QuoteConfig = field(default_factory=QuoteConfig)
    seed: int = 0  # training seed: sampling, dropout, episode starts, initial weights
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    experiment_name: str = "default"  # set by +experiment=...; tagged on the MLflow run
    # built tensors, keyed by data + features + windows, shared by the jobs of a sweep
    cache_dir: str = ".hmarl_cache"
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


class ConfigError(ValueError):
    """A configuration that cannot run: an unknown key, a value out of range, a bad combination.

    The entry points report it as one ``error:`` line and exit 2 (bad input).
    """


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: optional bounds, open or closed, and always finite.

    Why a table of these rather than ``if`` statements: every numeric key gets a check (a test
    fails for a numeric field without an entry), and a new key is one line in :data:`RANGES`.
    Lists of numbers (``model.head_hidden``) are checked element by element; ``None`` (an
    optional key left unset) is always accepted.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: lo itself is excluded
    hi_open: bool = False

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "finite"

    def accepts(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def above(lo: float) -> Range:
    return Range(lo=lo, lo_open=True)


def fraction(*, lo_open: bool = True, hi_open: bool = True) -> Range:
    """A number between 0 and 1, each end included or not."""
    return Range(0.0, 1.0, lo_open, hi_open)


SEED = Range(0, 2**63 - 1)  # numpy and torch seeds: non-negative 64-bit integers
POSITIVE_INT = at_least(1)
COUNT = at_least(0)

# Accepted values of every numeric key, by schema class and field. Add a line with each new key.
RANGES: dict[type, dict[str, Range]] = {
    DataConfig: {
        "n_candles": POSITIVE_INT,
        "market_seed": SEED,
        "trend_drift": Range(0.0, 0.01),
        "bar_vol": Range(0.0, 0.5, lo_open=True),
        "mean_regime_bars": at_least(1),
        "train_frac": fraction(),
        "val_frac": fraction(),
    },
    AvellanedaConfig: {
        "sigma": above(0),
        "A": above(0),
        "k": above(0),
        "dt": above(0),
        "steps": at_least(1),
        "mid0": Range(),
    },
    TicksSyntheticConfig: {
        "bid0": at_least(1),
        "move_prob": fraction(lo_open=False, hi_open=False),
        "spread_probs": fraction(lo_open=False, hi_open=False),
        "queue_mean": above(0),
        "rate": at_least(0),
        "size_mean": at_least(1),
        "depth": POSITIVE_INT,
        "informed": fraction(lo_open=False, hi_open=False),
        "dt": Range(0.001),
        "train_steps": POSITIVE_INT,
        "val_steps": POSITIVE_INT,
        "test_steps": POSITIVE_INT,
        "episode_steps": POSITIVE_INT,
    },
    TicksConfig: {
        "dt": Range(0.001),
        "lot": above(0),
        "depth": POSITIVE_INT,
        "max_gap": above(0),
        "episode_steps": POSITIVE_INT,
    },
    QuoteConfig: {
        "offsets": at_least(0),
        "tick": above(0),
        "max_inventory": Range(1, 50),
        "maker_fee": Range(),
        "phi": at_least(0),
        "alpha": at_least(0),
        "liquidation_cost": at_least(0),
        "no_quote_penalty": at_least(0),
        "w_mtm": at_least(0),
        "w_spread": at_least(0),
        "eval_paths": POSITIVE_INT,
    },
    FeaturesConfig: {"macro_window": at_least(2), "micro_window": at_least(2)},
    ModelConfig: {
        "macro_hidden": POSITIVE_INT,
        "macro_dim": POSITIVE_INT,
        "micro_hidden": POSITIVE_INT,
        "micro_dim": POSITIVE_INT,
        "head_hidden": POSITIVE_INT,
        "dropout": fraction(lo_open=False),
        "gate_hidden": POSITIVE_INT,
        "solo_coef": at_least(0),
        "gate_barrier": at_least(0),
        "hold_init": fraction(lo_open=False),
    },
    SpecialistConfig: {
        "window": at_least(2),
        "hidden": POSITIVE_INT,
        "dim": POSITIVE_INT,
        "head_hidden": POSITIVE_INT,
        "lr": above(0),
        "every": POSITIVE_INT,
    },
    EnvConfig: {
        "commission": fraction(lo_open=False),
        "slippage_bps": Range(0.0, 1e4, hi_open=True),
        "max_position": fraction(hi_open=False),
        "increment": fraction(hi_open=False),
    },
    TrainerConfig: {
        "episodes": POSITIVE_INT,
        "n_envs": POSITIVE_INT,
        "episode_len": at_least(2),
        "gamma": fraction(hi_open=False),
        "lr_macro": above(0),
        "lr_micro": above(0),
        "lr_head": above(0),
        "macro_every": POSITIVE_INT,
        "entropy_coef": at_least(0),
        "entropy_coef_final": at_least(0),
        "grad_clip": at_least(0),
        "macro_cache_chunk": COUNT,
        "eval_every": POSITIVE_INT,
        "min_val_trades": COUNT,
        "edge_null_percentile": Range(0, 100),
        "edge_confirmations": POSITIVE_INT,
        "collapse_entropy": at_least(0),
        "collapse_share": fraction(hi_open=False),
        "early_stop_patience": COUNT,
        "checkpoint_every": POSITIVE_INT,
    },
    TrackingConfig: {},
    Config: {"seed": SEED, "threads": COUNT},
}


def to_config(cfg: DictConfig | Config) -> Config:
    """Convert a composed Hydra config into the typed :class:`Config` (validates values).

    Raises :class:`ConfigError` naming every unknown key and every value out of range.
    """
    if isinstance(cfg, Config):
        obj = cfg
    else:
        converted = OmegaConf.to_object(cfg)
        if not isinstance(converted, Config):  # a config composed without the schema
            merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
            converted = OmegaConf.to_object(merged)
        assert isinstance(converted, Config)
        obj = converted
    problems = check_values(obj, RANGES) + _cross_checks(obj)
    if problems:
        raise ConfigError(describe_problems(problems))
    return obj


def describe_problems(problems: list[str]) -> str:
    return "invalid configuration: " + "; ".join(problems)


def check_values(obj: Any, ranges: dict[type, dict[str, Range]], prefix: str = "") -> list[str]:
    """Unknown keys and out-of-range values anywhere in a dataclass config, by dotted key.

    Why unknown keys are looked for here: Hydra's ``+key=value`` adds a key the schema lacks
    and OmegaConf keeps it as a stray attribute of the dataclass, so ``+trainer.macro_evry=3``
    would otherwise train with the default ``macro_every`` and exit 0.
    """
    problems: list[str] = []
    names = [f.name for f in fields(obj)]
    for extra in sorted(set(vars(obj)) - set(names)):
        close = difflib.get_close_matches(extra, names, n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(names)}"
        problems.append(f"unknown key {prefix}{extra} ({hint})")
    table = ranges.get(type(obj), {})
    for name in names:
        value = getattr(obj, name)
        if is_dataclass(value) and not isinstance(value, type):
            problems += check_values(value, ranges, f"{prefix}{name}.")
        elif name in table:
            rng = table[name]
            values = value if isinstance(value, list) else [value]
            bad = [v for v in values if v is not None and not rng.accepts(float(v))]
            if bad:
                problems.append(f"{prefix}{name} must be {rng.describe()}, got {value}")
    return problems


def _cross_checks(cfg: Config) -> list[str]:
    """Checks that involve several keys or parse a string; messages name the keys."""
    problems: list[str] = []
    if cfg.data.train_frac + cfg.data.val_frac >= 1.0:
        problems.append(
            f"data.train_frac + data.val_frac must be < 1 (the rest is the test split), got "
            f"{cfg.data.train_frac} + {cfg.data.val_frac}"
        )
    problems += check_source(cfg.data, "data.")
    if cfg.env.action_mode == ActionMode.increment and cfg.env.increment > 0:
        steps = cfg.env.max_position / cfg.env.increment
        if abs(steps - round(steps)) > 1e-9 or round(steps) > 10:
            problems.append(
                f"env.increment={cfg.env.increment} must divide env.max_position="
                f"{cfg.env.max_position} (at most 10 steps each way)"
            )
    problems += check_dates(cfg.data, "data.")
    problems += check_device(cfg.device)
    problems += check_specialists(cfg.model.specialists)
    problems += check_mixture_terms(cfg)
    problems += check_task(cfg)
    return problems


def check_task(cfg: Config) -> list[str]:
    """``task`` and the market must agree: quoting needs a quoting market, trading candles."""
    quoting_market = cfg.data.source in QUOTE_MARKETS
    markets = " | ".join(m.value for m in QUOTE_MARKETS)
    if cfg.task == Task.trade and quoting_market:
        return [
            f"data={cfg.data.source.value} is a quoting market but task=trade: add task=quote "
            f"(or +experiment=mm_asym_1_10), or choose candles (data=synthetic | csv | ...)"
        ]
    if cfg.task == Task.trade:
        return []
    problems = (
        []
        if quoting_market
        else [
            f"task=quote needs a quoting market, got data={cfg.data.source.value}: add "
            f"data={markets}"
        ]
    )
    probs = cfg.data.ticks_synthetic.spread_probs
    if cfg.data.source == DataSource.ticks_synthetic and abs(sum(probs) - 1.0) > 1e-9:
        problems.append(f"data.ticks_synthetic.spread_probs must sum to 1, got {probs}")
    if not cfg.quote.offsets or len(set(cfg.quote.offsets)) != len(cfg.quote.offsets):
        problems.append(f"quote.offsets must be distinct and non-empty, got {cfg.quote.offsets}")
    if cfg.model.specialists:
        problems.append("model.specialists is for task=trade: use model=default with task=quote")
    return problems


SPECIALIST_KEYS = (
    "specialists",
    "combine",
    "gate_hidden",
    "gate_input",
    "solo_coef",
    "solo_values",
    "gate_barrier",
    "hold_init",
)


def model_record(model: ModelConfig) -> dict[str, Any]:
    """The model's fields as plain values for a checkpoint (weights-only loadable); without
    specialists, exactly SPEC's keys, as checkpoints recorded before specialists existed."""
    record = asdict(model)
    if not model.specialists:
        return {k: v for k, v in record.items() if k not in SPECIALIST_KEYS}
    record["combine"] = Combine(model.combine).value
    record["gate_input"] = GateInput(model.gate_input).value
    record["solo_values"] = SoloValues(model.solo_values).value
    return record


def model_from_record(record: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`model_record` (keys a record lacks take their defaults)."""
    fields_ = dict(record)
    fields_["specialists"] = [SpecialistConfig(**s) for s in fields_.get("specialists", [])]
    fields_["combine"] = Combine(fields_.get("combine", Combine.mixture.value))
    # checkpoints written before gate_input existed had the MacroNet-only gate
    fields_["gate_input"] = GateInput(fields_.get("gate_input", GateInput.macro.value))
    fields_["solo_values"] = SoloValues(fields_.get("solo_values", SoloValues.mixture.value))
    return ModelConfig(**fields_)


def check_specialists(specialists: list[SpecialistConfig]) -> list[str]:
    """Each specialist's values (lists of dataclasses are not walked by check_values), unique
    names and a non-empty feature list."""
    problems: list[str] = []
    names = [s.name for s in specialists]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"model.specialists names repeat: {repeated}; give each a unique name")
    for i, spec in enumerate(specialists):
        key = f"model.specialists[{i}]"
        problems += check_values(spec, RANGES, f"{key}.")
        if not spec.name or not spec.name.replace("_", "").isalnum():
            problems.append(f"{key}.name must be letters, digits or _, got {spec.name!r}")
        if not spec.features:
            problems.append(f"{key}.features ({spec.name}) is empty; name at least one feature")
    return problems


def check_mixture_terms(cfg: Config) -> list[str]:
    """``model.solo_coef`` and ``model.gate_barrier`` (hmarl/agent/reinforce.py) act on the
    specialists' own policies and gate, ``model.hold_init`` on their first policy: SPEC's model
    has none of them (its initialisation is the specification's). ``model.combine=concat``
    has no gate or own policies and ignores the first two, as it ignores ``gate_input``
    (mixture-only keys, so that ``model=specialists model.combine=concat`` runs as written)."""
    model = cfg.model
    keys = ("solo_coef", "gate_barrier", "hold_init")
    return [
        f"model.{key}={getattr(model, key)} acts on the specialists' gate and policies: it "
        f"needs model=specialists (or set model.{key}=0)"
        for key in keys
        if getattr(model, key) != 0 and not model.specialists
    ]


_SESSION = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def parse_session(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` (UTC) as (start, end) nanoseconds after midnight: a session filter
    (``data.ticks.session``, hmarl.sources.book) read once here, where the config is checked."""
    match = _SESSION.match(text.strip())
    if not match:
        raise ValueError(f"session {text!r} must look like 13:00-20:50 (UTC, HH:MM-HH:MM)")
    h0, m0, h1, m1 = (int(g) for g in match.groups())
    if h0 > 24 or h1 > 24 or m0 > 59 or m1 > 59 or (h0, m0) == (h1, m1):
        raise ValueError(f"session {text!r}: hours 0-24, minutes 0-59, start != end")
    return (h0 * 60 + m0) * 60_000_000_000, (h1 * 60 + m1) * 60_000_000_000


def check_capture(data: DataConfig, prefix: str) -> list[str]:
    """``data=ticks`` reads one capture file (``data.path`` must name an existing file) or the
    files and day folders of ``data.paths`` (each entry is checked when the tapes are read:
    one that matches nothing is refused by name before training); ``data.ticks.session``
    must read as a UTC window."""
    if data.ticks.session is not None:
        try:
            parse_session(data.ticks.session)
        except ValueError as exc:
            return [f"{prefix}ticks.session: {exc}"]
    if data.paths:
        return []
    if not data.path:
        return [
            f"{prefix}path is required for data=ticks: add {prefix}path=<capture .gz> (the "
            f"websocket capture format, docs/market_making.md) or {prefix}paths=[...]"
        ]
    if not Path(data.path).is_file():
        return [f"{prefix}path={data.path} does not exist (or is not a file): give a tick capture"]
    return []


FILE_SOURCES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".zip": "binance"}


def check_source(data: DataConfig, prefix: str) -> list[str]:
    """A file source needs ``data.path``; and a path given to the synthetic source is refused.

    Why refuse rather than ignore: ``data.path=my.csv`` without ``data=csv`` used to train on
    the synthetic market without a word, so a user believed their own candles were learned.
    """
    if data.path and data.paths:
        return [f"{prefix}path and {prefix}paths are both set: give one market or a list"]
    if data.source == DataSource.ticks:
        return check_capture(data, prefix)
    if data.source != DataSource.synthetic and data.source not in QUOTE_MARKETS:
        if data.path or data.paths:
            return []
        return [f"{prefix}path is required for data={data.source.value}: add {prefix}path=<file>"]
    if not (data.path or data.paths):
        return []
    given = data.path or data.paths[0]
    key = "path" if data.path else "paths"
    guess = FILE_SOURCES.get(Path(given).suffix.lower(), "csv")
    return [
        f"{prefix}{key}={given} is set but data={data.source.value} ignores it: add data={guess} "
        f"(csv | parquet | binance) to read that file"
    ]


def check_dates(data: DataConfig, prefix: str) -> list[str]:
    """Dates and bar spacings of a data config that pandas cannot read, by key."""
    import pandas as pd

    problems = []
    for key in ("start", "end", "val_start", "test_start"):
        value = getattr(data, key)
        try:
            if value is not None:
                pd.Timestamp(value)
        except ValueError:
            problems.append(f"{prefix}{key}={value!r} is not a date (e.g. 2024-01-31)")
    for key in ("freq", "resample"):
        value = getattr(data, key)
        try:
            if value is not None and pd.Timedelta(value) <= pd.Timedelta(0):
                problems.append(f"{prefix}{key}={value!r} must be a positive bar spacing")
        except ValueError:
            if key == "freq":  # resample also takes calendar rules ("1W"), checked by pandas later
                problems.append(f"{prefix}{key}={value!r} is not a bar spacing such as 5min")
    return problems


def check_device(name: str) -> list[str]:
    """``device`` must be auto or a torch device string (cpu, cuda, cuda:1, mps)."""
    import torch

    if name == "auto":
        return []
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return [f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N"]
    return []


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


# ----------------------------------------------------------------------------- backtest schema


AUTO_URI = (
    "auto"  # tracking.uri=auto: log beside the training run (hmarl.tracking.backtest_tracking)
)


class BacktestError(ValueError):
    """A backtest request that cannot be honoured (bad input, incompatible checkpoint)."""


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
    """The market's clock for annualisation: the keys of :class:`hmarl.stats.metrics.Calendar`.

    Why not that class itself: OmegaConf turns a frozen dataclass into a read-only node, so
    ``calendar.session_hours=6.5`` could not be overridden, and ``Calendar`` validates in
    ``__post_init__``, which would fail before :func:`check_values` names the bad key. So the
    schema keeps this mutable twin (defaults = ``metrics.CRYPTO``, a test checks), and the
    backtest builds the one ``Calendar`` every statistic uses from its fields, by name.
    """

    name: str = "crypto"
    trading_days_per_year: float = 365.25
    session_hours: float = 24.0


@dataclass
class SupervisedConfig:
    """The supervised baseline (:mod:`hmarl.stats.supervised`): a LightGBM classifier on the
    policy's features, its horizon and threshold chosen on validation from these grids."""

    enabled: bool | None = None  # None: on when lightgbm is importable; true: required
    horizons: list[int] = field(default_factory=lambda: [1, 3, 12])  # bars ahead
    thresholds: list[float] = field(default_factory=lambda: [0.4, 0.5, 0.6])  # probability
    n_estimators: int = 100  # boosting rounds
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_child_samples: int = 50  # rows per leaf at least
    max_bin: int = 63  # histogram bins per feature
    subsample: float = 0.5  # share of rows per tree
    colsample: float = 0.5  # share of features per tree
    max_train_rows: int = 500_000  # fit rows at most, evenly spaced over the train split; 0: all


@dataclass
class BaselinesConfig:
    """Optional baselines of a backtest (buy & hold, flat, momentum are always run)."""

    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)


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
    # tried on validation (= hmarl.stats.baselines.MOMENTUM_LOOKBACKS, a test checks)
    momentum_lookbacks: list[int] = field(default_factory=lambda: [12, 48, 144, 288, 576])
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    random_timing: int = 1000  # policies in the null (= random_timing.RANDOM_TIMING_N); 0: none
    min_trades: int | None = None  # fewer trades: flagged few_trades; None: trainer.min_val_trades
    seed: int = 0  # random-timing null and Sharpe bootstrap
    n_bootstrap: int = 1000  # resamples of the Sharpe confidence interval; 0 skips it
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    device: str = "cpu"  # auto | cpu | cuda | cuda:N
    cache_dir: str | None = ".hmarl_cache"  # built tensors (keyed by data + features + scalers)
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    plots: bool = True
    report_html: bool = True  # report.html: interactive, self-contained (hmarl.report.html)
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
    SupervisedConfig: {
        "horizons": at_least(1),
        "thresholds": Range(0.0, 1.0),
        "n_estimators": at_least(1),
        "learning_rate": Range(0.0, 1.0, lo_open=True),
        "num_leaves": at_least(2),
        "min_child_samples": at_least(1),
        "max_bin": at_least(2),
        "subsample": Range(0.0, 1.0, lo_open=True),
        "colsample": Range(0.0, 1.0, lo_open=True),
        "max_train_rows": at_least(0),
    },
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
    sup = obj.baselines.supervised
    if not sup.horizons or not sup.thresholds:
        problems.append(
            "baselines.supervised.horizons and .thresholds must be non-empty lists, got "
            f"{sup.horizons} and {sup.thresholds}"
        )
    if obj.data is not None:
        problems += check_dates(obj.data, "data.") + check_source(obj.data, "data.")
    if problems:
        raise BacktestError("invalid backtest configuration: " + "; ".join(problems))
    return obj
