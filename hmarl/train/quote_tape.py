"""The tape-driven quoting market's side of training: episodes, scoring and baselines.

Why here and not in the loop (:mod:`hmarl.train.quoting`): a tape market has no known optimum;
what it has is three tapes (:class:`hmarl.market.tape_market.TapeMarket`), so training draws
episodes at random starts of the train tape, validation and test are every whole episode of
their tapes in time order, and the agent is measured against baselines played on the same
episodes.

**Scoring.** Given the tape every fill is deterministic, so a deterministic policy has one
path per episode and its objective is the settled reward of that path
(:func:`hmarl.agent.quote_rollout.follow`), mark-to-market included: on a tape the mid's move
after a fill is part of what the quote earned (adverse selection), not noise to take out. The
agent (greedy), no quote, every fixed symmetric quote and the closed-form quotes are all played
by the same function on the same episodes. Each episode starts flat and liquidates at its end.

**Baselines**: no quote; the best fixed symmetric quote, the level **chosen on validation**,
scored on test; the closed-form (Avellaneda-Stoikov / Gueant) quotes with ``sigma``, ``A``,
``k`` **estimated on the train tape** (:func:`hmarl.market.tape_market.estimate_as`).
The market does not react to our quotes (no market impact).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_rollout import (
    TAPE_FEATURES,
    QuoteBatch,
    TapeTables,
    collect_quotes,
    follow,
    sample_quotes,
    table_batch,
    tape_tables,
)
from hmarl.market.quoting import QuoteParams, joint_action, posted
from hmarl.market.tape_market import ASEstimate, TapeMarket, closed_form_actions, estimate_as
from hmarl.stats.quoting import quote_stats, quote_stats_per_day

if TYPE_CHECKING:  # hmarl.train.quoting imports this module
    from hmarl.train.quoting import QuoteTraining


class TapeSplit(NamedTuple):
    """One tape's tables and its whole evaluation episodes."""

    tables: TapeTables
    starts: np.ndarray  # [B] first row of each whole episode, in time order
    batch: QuoteBatch  # those episodes


class TapeData(NamedTuple):
    train: TapeTables
    validation: TapeSplit
    test: TapeSplit
    estimate: ASEstimate  # from the train tape (NaN: not estimable, see estimate_note)
    estimate_note: str = ""  # why sigma, A, k could not be estimated ("" when they were)


def prepare(
    market: TapeMarket, params: QuoteParams, *, macro_window: int, micro_window: int
) -> TapeData:
    """Tables of the three tapes, the evaluation episodes and the train tape's estimates."""

    def tables(which: str) -> TapeTables:
        tape = getattr(market, which)
        return tape_tables(
            tape, params, market.tick, macro_window=macro_window, micro_window=micro_window
        )

    def split(which: str) -> TapeSplit:
        t = tables(which)
        n = (len(t.dmid) - t.warmup) // market.episode_steps
        if n < 1:
            raise ValueError(
                f"the {which} tape ({len(t.dmid)} steps) holds no whole episode of "
                f"{market.episode_steps} steps after the {t.warmup}-step warm-up"
            )
        starts = t.warmup + market.episode_steps * np.arange(n)
        return TapeSplit(t, starts, table_batch(t, params, starts, market.episode_steps))

    note = ""
    try:
        estimate = estimate_as(market.train, market.tick, market.dt)
    except ValueError as exc:  # the closed-form baseline is then NaN, with this reason
        nan = float("nan")
        estimate, note = ASEstimate(nan, nan, nan), f"not estimable on the train tape: {exc}"
    return TapeData(tables("train"), split("validation"), split("test"), estimate, note)


def train_batch(
    data: TapeData, params: QuoteParams, market: TapeMarket, n: int, rng: np.random.Generator
) -> QuoteBatch:
    """``n`` episodes of the train tape at uniformly drawn starts."""
    last = len(data.train.dmid) - market.episode_steps
    if last < data.train.warmup:
        raise ValueError(
            f"the train tape ({len(data.train.dmid)} steps) is shorter than one episode of "
            f"{market.episode_steps} steps after the {data.train.warmup}-step warm-up"
        )
    starts = rng.integers(data.train.warmup, last + 1, n)
    return table_batch(data.train, params, starts, market.episode_steps)


