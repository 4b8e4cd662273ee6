"""The tape-driven quoting market: estimators, per-day statistics, baselines, training, and the
real-tick tape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hmarl.agent.quote_rollout import follow
from hmarl.data.candles import DataError
from hmarl.data.ticks_synthetic import Tape, TickParams, generate_tape
from hmarl.market.quoting import QuoteParams, joint_action
from hmarl.market.tape_market import (
    TapeMarket,
    closed_form_actions,
    estimate_as,
    split_tape,
    synthetic_market,
)
from hmarl.stats.quoting import quote_stats, quote_stats_per_day
from hmarl.train import quote_tape as qt
from hmarl.train.quoting import QuoteTraining, train_quotes


def as_like_tape(
    *, move_prob: float, A: float, k: float, tick: float, dt: float, steps: int, seed: int
) -> Tape:
    """A tape whose fills follow the Avellaneda-Stoikov model exactly: spread 1 tick, empty
    queues, and per side one uniform a step that reaches every level whose fill probability
    ``1 - exp(-A exp(-k delta) dt)`` is above it (``delta = (0.5 + j)`` ticks from the mid)."""
    rng = np.random.default_rng(seed)
    depth = 8
    move = rng.choice([-1, 0, 1], steps, p=[move_prob / 2, 1 - move_prob, move_prob / 2])
    bid = 10_000 + np.concatenate([[0], np.cumsum(move[:-1])])
    delta = (0.5 + np.arange(depth)) * tick
    p = -np.expm1(-A * np.exp(-k * delta) * dt)

    def side() -> np.ndarray:
        deepest = (rng.random(steps)[:, None] < p).sum(1) - 1  # p falls with depth
        vol = np.zeros((steps, depth))
        hit = deepest >= 0
        vol[np.flatnonzero(hit), deepest[hit]] = 1.0
        return vol

    zeros = np.zeros((steps, depth))
    return Tape(bid, bid + 1, zeros, zeros, side(), side())


def test_estimators_recover_the_parameters_of_an_avellaneda_stoikov_tape() -> None:
    """sigma within 3%, A and k within 10% on 20,000 steps (their standard errors are ~0.5%,
    ~3% and ~2%); a tape of another A and k gives other estimates."""
    tick, dt, m, A, k = 0.01, 1.0, 0.3, 2.0, 50.0
    tape = as_like_tape(move_prob=m, A=A, k=k, tick=tick, dt=dt, steps=20_000, seed=0)
    est = estimate_as(tape, tick, dt)
    assert est.sigma == pytest.approx(tick * math.sqrt(m / dt), rel=0.03)
    assert est.A == pytest.approx(A, rel=0.10)
    assert est.k == pytest.approx(k, rel=0.10)
    other = estimate_as(
        as_like_tape(move_prob=m, A=4.0, k=80.0, tick=tick, dt=dt, steps=20_000, seed=1), tick, dt
    )
    assert other.A == pytest.approx(4.0, rel=0.10) and other.k == pytest.approx(80.0, rel=0.10)


def test_closed_form_quotes_lean_against_the_inventory_and_follow_the_spread() -> None:
    params = QuoteParams(offsets=(0, 1, 2, 4), tick=0.01, max_inventory=3, phi=0.002)
    tape = generate_tape(TickParams(steps=50, spread_probs=(0.5, 0.0, 0.5)), seed=0)
    est = estimate_as(generate_tape(TickParams(steps=3000, rate=1.0), seed=1), 0.01, 1.0)
    actions = closed_form_actions(tape, params, est, 1.0)  # [T, S]
    bid, ask = actions // params.n_levels, actions % params.n_levels
    assert np.all(bid >= 1) and np.all(ask >= 1)  # both sides always quoted
    assert np.all(np.diff(bid, axis=1) >= 0) and np.all(np.diff(ask, axis=1) <= 0)
    assert np.any(bid[:, -1] > bid[:, 0])  # long: the bid backs off, the ask comes in
    wide = (tape.ask - tape.bid) == 3
    # a wider spread puts the same depth from the mid fewer ticks behind the best quote
    assert bid[wide, params.start].mean() < bid[~wide, params.start].mean()


def _parts(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "inventory": rng.integers(-2, 3, n).astype(float),
        "bid_fill": rng.random(n) < 0.3,
        "ask_fill": rng.random(n) < 0.3,
        "bid_posted": np.ones(n, bool),
        "ask_posted": np.ones(n, bool),
        "spread": rng.random(n) * 0.01,
        "fee": np.zeros(n),
        "mtm": rng.normal(0, 0.01, n),
        "terminal": np.zeros(n),
        "max_inventory": 2,
        "periods": 1e6,
    }


def test_per_day_statistics_cut_the_run_at_midnight_and_add_up() -> None:
    parts = _parts(10, 0)
    day = 86_400 * 10**9
    seconds = np.array([-3, -2, -1, 0, 1, 2, 3, 4, 86_400, 86_405], dtype=np.int64)
    ts = 19_723 * day + seconds * 10**9
    days = quote_stats_per_day(ts, **parts)
    assert list(days) == ["2023-12-31", "2024-01-01", "2024-01-02"]
    assert all(type(d) is str for d in days)  # plain keys, for JSON and MLflow
    assert days["2023-12-31"] == quote_stats(**{**_cut(parts, slice(0, 3))})
    assert days["2024-01-02"]["Fills bid [#]"] == float(parts["bid_fill"][8:].sum())
    total = quote_stats(**parts)["PnL [price x lots]"]
    assert sum(d["PnL [price x lots]"] for d in days.values()) == pytest.approx(total)
    with pytest.raises(ValueError, match="sorted"):
        quote_stats_per_day(ts[::-1], **parts)


def _cut(parts: dict, rows: slice) -> dict:
    return {k: v[rows] if isinstance(v, np.ndarray) else v for k, v in parts.items()}


PARAMS = QuoteParams(offsets=(0, 1, 2), tick=0.01, max_inventory=2)
TINY = QuoteTraining(
    episodes=4, n_envs=4, eval_every=2, macro_window=8, micro_window=3, head_hidden=(8,)
)


def _market() -> TapeMarket:
    ticks = TickParams(rate=1.0, informed=0.3)
    return synthetic_market(ticks, seed=3, steps=(1500, 400, 400), episode_steps=40)


def test_training_on_a_tape_scores_the_agent_and_the_baselines_on_the_same_episodes() -> None:
    market = _market()
    policy, r = train_quotes(market, PARAMS, TINY)
    assert r.env_steps == 4 * 4 * 40 and len(r.curve) == 3
    assert r.no_quote == 0.0
    data = qt.prepare(market, PARAMS, macro_window=8, micro_window=3)
    val = data.validation.batch
    fixed = [qt.score(PARAMS, val, qt.fixed_choice(PARAMS, val, lv)) for lv in (1, 2, 3)]
    assert r.best_fixed_level == 1 + int(np.argmax(fixed))  # chosen on validation
    assert r.best_fixed_validation == max(fixed)
    assert len(set(fixed)) == 3  # the levels differ: the choice means something
    # with no penalties the objective is money: the statistics' PnL is the episodes' total
    n_test = len(data.test.starts)
    for name, objective in (
        ("agent", r.test),
        ("best fixed quote", r.best_fixed),
        ("closed form (estimated)", r.closed_form),
    ):
        assert r.stats[name]["PnL [price x lots]"] == pytest.approx(objective * n_test)
    assert sum(d["PnL [price x lots]"] for d in r.per_day.values()) == pytest.approx(
        r.test * n_test
    )
    assert r.estimate.k > 0 and r.estimate.A > 0 and r.estimate.sigma > 0
    # the greedy agent is what was scored
    choice = qt.greedy_choice(policy, data.test.batch, PARAMS)
    assert qt.score(PARAMS, data.test.batch, choice) == pytest.approx(r.test)


def test_a_fixed_quote_on_a_tape_fills_where_the_tape_says() -> None:
    """Level 1 (the best quote) fills exactly where the tape's volume at the top beats the
    queue or trades print deeper; the inventory follows those fills."""
    market = _market()
    data = qt.prepare(market, PARAMS, macro_window=8, micro_window=3)
    batch = data.test.batch
    choice = qt.fixed_choice(PARAMS, batch, 1)
    states, actions, s = follow(PARAMS, batch, choice)
    assert torch.all(actions == joint_action(PARAMS, 1, 1))
    rows = data.test.starts[:, None] + np.arange(market.episode_steps)
    tape = market.test
    through = tape.sell_volume[:, 1:].sum(1) > 0
    at = tape.sell_volume[:, 0] - tape.bid_queue[:, 0] >= 1
    would = torch.as_tensor((through | at)[rows])
    room = states < PARAMS.n_states - 1
    assert torch.equal(s.bid_fill.bool(), would & room)
    assert float(s.bid_fill.sum()) > 10


def test_a_real_capture_becomes_a_tape_and_trains_end_to_end() -> None:
    """Three seconds of hand-made ticks: the book at each step's open, prints at their levels
    (a sell above the starting bid dropped), and a crossed quote refused with its row."""
    import pandas as pd

    from hmarl.sources.tick_tape import tape_from_ticks
    from hmarl.sources.ticks import Ticks

    s = 10**9
    quotes = pd.DataFrame(
        {
            "ts": np.array([0, s // 2, s + 1, 2 * s + 1, 3 * s]),
            "bid_price": [100.00, 100.01, 100.01, 100.00, 100.00],
            "bid_qty": [0.5, 0.2, 0.3, 0.4, 0.4],
            "ask_price": [100.02, 100.02, 100.03, 100.01, 100.01],
            "ask_qty": [0.1, 0.1, 0.2, 0.3, 0.3],
        }
    )
    trades = pd.DataFrame(
        {
            "ts": np.array([s // 4, s // 3, s + 5, 2 * s + 7]),
            "price": [99.99, 100.01, 100.04, 100.00],
            "qty": [0.3, 0.2, 0.1, 0.05],
            "is_buy": [False, False, True, False],
        }
    )
    tape = tape_from_ticks(Ticks(quotes, trades), dt_ns=s, tick=0.01, lot=0.1, depth=3)
    # the book at each open: the last quote at or before it (the one at s + 1 is after s)
    np.testing.assert_array_equal(tape.bid, [10_000, 10_001, 10_001])
    np.testing.assert_array_equal(tape.ask, [10_002, 10_002, 10_003])
    np.testing.assert_allclose(tape.sell_volume[0], [0.0, 3.0, 0.0])  # 100.01 > bid: dropped
    np.testing.assert_allclose(tape.buy_volume[1], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(tape.sell_volume[2], [0.0, 0.5, 0.0])
    np.testing.assert_allclose(tape.bid_queue[1], [2.0, 2.0, 2.0])  # the top stands in behind
    assert tape.ts is not None and list(tape.ts) == [0, s, 2 * s]
    crossed = quotes.assign(bid_price=[100.00, 100.05, 100.01, 100.00, 100.00])
    with pytest.raises(DataError, match="row 1: crossed"):
        tape_from_ticks(Ticks(crossed, trades), dt_ns=s, tick=0.01, lot=0.1, depth=3)
    # a longer synthetic stand-in splits into segments and trains (no edge is claimed)
    long = generate_tape(TickParams(steps=900, rate=1.0), seed=4)
    market = split_tape(long, 0.01, 1.0, (0.6, 0.2), episode_steps=40)
    assert len(market.train.bid) == 540 and market.test.ts is not None
    _, r = train_quotes(market, PARAMS, TINY)
    assert np.isfinite(r.test) and r.per_day


def test_the_gym_env_on_a_tape_settles_like_the_rollout() -> None:
    """PPO's environment (one episode at a time) and the factored rollout give the same rewards
    for the same policy on the same tape episode."""
    from hmarl.agent.quote_rollout import table_batch
    from hmarl.train.quote_ppo import tape_env

    market = _market()
    data = qt.prepare(market, PARAMS, macro_window=8, micro_window=3)
    env = tape_env(data.train, PARAMS, market.episode_steps, seed=0)
    env.reset(seed=7)
    start = np.random.default_rng(7).integers(
        data.train.warmup, len(data.train.dmid) - market.episode_steps + 1
    )
    batch = table_batch(data.train, PARAMS, np.array([start]), market.episode_steps)
    rng = np.random.default_rng(1)
    choice = torch.as_tensor(rng.integers(0, PARAMS.n_actions, (PARAMS.n_states, 1, 40)))
    states, _, s = follow(PARAMS, batch, choice)
    rewards = []
    for k in range(market.episode_steps):
        assert env.state == int(states[0, k])
        _, reward, done, _, _ = env.step(int(choice[env.state, 0, k]))
        rewards.append(reward)
    assert done
    np.testing.assert_allclose(rewards, s.reward[0].numpy(), rtol=1e-12, atol=1e-15)
    assert float(s.bid_fill.sum() + s.ask_fill.sum()) > 0


def test_an_empty_top_of_book_has_zero_imbalance_not_nan() -> None:
    from hmarl.agent.quote_rollout import tape_features

    tape = generate_tape(TickParams(steps=50), seed=0)
    queue = tape.bid_queue.copy()
    queue[10] = 0
    x = tape_features(tape._replace(bid_queue=queue, ask_queue=np.where(queue == 0, 0, 2)))
    assert np.isfinite(x).all() and x[10, 2] == 0.0 and x[11, 2] != 0.0
