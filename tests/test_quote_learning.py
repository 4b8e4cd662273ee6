"""The quoting agent learns: on a small Avellaneda-Stoikov market, trained with the exact
``expected`` estimator, it gets most of the way from the best fixed quote to the exact optimum."""

from __future__ import annotations

import pytest

from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams
from hmarl.train.quoting import QuoteTraining, train_quotes

MARKET = av.ASParams(steps=40, dt=0.0125)
PARAMS = QuoteParams(offsets=(1, 2, 3, 5), tick=0.2, max_inventory=3, phi=0.05, alpha=0.5)


@pytest.mark.slow
def test_the_agent_closes_most_of_the_gap_to_the_optimum() -> None:
    settings = QuoteTraining(
        episodes=60, n_envs=16, eval_every=10, eval_paths=64, macro_window=16, micro_window=4
    )
    _, r = train_quotes(MARKET, PARAMS, settings)
    print(
        f"{r.fraction:.3f} of the optimum, gap closed {r.gap_closed:.3f}, "
        f"fixed {r.best_fixed / r.optimum:.3f}"
    )
    assert r.best_fixed < 0.8 * r.optimum  # the market needs inventory control
    assert r.test <= r.optimum + 1e-9  # nothing beats the exact optimum on any path
    assert r.fraction >= 0.9, r
    assert r.gap_closed >= 0.6, r
