"""Training the hierarchical quoting agent: on the Avellaneda-Stoikov market, exactly, and on
a tape-driven market (:mod:`hmarl.train.quote_tape`).

Why a loop of its own beside :class:`hmarl.train.trainer.Trainer`: the trading trainer reads a
candle market's splits; the Avellaneda-Stoikov market is generated (fresh seeded paths for every
episode, fixed seeded paths for validation and test) and has a known optimum to measure against.
The update is the trading task's (per-module Adam, the asymmetric MacroNet schedule,
:func:`hmarl.agent.reinforce.step_modules`); the estimator defaults to ``expected``.

**Evaluation is exact given the mid's paths**: for the greedy (argmax) policy the expected
objective over the fills is computed on the inventory grid
(:func:`hmarl.agent.quote_update.quote_grid_values`, the mark-to-market term out since it is
zero in expectation), then averaged over the evaluation paths. The only noise left is that of
the mid's paths, which the policy sees through its features; the optimum, the best fixed quote
and the closed-form quotes are exact numbers (:mod:`hmarl.market.avellaneda`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import torch

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_policy import quote_policy
from hmarl.agent.quote_rollout import (
    TAPE_FEATURES,
    QuoteBatch,
    QuoteTrajectory,
    as_batch,
    collect_quotes,
    collect_visited,
)
from hmarl.agent.quote_update import exact_objective, quote_update
from hmarl.agent.reinforce import macro_steps_at, make_optimizers
from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams
from hmarl.market.tape_market import TapeMarket
from hmarl.train import quote_tape as qt
from hmarl.train.quote_tape import TapeResult

VALIDATION_SEED, TEST_SEED = 10_000_019, 20_000_003
"""Seeds of the fixed evaluation paths (training paths use ``(seed, episode)``)."""
VISITED_ESTIMATORS = ("reinforce", "baseline")
"""The estimators whose loss reads the visited states' log-probabilities only."""


@dataclass(frozen=True)
class QuoteTraining:
    """The settings of one quoting run (plain values)."""

    episodes: int = 150
    n_envs: int = 32
    macro_every: int = 11  # asym_1_10: MacroNet steps on episodes 0, 11, 22, ...
    lr_macro: float = 1e-4
    lr_micro: float = 2e-3  # 4x trading's: measured, 5e-4 stalled at ~83% of the optimum
    lr_head: float = 2e-3
    gamma: float = 1.0  # the objective is undiscounted
    entropy_coef: float = 0.001
    grad_clip: float = 1.0
    estimator: str = "expected"
    exploration: str = "entropy"  # the term entropy_coef weighs (agent.reinforce)
    macro_window: int = 64
    micro_window: int = 8
    dropout: float = 0.0
    head_hidden: tuple[int, ...] = (128, 64)
    eval_every: int = 25
    eval_paths: int = 128
    seed: int = 0
    threads: int = 1


@dataclass
class QuoteResult:
    """Objectives (expected wealth change per episode, price units x lots) and timings."""

    optimum: float
    best_fixed: float
    best_fixed_level: int
    closed_form: float
    no_quote: float
    validation: float  # the selected policy's, on the validation paths
    test: float  # the selected policy's, on the test paths
    best_episode: int
    env_steps: int
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """The trained agent's test objective as a fraction of the optimum."""
        return self.test / self.optimum

    @property
    def gap_closed(self) -> float:
        """Share of the gap between the best fixed quote and the optimum the agent closed."""
        return (self.test - self.best_fixed) / (self.optimum - self.best_fixed)


def make_batch(
    market: av.ASParams,
    params: QuoteParams,
    settings: QuoteTraining,
    n: int,
    seed: int | tuple[int, int],
) -> QuoteBatch:
    paths = av.generate(
        market, n, np.random.default_rng(list(np.atleast_1d(seed))), history=settings.macro_window
    )
    return as_batch(
        market,
        params,
        paths,
        macro_window=settings.macro_window,
        micro_window=settings.micro_window,
    )


def quote_episode(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    batch: QuoteBatch,
    params: QuoteParams,
    settings: QuoteTraining,
    update_macro: bool,
    generator: torch.Generator,
) -> dict[str, float]:
    """One training episode on ``batch`` (any quoting market's): the rollout and one update,
    MacroNet's iff ``update_macro`` (the asymmetric schedule). Returns the update's metrics
    (the reward's parts, losses, gradient norms).

    The estimators that read log pi at the visited states only (:data:`VISITED_ESTIMATORS`)
    collect without the all-states head pass (:func:`collect_visited`: the same path and
    update, cheaper); ``expected`` and ``all_actions`` read every state's probabilities."""
    if settings.estimator in VISITED_ESTIMATORS:
        traj = collect_visited(policy, batch, params, generator=generator, train_macro=update_macro)
    else:
        traj = collect_quotes(
            policy,
            batch,
            params,
            generator=generator,
            train_macro=update_macro,
            keep_grid_logits=settings.estimator == "expected",
        )
    return settings_update(policy, optimizers, traj, batch, params, settings, update_macro)


def settings_update(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    traj: QuoteTrajectory,
    batch: QuoteBatch,
    params: QuoteParams,
    settings: QuoteTraining,
    update_macro: bool,
) -> dict[str, float]:
    """:func:`hmarl.agent.quote_update.quote_update` with the run's settings: the update of
    :func:`quote_episode`, for a trajectory collected otherwise (the speed benchmark's
    all-states step)."""
    return quote_update(
        policy,
        optimizers,
        traj,
        batch,
        params,
        gamma=settings.gamma,
        entropy_coef=settings.entropy_coef,
        grad_clip=settings.grad_clip,
        update_macro=update_macro,
        estimator=settings.estimator,
        exploration=settings.exploration,
    )


