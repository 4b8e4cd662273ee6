"""The random-timing null: the strategy's own trades, entered at random times.

Why: "did the policy's timing earn anything?" needs a yardstick with the policy's activity
and none of its timing. A random policy drawing actions with the agent's frequencies is not
one: for a policy that buys once and holds it buys within a few bars and holds (buy & hold
again), for a policy that never trades it is flat. Here each of N (default 1,000, seeded)
policies makes exactly the strategy's trades (the same count, sides, lengths and position
paths, so the same long and short exposure) at random times, and is settled by
:func:`hmarl.market.env.settle` on the same bars and costs. The strategy's percentile among them
and the permutation p-value (:func:`hmarl.stats.metrics.null_percentile`) say how often random
timing with the same activity does as well; a policy that buys once and holds sits near
the middle of its null, which is buy & hold entered at other times.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from hmarl.market.env import EnvParams, settle
from hmarl.stats.metrics import CRYPTO, Calendar, null_percentile, periods_per_year, sharpe_rows
from hmarl.steps import EQUITY, POSITION

RANDOM_TIMING_DEFINITION = (
    "N policies making the strategy's trades (count, sides, lengths, position paths, hence "
    "long and short exposure) at random entry times on the same bars, settled with the same "
    "costs; returns in % of the starting equity after costs; percentile = share of them the "
    "strategy's return beats (ties count half); p-value = (1 + #at least as good) / (N + 1)"
)
RANDOM_TIMING_N = 1000  # policies in a backtest's random-timing null
BAND_POINTS = 2000  # at most this many time points in the null's equity band
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class RandomTiming(NamedTuple):
    """The random-timing null of one strategy run, and where the strategy falls in it."""

    final_equity: FloatArray  # [N] equity after the last bar of each random policy
    sharpe: FloatArray  # [N] annualised Sharpe of each
    band: pd.DataFrame  # equity quantiles p05 / median / p95 at (at most BAND_POINTS) times
    strategy_equity: float  # the strategy's final equity
    seed: int

    @property
    def n(self) -> int:
        return int(self.final_equity.size)


class _Blocks(NamedTuple):
    """A position path cut into trades (runs of one sign) and the flat bars between them."""

    paths: FloatArray  # every trade's positions, concatenated in time order
    offsets: IntArray  # [k] where each trade starts in ``paths``
    lengths: IntArray  # [k]
    signs: IntArray  # [k] +1 long, -1 short
    min_gaps: IntArray  # [k + 1] 1 where trades were apart, or closed at the end; else 0
    flat: int  # flat bars in the path


def _blocks(position: FloatArray) -> _Blocks:
    sign = np.sign(position).astype(np.int64)
    edges = np.flatnonzero(np.diff(sign) != 0) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [position.size]))
    keep = sign[starts] != 0
    starts, ends = starts[keep], ends[keep]
    lengths = (ends - starts).astype(np.int64)
    closed = int(position.size > 0 and position[-1] == 0.0)  # the last trade was closed
    apart = np.concatenate(([0], (starts[1:] > ends[:-1]).astype(np.int64), [closed]))
    return _Blocks(
        paths=np.concatenate(
            [np.zeros(0), *(position[a:b] for a, b in zip(starts, ends, strict=True))]
        ),
        offsets=np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64),
        lengths=lengths,
        signs=sign[starts],
        min_gaps=apart,
        flat=int(position.size - lengths.sum()),
    )


def random_timing_positions(
    position: npt.ArrayLike, n: int, rng: np.random.Generator
) -> FloatArray:
    """``n`` position paths [n, T] with the trades of ``position`` at random times.

    Each path keeps the strategy's sequence of trade sides; trades of one side swap places
    at random (a random permutation per side), and the flat bars are spread over the gaps
    at random (uniform order statistics: the trades' entry times are random), keeping
    apart the trades that were apart, so no two trades merge, and keeping the last trade
    closed before the end if the strategy's was (so it pays its exit fee too). Every path has
    the strategy's number of trades, their lengths and position paths, and its long and
    short exposure. Vectorised over the ``n`` paths (no loop over policies).
    """
    pos = np.asarray(position, dtype=np.float64).reshape(-1)
    b = _blocks(pos)
    k, t = b.lengths.size, pos.size
    out = np.zeros((n, t), dtype=np.float64)
    if k == 0 or n == 0:
        return out
    # which trade fills each slot: slots keep the side order, trades shuffle within a side
    order = np.empty((n, k), dtype=np.int64)
    for s in (-1, 1):
        slots = np.flatnonzero(b.signs == s)
        if slots.size:
            shuffled = np.argsort(rng.random((n, slots.size)), axis=1)
            order[:, slots] = slots[shuffled]
    # gaps: the required ones, plus the free flat bars cut at k uniform random points
    free = b.flat - int(b.min_gaps.sum())
    cuts = np.sort(rng.integers(0, free + 1, size=(n, k)), axis=1)
    gaps = np.diff(np.concatenate((np.zeros((n, 1), np.int64), cuts), axis=1), axis=1)
    gaps = gaps + b.min_gaps[None, :k]  # gap before slot j
    lengths = b.lengths[order]  # [n, k]
    slot_start = np.cumsum(gaps, axis=1) + np.cumsum(lengths, axis=1) - lengths  # bar of entry
    # element e of the exposed bars (in slot order) -> its slot, offset, bar and value
    exposed = int(b.lengths.sum())
    first = np.cumsum(lengths, axis=1) - lengths  # [n, k] first element of each slot
    mark = np.zeros((n, exposed), dtype=np.int64)
    np.add.at(mark, (np.repeat(np.arange(n), k - 1), first[:, 1:].reshape(-1)), 1)
    slot = np.cumsum(mark, axis=1)  # [n, exposed]
    rows = np.arange(n)[:, None]
    offset = np.arange(exposed)[None, :] - first[rows, slot]
    bars = slot_start[rows, slot] + offset
    out[rows, bars] = b.paths[b.offsets[order[rows, slot]] + offset]
    return out


def random_timing(
    strategy: pd.DataFrame,
    market_returns: FloatArray,
    env: EnvParams,
    *,
    n: int = RANDOM_TIMING_N,
    seed: int = 0,
    calendar: Calendar = CRYPTO,
    chunk: int = 100,
) -> RandomTiming:
    """The random-timing null of a strategy's steps frame, settled on its bars and costs.

    ``market_returns[i]`` is the return earned over the bar after decision row i (the
    market's ``returns`` at the strategy's rows). Paths are built and settled ``chunk`` at
    a time (memory stays at a few ``chunk x bars`` arrays); Sharpe uses the same
    annualisation as :func:`hmarl.stats.metrics.compute_stats`.
    """
    if n < 1:
        raise ValueError(f"the random-timing null needs n >= 1 policies, got {n}")
    position = strategy[POSITION].to_numpy(dtype=np.float64)
    returns = np.asarray(market_returns, dtype=np.float64)[None, :]
    if returns.shape[1] != position.size:
        raise ValueError(f"{position.size} strategy rows but {returns.shape[1]} market returns")
    periods = periods_per_year(pd.DatetimeIndex(strategy.index), calendar)
    rng = np.random.default_rng(seed)
    stride = max(1, -(-position.size // BAND_POINTS))
    finals, sharpes, thinned = [], [], []
    for start in range(0, n, chunk):
        paths = random_timing_positions(position, min(chunk, n - start), rng)
        e = settle(paths, np.broadcast_to(returns, paths.shape), env).equity
        r = e / np.concatenate((np.ones((e.shape[0], 1)), e[:, :-1]), axis=1) - 1.0
        finals.append(e[:, -1])
        sharpes.append(sharpe_rows(r, periods) if r.shape[1] > 1 else np.zeros(e.shape[0]))
        thinned.append(e[:, stride - 1 :: stride].astype(np.float32))
    curves = np.concatenate(thinned)
    p05, median, p95 = np.quantile(curves, [0.05, 0.5, 0.95], axis=0)
    times = pd.DatetimeIndex(strategy.index)[stride - 1 :: stride]
    band = pd.DataFrame({"p05": p05, "median": median, "p95": p95}, index=times)
    return RandomTiming(
        np.concatenate(finals),
        np.concatenate(sharpes),
        band,
        float(strategy[EQUITY].iloc[-1]),
        seed,
    )


def random_timing_stats(null: RandomTiming) -> dict[str, float | int]:
    """The null's figures for the strategy's stats: its distribution and the strategy's rank.

    Returns are after the strategy's costs, in % of the starting equity; the percentile and
    p-value rank the strategy's return (:func:`hmarl.stats.metrics.null_percentile`).
    """
    returns = (null.final_equity - 1.0) * 100.0
    p05, median, p95 = np.quantile(returns, [0.05, 0.5, 0.95])
    percentile, p_value = null_percentile(null.final_equity, null.strategy_equity)
    return {
        "Random-Timing Policies": null.n,
        "Random-Timing Median Return [%]": float(median),
        "Random-Timing Return p05 [%]": float(p05),
        "Random-Timing Return p95 [%]": float(p95),
        "Random-Timing Median Sharpe": float(np.median(null.sharpe)),
        "Random-Timing Percentile [%]": percentile,
        "Random-Timing p-value": p_value,
    }