@torch.no_grad()
def greedy_choice(policy: HierarchicalPolicy, batch: QuoteBatch, params: QuoteParams) -> Tensor:
    """The greedy (argmax) action in every inventory state, ``[S, B, L]`` (dropout off)."""
    was = policy.training
    policy.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        traj = collect_quotes(policy, batch, params, generator=gen, greedy=True)
    finally:
        policy.train(was)
    return traj.every_state().argmax(-1)


@torch.no_grad()
def greedy_score(policy: HierarchicalPolicy, batch: QuoteBatch, params: QuoteParams) -> float:
    """:func:`score` of the greedy policy (dropout off), what validation on a tape reads.

    Why not ``score(params, batch, greedy_choice(...))``: the score plays one path per episode,
    so the sampling-only rollout (:func:`hmarl.agent.quote_rollout.sample_quotes`, the head at
    the visited inventory only) walks the same path without the all-states pass."""
    was = policy.training
    policy.eval()
    try:
        run = sample_quotes(policy, batch, params, generator=torch.Generator(), greedy=True)
    finally:
        policy.train(was)
    return float(run.settlement.reward.sum(1).mean())


def score(params: QuoteParams, batch: QuoteBatch, choice: Tensor) -> float:
    """Mean settled reward per episode of a deterministic choice table ``[S, B, L]``."""
    return float(follow(params, batch, choice)[2].reward.sum(1).mean())


def fixed_choice(params: QuoteParams, batch: QuoteBatch, level: int) -> Tensor:
    """Both sides at ``level`` (0: no quote) in every state and step, ``[S, B, L]``."""
    shape = (params.n_states, *batch.dmid.shape)
    action = joint_action(params, level, level)
    return torch.full(shape, action, dtype=torch.long, device=batch.dmid.device)


def closed_form_choice(
    params: QuoteParams, market: TapeMarket, name: str, split: TapeSplit, estimate: ASEstimate
) -> Tensor:
    """The closed-form quotes with the estimated parameters on the episodes of ``split``, the
    split of ``market`` called ``name`` (``validation`` or ``test``), ``[S, B, L]``."""
    actions = closed_form_actions(getattr(market, name), params, estimate, market.dt)  # [T, S]
    rows = split.starts[:, None] + np.arange(market.episode_steps)
    return torch.as_tensor(actions[rows]).permute(2, 0, 1).contiguous()


@dataclass
class TapeResult:
    """Objectives on the test tape (settled reward per episode, price units x lots), the
    baselines beside them, statistics and timings."""

    test: float  # the selected agent's
    validation: float
    best_fixed: float  # the level chosen on validation, scored on test
    best_fixed_level: int
    best_fixed_validation: float
    closed_form: float  # with sigma, A, k estimated on the train tape (NaN: A or k <= 0)
    closed_form_validation: float
    no_quote: float
    estimate: ASEstimate
    best_episode: int
    env_steps: int
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy -> test statistics
    per_day: dict[str, dict[str, Any]] = field(default_factory=dict)  # the agent's, by day

    @property
    def beats_baselines(self) -> bool:
        """The agent's test objective is above the best fixed quote's and the closed form's
        (False when the closed form is undefined: its estimated ``A`` or ``k`` is not > 0)."""
        return self.test > self.best_fixed and self.test > self.closed_form


def run_stats(
    params: QuoteParams, batch: QuoteBatch, choice: Tensor, periods: float
) -> dict[str, Any]:
    """The keyword arguments of :func:`hmarl.stats.quoting.quote_stats` for a choice table
    played on a split's episodes, concatenated in time order ``[B * L]``."""
    states, actions, s = follow(params, batch, choice)
    bid_posted, ask_posted = posted(params, states, actions)

    def flat(x: Tensor) -> np.ndarray:
        return x.reshape(-1).cpu().numpy()

    return {
        "inventory": flat(s.inventory),
        "bid_fill": flat(s.bid_fill),
        "ask_fill": flat(s.ask_fill),
        "bid_posted": flat(bid_posted),
        "ask_posted": flat(ask_posted),
        "spread": flat(s.spread),
        "fee": flat(s.fee),
        "mtm": flat(s.mtm),
        "terminal": flat(s.terminal),
        "max_inventory": params.max_inventory,
        "periods": periods,
    }


