"""Replay checkpoint-selection and edge rules on traced learning benchmarks, without training.

    python scripts/bench_learning.py --trace --out traced.json  # or scripts/gpu_learning.sh
    python scripts/replay_selection.py traced.json [more.json ...]

A traced run (``bench_learning.py --trace``) holds, for every validation, what that network
scored on the validation split, on each half of it (each from flat, with its own buy & hold
and a 100-policy random-timing null) and on the test split. The trainer's choice of ``best.pt``
is a function of the validation figures alone (hmarl.train.trainer: ``edge_found`` and
``best_evaluation``), so any rule can be replayed over the same networks and judged by what
its choice earned on test, which no rule sees. Each run's own rule (recorded in its trace) is
replayed first and checked against the episode the run actually kept.

Per market and rule: runs with an edge, successes (the benchmark's definition), planted runs
capturing >= 50% of the oracle's test return, and the two "no harm" counts (test return of
``best`` >= flat - 1 point; "as advised": a run without an edge counts flat).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmarl.train.selection import best_evaluation, edge_found


@dataclass(frozen=True)
class Rule:
    """An edge rule: the trainer's tests on the whole validation split, optionally stricter.

    ``null``: "trainer" ranks against the trainer's own 30-policy null (what it logged),
    "trace" against the trace's 100-policy null. ``halves``: each half of validation must
    also beat flat and its own buy & hold, at or above ``halves_percentile`` of its own null.
    """

    name: str
    null_percentile: float = 90.0
    null: str = "trainer"
    confirmations: int = 1
    halves: bool = False
    halves_percentile: float = 0.0


RULES = (
    Rule("1 evaluation (before)"),
    Rule("2 in a row", confirmations=2),
    Rule("3 in a row (default)", confirmations=3),
    Rule("null 95 (100-null)", 95.0, "trace"),
    Rule("null 99 (100-null)", 99.0, "trace"),
    Rule("halves", halves=True),
    Rule("halves, 75 each", halves=True, halves_percentile=75.0),
    Rule("halves, 90 each", halves=True, halves_percentile=90.0),
    Rule("halves, 2 in a row", confirmations=2, halves=True),
)


def passes(point: dict[str, Any], bh: dict[str, float], min_trades: int, rule: Rule) -> bool:
    """The trainer's own ``edge_found`` on the traced figures, plus the rule's extra conditions."""
    rank = point["trainer_val_percentile"] if rule.null == "trainer" else point["val"]["percentile"]
    if not edge_found(_stats(point["val"], rank), min_trades, bh["val"], rule.null_percentile):
        return False
    if rule.halves:
        for half in ("val_a", "val_b"):
            h = point[half]
            if not (
                h["return_pct"] > max(0.0, bh[half]) and h["percentile"] >= rule.halves_percentile
            ):
                return False
    return True


def _stats(part: dict[str, Any], rank: float | None) -> dict[str, Any]:
    """A traced split's figures under the ``compute_stats`` keys the trainer's rule reads."""
    return {
        "# Trades": part["trades"],
        "Return [%]": part["return_pct"],
        "Exposure Time [%]": part["exposure_pct"],
        "Long Exposure Time [%]": part["long_exposure_pct"],
        "Random-Timing Percentile [%]": rank,
    }


def replay(run: dict[str, Any], rule: Rule) -> tuple[dict[str, Any], bool]:
    """The point `best` would be under ``rule``: the trainer's own selection
    (``best_evaluation``, best_metric sharpe, max) over the edge classes the rule gives."""
    trace = run["trace"]
    points = trace["points"]
    evaluations, streak = [], 0
    for point in points:
        ok = passes(point, trace["buy_and_hold_pct"], trace["min_val_trades"], rule)
        streak = streak + 1 if ok else 0
        edge = ok and streak >= rule.confirmations
        evaluations.append((_stats(point["val"], None), point["val"]["sharpe"], edge))
    i = best_evaluation(evaluations)
    assert i is not None, "a traced run has at least one validation"
    return points[i], evaluations[i][2]


def judge(run: dict[str, Any], rule: Rule) -> dict[str, Any]:
    best, edge = replay(run, rule)
    trace, v, test = run["trace"], best["val"], best["test"]["return_pct"]
    flat = run["flat_test_return_pct"]
    out = {
        "episode": best["episode"],
        "edge": edge,
        "success": v["sharpe"] > trace["threshold"]
        and v["return_pct"] > trace["buy_and_hold_pct"]["val"]
        and v["trades"] >= trace["min_val_trades"],
        "no_harm": test >= flat - 1.0,
        "advised_no_harm": (test if edge else flat) >= flat - 1.0,
        "test_return_pct": test,
    }
    oracle = run.get("oracle_test_return_pct")
    if oracle is not None and oracle > 0:
        out["capture"] = test / oracle >= 0.5
    return out


def table(runs: list[dict[str, Any]], rules: Sequence[Rule]) -> str:
    markets = list(dict.fromkeys(r["market"] for r in runs))
    lines = [
        "| rule | market | runs | edge found | success | capture >= 50% | no harm "
        "| no harm as advised | mean test % (best) |",
        "|" + "---|" * 9,
    ]
    for rule in rules:
        for market in markets:
            js = [judge(r, rule) for r in runs if r["market"] == market]
            n = len(js)
            cap = [j["capture"] for j in js if "capture" in j]
            mean = sum(j["test_return_pct"] for j in js) / n
            lines.append(
                f"| {rule.name} | {market} | {n} | {sum(j['edge'] for j in js)} "
                f"| {sum(j['success'] for j in js)} | {f'{sum(cap)}/{len(cap)}' if cap else '-'} "
                f"| {sum(j['no_harm'] for j in js)} | {sum(j['advised_no_harm'] for j in js)} "
                f"| {mean:+.1f} |"
            )
    return "\n".join(lines)


def own_rule(run: dict[str, Any]) -> Rule:
    """The rule the run was trained with (traces before ``edge_confirmations`` was recorded
    were all trained with one evaluation and the 90th percentile)."""
    trace = run["trace"]
    return Rule(
        "own",
        trace.get("edge_null_percentile", 90.0),
        confirmations=trace.get("edge_confirmations", 1),
    )


def check_own_rule(runs: list[dict[str, Any]]) -> list[str]:
    """Runs whose replayed `best` under their own trainer's rule is not the episode they kept."""
    out = []
    for r in runs:
        episode = judge(r, own_rule(r))["episode"]
        if episode != r["best_episode"]:
            out.append(
                f"{r['market']} seed {r['seed']}: kept {r['best_episode']}, replay {episode}"
            )
    return out


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(path.read_text())
        traced = [r for r in data["runs"] if "trace" in r]
        if not traced:
            raise SystemExit(f"{path}: no traced runs (run bench_learning.py with --trace)")
        runs += traced
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+", type=Path, help="bench_learning.py --trace JSON files")
    args = ap.parse_args(argv)
    runs = load(args.traces)
    mismatches = check_own_rule(runs)
    print(
        f"{len(runs)} traced runs; the rule each was trained with replays the episode it kept "
        f"in {len(runs) - len(mismatches)}"
    )
    for line in mismatches:
        print(f"  differs: {line}")
    print(table(runs, RULES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
