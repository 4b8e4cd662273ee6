"""The execution model: hand-computed equity with fees, the action rule, and causality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmarl.market.env import EnvParams, bar_returns, position_grid, positions_from_actions, settle
from hmarl.steps import BUY, HOLD, SELL


def test_equity_matches_a_hand_computation() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 108.9, 100.0])
    actions = torch.tensor([[BUY, HOLD, SELL, HOLD, BUY]])  # decisions at bars 0..4
    env = EnvParams(commission=0.001, slippage_bps=10.0)  # 0.2% per unit traded
    r = torch.from_numpy(bar_returns(close)[:5]).unsqueeze(0)
    pos = positions_from_actions(actions, env)
    assert pos.tolist() == [[1.0, 1.0, -1.0, -1.0, 1.0]]
    s = settle(pos, r, env)

    c = 0.002
    # The fee f (a fraction of equity before it) is charged on the notional actually traded,
    # the target being a fraction of the equity after it: f = c |p (1 - f) - q|.
    # bar 0: buy 1.0 from flat: f = c (1 - f) -> f = c / (1 + c); earn +10%
    f1 = c / (1 + c)
    e1 = (1 - f1) * 1.10
    # bar 1: hold a full long: no drift, no fee; earn -10%
    e2 = e1 * 0.90
    # bar 2: long -> short sells 1 + (1 - f): f = c (2 - f) -> f = 2c / (1 + c); price flat
    f3 = 2 * c / (1 + c)
    e3 = e2 * (1 - f3) * 1.0
    # bar 3: hold the short; earn -(+10%) => equity * 0.9; the short drifts to -1.1/0.9
    e4 = e3 * (1 - 0.10)
    drift = -1.0 * 1.10 / 0.90
    # bar 4: buy back to +1 from the drifted -1.2222: f = c ((1 - f) - drift); price -8.17%
    f5 = c * (1.0 - drift) / (1 + c)
    e5 = e4 * (1 - f5) * (100.0 / 108.9)
    expected = [e1, e2, e3, e4, e5]
    fees = np.array([f1, 0.0, f3, 0.0, f5])
    np.testing.assert_allclose(s.equity[0].numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(s.turnover[0].numpy(), fees / c, rtol=1e-12)
    np.testing.assert_allclose(s.fee[0].numpy(), fees, rtol=1e-12)
    np.testing.assert_allclose(s.reward[0].sum().item(), math.log(e5), rtol=1e-12)


def test_hold_on_a_short_pays_the_rebalance_back_to_its_target() -> None:
    env = EnvParams(commission=0.001)
    pos = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    r = torch.tensor([[0.05, 0.0]], dtype=torch.float64)
    s = settle(pos, r, env)
    drifted = -1.05 / 0.95
    # covering to -1 of the equity left after the fee: f = c (|drifted| - (1 - f))
    fee = 0.001 * (abs(drifted) - 1.0) / (1 - 0.001)
    assert s.fee[0, 1].item() == pytest.approx(fee, rel=1e-12)
    assert s.turnover[0, 1].item() == pytest.approx(fee / 0.001, rel=1e-12)


@pytest.mark.parametrize(
    "params,positions",
    [
        (EnvParams(), [-1.0, 0.0, 1.0]),
        (EnvParams(allow_short=False), [0.0, 1.0]),
        (EnvParams(max_position=0.5), [-0.5, 0.0, 0.5]),
        (EnvParams(action_mode="increment", increment=0.5), [-1.0, -0.5, 0.0, 0.5, 1.0]),
        (
            EnvParams(action_mode="increment", increment=0.25, allow_short=False),
            [0.0, 0.25, 0.5, 0.75, 1.0],
        ),
    ],
)
def test_position_grid(params: EnvParams, positions: list[float]) -> None:
    grid = position_grid(params)
    assert grid.positions.tolist() == positions
    assert grid.positions[grid.start] == 0.0
    assert (grid.next_state[:, HOLD] == np.arange(len(positions))).all()
    if params.action_mode == "target":
        assert (grid.positions[grid.next_state[:, BUY]] == params.max_position).all()
        assert (
            grid.positions[grid.next_state[:, SELL]]
            == (-params.max_position if params.allow_short else 0.0)
        ).all()


def test_increment_mode_walks_and_clips() -> None:
    env = EnvParams(action_mode="increment", increment=0.5)
    acts = torch.tensor([[BUY, BUY, BUY, SELL, SELL, SELL, SELL, SELL, HOLD]])
    assert positions_from_actions(acts, env).tolist() == [
        [0.5, 1.0, 1.0, 0.5, 0.0, -0.5, -1.0, -1.0, -1.0]
    ]


def test_bad_increment_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"must divide env\.max_position"):
        position_grid(EnvParams(action_mode="increment", increment=0.3))


def test_returns_are_those_of_the_next_bar() -> None:
    r = bar_returns(np.array([100.0, 101.0, 99.99]))
    np.testing.assert_allclose(r, [0.01, 99.99 / 101.0 - 1, 0.0])