class Choices(NamedTuple):
    """The agent's and every baseline's choice tables on one split's episodes."""

    tables: dict[str, Tensor]  # name -> [S, B, L]
    best_fixed_level: int  # chosen on validation
    best_fixed_validation: float
    closed_form_validation: float  # NaN: the estimated A or k is not > 0


AGENT, BEST_FIXED, NO_QUOTE, CLOSED_FORM = (
    "agent",
    "best fixed quote",
    "no quote",
    "closed form (estimated)",
)


def closed_form_defined(estimate: ASEstimate) -> bool:
    """The closed form needs an estimated ``A`` and ``k`` above 0."""
    return estimate.A > 0 and estimate.k > 0


def fixed_validation(params: QuoteParams, data: TapeData) -> list[float]:
    """Every fixed symmetric level's validation objective (levels 1, 2, ...)."""
    val = data.validation.batch
    return [score(params, val, fixed_choice(params, val, lv)) for lv in range(1, params.n_levels)]


def choices(
    policy: HierarchicalPolicy,
    market: TapeMarket,
    params: QuoteParams,
    data: TapeData,
    split: str = "test",
) -> Choices:
    """The greedy agent, the best fixed quote (its level chosen on validation), no quote and
    the closed form (when ``A`` and ``k`` were estimated > 0) on ``split`` (test | validation)."""
    val = data.validation
    on = getattr(data, split)
    fixed_val = fixed_validation(params, data)
    level = 1 + int(np.argmax(fixed_val))
    ok = closed_form_defined(data.estimate)
    tables = {
        AGENT: greedy_choice(policy, on.batch, params),
        BEST_FIXED: fixed_choice(params, on.batch, level),
        NO_QUOTE: fixed_choice(params, on.batch, 0),
    }
    cf_val = float("nan")
    if ok:
        tables[CLOSED_FORM] = closed_form_choice(params, market, split, on, data.estimate)
        cf = closed_form_choice(params, market, "validation", val, data.estimate)
        cf_val = score(params, val.batch, cf)
    return Choices(tables, level, fixed_val[level - 1], cf_val)


def periods_per_year(market: TapeMarket) -> float:
    """Decision steps a year (the Sharpe ratio's annualisation)."""
    return 365 * 86_400 / market.dt


def per_day(market: TapeMarket, split: TapeSplit, name: str, parts: dict[str, Any]) -> Any:
    """Per-day statistics of one policy's run on ``split`` (the tape ``name`` of ``market``);
    empty when the tape has no timestamps."""
    return per_day_of([market], [split], name, parts)


def per_day_of(
    markets: Sequence[TapeMarket], splits: Sequence[TapeSplit], name: str, parts: dict[str, Any]
) -> Any:
    """:func:`per_day` of one policy's run over several tapes of one ticker, in time order
    (``parts``: their :func:`run_stats` joined in the same order)."""
    stamps = []
    for market, split in zip(markets, splits, strict=True):
        ts = getattr(market, name).ts
        if ts is None:
            return {}
        stamps.append(ts[(split.starts[:, None] + np.arange(market.episode_steps)).reshape(-1)])
    return quote_stats_per_day(np.concatenate(stamps), **parts)


