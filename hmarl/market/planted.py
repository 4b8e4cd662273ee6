"""A known edge planted on real market noise, and the oracle that knows it (learning benchmark).

Why: on real candles a policy that never trades may be right (there may be no edge after
fees), so real data alone cannot tell a trainer that fails from a market that offers nothing.
Planting a seeded regime drift on real prices keeps the real noise (volatility clustering, fat
tails, intraday cycles, volume) and adds a known, learnable signal whose worth is measured by
an oracle that knows the regime.

Construction: regimes up (+1) / flat (0) / down (-1) with gamma(2)-distributed lengths (mean
``mean_regime_bars``, at least ``min_regime_bars``), each next regime any other state, up and
down weighted back toward the start price by ``exp(-pull * planted_log_move * state)`` (so the
planted trend does not wander off). The log price of bar t is shifted by
``D_t = drift * sum_{i <= t} regime_i``: open, high, low and close of bar t are all multiplied by
``exp(D_t)`` (the bar's shape and the OHLC ordering are kept; volume is untouched). Bar t's
close-to-close log return thus gains ``drift * regime_t``, visible to every return feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmarl.data.candles import PRICE_COLUMNS


def regime_path(
    n: int,
    seed: int,
    *,
    drift: float,
    mean_regime_bars: float = 720.0,
    min_regime_bars: int = 144,
    pull: float = 2.0,
) -> np.ndarray:
    """Regime of each bar (int64 in {-1, 0, 1}); seeded, anchored to the start price."""
    rng = np.random.default_rng(seed)
    states = np.array([-1, 0, 1])
    regime = np.empty(n, dtype=np.int64)
    pos, state, planted = 0, int(rng.choice(states)), 0.0
    while pos < n:
        length = max(min_regime_bars, round(rng.gamma(2.0, mean_regime_bars / 2.0)))
        stop = min(n, pos + length)
        regime[pos:stop] = state
        planted += drift * state * (stop - pos)
        weights = np.exp(-pull * planted * states) * (states != state)
        state, pos = int(rng.choice(states, p=weights / weights.sum())), stop
    return regime


def plant_edge(
    candles: pd.DataFrame, seed: int, *, drift: float, mean_regime_bars: float = 720.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """Real candles with a seeded regime drift added to their log prices, and the regimes."""
    regime = regime_path(len(candles), seed, drift=drift, mean_regime_bars=mean_regime_bars)
    return _shifted(candles, regime, drift)


def oracle_positions(regime: np.ndarray, rows: np.ndarray, allow_short: bool = True) -> np.ndarray:
    """The oracle's exposure at decision rows: the regime of the bar it will be paid on.

    A decision at row t earns bar t+1's return, whose planted drift is ``regime[t+1]``; the
    oracle holds +1 in up regimes, -1 (or flat without shorting) in down ones, flat otherwise,
    and pays the same fees as any policy at each change.
    """
    target = regime[np.asarray(rows) + 1].astype(np.float64)
    return target if allow_short else np.maximum(target, 0.0)


def late_oracle_positions(
    regime: np.ndarray, rows: np.ndarray, lag: int, allow_short: bool = True
) -> np.ndarray:
    """The oracle that learns each regime only ``lag`` bars after it began: until then it keeps
    the position of the regime before. Why: a reader of prices sees a planted regime only once
    its drift has stood out of the noise (with drift 3e-4 and ~0.15% bar volatility, two sigma
    after ~100 bars), so this bounds what any causal policy can capture; ``lag=0`` is
    :func:`oracle_positions`.
    """
    regime = np.asarray(regime)
    starts = np.r_[0, np.flatnonzero(np.diff(regime)) + 1]
    run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(regime)]))
    since = np.arange(len(regime)) - starts[run]  # bars since the regime began
    before = np.where(run > 0, regime[starts[np.maximum(run - 1, 0)]], 0)
    paid = np.asarray(rows) + 1  # the bar a decision at row t is paid on
    target = np.where(since[paid] < lag, before[paid], regime[paid]).astype(np.float64)
    return target if allow_short else np.maximum(target, 0.0)


FLOW_COLUMN = "flow"  # planted_flow: the raw column that leads the next bars' return


def plant_flow(
    candles: pd.DataFrame,
    seed: int,
    *,
    drift: float,
    mean_regime_bars: float = 45.0,
    min_regime_bars: int = 10,
    noise: float = 1.0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Real candles with short seeded regimes planted in their prices, plus a raw column
    ``flow`` that reveals the regime of the next bar with noise, and the regimes.

    ``flow[t] = regime[t + 1] + noise * N(0, 1)`` is known at the close of t (like an order-flow
    reading that leads price); the last row repeats its own regime. Why short regimes
    (30-60 bars on average): a reader of prices sees a regime only after it has moved the
    price for a while, by when it is half over, so the edge is visible mostly to whoever reads
    the column; a specialist on ``col:flow`` should win the gate.
    """
    regime = regime_path(
        len(candles),
        seed,
        drift=drift,
        mean_regime_bars=mean_regime_bars,
        min_regime_bars=min_regime_bars,
    )
    out, _ = _shifted(candles, regime, drift)
    lead = np.concatenate([regime[1:], regime[-1:]]).astype(np.float64)
    rng = np.random.default_rng([seed, 1])  # its own stream: the regimes do not depend on it
    out[FLOW_COLUMN] = lead + noise * rng.standard_normal(len(candles))
    return out, regime


