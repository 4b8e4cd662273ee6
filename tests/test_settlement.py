"""Costs exactly as charged: steps.csv re-settled independently with cash and units.

The replay below knows nothing of :mod:`hmarl.market.env`: it keeps cash and a (signed) number
of units, and at each decision bar buys or sells the units that make the position the target
fraction of the equity left after the fee, the fee being ``c * |units traded| * price``. That
fee depends on itself (the target is a fraction of post-fee equity), so the replay finds it by
fixed-point iteration (a contraction: factor ``c |p| < 1``), not by the closed form the
environment uses. Every column of steps.csv that settlement produces must agree to 1e-12.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hmarl.io import write_csv
from hmarl.market.env import EnvParams, bar_returns, positions_from_actions, settle, traded
from hmarl.stats.baselines import settled_frame
from hmarl.stats.metrics import trades
from hmarl.steps import EQUITY, FEE, NEXT_PRICE, POSITION, PRICE, TURNOVER


def tiny_market(n: int, seed: int) -> SimpleNamespace:
    """Index, closes and next-bar returns: all that settlement reads of a market."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    index = pd.date_range("2026-01-01", periods=n, freq="5min", tz="UTC")
    return SimpleNamespace(index=index, close=close, returns=bar_returns(close))


def replay(steps: pd.DataFrame, c: float) -> pd.DataFrame:
    """Re-settle a steps table with cash and units, plain Python, row by row."""
    cash, units = 1.0, 0.0
    out = []
    for price, next_price, target in zip(
        steps[PRICE], steps[NEXT_PRICE], steps[POSITION], strict=True
    ):
        equity = cash + units * price
        before = units * price / equity  # exposure held just before the trade
        fee_value = 0.0
        for _ in range(200):  # fee_value = c * |target * (equity - fee_value) - units * price|
            new = c * abs(target * (equity - fee_value) - units * price)
            if new == fee_value:
                break
            fee_value = new
        new_units = target * (equity - fee_value) / price
        traded_value = abs(new_units - units) * price
        cash -= (new_units - units) * price + fee_value
        units = new_units
        out.append(
            {
                "before": before,
                TURNOVER: traded_value / equity,
                FEE: fee_value / equity,
                POSITION: units * price / (cash + units * price),
                EQUITY: cash + units * next_price,
            }
        )
    return pd.DataFrame(out, index=steps.index)


def positions_case(case: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, EnvParams]:
    """Positions with shorts, sign flips and partial positions, and the env that made them."""
    if case == "increment":  # partial positions on a 0.25 grid, long and short
        env = EnvParams(commission=0.002, slippage_bps=5.0, action_mode="increment", increment=0.25)
        actions = rng.integers(0, 3, size=(1, n))
        return positions_from_actions(actions, env)[0], env
    if case == "target":  # full long <-> full short flips
        env = EnvParams(commission=0.001, slippage_bps=10.0)
        actions = rng.integers(0, 3, size=(1, n))
        return positions_from_actions(actions, env)[0], env
    # any exposure in [-1, 1], flips between partial positions, at a high cost rate
    env = EnvParams(commission=0.03, slippage_bps=0.0)
    return rng.choice([-1.0, -0.6, -0.25, 0.0, 0.4, 0.75, 1.0], size=n), env


@pytest.mark.parametrize("case", ["increment", "target", "partial_flips"])
def test_steps_csv_matches_an_independent_cash_and_units_replay(case: str, tmp_path: Path) -> None:
    n = 400
    rng = np.random.default_rng(7)
    market = tiny_market(n + 1, seed=3)
    positions, env = positions_case(case, n, rng)
    signs = np.sign(positions)
    assert (positions < 0).any() and (positions > 0).any()
    if case != "increment":
        assert (signs[1:] * signs[:-1] < 0).any()  # direct flips are exercised
    else:
        assert (np.abs(positions) % 1.0 > 0).any()  # partial positions are exercised
    frame = settled_frame(market, 0, n, positions, env)  # type: ignore[arg-type]
    path = write_csv(tmp_path / "steps.csv", frame)
    steps = pd.read_csv(path, index_col=0)

    expected = replay(steps, env.cost_rate)
    for column in (TURNOVER, FEE, POSITION, EQUITY):
        np.testing.assert_allclose(
            steps[column].to_numpy(), expected[column].to_numpy(), rtol=0, atol=1e-12
        )

    # the test can fail: the old fee, on the target measured before the fee, is off by ~c^2
    naive_fee = env.cost_rate * np.abs(steps[POSITION] - expected["before"]).to_numpy()
    assert np.abs(naive_fee - expected[FEE].to_numpy()).max() > 1e-9


