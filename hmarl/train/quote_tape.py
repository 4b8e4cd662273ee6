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

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_rollout import (
    QuoteBatch,
    TapeTables,
    collect_quotes,
    follow,
    table_batch,
    tape_tables,
)
from hmarl.market.quoting import QuoteParams, joint_action, posted
from hmarl.market.tape_market import ASEstimate, TapeMarket, closed_form_actions, estimate_as
from hmarl.stats.quoting import quote_stats, quote_stats_per_day


class TapeSplit(NamedTuple):
    """One tape's tables and its whole evaluation episodes."""

    tables: TapeTables
    starts: np.ndarray  # [B] first row of each whole episode, in time order
    batch: QuoteBatch  # those episodes


class TapeData(NamedTuple):
    train: TapeTables
    validation: TapeSplit
    test: TapeSplit
    estimate: ASEstimate  # from the train tape


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

    estimate = estimate_as(market.train, market.tick, market.dt)
    return TapeData(tables("train"), split("validation"), split("test"), estimate)


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
    return traj.grid_probs.argmax(-1)


def score(params: QuoteParams, batch: QuoteBatch, choice: Tensor) -> float:
    """Mean settled reward per episode of a deterministic choice table ``[S, B, L]``."""
    return float(follow(params, batch, choice)[2].reward.sum(1).mean())


def fixed_choice(params: QuoteParams, batch: QuoteBatch, level: int) -> Tensor:
    """Both sides at ``level`` (0: no quote) in every state and step, ``[S, B, L]``."""
    shape = (params.n_states, *batch.dmid.shape)
    return torch.full(shape, joint_action(params, level, level), dtype=torch.long)


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


def evaluate(
    policy: HierarchicalPolicy,
    market: TapeMarket,
    params: QuoteParams,
    data: TapeData,
) -> dict[str, Any]:
    """Test and validation objectives of the agent and the baselines, test statistics, and
    the agent's per-day statistics when the test tape has timestamps."""
    val, test = data.validation, data.test
    fixed_val = [
        score(params, val.batch, fixed_choice(params, val.batch, lv))
        for lv in range(1, params.n_levels)
    ]
    level = 1 + int(np.argmax(fixed_val))
    ok = data.estimate.A > 0 and data.estimate.k > 0  # else the closed form is undefined
    cf_test = closed_form_choice(params, market, "test", test, data.estimate) if ok else None
    cf_val = closed_form_choice(params, market, "validation", val, data.estimate) if ok else None
    choices = {
        "agent": greedy_choice(policy, test.batch, params),
        "best fixed quote": fixed_choice(params, test.batch, level),
        "no quote": fixed_choice(params, test.batch, 0),
    }
    if cf_test is not None:
        choices["closed form (estimated)"] = cf_test
    periods = 365 * 86_400 / market.dt
    parts = {name: run_stats(params, test.batch, c, periods) for name, c in choices.items()}
    nan = float("nan")
    out: dict[str, Any] = {
        "test": score(params, test.batch, choices["agent"]),
        "best_fixed": score(params, test.batch, choices["best fixed quote"]),
        "best_fixed_level": level,
        "best_fixed_validation": fixed_val[level - 1],
        "closed_form": score(params, test.batch, cf_test) if cf_test is not None else nan,
        "closed_form_validation": score(params, val.batch, cf_val) if cf_val is not None else nan,
        "no_quote": score(params, test.batch, choices["no quote"]),
        "stats": {name: quote_stats(**p) for name, p in parts.items()},
        "per_day": {},
    }
    ts = market.test.ts
    if ts is not None:
        rows = (test.starts[:, None] + np.arange(market.episode_steps)).reshape(-1)
        out["per_day"] = quote_stats_per_day(ts[rows], **parts["agent"])
    return out