def evaluate(
    policy: HierarchicalPolicy,
    market: TapeMarket,
    params: QuoteParams,
    data: TapeData,
) -> dict[str, Any]:
    """Test and validation objectives of the agent and the baselines, test statistics, and
    the agent's per-day statistics when the test tape has timestamps."""
    test = data.test
    c = choices(policy, market, params, data)
    periods = periods_per_year(market)
    parts = {name: run_stats(params, test.batch, t, periods) for name, t in c.tables.items()}
    cf = c.tables.get(CLOSED_FORM)
    return {
        "test": score(params, test.batch, c.tables[AGENT]),
        "best_fixed": score(params, test.batch, c.tables[BEST_FIXED]),
        "best_fixed_level": c.best_fixed_level,
        "best_fixed_validation": c.best_fixed_validation,
        "closed_form": score(params, test.batch, cf) if cf is not None else float("nan"),
        "closed_form_validation": c.closed_form_validation,
        "no_quote": score(params, test.batch, c.tables[NO_QUOTE]),
        "stats": {name: quote_stats(**p) for name, p in parts.items()},
        "per_day": per_day(market, test, "test", parts[AGENT]),
    }


SPLITS = {"val": "validation", "test": "test"}  # the entry points' split names -> TapeData's


@dataclass(frozen=True)
class TapePart:
    """One tape of a market: a (ticker, day) of ``data=ticks data.paths=[...]``, its own three
    time segments, tables and estimates; or the whole market of ``data=ticks_synthetic`` and of
    one capture."""

    name: str  # the ticker (a part of a many-tape market is named "TICKER day")
    ticker: str
    market: TapeMarket
    data: TapeData

    @property
    def train_starts(self) -> int:
        """How many train episode starts the tape holds (its weight when drawing episodes)."""
        return max(
            0, len(self.data.train.dmid) - self.market.episode_steps - self.data.train.warmup + 1
        )


def cat_batches(batches: Sequence[QuoteBatch]) -> QuoteBatch:
    """Batches of several tapes as one (episodes stacked; every episode stays inside its tape)."""
    if len(batches) == 1:
        return batches[0]
    return QuoteBatch(*(torch.cat(fields, 0) for fields in zip(*batches, strict=True)))


def pooled_fixed_validation(params: QuoteParams, parts: Sequence[TapePart]) -> list[float]:
    """Every fixed symmetric level's validation objective over every tape's episodes pooled."""
    if len(parts) == 1:
        return fixed_validation(params, parts[0].data)
    val = cat_batches([p.data.validation.batch for p in parts])
    return [score(params, val, fixed_choice(params, val, lv)) for lv in range(1, params.n_levels)]


def pooled_choices(
    policy: HierarchicalPolicy, parts: Sequence[TapePart], params: QuoteParams, split: str
) -> tuple[list[Choices], list[float]]:
    """:func:`choices` of every tape on ``split`` (validation | test), the best fixed level
    chosen on the pooled validation episodes, the closed form with each tape's own estimates
    (present only when every tape's are defined); and the fixed levels' validation objectives."""
    fixed_val = pooled_fixed_validation(params, parts)
    level = 1 + int(np.argmax(fixed_val))
    all_cf = all(closed_form_defined(p.data.estimate) for p in parts)
    out = []
    for p in parts:
        on = getattr(p.data, split)
        tables = {
            AGENT: greedy_choice(policy, on.batch, params),
            BEST_FIXED: fixed_choice(params, on.batch, level),
            NO_QUOTE: fixed_choice(params, on.batch, 0),
        }
        if all_cf:
            tables[CLOSED_FORM] = closed_form_choice(params, p.market, split, on, p.data.estimate)
        out.append(Choices(tables, level, fixed_val[level - 1], float("nan")))
    return out, fixed_val


