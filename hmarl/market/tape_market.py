"""A tape-driven quoting market: its train / validation / test tapes and the Avellaneda-Stoikov
parameters estimated from the train tape.

**Splits.** A :class:`TapeMarket` holds three tapes: train (episodes drawn at random starts),
validation (model and fixed-quote selection) and test (the reported figures). The synthetic
market (:func:`synthetic_market`) draws three *independent seeded tapes* from the same
generator (seeds ``(seed, 0)``, ``(seed, 1)``, ``(seed, 2)``); a real capture is split into
three consecutive time segments (:func:`split_tape`), so nothing of validation or test is seen
in training.

**Estimating sigma, A and k on the train tape** (:func:`estimate_as`), for the closed-form
(Avellaneda-Stoikov / Gueant) baseline, which needs them and is not given them here:

* ``sigma``: the mid's changes per unit time, ``sqrt(mean(dmid^2) / dt)`` (price units per
  square-root time unit; the mean change is taken as 0, the model's martingale mid);
* ``A`` and ``k``: for every step and every whole-tick offset ``j`` behind the best quote
  (both sides pooled), whether a one-lot quote there would have filled under the tape rule
  (:func:`hmarl.market.quoting.tape_fills`) and its distance from the mid, ``delta = half
  spread + j ticks``. Grouped by ``delta``, the fill frequency ``p`` gives the Poisson rate
  ``lambda = -log(1 - p) / dt`` (the model's ``p = 1 - exp(-lambda dt)``), and a least-squares
  line ``log lambda = log A - k delta``, each group weighted by the inverse of its estimate's
  variance (the delta method: ``var(log lambda) = p / (n (1 - p) log(1 - p)^2)`` over ``n``
  steps), gives ``A`` and ``k``. Groups that always or never fill carry no rate and are left
  out.

The market does not react to our quotes (no market impact): the tape is what the market did
without us.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from hmarl.data.ticks_synthetic import Tape, TickParams, generate_tape
from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams, tape_fills


@dataclass(frozen=True)
class TapeMarket:
    """Three tapes and their units: ``tick`` price units per tick, ``dt`` time units a step."""

    train: Tape
    validation: Tape
    test: Tape
    tick: float
    dt: float = 1.0  # seconds per decision step
    episode_steps: int = 100  # decision steps an episode (flat at its start, liquidated at its end)


def synthetic_market(
    params: TickParams, seed: int, steps: tuple[int, int, int], episode_steps: int = 100
) -> TapeMarket:
    """Independent seeded train / validation / test tapes of ``steps`` decision steps each."""
    train, validation, test = (
        generate_tape(replace(params, steps=n), _seed(seed, i)) for i, n in enumerate(steps)
    )
    return TapeMarket(
        train, validation, test, params.tick, dt=params.dt_ns / 1e9, episode_steps=episode_steps
    )


def _seed(seed: int, split: int) -> int:
    """One integer seed per (run seed, split), independent across both."""
    return int(np.random.SeedSequence([seed, split]).generate_state(1)[0])


def _rows(tape: Tape, lo: int, hi: int) -> Tape:
    ts = None if tape.ts is None else tape.ts[lo:hi]
    t = tape
    return Tape(
        t.bid[lo:hi],
        t.ask[lo:hi],
        t.bid_queue[lo:hi],
        t.ask_queue[lo:hi],
        t.sell_volume[lo:hi],
        t.buy_volume[lo:hi],
        ts,
    )


def split_tape(
    tape: Tape, tick: float, dt: float, shares: tuple[float, float], episode_steps: int = 100
) -> TapeMarket:
    """Consecutive train / validation / test segments of one tape (``shares``: the train and
    validation fractions; test is the rest)."""
    n = len(tape.bid)
    a, b = int(n * shares[0]), int(n * (shares[0] + shares[1]))
    if not 0 < a < b < n:
        raise ValueError(f"shares={shares} leave an empty segment of the tape's {n} steps")
    return TapeMarket(
        _rows(tape, 0, a),
        _rows(tape, a, b),
        _rows(tape, b, n),
        tick=tick,
        dt=dt,
        episode_steps=episode_steps,
    )


class ASEstimate(NamedTuple):
    """Avellaneda-Stoikov parameters estimated from a tape (see the module docstring)."""

    sigma: float  # price units per sqrt(time unit)
    A: float  # fills per time unit at the mid
    k: float  # per price unit

    def market(self, dt: float, steps: int) -> av.ASParams:
        return av.ASParams(sigma=self.sigma, A=self.A, k=self.k, dt=dt, steps=steps)


def estimate_as(tape: Tape, tick: float, dt: float) -> ASEstimate:
    """``sigma``, ``A`` and ``k`` from a tape (the estimators of the module docstring)."""
    mid = (tape.bid + tape.ask) / 2.0 * tick
    sigma = math.sqrt(float(np.mean(np.diff(mid) ** 2)) / dt)
    depth = tape.bid_queue.shape[1]
    every = QuoteParams(offsets=tuple(float(j) for j in range(depth)), tick=tick)
    fill_b, fill_a = tape_fills(
        every, tape.bid_queue, tape.sell_volume, tape.ask_queue, tape.buy_volume
    )
    fills = np.concatenate([fill_b[:, 1:], fill_a[:, 1:]])  # [2T, depth], both sides pooled
    half = np.concatenate([tape.ask - tape.bid] * 2) / 2.0  # ticks
    delta = np.round((half[:, None] + np.arange(depth)[None, :]) * 2).astype(np.int64)  # half-ticks
    keys, inverse, counts = np.unique(delta.ravel(), return_inverse=True, return_counts=True)
    p = np.bincount(inverse, weights=fills.ravel().astype(np.float64)) / counts
    ok = (p > 0) & (p < 1)
    if ok.sum() < 2:
        raise ValueError(
            "the tape's fill frequencies vary at fewer than 2 distances from the mid; "
            "A and k cannot be fitted (a longer tape or more trading is needed)"
        )
    p, n = p[ok], counts[ok]
    rate = -np.log1p(-p) / dt
    # the delta method: var(log rate) = p / (n (1 - p) log(1 - p)^2); polyfit's w is 1 / std
    w = np.sqrt(n * (1.0 - p) / p) * np.abs(np.log1p(-p))
    slope, intercept = np.polyfit(keys[ok] / 2.0 * tick, np.log(rate), 1, w=w)
    return ASEstimate(sigma=sigma, A=float(math.exp(intercept)), k=float(-slope))


def closed_form_actions(
    tape: Tape, params: QuoteParams, estimate: ASEstimate, dt: float
) -> np.ndarray:
    """The closed-form quotes (:func:`hmarl.market.avellaneda.closed_form_depths` with the
    estimated parameters) as joint actions per step and inventory state ``[T, S]``: each
    depth from the mid becomes an offset behind the step's best quote (depth minus the half
    spread, in ticks) and is rounded to the nearest available offset (inside the spread is
    not an action: such a depth takes the smallest offset)."""
    if estimate.k <= 0 or estimate.A <= 0:
        raise ValueError(f"estimated A={estimate.A:g}, k={estimate.k:g} must be > 0")
    bid_d, ask_d = av.closed_form_depths(estimate.market(dt, 1), params)  # [S] price units
    half = (tape.ask - tape.bid)[:, None] / 2.0  # [T, 1] ticks
    offsets = np.asarray(params.offsets, dtype=np.float64)

    def level(depth: np.ndarray) -> np.ndarray:
        behind = depth[None, :] / params.tick - half  # [T, S] ticks behind the best quote
        return 1 + np.abs(behind[..., None] - offsets).argmin(-1)

    return level(bid_d) * params.n_levels + level(ask_d)
