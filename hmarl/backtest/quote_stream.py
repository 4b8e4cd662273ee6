"""A trained quoting checkpoint's greedy quotes on raw ticks, as the price tables that
:func:`hmarl.market.tape_replay.closed_loop` runs (and ``scripts/hft_check.py`` replays
through hftbacktest).

Why: the fill-engine cross-check compares engines on one quote stream. The closed-form stream
is a formula of the book; a checkpoint's stream is its network's greedy choice at each step
and inventory, from the features of the tape it was trained on. This builds that tape from
the ticks with the checkpoint's own settings (``data.ticks.dt``, ``lot``, ``depth``,
``max_gap``, ``quote.tick``, the windows), runs the policy once over every step (one long
episode from the end of the feature warm-up: the network reads windows, not the episode), and
turns each state's greedy joint action into a bid and an ask price: ``offset`` ticks behind the
step's best quote, NaN where the action leaves that side empty and in the warm-up.
The inventory then runs over the whole day (no episode liquidation), as the closed-form
stream's does. The market does not react to the quotes (no market impact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hmarl.agent.quote_rollout import table_batch, tape_tables
from hmarl.market.quoting import QuoteParams, action_levels
from hmarl.market.tape_replay import Grid
from hmarl.sources.tick_tape import tape_from_ticks
from hmarl.sources.ticks import Ticks
from hmarl.train.quote_tape import greedy_choice
from hmarl.train.quote_task import params_from_record, quote_policy_from_checkpoint


def checkpoint_settings(ckpt: Mapping[str, Any], source: str) -> dict[str, float]:
    """The checkpoint's ``dt`` (s), ``tick`` and ``lot``; refused unless it was trained on
    real ticks (``data=ticks``), whose tape these ticks can rebuild."""
    data = (ckpt.get("config") or {}).get("data") or {}
    if ckpt.get("task") != "quote" or data.get("source") != "ticks":
        raise ValueError(
            f"{source}: not a checkpoint trained on real ticks (task=quote data=ticks); its "
            "quotes need the tape it was trained on"
        )
    ticks = data.get("ticks") or {}
    return {
        "dt": float(ticks["dt"]),
        "tick": float(ckpt["env"]["tick"]),
        "lot": float(ticks["lot"]),
    }


def checkpoint_quotes(
    ckpt: Mapping[str, Any], ticks: Ticks, grid: Grid, source: str
) -> tuple[np.ndarray, np.ndarray, QuoteParams]:
    """Bid and ask prices ``[L, S]`` of the checkpoint's greedy quotes at every step of
    ``grid`` and inventory state (NaN: not quoted), and its quoting rules."""
    settings = checkpoint_settings(ckpt, source)
    params = params_from_record(ckpt["env"])
    r = ckpt["config"]["data"]["ticks"]
    tape = tape_from_ticks(
        ticks,
        dt_ns=round(settings["dt"] * 1e9),
        tick=params.tick,
        lot=settings["lot"],
        depth=int(r["depth"]),
        max_gap_ns=round(float(r["max_gap"]) * 1e9),
        where=source,
    )
    if tape.ts is None or not np.array_equal(tape.ts, grid.edges[:-1]):
        raise ValueError(f"{source}: the tape's steps are not the decision grid's (dt differs?)")
    spec = ckpt["feature_spec"]
    tables = tape_tables(
        tape,
        params,
        params.tick,
        macro_window=int(spec["macro_window"]),
        micro_window=int(spec["micro_window"]),
    )
    start, n = tables.warmup, len(tape.bid)
    if n - start < 1:
        raise ValueError(f"{source}: {n} steps do not cover the {start}-step feature warm-up")
    batch = table_batch(tables, params, np.array([start]), n - start)
    policy = quote_policy_from_checkpoint(ckpt, source)
    choice = greedy_choice(policy, batch, params)[:, 0, :].numpy()  # [S, L - start]
    bid_lv, ask_lv = action_levels(params)
    offsets = np.concatenate([[np.nan], np.asarray(params.offsets, dtype=np.float64)])
    bid_all = np.full((n, params.n_states), np.nan)
    ask_all = np.full((n, params.n_states), np.nan)
    bid_all[start:] = grid.bid[start:, None] - offsets[bid_lv[choice]].T * params.tick
    ask_all[start:] = grid.ask[start:, None] + offsets[ask_lv[choice]].T * params.tick
    return bid_all, ask_all, params
