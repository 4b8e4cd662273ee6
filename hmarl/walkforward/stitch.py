"""The stitched out-of-sample record: each fold's test segment, one after the other.

Why stitch: one split decides everything on real candles; a walk-forward's honest record is
what its successive policies did on bars none of them was trained or selected on. Each
segment is a steps table (:mod:`hmarl.steps`) settled by the fold's own backtest run; fees and
turnover are fractions of equity at t, so chaining only rescales equity by the equity the
previous segments ended with. A segment's last candle makes no decision
(:func:`hmarl.market.market_data.decision_splits`), so one bar's return between two segments
is earned by no record, the baselines included.

Two records of the policy: the ``advised`` one trades flat on the test segment of a fold whose
training found no edge (what that run's summary advises), and the ``network`` one acts there
anyway, shown beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from hmarl.steps import chain

NETWORK = "network"  # the fold policies' own record
ADVISED = "advised"  # flat on a fold without an edge
FLAT = "flat"  # the baseline an advised no-edge segment takes (hmarl.stats.baselines.BASELINES)
STRATEGY = "strategy"  # a fold backtest's policy run (hmarl.backtest.runs.STRATEGY)


def stitched_runs(
    fold_runs: Sequence[Mapping[str, pd.DataFrame]], edges: Sequence[bool]
) -> dict[str, pd.DataFrame]:
    """The stitched records: network, advised, then every baseline all folds carry.

    ``fold_runs[k]`` maps run names to steps frames of fold k's test segment: the policy as
    ``strategy`` and the backtest's baselines under their own names (whatever they are: a
    baseline added to :func:`hmarl.stats.baselines.baseline_steps` appears here unchanged).
    """
    if len(fold_runs) != len(edges):
        raise ValueError(f"{len(fold_runs)} folds but {len(edges)} edge verdicts")
    baselines = [n for n in fold_runs[0] if n != STRATEGY and all(n in r for r in fold_runs)]
    if FLAT not in baselines:
        raise ValueError(f"the folds' runs lack the {FLAT!r} baseline an advised record needs")
    runs = {
        NETWORK: chain([r[STRATEGY] for r in fold_runs]),
        ADVISED: chain(
            [r[STRATEGY] if e else r[FLAT] for r, e in zip(fold_runs, edges, strict=True)]
        ),
    }
    runs.update({name: chain([r[name] for r in fold_runs]) for name in baselines})
    return runs