class TapeQuoteMarket:
    """One or several tapes behind the entry points' quoting-market interface (the methods of
    :class:`hmarl.train.quote_task.QuoteMarket`): episodes at random starts of the train tapes
    (each episode's tape drawn in proportion to its train starts), seeded by ``(seed,
    episode)`` so a resumed run draws the same ones; validation and test are every whole
    episode of every tape, pooled; objectives are settled rewards of the greedy policy's one
    path (:func:`score`), averaged over those episodes; the baselines are validation's.

    Why tapes and not one long tape: the tapes of several days or tickers are not one series;
    laid end to end, a window, a step's move or an episode would span the night between two
    days or the jump between two instruments. Each tape keeps its own windows, splits and
    estimates; only the episodes are pooled.
    """

    def __init__(
        self,
        params: QuoteParams,
        settings: QuoteTraining,
        tapes: TapeMarket | Sequence[tuple[str, TapeMarket]],
        fingerprint: str,
    ) -> None:
        self.params, self.settings, self.fingerprint = params, settings, fingerprint
        named = [("SYNTHETIC", tapes)] if isinstance(tapes, TapeMarket) else list(tapes)
        parts = []
        for name, tape in named:
            try:
                data = prepare(
                    tape,
                    params,
                    macro_window=settings.macro_window,
                    micro_window=settings.micro_window,
                )
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}" if len(named) > 1 else str(exc)) from exc
            parts.append(TapePart(name, name.split(" ")[0], tape, data))
        self.parts: list[TapePart] = parts
        short = [p.name for p in parts if p.train_starts < 1]
        if short:
            raise ValueError(
                f"the train tape of {', '.join(short)} is shorter than one episode of "
                f"{parts[0].market.episode_steps} steps after the window's warm-up"
            )
        self._fixed_val = pooled_fixed_validation(params, parts)

    @property
    def tape(self) -> TapeMarket:
        """The first tape (a one-tape market's only one)."""
        return self.parts[0].market

    @property
    def data(self) -> TapeData:
        """The first tape's tables (a one-tape market's only ones)."""
        return self.parts[0].data

    @property
    def features(self) -> tuple[str, ...]:
        return TAPE_FEATURES

    @property
    def steps(self) -> int:
        return self.tape.episode_steps

    def split(self, split: str) -> TapeSplit:
        """The first tape's split (a one-tape market's only one)."""
        return getattr(self.data, SPLITS[split])

    def train_batch(self, episode: int) -> QuoteBatch:
        rng = np.random.default_rng([self.settings.seed, 1, episode])
        n = self.settings.n_envs
        if len(self.parts) == 1:
            return train_batch(self.data, self.params, self.tape, n, rng)
        weights = np.array([p.train_starts for p in self.parts], dtype=np.float64)
        counts = np.bincount(
            rng.choice(len(self.parts), size=n, p=weights / weights.sum()),
            minlength=len(self.parts),
        )
        return cat_batches(
            [
                train_batch(p.data, self.params, p.market, int(c), rng)
                for p, c in zip(self.parts, counts, strict=True)
                if c
            ]
        )

    def eval_batch(self, split: str) -> QuoteBatch:
        return cat_batches([getattr(p.data, SPLITS[split]).batch for p in self.parts])

    def objective(self, policy: HierarchicalPolicy, batch: QuoteBatch) -> float:
        return greedy_score(policy, batch, self.params)

    def best_fixed_level(self) -> int:
        return 1 + int(np.argmax(self._fixed_val))

    def baselines(self) -> dict[str, float]:
        """The baselines' validation objectives (what the selection rule's edge compares)."""
        val = self.eval_batch("val")
        none = score(self.params, val, fixed_choice(self.params, val, 0))
        out = {"best_fixed": max(self._fixed_val), "no_quote": none}
        if all(closed_form_defined(p.data.estimate) for p in self.parts):
            cf = [
                closed_form_choice(
                    self.params, p.market, "validation", p.data.validation, p.data.estimate
                )
                for p in self.parts
            ]
            out["closed_form"] = score(self.params, val, torch.cat(cf, 1))
        return out

    def with_params(self, params: QuoteParams) -> TapeQuoteMarket:
        """The same tapes under other costs or penalties (the backtest's fee multipliers; the
        tables depend on the offsets and the tick only, which must stay)."""
        if (params.offsets, params.tick) != (self.params.offsets, self.params.tick):
            raise ValueError("with_params keeps the offsets and the tick (the tapes' tables)")
        other = copy.copy(self)
        other.params = params
        other._fixed_val = pooled_fixed_validation(params, self.parts)
        return other

    def split_record(self) -> dict[str, list[int]]:
        """Each evaluation split as [first row, episodes] of the first tape (one-tape markets),
        with ``episodes`` counted over every tape."""
        return {
            k: [
                int(self.split(k).starts[0]),
                sum(len(getattr(p.data, SPLITS[k]).starts) for p in self.parts),
            ]
            for k in SPLITS
        }
