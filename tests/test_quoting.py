"""The quoting environment and the Avellaneda-Stoikov market's exact optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmarl.market import avellaneda as av
from hmarl.market.quoting import (
    NO_QUOTE,
    QuoteParams,
    action_levels,
    expected_rewards,
    joint_action,
    outcomes,
    posted,
    settle_quotes,
)

MARKET = av.ASParams(steps=40)
PARAMS = QuoteParams(
    offsets=(1, 2, 3, 5), tick=0.2, max_inventory=3, phi=0.02, alpha=0.1, maker_fee=-0.01
)


def test_actions_enumerate_every_bid_ask_pair() -> None:
    bid, ask = action_levels(PARAMS)
    assert PARAMS.n_actions == 25 and len(bid) == 25
    pairs = {(int(b), int(a)) for b, a in zip(bid, ask, strict=True)}
    assert pairs == {(b, a) for b in range(5) for a in range(5)}
    assert joint_action(PARAMS, 2, 3) == int(np.flatnonzero((bid == 2) & (ask == 3))[0])
    np.testing.assert_allclose(PARAMS.depths()[1:], [0.2, 0.4, 0.6, 1.0])


def test_a_quote_that_could_breach_the_limits_is_not_posted() -> None:
    both = joint_action(PARAMS, 1, 1)
    states = np.array([0, 1, PARAMS.start, 5, 6])  # q = -3, -2, 0, 2, 3
    bid, ask = posted(PARAMS, states, np.full(5, both))
    assert bid.tolist() == [True, True, True, True, False]
    assert ask.tolist() == [False, True, True, True, True]
    bid, ask = posted(PARAMS, states, np.full(5, joint_action(PARAMS, NO_QUOTE, 2)))
    assert not bid.any() and ask[1:].all()


def test_settlement_of_a_hand_worked_path() -> None:
    """Flat; bid fills at 0.2 below mid (+1 lot); mid +0.5; then the ask fills at 0.4 above."""
    p = QuoteParams(
        offsets=(1, 2),
        tick=0.2,
        max_inventory=2,
        phi=0.1,
        alpha=1.0,
        maker_fee=0.01,
        liquidation_cost=0.05,
        no_quote_penalty=0.3,
    )
    a1, a2 = joint_action(p, 1, 0), joint_action(p, 0, 2)
    states = np.array([[p.start, p.start + 1]])
    out = settle_quotes(
        p,
        states,
        np.array([[a1, a2]]),
        np.array([[True, True]]),
        np.array([[True, True]]),
        np.array([[0.2, 0.0]]),
        np.array([[0.0, 0.4]]),
        np.array([[0.5, -0.25]]),
    )
    np.testing.assert_array_equal(out.inventory, [[1, 0]])
    np.testing.assert_allclose(out.spread, [[0.2, 0.4]])
    np.testing.assert_allclose(out.fee, [[0.01, 0.01]])
    np.testing.assert_allclose(out.mtm, [[0.5, 0.0]])
    np.testing.assert_allclose(out.inventory_penalty, [[0.1, 0.0]])
    np.testing.assert_allclose(out.no_quote, [[0.3, 0.3]])
    np.testing.assert_allclose(out.terminal, [[0.0, 0.0]])
    np.testing.assert_allclose(out.reward, [[0.5 + 0.19 - 0.1 - 0.3, 0.39 - 0.3]])
    # ending long 1 lot pays the liquidation: alpha q^2 + cost |q|
    end = settle_quotes(
        p,
        states[:, :1],
        np.array([[a1]]),
        np.array([[True]]),
        np.array([[False]]),
        np.array([[0.2]]),
        np.array([[0.0]]),
        np.zeros((1, 1)),
    )
    np.testing.assert_allclose(end.terminal, [[1.05]])


def test_the_fill_probability_is_the_poisson_one() -> None:
    delta = np.array([0.0, 0.5, 2.0])
    want = 1 - np.exp(-MARKET.A * np.exp(-MARKET.k * delta) * MARKET.dt)
    np.testing.assert_allclose(av.fill_probability(MARKET, delta), want, rtol=1e-12)


def test_the_generator_is_seeded() -> None:
    a, b, c = (av.generate(MARKET, 4, s, history=5) for s in (1, 1, 2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.dmid, c.dmid)
    np.testing.assert_allclose(np.diff(a.mid, axis=1), a.dmid)
    big = av.generate(MARKET, 2000, 0)
    assert abs(big.dmid.std() / (MARKET.sigma * math.sqrt(MARKET.dt)) - 1) < 0.02


def test_expected_rewards_are_the_mean_of_settlement_over_the_fills() -> None:
    """One step from every state and action, 200,000 fill draws: mean reward and the outcome
    frequencies match :func:`expected_rewards` (mark-to-market and liquidation included)."""
    rng = np.random.default_rng(0)
    p_bid, p_ask, e_bid, e_ask = av.action_tables(MARKET, PARAMS)
    dmid, n = 0.3, 200_000
    model = expected_rewards(PARAMS, p_bid, p_ask, e_bid, e_ask, np.array(dmid), np.array(1.0))
    for s in (0, PARAMS.start, PARAMS.n_states - 1):
        for a in (
            0,
            joint_action(PARAMS, 1, 1),
            joint_action(PARAMS, 2, 4),
            joint_action(PARAMS, 0, 3),
        ):
            ub, ua = rng.random((1, n)), rng.random((1, n))
            out = settle_quotes(
                PARAMS,
                np.full((n, 1), s),
                np.full((n, 1), a),
                (ub < p_bid[a]).T,
                (ua < p_ask[a]).T,
                np.full((n, 1), e_bid[a]),
                np.full((n, 1), e_ask[a]),
                np.full((n, 1), dmid),
            )
            r = out.reward[:, 0]
            assert abs(r.mean() - model.reward[s, a]) < 5 * r.std() / math.sqrt(n) + 1e-12, (s, a)
            moves = out.inventory[:, 0] - (s - PARAMS.start)
            freq = [(moves == m).mean() for m in (-1, 0, 1)]
            np.testing.assert_allclose(freq, outcomes(model)[s, a], atol=5e-3)


def test_the_optimum_beats_every_fixed_quote_and_is_its_own_value() -> None:
    sol = av.optimum(MARKET, PARAMS)
    again = av.policy_value(MARKET, PARAMS, sol.policy)
    np.testing.assert_allclose(again.h, sol.h, rtol=1e-12, atol=1e-12)
    for lv in range(PARAMS.n_levels):
        fixed = av.policy_value(MARKET, PARAMS, av.fixed_quote_policy(PARAMS, lv)).value(PARAMS)
        assert fixed <= sol.value(PARAMS) + 1e-12
    cf = av.policy_value(MARKET, PARAMS, av.closed_form_policy(MARKET, PARAMS)).value(PARAMS)
    assert cf <= sol.value(PARAMS) + 1e-12
    # Bellman: no single-step deviation improves on it anywhere (checked at random (k, s, a))
    rng = np.random.default_rng(1)
    for _ in range(20):
        k, s, a = rng.integers(MARKET.steps), rng.integers(PARAMS.n_states), rng.integers(25)
        pi = sol.policy.copy()
        pi[k, s] = 0.0
        pi[k, s, a] = 1.0
        assert av.policy_value(MARKET, PARAMS, pi).h[k, s] <= sol.h[k, s] + 1e-12
    assert av.policy_value(MARKET, PARAMS, av.no_quote_policy(PARAMS)).value(PARAMS) == 0.0


@pytest.mark.parametrize("which", ["optimum", "fixed", "closed_form"])
def test_the_exact_value_matches_monte_carlo_of_the_same_policy(which: str) -> None:
    policy = {
        "optimum": lambda: av.optimum(MARKET, PARAMS).policy,
        "fixed": lambda: av.fixed_quote_policy(PARAMS, 2),
        "closed_form": lambda: av.closed_form_policy(MARKET, PARAMS),
    }[which]()
    exact = av.policy_value(MARKET, PARAMS, policy).value(PARAMS)
    paths = av.generate(MARKET, 40_000, 3)
    totals = av.monte_carlo_value(MARKET, PARAMS, policy, paths, seed=4)
    se = totals.std() / math.sqrt(len(totals))
    assert abs(totals.mean() - exact) < 4 * se, (totals.mean(), exact, se)
    assert se < 0.05 * abs(exact)  # the check has power: a 20% error would be caught


def test_closed_form_quotes_skew_against_the_inventory() -> None:
    bid, ask = av.closed_form_depths(MARKET, PARAMS)
    q0 = PARAMS.start
    assert bid[q0] == pytest.approx(ask[q0])  # symmetric when flat
    assert np.all(np.diff(bid) > 0) and np.all(np.diff(ask) < 0)  # long: bid deeper, ask tighter
    slope = math.sqrt(PARAMS.phi / MARKET.dt * math.e / (MARKET.k * MARKET.A))
    assert bid[q0] == pytest.approx(PARAMS.maker_fee + 1 / MARKET.k + slope / 2)


def test_quote_stats_of_a_hand_worked_run() -> None:
    """Three steps: bid fills (+0.2 spread), mid +1 on 1 lot, ask fills (+0.4); liquidation 0."""
    from hmarl.stats.quoting import quote_stats

    stats = quote_stats(
        inventory=np.array([1.0, 1.0, 0.0]),
        bid_fill=np.array([1.0, 0.0, 0.0]),
        ask_fill=np.array([0.0, 0.0, 1.0]),
        bid_posted=np.array([True, True, False]),
        ask_posted=np.array([False, True, True]),
        spread=np.array([0.2, 0.0, 0.4]),
        fee=np.array([0.01, 0.0, 0.01]),
        mtm=np.array([-0.5, 1.0, 0.0]),
        terminal=np.zeros(3),
        max_inventory=1,
        periods=1.0,
    )
    assert stats["PnL [price x lots]"] == pytest.approx(0.19 - 0.5 + 1.0 + 0.39)
    assert stats["Realised spread net of fees [price x lots]"] == pytest.approx(0.58)
    assert stats["Mark-to-market PnL [price x lots]"] == pytest.approx(0.5)
    assert (stats["Fills bid [#]"], stats["Fills ask [#]"]) == (1.0, 1.0)
    assert stats["Fill ratio [%]"] == pytest.approx(50.0)  # 2 fills of 4 posted quotes
    assert stats["Inventory |mean| [lots]"] == pytest.approx(2 / 3)
    assert stats["Time at limits [%]"] == pytest.approx(200 / 3)
    assert stats["Max. Drawdown [price x lots]"] == pytest.approx(0.31)  # from 0 to -0.31
    step = np.array([-0.31, 1.0, 0.39])
    assert stats["Sharpe Ratio (step PnL)"] == pytest.approx(step.mean() / step.std(ddof=1))


def test_the_tape_fill_rule_on_a_hand_worked_step() -> None:
    """Bid book 2, 3, 1 lots at levels 0, 1, 2; sells print 2 at level 0 and 3 at level 1 (an
    order that emptied two levels). A bid at level 0 or 1 is traded through only if something
    printed deeper: level 0 yes (level 1 printed), level 1 no (its queue absorbed the rest)."""
    from hmarl.market.quoting import tape_fills

    p = QuoteParams(offsets=(0, 1, 2), tick=0.01, max_inventory=2)
    bid_q, sells = np.array([[2, 3, 1]]), np.array([[2, 3, 0]])
    ask_q, buys = np.array([[1, 1, 1]]), np.array([[3, 0, 0]])  # 2 lots beyond the queue at 0
    bid_fill, ask_fill = tape_fills(p, bid_q, sells, ask_q, buys)
    assert bid_fill.tolist() == [[False, True, False, False]]
    assert ask_fill.tolist() == [[False, True, False, False]]
    with pytest.raises(ValueError, match="whole ticks"):
        tape_fills(QuoteParams(offsets=(0, 5)), bid_q, sells, ask_q, buys)


def test_the_synthetic_tape_is_seeded_never_crossed_and_walks_the_book() -> None:
    from hmarl.data.ticks_synthetic import TickParams, generate_tape

    params = TickParams(steps=500, rate=1.5)
    a, b = generate_tape(params, 1), generate_tape(params, 1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.all(a.ask > a.bid) and np.all(a.bid_queue >= 1)
    assert np.all(a.sell_volume <= a.bid_queue)  # an order takes at most what is displayed
    # a level prints only when every level in front of it was emptied
    printed_deeper = a.sell_volume[:, 1:] > 0
    assert np.all(a.sell_volume[:, :-1][printed_deeper] == a.bid_queue[:, :-1][printed_deeper])
    assert a.sell_volume.sum() > 0 and a.buy_volume.sum() > 0


@pytest.mark.parametrize(
    ("column", "value", "row", "message"),
    [
        ("bid", 100.5, 2, "crossed quotes"),
        ("bid_size", -1.0, 3, "negative size"),
        ("ts", 0, 4, "time goes backwards"),
        ("ts", 10**12, 1, "a gap of"),
    ],
)
def test_bad_top_of_book_rows_are_named(column: str, value: float, row: int, message: str) -> None:
    from hmarl.data.candles import DataError
    from hmarl.data.ticks_synthetic import check_top_of_book

    n = 6
    cols = {
        "ts": np.arange(n, dtype=np.int64) * 10**9,
        "bid": np.full(n, 100.0),
        "ask": np.full(n, 100.1),
        "bid_size": np.ones(n),
        "ask_size": np.ones(n),
    }
    check_top_of_book(**cols, max_gap_ns=5 * 10**9, where="quotes.csv")  # clean: passes
    target = {"crossed quotes": 2, "negative size": 3, "time goes backwards": 4, "a gap of": 1}
    if column == "ts" and value == 10**12:
        cols["ts"] = cols["ts"].copy()
        cols["ts"][1:] += value
    else:
        cols[column] = cols[column].copy()
        cols[column][target[message]] = value
    with pytest.raises(DataError, match=rf"quotes\.csv: row {row}: {message}"):
        check_top_of_book(**cols, max_gap_ns=5 * 10**9, where="quotes.csv")