def replay_trade_returns(steps: pd.DataFrame, c: float) -> np.ndarray:
    """Each trade's net return from a cash-and-units replay: a trade starts with the equity
    left after the part of its entry fee that sold the previous position (``c |units| price``,
    all of the fee only when closing to flat) and ends with the equity left after the same part
    of the next bar's fee, or at the last mark if still open."""
    cash, units = 1.0, 0.0
    before_trade, closing_fee, last_mark = [], [], 0.0
    for price, next_price, target in zip(
        steps[PRICE], steps[NEXT_PRICE], steps[POSITION], strict=True
    ):
        equity = cash + units * price
        fee_value = 0.0
        for _ in range(200):
            new = c * abs(target * (equity - fee_value) - units * price)
            if new == fee_value:
                break
            fee_value = new
        new_units = target * (equity - fee_value) / price
        sells_all = units != 0.0 and np.sign(new_units) != np.sign(units)
        before_trade.append(equity)
        closing_fee.append(c * abs(units) * price if sells_all else 0.0)
        cash -= (new_units - units) * price + fee_value
        units = new_units
        last_mark = cash + units * next_price
    sign = np.sign(steps[POSITION].to_numpy())
    out = []
    k, n = 0, len(sign)
    while k < n:
        if sign[k] == 0:
            k += 1
            continue
        end = k
        while end + 1 < n and sign[end + 1] == sign[k]:
            end += 1
        start_equity = before_trade[k] - closing_fee[k]
        end_equity = before_trade[end + 1] - closing_fee[end + 1] if end + 1 < n else last_mark
        out.append(end_equity / start_equity - 1.0)
        k = end + 1
    return np.asarray(out)


@pytest.mark.parametrize("case", ["increment", "target", "partial_flips"])
def test_trade_returns_split_a_flip_fee_as_the_replay_does(case: str) -> None:
    n = 400
    market = tiny_market(n + 1, seed=5)
    positions, env = positions_case(case, n, np.random.default_rng(11))
    steps = settled_frame(market, 0, n, positions, env)  # type: ignore[arg-type]
    expected = replay_trade_returns(steps, env.cost_rate)
    got = trades(steps)["return"].to_numpy()
    assert got.size == expected.size > 20
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_the_case_split_and_edge_cases_of_the_fee() -> None:
    c = 0.01
    target = np.array([0.0, 1.0, -1.0, -0.5, 0.5, 0.3, 1.0])
    before = np.array([0.7, 0.0, 1.0, 0.5, -0.5, 0.3, 1.2])
    turnover, fee = traded(target, before, c)
    # closing trades |q|; a flip sells q and opens |p| of the equity left after the fee
    assert turnover[0] == pytest.approx(0.7, abs=1e-15)
    assert fee[1] == pytest.approx(c / (1 + c), abs=1e-15)  # buy from flat
    assert fee[2] == pytest.approx(2 * c / (1 + c), abs=1e-15)  # long -> short
    assert fee[3] == pytest.approx(c / (1 + 0.5 * c), abs=1e-15)  # partial long -> short
    assert fee[4] == pytest.approx(c / (1 + 0.5 * c), abs=1e-15)  # partial short -> long
    assert turnover[5] == 0.0 and fee[5] == 0.0  # no trade, no fee
    assert fee[6] == pytest.approx(c * 0.2 / (1 - c), abs=1e-15)  # trim a drifted long
    # each is the fixed point of fee = c |p (1 - fee) - q|, and turnover is that notional
    np.testing.assert_allclose(fee, c * np.abs(target * (1 - fee) - before), rtol=0, atol=1e-15)
    np.testing.assert_allclose(turnover, np.abs(target * (1 - fee) - before), atol=1e-15)


def test_numpy_and_torch_settle_alike() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pos = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(3, 50))
    ret = rng.normal(0, 0.01, size=(3, 50))
    env = EnvParams(commission=0.01)
    a = settle(pos, ret, env)
    b = settle(torch.from_numpy(pos), torch.from_numpy(ret), env)
    for name in a._fields:
        np.testing.assert_allclose(getattr(b, name).numpy(), getattr(a, name), rtol=1e-14)