def _shifted(
    candles: pd.DataFrame, regime: np.ndarray, drift: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candles whose log prices carry ``drift * cumsum(regime)`` (the bar shapes kept)."""
    shift = np.exp(drift * np.cumsum(regime, dtype=np.float64))
    out = candles.copy()
    for column in PRICE_COLUMNS:
        out[column] = candles[column].to_numpy(dtype=np.float64) * shift
    return out, regime


def regime_durations(mean_regime_bars: float, min_regime_bars: int, longest: int) -> np.ndarray:
    """P(a regime lasts d bars) for d = 1 .. ``longest``, as :func:`regime_path` draws them:
    ``max(min_regime_bars, round(gamma(2, mean / 2)))``; the tail past ``longest``
    folded into it."""
    from scipy.stats import gamma  # the planted benchmark's analysis only

    edges = np.arange(1, longest + 1, dtype=np.float64) + 0.5  # round(g) = d: g in [d-.5, d+.5)
    cdf = gamma.cdf(edges, 2.0, scale=mean_regime_bars / 2.0)
    pmf = np.diff(np.r_[0.0, cdf])  # pmf[i]: d = i + 1 (d = 1 takes g < 1.5)
    pmf[min_regime_bars - 1] += pmf[: min_regime_bars - 1].sum()
    pmf[: min_regime_bars - 1] = 0.0
    pmf[-1] += 1.0 - pmf.sum()
    return pmf


def regime_filter(
    readings: np.ndarray,
    scale: np.ndarray | float,
    means: tuple[float, float, float],
    *,
    mean_regime_bars: float,
    min_regime_bars: int | None = None,
) -> np.ndarray:
    """The Bayes filter of the planted model: P(regime of bar t = down / flat / up | readings
    up to t), an ``[n, 3]`` array; causal (row t reads ``readings[: t + 1]``).

    Why: it bounds what any reader of the planted market can know (it is told the model's drift
    and regime lengths), so a learner's capture of the oracle is judged against it, not against
    the oracle that knows the regime outright. ``readings[t] ~ N(means[regime_t], scale[t])``;
    each regime ends into either other state alike (the generator's pull back toward the start
    price is ignored). Without ``min_regime_bars`` the regimes are geometric (ending with
    probability ``1 / mean_regime_bars`` a bar); with it, they last as :func:`regime_path`
    draws them (gamma(2) lengths, at least ``min_regime_bars``): an explicit-duration filter,
    which knows that a regime just begun will not end soon.
    """
    x = np.asarray(readings, dtype=np.float64)
    sd = np.broadcast_to(np.asarray(scale, dtype=np.float64), x.shape)
    mu = np.asarray(means, dtype=np.float64)
    log_lik = -0.5 * ((x[:, None] - mu[None, :]) / sd[:, None]) ** 2
    log_lik = np.where(np.isfinite(log_lik), log_lik, 0.0)  # no reading: no news
    likelihood = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))  # never all underflow
    other = (np.ones((3, 3)) - np.eye(3)) / 2.0  # the next regime: either other state alike
    out = np.empty((len(x), 3))
    if min_regime_bars is None:
        stay = 1.0 - 1.0 / mean_regime_bars
        move = other * (1.0 - stay) + np.eye(3) * stay
        belief = np.full(3, 1.0 / 3.0)
        for t in range(len(x)):
            belief = (belief @ move) * likelihood[t]
            belief /= belief.sum()
            out[t] = belief
        return out
    longest = int(10 * mean_regime_bars) + min_regime_bars
    pmf = regime_durations(mean_regime_bars, min_regime_bars, longest)
    survive = np.cumsum(pmf[::-1])[::-1]  # P(D >= d)
    hazard = np.divide(pmf, survive, out=np.ones_like(pmf), where=survive > 1e-300)
    hazard[-1] = 1.0
    # belief[s, d - 1]: regime s, begun d bars ago (bar t is its d-th); start as a fresh regime
    belief = np.zeros((3, longest))
    belief[:, 0] = likelihood[0] / likelihood[0].sum()
    out[0] = belief[:, 0]
    for t in range(1, len(x)):
        ended = belief * hazard
        belief[:, 1:] = (belief - ended)[:, :-1]
        belief[:, 0] = ended.sum(axis=1) @ other
        belief *= likelihood[t][:, None]
        belief /= belief.sum()
        out[t] = belief.sum(axis=1)
    return out
