"""A quoting checkpoint's back-test on a tick market, per UTC day and per ticker: the files of
:mod:`hmarl.backtest.tape_days` for the trained agent's greedy quotes.

Why beside ``tape_days`` and not in it: ``tape_days`` replays the closed-form quotes on raw
ticks; here the quotes are a trained checkpoint's, played on the tapes it was trained on
(:class:`hmarl.train.quote_tape.TapeQuoteMarket`, the split's whole episodes, each starting
flat and liquidated at its end). The files and their columns are ``tape_days``'
(:func:`hmarl.backtest.tape_days.day_result`, :func:`~hmarl.backtest.tape_days.write_days`),
so a day reads the same whoever quoted it:

* ``Mean probability of <action> [%]``: the policy's probability of choosing an action of each
  kind (both sides, the bid only, the ask only, no quote), averaged over the day's steps at the
  visited inventory; the action *counted* is what was posted (the posting rule withdraws a
  side at the inventory limit);
* ``Traded notional [quote]``: the prints that reached the book's kept levels (what the tape
  holds of the trades), price x size in quote currency; the liquidity buckets rank it;
* ``PnL of <baseline> [price x lots]``: each baseline's PnL on the same day's episodes.

The market does not react to our quotes (no market impact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import torch

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_rollout import collect_quotes
from hmarl.backtest.tape_days import ACTIONS, DayResult, action_kinds, day_result
from hmarl.market.quoting import QuoteParams, action_levels
from hmarl.train.quote_tape import TapePart, TapeSplit

DAY_NS = 86_400_000_000_000


@torch.no_grad()
def action_probabilities(
    policy: HierarchicalPolicy, on: TapeSplit, params: QuoteParams
) -> np.ndarray:
    """The greedy run's probability of each kind of :data:`ACTIONS` at every visited step,
    ``[B * L, 4]`` (episodes in time order)."""
    was = policy.training
    policy.eval()
    try:
        traj = collect_quotes(
            policy, on.batch, params, generator=torch.Generator().manual_seed(0), greedy=True
        )
    finally:
        policy.train(was)
    bid, ask = action_levels(params)
    kind = action_kinds(bid > 0, ask > 0)  # each joint action's kind, the step logs' rule
    probs = traj.probs.double().numpy().reshape(-1, params.n_actions)
    return np.stack([probs[:, kind == name].sum(1) for name in ACTIONS], axis=1)


def part_steps(
    part: TapePart, name: str, steps: pd.DataFrame, probs: np.ndarray, lot: float
) -> pd.DataFrame:
    """The agent's steps on one tape's split (``steps``: :func:`hmarl.backtest.quote_run.
    steps_frame`'s rows, episodes in time order) with the tape's clock, book and notional."""
    tape, tick = getattr(part.market, name), part.market.tick
    on: TapeSplit = getattr(part.data, name)
    rows = (on.starts[:, None] + np.arange(part.market.episode_steps)).reshape(-1)
    if tape.ts is None:
        raise ValueError(f"{part.name}: the {name} tape has no clock: no per-day evaluation")
    bid, ask = tape.bid[rows], tape.ask[rows]
    levels = np.arange(tape.sell_volume.shape[1])
    sells = (tape.sell_volume[rows] * (bid[:, None] - levels)).sum(1)
    buys = (tape.buy_volume[rows] * (ask[:, None] + levels)).sum(1)
    out = steps.reset_index(drop=True).copy()
    out["ts"] = tape.ts[rows]
    out["best_bid"], out["best_ask"] = bid * tick, ask * tick
    out["notional"] = (sells + buys) * tick * lot
    for i, action in enumerate(ACTIONS):
        out[f"p_{action}"] = probs[:, i]
    return out


def agent_days(
    parts: Sequence[TapePart],
    frames: Sequence[pd.DataFrame],
    per_day: Mapping[str, Mapping[str, Mapping[str, Any]]],
    params: QuoteParams,
    *,
    periods: float,
    lot: float,
) -> dict[tuple[str, date], DayResult]:
    """Every (ticker, UTC day) of the agent's run: ``frames`` are :func:`part_steps` of each
    tape; ``per_day``: per policy, ``day`` (one ticker) or ``"TICKER day"`` -> its
    statistics (the baselines' PnL columns come from it)."""
    by_ticker: dict[str, list[pd.DataFrame]] = {}
    for part, frame in zip(parts, frames, strict=True):
        by_ticker.setdefault(part.ticker, []).append(frame)
    several = len(by_ticker) > 1
    out: dict[tuple[str, date], DayResult] = {}
    for ticker, pieces in by_ticker.items():
        frame = pd.concat(pieces, ignore_index=True).sort_values("ts", kind="stable")
        day_of = frame["ts"].to_numpy(np.int64) // DAY_NS
        for d in np.unique(day_of):
            f = frame[day_of == d]
            day = pd.Timestamp(int(d) * DAY_NS, tz="UTC").date()
            label = f"{ticker} {day}" if several else str(day)
            extra = {
                f"PnL of {policy} [price x lots]": days[label]["PnL [price x lots]"]
                for policy, days in per_day.items()
                if policy != "agent" and label in days
            }
            out[(ticker, day)] = day_result(
                ticker,
                day,
                ts=f["ts"].to_numpy(),
                best_bid=f["best_bid"].to_numpy(),
                best_ask=f["best_ask"].to_numpy(),
                bid_quote=f["bid"].to_numpy(),
                ask_quote=f["ask"].to_numpy(),
                bid_fill=f["bid_fill"].to_numpy() > 0,
                ask_fill=f["ask_fill"].to_numpy() > 0,
                inventory=f["inventory"].to_numpy(),
                spread=f["spread"].to_numpy(),
                mtm=f["mtm"].to_numpy(),
                fee=f["fee"].to_numpy(),
                terminal=f["terminal"].to_numpy(),
                max_inventory=params.max_inventory,
                periods=periods,
                lot=lot,
                size={
                    "Steps [#]": len(f),
                    "Episodes [#]": int((f["step"] == 0).sum()),
                    "Traded notional [quote]": float(f["notional"].sum()),
                },
                probabilities={a: 100.0 * float(f[f"p_{a}"].mean()) for a in ACTIONS},
                extra=extra,
            )
    return out
