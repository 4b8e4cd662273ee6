"""A trained quoting checkpoint's quotes on a day of real ticks, for the per-day evaluation.

Why: :mod:`hmarl.backtest.tape_days` evaluates a quote stream day by day and ticker by ticker
(metrics.json, steps.csv, day.png, the daily and aggregated tables) with the closed-form quotes;
the page's demo (``python -m hmarl.app``, tab *Quote per day*) runs a trained checkpoint there
instead, and ``scripts/hft_check.py --checkpoint`` replays the same stream through hftbacktest.
This module turns a checkpoint into the price tables ``tape_days`` replays
(:data:`hmarl.backtest.tape_days.QuoteTable`):

* the day's ticks become the tape the checkpoint was trained on
  (:func:`hmarl.sources.tick_tape.tape_from_ticks` with the checkpoint's ``dt``, tick, lot,
  depth and quote-gap limit; the same epoch-aligned steps as ``tape_days``' decision grid),
  and its features (:func:`hmarl.agent.quote_rollout.tape_tables`);
* the policy's greedy action in every (step, inventory) state
  (:func:`hmarl.train.quote_tape.greedy_choice`, as validated in training);
* each action's levels as prices: no quote (NaN), or ``offsets[level - 1]`` ticks behind the
  step's best quote on that side.

The first ``max(macro_window, micro_window) - 1`` steps of a day have no whole feature window:
the policy does not quote there. Fills are then the ``tape_days`` rule on top-of-book data
(:mod:`hmarl.market.tape_replay`: queue ahead 0 behind the best), where training used the
tick tape's (the top's size stands in for every level behind it): quotes behind the best fill a
little more easily here. The market does not react to the quotes (no market impact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from hmarl.agent.checkpoint import CheckpointError
from hmarl.agent.quote_rollout import TAPE_FEATURES, table_batch, tape_tables
from hmarl.backtest.tape_days import QuoteSetup
from hmarl.config import Config
from hmarl.market.quoting import QuoteParams, action_levels
from hmarl.market.tape_replay import Grid
from hmarl.sources.tick_tape import tape_from_ticks
from hmarl.sources.ticks import Ticks
from hmarl.train.quote_tape import greedy_choice
from hmarl.train.quote_task import params_from_record, quote_policy_from_checkpoint

TICK_MARKETS = ("ticks", "ticks_synthetic")
CHUNK = 2_000  # steps a row of the policy's batch (one day is cut into rows; same actions)


@dataclass(frozen=True)
class CheckpointMarket:
    """What a checkpoint was trained with that its quotes on new ticks depend on."""

    source: str  # data.source: ticks or ticks_synthetic
    dt: float  # seconds a step (the features are per step)
    lot: float  # base units a lot (sizes in the features are in lots)
    depth: int
    max_gap: float  # seconds without a quote that make a day refused
    params: QuoteParams  # offsets, tick, inventory limit
    macro_window: int
    micro_window: int


def checkpoint_market(ckpt: Mapping[str, Any], source: str = "the checkpoint") -> CheckpointMarket:
    """The tick market a quoting checkpoint was trained on; any other checkpoint is refused
    with what to use instead."""
    from hmarl.backtest.quote_run import checkpoint_config

    if ckpt.get("task") != "quote":
        raise CheckpointError(
            f"{source} is a trading checkpoint: the per-day quoting demo needs a quoting one "
            "(python -m hmarl.train +experiment=mm_asym_1_10 data=ticks data.path=...)"
        )
    cfg: Config = checkpoint_config(ckpt)
    kind = cfg.data.source.value
    names = tuple(ckpt["feature_spec"]["names"])
    if kind not in TICK_MARKETS or names != TAPE_FEATURES:
        raise CheckpointError(
            f"{source} was trained on data={kind}, whose features are not a tick tape's: the "
            "per-day demo runs checkpoints trained on data=ticks or data=ticks_synthetic"
        )
    block = cfg.data.ticks_synthetic if kind == "ticks_synthetic" else cfg.data.ticks
    return CheckpointMarket(
        source=kind,
        dt=float(block.dt),
        lot=float(cfg.data.ticks.lot),  # the synthetic tape is in lots already; its lot is this
        depth=int(block.depth),
        max_gap=float(cfg.data.ticks.max_gap),
        params=params_from_record(ckpt["env"]),
        macro_window=int(ckpt["feature_spec"]["macro_window"]),
        micro_window=int(ckpt["feature_spec"]["micro_window"]),
    )


def quote_prices(grid: Grid, actions: np.ndarray, params: QuoteParams) -> tuple[np.ndarray, ...]:
    """Joint actions ``[L, S]`` as bid and ask prices ``[L, S]`` (NaN: that side not quoted;
    a negative action, the warm-up, quotes nothing)."""
    bid_lv, ask_lv = action_levels(params)
    depth = np.concatenate([[np.nan], np.asarray(params.offsets, dtype=np.float64)])  # ticks
    none = actions < 0
    safe = np.where(none, 0, actions)
    bid = grid.bid[:, None] - depth[bid_lv[safe]] * params.tick
    ask = grid.ask[:, None] + depth[ask_lv[safe]] * params.tick
    return np.where(none, np.nan, bid), np.where(none, np.nan, ask)


def policy_quotes(
    ckpt: Mapping[str, Any],
    source: str = "the checkpoint",
    *,
    tick: float | None = None,
    lot: float | None = None,
    on_day: Callable[[Ticks], None] = lambda _: None,
) -> tuple[Callable[[Ticks, Grid], tuple[np.ndarray, np.ndarray]], CheckpointMarket]:
    """The checkpoint's greedy quotes as a :data:`~hmarl.backtest.tape_days.QuoteTable`, and its
    market (``tick`` / ``lot`` replace the trained ones, for an instrument of another tick or
    lot). ``on_day`` is told each day before its policy pass (the page's progress)."""
    market = checkpoint_market(ckpt, source)
    if tick is not None or lot is not None:
        params = replace(market.params, tick=tick or market.params.tick)
        market = replace(market, params=params, lot=lot or market.lot)
    policy = quote_policy_from_checkpoint(ckpt, source)
    params = market.params

    def quotes(ticks: Ticks, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
        on_day(ticks)
        tape = tape_from_ticks(
            ticks,
            dt_ns=round(market.dt * 1e9),
            tick=params.tick,
            lot=market.lot,
            depth=market.depth,
            max_gap_ns=round(market.max_gap * 1e9),
            where="the day's ticks",
        )
        if tape.ts is None or not np.array_equal(tape.ts, grid.edges[:-1]):
            raise ValueError(
                f"{source}: the tape has {len(tape.bid)} steps and the day's grid {grid.steps}, "
                f"not on the same times: the evaluation's dt must be the checkpoint's "
                f"({market.dt:g} s)"
            )
        tables = tape_tables(
            tape,
            params,
            params.tick,
            macro_window=market.macro_window,
            micro_window=market.micro_window,
        )
        start = tables.warmup
        if grid.steps <= start:
            raise ValueError(
                f"the day has {grid.steps} steps of {market.dt:g} s, not more than the "
                f"policy's {start}-step window warm-up: choose a longer day or session"
            )
        actions = np.full((grid.steps, params.n_states), -1, dtype=np.int64)
        rows = grid.steps - start
        whole, rest = divmod(rows, CHUNK)
        parts = [(start + CHUNK * np.arange(whole), CHUNK)] if whole else []
        parts += [(np.array([start + CHUNK * whole]), rest)] if rest else []
        with torch.no_grad():
            for starts, length in parts:
                batch = table_batch(tables, params, starts, length)
                choice = greedy_choice(policy, batch, params).numpy()  # [S, B, L]
                at = (starts[:, None] + np.arange(length)).ravel()
                actions[at] = choice.reshape(params.n_states, -1).T
        bid, ask = quote_prices(grid, actions, params)
        return bid, ask

    return quotes, market


def checkpoint_quotes(
    ckpt: Mapping[str, Any], ticks: Ticks, grid: Grid, source: str = "the checkpoint"
) -> tuple[np.ndarray, np.ndarray, QuoteParams]:
    """The checkpoint's greedy bid and ask prices ``[L, S]`` on ``grid`` (its ``dt``) and its
    quoting rules: one day's :func:`policy_quotes`, for ``scripts/hft_check.py --checkpoint``,
    which replays this stream through our tape rule and through hftbacktest."""
    quotes, market = policy_quotes(ckpt, source)
    bid, ask = quotes(ticks, grid)
    return bid, ask, market.params


def policy_setup(market: CheckpointMarket, name: str, **overrides: Any) -> QuoteSetup:
    """The :class:`~hmarl.backtest.tape_days.QuoteSetup` that evaluates a checkpoint's quotes:
    its ``dt``, tick, lot and inventory limit (``quotes`` from :func:`policy_quotes`)."""
    p = market.params
    return QuoteSetup(
        dt=market.dt,
        tick=p.tick,
        lot=market.lot,
        max_inventory=p.max_inventory,
        label=name,
        **overrides,
    )
