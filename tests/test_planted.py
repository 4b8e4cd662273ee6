"""The planted benchmark's Bayes filter (hmarl/market/planted.py ``regime_filter``): exact against
an enumeration of every regime path on a tiny case, causal, and reading the generator's regimes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hmarl.market.planted import regime_durations, regime_filter, regime_path

STATES = np.array([-1.0, 0.0, 1.0])


def _gaussian(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2)


def _enumerated(readings: np.ndarray, sd: float, prior_of_path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """P(regime of the last bar | readings) by summing over every regime path (3^n of them)."""
    post = np.zeros(3)
    for path in itertools.product(range(3), repeat=len(readings)):
        weight = prior_of_path(path) * np.prod(_gaussian(readings, STATES[list(path)], sd))
        post[path[-1]] += weight
    return post / post.sum()


def test_markov_filter_equals_the_enumeration_of_every_path() -> None:
    readings = np.array([0.3, 1.4, -0.2, 0.9, 1.1, -1.3])
    mean = 4.0
    stay = 1.0 - 1.0 / mean

    def prior(path: tuple[int, ...]) -> float:
        p = 1.0 / 3.0 * stay  # the filter moves the uniform start once before the first reading
        for a, b in itertools.pairwise(path):
            p *= stay if a == b else (1.0 - stay) / 2.0
        return p

    got = regime_filter(readings, 0.8, (-1.0, 0.0, 1.0), mean_regime_bars=mean)
    for t in range(len(readings)):
        want = _enumerated(readings[: t + 1], 0.8, prior)
        np.testing.assert_allclose(got[t], want, rtol=1e-12)


def test_duration_filter_equals_the_enumeration_of_every_path() -> None:
    # short regimes (mean 3, at least 2 bars) so that six bars hold every case: a regime too young
    # to end, one that ends, one still running at the last bar (censored: P(length >= d))
    readings = np.array([0.9, 1.2, -0.4, -1.1, 0.1, 1.3])
    mean, least = 3.0, 2
    pmf = regime_durations(mean, least, 100)
    survive = np.cumsum(pmf[::-1])[::-1]  # survive[d - 1] = P(length >= d)

    def prior(path: tuple[int, ...]) -> float:
        runs = [len(list(g)) for _, g in itertools.groupby(path)]
        p = 1.0 / 3.0 * 0.5 ** (len(runs) - 1)  # first state uniform, each change to either other
        for d in runs[:-1]:
            p *= pmf[d - 1]  # a run that ended after exactly d bars
        return p * survive[runs[-1] - 1]  # the last one lasts at least its d bars so far

    got = regime_filter(readings, 0.8, (-1.0, 0.0, 1.0), mean_regime_bars=mean, min_regime_bars=2)
    for t in range(len(readings)):
        want = _enumerated(readings[: t + 1], 0.8, prior)
        np.testing.assert_allclose(got[t], want, rtol=1e-10)


def test_regime_durations_follow_the_generator() -> None:
    pmf = regime_durations(720.0, 144, 7500)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(pmf[:143] == 0.0) and pmf[143] > 0.0
    # the mean of max(144, round(gamma(2, 360))), drawn as regime_path draws it
    rng = np.random.default_rng(0)
    drawn = np.maximum(144, np.round(rng.gamma(2.0, 360.0, 200_000)))
    assert float(np.arange(1, 7501) @ pmf) == pytest.approx(drawn.mean(), rel=0.01)
    assert pmf[143] == pytest.approx(float(np.mean(drawn == 144)), abs=0.005)


@pytest.mark.parametrize("least", [None, 10])
def test_filter_is_causal_and_reads_the_planted_regimes(least: int | None) -> None:
    regime = regime_path(3000, 1, drift=1e-3, mean_regime_bars=45.0, min_regime_bars=10)
    readings = regime + np.random.default_rng(0).standard_normal(3000)
    post = regime_filter(
        readings, 1.0, (-1.0, 0.0, 1.0), mean_regime_bars=45.0, min_regime_bars=least
    )
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)
    # noise 1 around levels 1 apart: one reading alone is right about half the time
    assert np.mean(STATES[post.argmax(axis=1)] == regime) > 0.8
    changed = readings.copy()
    changed[2000:] = -5.0
    again = regime_filter(
        changed, 1.0, (-1.0, 0.0, 1.0), mean_regime_bars=45.0, min_regime_bars=least
    )
    np.testing.assert_array_equal(again[:2000], post[:2000])
    # a reading that is missing carries no news: the belief only moves by the regime prior
    gap = readings.copy()
    gap[100] = np.nan
    held = regime_filter(gap, 1.0, (-1.0, 0.0, 1.0), mean_regime_bars=45.0, min_regime_bars=least)
    assert np.all(np.isfinite(held)) and not np.allclose(held[100], post[100])