@torch.no_grad()
def objective(policy: HierarchicalPolicy, batch: QuoteBatch, params: QuoteParams) -> float:
    """Mean exact objective of the greedy policy over the batch's paths (dropout off)."""
    greedy = torch.nn.functional.one_hot(qt.greedy_choice(policy, batch, params), params.n_actions)
    return exact_objective(params, batch, greedy.permute(1, 2, 0, 3).double())  # [B, L, S, A]


@overload
def train_quotes(
    market: av.ASParams, params: QuoteParams, settings: QuoteTraining
) -> tuple[HierarchicalPolicy, QuoteResult]: ...


@overload
def train_quotes(
    market: TapeMarket, params: QuoteParams, settings: QuoteTraining
) -> tuple[HierarchicalPolicy, TapeResult]: ...


def train_quotes(
    market: av.ASParams | TapeMarket, params: QuoteParams, settings: QuoteTraining
) -> tuple[HierarchicalPolicy, QuoteResult | TapeResult]:
    """Train on the market's episodes; keep the policy with the best validation objective.

    ``market``: an Avellaneda-Stoikov market (fresh seeded paths every episode, scored exactly
    against the optimum) or a tape market (:mod:`hmarl.train.quote_tape`: random episodes of
    the train tape, scored on the test tape beside the baselines).
    """
    if isinstance(market, TapeMarket):
        return _train_on_tape(market, params, settings)
    return _train_as(market, params, settings)


def _fit(
    policy: HierarchicalPolicy,
    params: QuoteParams,
    settings: QuoteTraining,
    train_batch: Callable[[int], QuoteBatch],
    validate: Callable[[HierarchicalPolicy], float],
) -> tuple[float, int, list[tuple[int, float]], float]:
    """The training loop of both markets: ``train_batch(episode)`` gives each episode's batch,
    ``validate`` scores the greedy policy every ``eval_every`` episodes; the best validation's
    weights are loaded back. Returns that score, its episode, the curve and the seconds."""
    optimizers = make_optimizers(
        policy, lr_macro=settings.lr_macro, lr_micro=settings.lr_micro, lr_head=settings.lr_head
    )
    gen = torch.Generator().manual_seed(settings.seed)
    best, best_episode, best_state = -np.inf, -1, None
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    for episode in range(settings.episodes + 1):
        if episode % settings.eval_every == 0 or episode == settings.episodes:
            score = validate(policy)
            curve.append((episode, score))
            if score > best:
                best, best_episode = score, episode
                best_state = {k: v.clone() for k, v in policy.state_dict().items()}
        if episode == settings.episodes:
            break
        batch = train_batch(episode)
        update_macro = macro_steps_at(episode, settings.macro_every)
        quote_episode(policy, optimizers, batch, params, settings, update_macro, gen)
    seconds = time.perf_counter() - start
    assert best_state is not None
    policy.load_state_dict(best_state)
    return best, best_episode, curve, seconds


def _new_policy(
    n_features: int, params: QuoteParams, settings: QuoteTraining
) -> HierarchicalPolicy:
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    return quote_policy(
        n_features, params, head_hidden=settings.head_hidden, dropout=settings.dropout
    )


def _train_as(
    market: av.ASParams, params: QuoteParams, settings: QuoteTraining
) -> tuple[HierarchicalPolicy, QuoteResult]:
    policy = _new_policy(len(av.FEATURES), params, settings)
    val = make_batch(market, params, settings, settings.eval_paths, VALIDATION_SEED)
    best, best_episode, curve, seconds = _fit(
        policy,
        params,
        settings,
        lambda episode: make_batch(
            market, params, settings, settings.n_envs, (settings.seed, episode)
        ),
        lambda p: objective(p, val, params),
    )
    test = make_batch(market, params, settings, settings.eval_paths, TEST_SEED)
    level, fixed = av.best_fixed_quote(market, params)
    result = QuoteResult(
        optimum=av.optimum(market, params).value(params),
        best_fixed=fixed,
        best_fixed_level=level,
        closed_form=av.policy_value(market, params, av.closed_form_policy(market, params)).value(
            params
        ),
        no_quote=av.policy_value(market, params, av.no_quote_policy(params)).value(params),
        validation=best,
        test=objective(policy, test, params),
        best_episode=best_episode,
        env_steps=settings.episodes * settings.n_envs * market.steps,
        seconds=seconds,
        curve=curve,
    )
    return policy, result


def _train_on_tape(
    market: TapeMarket, params: QuoteParams, settings: QuoteTraining
) -> tuple[HierarchicalPolicy, TapeResult]:
    policy = _new_policy(len(TAPE_FEATURES), params, settings)
    data = qt.prepare(
        market, params, macro_window=settings.macro_window, micro_window=settings.micro_window
    )
    rng = np.random.default_rng([settings.seed, 1])
    val = data.validation.batch
    best, best_episode, curve, seconds = _fit(
        policy,
        params,
        settings,
        lambda _: qt.train_batch(data, params, market, settings.n_envs, rng),
        lambda p: qt.greedy_score(p, val, params),
    )
    figures = qt.evaluate(policy, market, params, data)
    result = TapeResult(
        validation=best,
        estimate=data.estimate,
        best_episode=best_episode,
        env_steps=settings.episodes * settings.n_envs * market.episode_steps,
        seconds=seconds,
        curve=curve,
        **figures,
    )
    return policy, result
