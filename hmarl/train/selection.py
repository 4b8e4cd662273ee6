"""The selection rule: which validation `best.pt` keeps, and what counts as an edge.

One home for the rule the trainer applies at every validation (:meth:`Trainer.validate`) and
that scripts and tests replay offline from logged or traced figures
(:func:`best_evaluation`): the two must never drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hmarl.stats.metrics import outcome_flags


def edge_found(
    stats: dict[str, Any], min_trades: int, buy_and_hold_pct: float, null_percentile: float = 0.0
) -> bool:
    """An edge on validation: at least ``min_trades`` trades, a return above flat's and above
    buy & hold's (same bars, same costs), not a policy that is simply long all along, and (when
    ``null_percentile > 0``) a return at or above that percentile of the random-timing null:
    the same trades entered at random times (hmarl/stats/random_timing.py).

    Why the null: beating buy & hold on one validation split can be exposure, not timing. A
    policy that is mostly long in a rising split beats buy & hold by skipping a few falls by
    chance; its random-timing twins, with the same long exposure, do as well, so its rank among
    them is middling. A policy with real timing beats nearly all of them.
    """
    return not edge_failures(stats, min_trades, buy_and_hold_pct, null_percentile)


# The conditions of an edge, by the name logs, tags and summaries use (in the rule's order).
EDGE_CONDITIONS = ("trades", "flat", "buy_and_hold", "long_only", "random_timing")


def edge_failures(
    stats: dict[str, Any], min_trades: int, buy_and_hold_pct: float, null_percentile: float = 0.0
) -> list[str]:
    """The :data:`EDGE_CONDITIONS` one evaluation failed (empty: an edge, :func:`edge_found`).

    Why by name: a summary that lists every condition when one failed ("no evaluation had >= 5
    trades" for a run with 1,252 trades) leaves the user guessing which one it was.
    """
    ret = float(stats.get("Return [%]", 0.0))
    failed = {
        "trades": int(stats.get("# Trades", 0)) < min_trades,
        "flat": not ret > 0.0,
        "buy_and_hold": not ret > buy_and_hold_pct,
        "long_only": "same_as_buy_and_hold" in outcome_flags(stats, min_trades),
        "random_timing": null_percentile > 0
        and not float(stats.get("Random-Timing Percentile [%]", math.nan)) >= null_percentile,
    }
    return [c for c in EDGE_CONDITIONS if failed[c]]


def condition_text(
    condition: str, min_trades: int, buy_and_hold_pct: float, null_percentile: float
) -> str:
    """An edge condition in words, with its threshold (for summaries and tables)."""
    return {
        "trades": f">= {min_trades} trades",
        "flat": "a return above flat (0%) after costs",
        "buy_and_hold": f"a return above buy & hold ({buy_and_hold_pct:+.2f}%) after costs",
        "long_only": "long on < 95% of bars",
        "random_timing": f"at or above the {null_percentile:g}th percentile of random timing",
    }[condition]


def misses_text(misses: dict[str, int], evaluations: int) -> str:
    """``buy_and_hold 4/4, random_timing 3/4``: how many evaluations failed each condition
    (the ``edge_misses`` tag of a training run; compare and the page show it)."""
    return ", ".join(f"{c} {misses[c]}/{evaluations}" for c in EDGE_CONDITIONS if misses.get(c))


def selection_score(stats: dict[str, Any], value: float, edge: bool, mode: str) -> float:
    """What `best` maximises within its class: the metric (negated for ``best_mode=min``) for
    an edge; without one, minus the exposure, so that a run that found nothing keeps its most
    cautious policy (flat if it ever stopped trading) and does no harm."""
    if edge:
        return value if mode == "max" else -value
    return -float(stats.get("Exposure Time [%]", 100.0))


def improved(score: float, edge: bool, best: float | None, best_edge: bool) -> bool:
    """The selection rule for `best` (README "Validation and checkpoints").

    1. An evaluation that found an edge (:func:`edge_found`) beats any that did not: a policy
       that never trades, rests on a few lucky trades, or only rides the market cannot be
       `best` by a ratio alone.
    2. Within the same class the higher :func:`selection_score` wins, and an equal score goes
       to the later evaluation: a tie never keeps an earlier, less trained network.
    """
    if not math.isfinite(score):
        return False
    if best is None:
        return True
    if edge != best_edge:
        return edge
    return score >= best


def best_evaluation(
    evaluations: Sequence[tuple[dict[str, Any], float, bool]], mode: str = "max"
) -> int | None:
    """Index of the evaluation `best` keeps among ``(stats, value, edge)`` in the order they
    were made (None when there is none): :meth:`Trainer.validate`'s rule, replayed offline
    from logged or traced figures (scripts/replay_selection.py, tests/test_compare.py)."""
    chosen, best, best_edge = None, None, False
    for i, (stats, value, edge) in enumerate(evaluations):
        score = selection_score(stats, value, edge, mode)
        if improved(score, edge, best, best_edge):
            chosen, best, best_edge = i, score, edge
    return chosen


# ----------------------------------------------------------------------------- quoting (task=quote)

# The conditions of a quoting edge: the validation objective (expected wealth change after fees,
# minus the inventory penalties) above each baseline's on the same paths.
QUOTE_EDGE_CONDITIONS = ("no_quote", "best_fixed")


def quote_edge_failures(objective: float, baselines: dict[str, float]) -> list[str]:
    """The :data:`QUOTE_EDGE_CONDITIONS` a quoting evaluation failed (empty: an edge).

    Why these two: a market maker that does not beat staying out of the market (no quote, 0)
    or the best fixed symmetric quote chosen on validation has learned nothing a constant could
    not do; both are scored on the same validation paths, after fees.
    """
    return [c for c in QUOTE_EDGE_CONDITIONS if not objective > baselines[c]]


def quote_condition_text(condition: str, baselines: dict[str, float]) -> str:
    """A quoting edge condition in words, with its threshold."""
    name = {"no_quote": "no quote", "best_fixed": "the best fixed symmetric quote"}[condition]
    return f"an objective above {name} ({baselines[condition]:+.4f}) on validation after fees"
