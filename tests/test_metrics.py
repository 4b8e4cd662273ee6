"""compute_stats against hand-computed values on a tiny fixed series, plus edge cases."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

from hmarl.backtest.report import daily_frame
from hmarl.stats.metrics import (
    CRYPTO,
    EXCHANGE,
    STAT_DEFINITIONS,
    Calendar,
    bootstrap_sharpe_ci,
    compute_stats,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    flag_sentences,
    max_drawdown,
    metric_keys,
    null_percentile,
    outcome_flags,
    periods_per_year,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    short_key,
    stats_table,
    trades,
)

# The fixed series: 10 decision bars of 5 minutes, 24/7. Per-row net returns r are given;
# equity = cumprod(1 + r). Position story: flat, long 1 (rows 1-3), flip to short 1
# (rows 4-5), close (row 6), flat, long 0.5 (rows 8-9, still open). The flip at row 4 is
# settled as hmarl.market.env charges it: it sells the long (1) and opens the short on the
# equity left after the fee, turnover T4 = 1 + (1 - F4) with F4 = 0.1% * T4.
T4, F4 = 2 / 1.001, 0.002 / 1.001
R = [0.0, 0.02, -0.01, 0.03, -0.02, -0.01, -0.001, 0.0, 0.01, 0.005]
POSITION = [0.0, 1.0, 1.0, 1.0, -1.0, -1.0, 0.0, 0.0, 0.5, 0.5]
TURNOVER = [0.0, 1.0, 0.0, 0.0, T4, 0.0, 1.0, 0.0, 0.5, 0.0]
FEE = [0.0, 0.001, 0.0, 0.0, F4, 0.0, 0.001, 0.0, 0.0005, 0.0]  # 0.1% * turnover
ACTION = [0, 1, 0, 0, 2, 0, 1, 0, 1, 0]
PRICES = [100.0, 100.0, 102.0, 101.0, 104.0, 106.0, 107.0, 107.0, 107.0, 108.0, 108.5]
P5 = 288 * 365.25  # 5-minute bars, 24/7: 105,192 a year


def make_steps(
    r: list[float],
    index: pd.DatetimeIndex | None = None,
    position: list[float] | None = None,
    turnover: list[float] | None = None,
    fee: list[float] | None = None,
    action: list[int] | None = None,
    prices: list[float] | None = None,
) -> pd.DataFrame:
    """A steps frame from per-row returns; unspecified columns are flat / zero / HOLD."""
    n = len(r)
    zeros = [0.0] * n
    prices = prices if prices is not None else [100.0] * (n + 1)
    if index is None:
        index = pd.date_range("2024-01-01", periods=n, freq="5min", tz="UTC")
    return pd.DataFrame(
        {
            "price": prices[:-1],
            "next_price": prices[1:],
            "action": action if action is not None else [0] * n,
            "p_hold": [0.6] * n,
            "p_buy": [0.3] * n,
            "p_sell": [0.1] * n,
            "position": position if position is not None else zeros,
            "turnover": turnover if turnover is not None else zeros,
            "fee": fee if fee is not None else zeros,
            "equity": np.cumprod(1.0 + np.asarray(r)),
        },
        index=index,
    )


@pytest.fixture
def steps() -> pd.DataFrame:
    return make_steps(R, None, POSITION, TURNOVER, FEE, ACTION, PRICES)


@pytest.fixture
def stats(steps: pd.DataFrame) -> dict[str, float | int | str]:
    return compute_stats(steps, n_bootstrap=200)


# ----------------------------------------------------------------------------- hand values

# mean = sum(R) / 10 = (0.02 - 0.01 + 0.03 - 0.02 - 0.01 - 0.001 + 0.01 + 0.005) / 10
MEAN = 0.024 / 10
# sum of squared deviations = sum(r^2) - n * mean^2
#   sum(r^2) = 0.0004 + 0.0001 + 0.0009 + 0.0004 + 0.0001 + 0.000001 + 0.0001 + 0.000025
SSD = 0.002026 - 10 * 0.0024**2  # = 0.0019684
STD = math.sqrt(SSD / 9)  # ddof = 1
# downside: losses -0.01, -0.02, -0.01, -0.001 -> squares summed, averaged over all 10 bars
DOWNSIDE = math.sqrt((0.0001 + 0.0004 + 0.0001 + 0.000001) / 10)
# equity path (points after each row); the peak is after row 3, the trough after row 7
PEAK = 1.02 * 0.99 * 1.03
FINAL = PEAK * 0.98 * 0.99 * 0.999 * 1.0 * 1.01 * 1.005
MDD = 0.98 * 0.99 * 0.999 - 1.0  # trough / peak - 1 = -3.077%


def test_return_and_risk_match_hand_values(stats: dict[str, float | int | str]) -> None:
    assert stats["Bars"] == 10
    assert stats["Periods per Year"] == pytest.approx(105_192.0)
    assert stats["Return [%]"] == pytest.approx((FINAL - 1) * 100)
    assert stats["Sharpe Ratio"] == pytest.approx(MEAN / STD * math.sqrt(P5))
    assert stats["Sharpe Ratio"] == pytest.approx(52.634, abs=1e-3)
    assert stats["Sortino Ratio"] == pytest.approx(MEAN / DOWNSIDE * math.sqrt(P5))
    assert stats["Volatility (Ann.) [%]"] == pytest.approx(STD * math.sqrt(P5) * 100)
    assert stats["Return (Ann.) [%]"] == pytest.approx((FINAL ** (P5 / 10) - 1) * 100)


def test_drawdown_matches_hand_values(stats: dict[str, float | int | str]) -> None:
    assert stats["Max. Drawdown [%]"] == pytest.approx(MDD * 100)
    # Equity points 5..10 (after rows 4..9) all stay below the peak reached after row 3.
    assert stats["Max. Drawdown Duration [bars]"] == 6
    assert stats["Max. Drawdown Duration [days]"] == pytest.approx(6 * 5 / 1440)


def test_calmar_with_daily_exchange_periods(steps: pd.DataFrame) -> None:
    out = compute_stats(steps, periods=252, n_bootstrap=0)
    annual = FINAL ** (252 / 10) - 1
    assert out["Return (Ann.) [%]"] == pytest.approx(annual * 100)
    assert out["Calmar Ratio"] == pytest.approx(annual / abs(MDD))
    assert out["Sharpe Ratio"] == pytest.approx(MEAN / STD * math.sqrt(252))


def test_turnover_fees_and_activity(stats: dict[str, float | int | str]) -> None:
    assert stats["Turnover [x]"] == pytest.approx(1 + T4 + 1 + 0.5)
    assert stats["Turnover (Ann.) [x]"] == pytest.approx((2.5 + T4) / 10 * P5)
    # each fee times the equity before its row: rows 1, 4, 6 and 8
    fees = (
        0.001 * 1.0 + F4 * PEAK + 0.001 * PEAK * 0.98 * 0.99 + 0.0005 * PEAK * 0.98 * 0.99 * 0.999
    )
    assert stats["Fees Paid [%]"] == pytest.approx(fees * 100)
    assert stats["Exposure Time [%]"] == pytest.approx(70.0)  # rows 1-5, 8, 9
    assert stats["Action HOLD [%]"] == pytest.approx(60.0)
    assert stats["Action BUY [%]"] == pytest.approx(30.0)
    assert stats["Action SELL [%]"] == pytest.approx(10.0)
    assert stats["Mean P(HOLD)"] == pytest.approx(0.6)
    assert stats["Mean P(SELL)"] == pytest.approx(0.1)


# Trade A: long rows 1-3; its exit fee is the part of row 4's fee that sold the long:
# 0.1% * 1 (the rest, 0.1% * (1 - F4), opened the short).
TRADE_A = 1.02 * 0.99 * 1.03 * (1 - 0.001) - 1
# Trade B: short rows 4-5; it starts on the equity left after row 4's closing part (so row
# 4's net return, which includes all of F4, is divided by 1 - 0.001) and pays all of row 6's
# fee (turnover 1, a close to flat).
TRADE_B = 0.98 * 0.99 / (1 - 0.001) * (1 - 0.001) - 1
# Trade C: long 0.5 rows 8-9, open at the end: entry fee is already in r[8], no exit fee.
TRADE_C = 1.01 * 1.005 - 1


def test_trades_match_hand_values(stats: dict[str, float | int | str], steps: pd.DataFrame) -> None:
    assert stats["# Trades"] == 3
    assert stats["Win Rate [%]"] == pytest.approx(2 / 3 * 100)  # A and C win
    assert stats["Avg. Trade [%]"] == pytest.approx((TRADE_A + TRADE_B + TRADE_C) / 3 * 100)
    assert stats["Best Trade [%]"] == pytest.approx(TRADE_A * 100)
    assert stats["Worst Trade [%]"] == pytest.approx(TRADE_B * 100)
    assert stats["Avg. Trade Duration [bars]"] == pytest.approx((3 + 2 + 2) / 3)
    table = trades(steps)
    assert table["side"].tolist() == [1, -1, 1]
    assert table["open"].tolist() == [False, False, True]
    assert table["return"].to_numpy() == pytest.approx([TRADE_A, TRADE_B, TRADE_C])
    assert table["entry"].iloc[1] == steps.index[4]


def test_remaining_figures_match_hand_values(stats: dict[str, float | int | str]) -> None:
    # period: 10 bars of 5 minutes, first 00:00, last 00:45
    assert (stats["Start"], stats["End"]) == (
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:45:00+00:00",
    )
    assert stats["Duration [days]"] == pytest.approx(45 / 1440)
    assert stats["Equity Final [x]"] == pytest.approx(FINAL)
    # moments of r (population): skew = m3 / m2^1.5, kurtosis = m4 / m2^2 (non-excess)
    d = [x - MEAN for x in R]
    m2, m3, m4 = (sum(x**k for x in d) / 10 for k in (2, 3, 4))
    assert stats["Skew"] == pytest.approx(m3 / m2**1.5)
    assert stats["Kurtosis"] == pytest.approx(m4 / m2**2)
    # Beta: cov(r, r_price) / var(r_price), r_price = next / price - 1 (both ddof 1)
    rp = [b / a - 1 for a, b in itertools.pairwise(PRICES)]
    mp = sum(rp) / 10
    cov = sum((x - MEAN) * (y - mp) for x, y in zip(R, rp, strict=True)) / 9
    var = sum((y - mp) ** 2 for y in rp) / 9
    assert stats["Beta"] == pytest.approx(cov / var)
    # long rows 1-3 and 8-9, short rows 4-5
    assert stats["Long Exposure Time [%]"] == pytest.approx(50.0)
    assert stats["Short Exposure Time [%]"] == pytest.approx(20.0)
    assert stats["Mean P(BUY)"] == pytest.approx(0.3)
    assert "Buy & Hold Return [%]" not in stats  # one buy & hold: the baseline column


def test_every_figure_has_one_definition(stats: dict[str, float | int | str]) -> None:
    assert set(stats) <= set(STAT_DEFINITIONS)
    for key, text in STAT_DEFINITIONS.items():
        money = key.startswith(
            ("Return", "Equity", "Sharpe", "Sortino", "Volatility", "Avg. Trade [")
        )
        assert not money or "after costs" in text, key


@pytest.mark.parametrize(
    ("trades_", "long_pct", "flags"),
    [
        (0, 0.0, ["no_trades"]),
        (1, 99.0, ["few_trades", "same_as_buy_and_hold"]),
        (4, 94.9, ["few_trades"]),
        (5, 95.0, ["same_as_buy_and_hold"]),
        (12, 40.0, []),
    ],
)
def test_outcome_flags(trades_: int, long_pct: float, flags: list[str]) -> None:
    stats = {"# Trades": trades_, "Long Exposure Time [%]": long_pct}
    assert outcome_flags(stats, min_trades=5) == flags
    notes = flag_sentences(stats, flags, "validation")
    assert len(notes) == len(flags)
    if "no_trades" in flags:
        assert notes == ["no trade on validation: no edge found at these costs"]
    if "few_trades" in flags:
        assert f"selection rests on {trades_} trade" in notes[0]


def test_null_percentile_by_hand() -> None:
    null = [1.0, 2.0, 3.0, 4.0]
    assert null_percentile(null, 2.5) == (50.0, (1 + 2) / 5)  # 2 below, 2 at least as good
    assert null_percentile(null, 3.0) == (62.5, (1 + 2) / 5)  # 2 below, 1 tie (half)
    assert null_percentile(null, 9.0) == (100.0, 1 / 5)  # never 0: the strategy counts
    assert null_percentile([1.0] * 4, 1.0 + 1e-13) == (50.0, 1.0)  # rounding ties
    with pytest.raises(ValueError, match="no null outcomes"):
        null_percentile([], 1.0)


def _psr_by_hand(r: list[float]) -> float:
    """PSR written out: Phi(SR sqrt(n-1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))."""
    n = len(r)
    mean = sum(r) / n
    d = [x - mean for x in r]
    m2, m3, m4 = (sum(x**k for x in d) / n for k in (2, 3, 4))
    sr = mean / math.sqrt(sum(x * x for x in d) / (n - 1))
    g3, g4 = m3 / m2**1.5, m4 / m2**2
    z = sr * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_psr_matches_formula_by_hand(stats: dict[str, float | int | str]) -> None:
    assert stats["Probabilistic Sharpe Ratio"] == pytest.approx(_psr_by_hand(R), rel=1e-12)
    assert 0.5 < float(stats["Probabilistic Sharpe Ratio"]) < 1.0  # positive mean, 10 bars


def test_psr_against_its_own_sharpe_is_one_half() -> None:
    r = np.random.default_rng(3).normal(0.001, 0.01, 500)
    sr = float(np.mean(r) / np.std(r, ddof=1))
    assert probabilistic_sharpe_ratio(r, sr_benchmark=sr) == pytest.approx(0.5)
    assert probabilistic_sharpe_ratio(r, sr_benchmark=sr + 0.1) < 0.5


def test_expected_max_sharpe_matches_simulation() -> None:
    draws = np.random.default_rng(0).standard_normal((20_000, 100))
    simulated = float(draws.max(axis=1).mean())  # about 2.51
    assert expected_max_sharpe(100, 1.0) == pytest.approx(simulated, abs=0.05)
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_deflated_sharpe_penalises_many_trials() -> None:
    r = np.random.default_rng(5).normal(0.002, 0.01, 1000)
    sr = float(np.mean(r) / np.std(r, ddof=1))
    d = r - r.mean()
    skew = float(np.mean(d**3) / np.mean(d**2) ** 1.5)
    kurt = float(np.mean(d**4) / np.mean(d**2) ** 2)
    one = deflated_sharpe_ratio(sr, 1, 0.01, r.size, skew, kurt)
    assert one == pytest.approx(probabilistic_sharpe_ratio(r))
    many = [deflated_sharpe_ratio(sr, n, 0.01**2, r.size, skew, kurt) for n in (10, 100, 1000)]
    assert one > many[0] > many[1] > many[2]
    with pytest.raises(ValueError, match="n_trials must be >= 1"):
        deflated_sharpe_ratio(sr, 0, 0.01, r.size, skew, kurt)


# ----------------------------------------------------------------------------- annualisation


@pytest.mark.parametrize(
    ("index", "calendar", "expected"),
    [
        (pd.date_range("2024-01-01", periods=50, freq="5min", tz="UTC"), CRYPTO, 105_192.0),
        (pd.bdate_range("2024-01-01", periods=30, tz="UTC"), EXCHANGE, 252.0),
        (pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC"), CRYPTO, 365.25),
        (pd.date_range("2024-01-01 14:30", periods=7, freq="h", tz="UTC"), EXCHANGE, 6.5 * 252),
        (pd.date_range("2024-01-01", periods=50, freq="5min"), EXCHANGE, 78 * 252),
        (pd.date_range("2024-01-01", periods=10, freq="7D", tz="UTC"), EXCHANGE, 365.25 / 7),
        (pd.date_range("2024-01-01", periods=10, freq="h"), Calendar("b3", 249, 9.0), 9 * 249),
    ],
)
def test_periods_per_year(index: pd.DatetimeIndex, calendar: Calendar, expected: float) -> None:
    assert periods_per_year(index, calendar) == pytest.approx(expected)


def test_periods_per_year_ignores_gaps_and_units() -> None:
    index = pd.date_range("2024-01-01", periods=100, freq="5min", tz="UTC")
    gappy = index.delete([10, 11, 12, 50])  # missing candles do not change the bar size
    assert periods_per_year(gappy) == pytest.approx(105_192.0)
    assert periods_per_year(index.as_unit("s")) == pytest.approx(105_192.0)


def test_daily_exchange_frame_annualises_with_252() -> None:
    index = pd.bdate_range("2024-01-01", periods=10, tz="UTC")
    out = compute_stats(make_steps(R, index), calendar=EXCHANGE, n_bootstrap=0)
    assert out["Periods per Year"] == 252.0
    assert out["Sharpe Ratio"] == pytest.approx(MEAN / STD * math.sqrt(252))


def test_drawdown_days_count_calendar_time_across_a_weekend() -> None:
    index = pd.bdate_range("2024-01-01", periods=6, tz="UTC")  # Mon 1st .. Mon 8th
    r = [0.01, -0.01, -0.01, -0.01, -0.01, 0.10]
    out = compute_stats(make_steps(r, index), calendar=EXCHANGE, n_bootstrap=0)
    # peak after row 0 (stamped Tue 2nd), underwater through the point stamped Mon 8th
    assert out["Max. Drawdown Duration [bars]"] == 4
    assert out["Max. Drawdown Duration [days]"] == pytest.approx(6.0)


def test_calendar_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="session_hours must be in"):
        Calendar("bad", 252, 25.0)
    with pytest.raises(ValueError, match="trading_days_per_year must be > 0"):
        Calendar("bad", 0, 6.5)


# ----------------------------------------------------------------------------- building blocks


def test_max_drawdown_depth_and_duration_can_differ() -> None:
    # deepest fall: 1 -> 0.5 (one bar); longest: 1.1 -> 1.05, 1.04, 1.03 (three bars)
    depth, duration = max_drawdown([1.0, 0.5, 1.1, 1.05, 1.04, 1.03, 1.2])
    assert depth == pytest.approx(-0.5)
    assert duration == 3
    assert max_drawdown([1.0, 1.1, 1.2]) == (0.0, 0)


def test_bootstrap_ci_contains_point_and_is_reproducible() -> None:
    r = np.random.default_rng(7).normal(0.0005, 0.01, 400)
    point = sharpe_ratio(r, 252)
    lo, hi = bootstrap_sharpe_ci(r, 252, n=500, seed=11)
    assert lo < point < hi
    assert (lo, hi) == bootstrap_sharpe_ci(r, 252, n=500, seed=11)
    assert (lo, hi) != bootstrap_sharpe_ci(r, 252, n=500, seed=12)
    narrow = bootstrap_sharpe_ci(r, 252, n=500, seed=11, alpha=0.5)
    assert lo < narrow[0] < narrow[1] < hi


def test_compute_stats_ci_is_seeded(
    steps: pd.DataFrame, stats: dict[str, float | int | str]
) -> None:
    assert float(stats["Sharpe 95% CI Low"]) < float(stats["Sharpe Ratio"])
    assert float(stats["Sharpe 95% CI High"]) > float(stats["Sharpe Ratio"])
    again = compute_stats(steps, n_bootstrap=200)
    assert again["Sharpe 95% CI Low"] == stats["Sharpe 95% CI Low"]
    assert "Sharpe 95% CI Low" not in compute_stats(steps, n_bootstrap=0)


# ----------------------------------------------------------------------------- edge cases


def _assert_all_finite(stats: dict[str, float | int | str]) -> None:
    numeric = {k: v for k, v in stats.items() if not isinstance(v, str)}
    bad = {k: v for k, v in numeric.items() if not math.isfinite(v)}
    assert not bad, f"non-finite stats: {bad}"


def test_flat_policy_has_zero_ratios_not_nan() -> None:
    out = compute_stats(make_steps([0.0] * 12))
    _assert_all_finite(out)
    for key in ("Sharpe Ratio", "Sortino Ratio", "Calmar Ratio", "Volatility (Ann.) [%]"):
        assert out[key] == 0.0, key
    assert out["# Trades"] == 0
    assert out["Win Rate [%]"] == 0.0
    assert out["Max. Drawdown [%]"] == 0.0
    assert out["Probabilistic Sharpe Ratio"] == 0.0
    assert out["Sharpe 95% CI Low"] == out["Sharpe 95% CI High"] == 0.0


def test_constant_growth_counts_as_zero_volatility() -> None:
    out = compute_stats(make_steps([0.001] * 20), n_bootstrap=50)
    assert out["Sharpe Ratio"] == 0.0  # float noise in equity ratios is not risk
    assert out["Return [%]"] == pytest.approx((1.001**20 - 1) * 100)
    _assert_all_finite(out)


def test_single_row_needs_periods_then_is_finite() -> None:
    one = make_steps([0.01], position=[1.0], turnover=[1.0], fee=[0.001], action=[1])
    with pytest.raises(ValueError, match="pass periods="):
        compute_stats(one)
    out = compute_stats(one, periods=252)
    _assert_all_finite(out)
    assert out["Sharpe Ratio"] == 0.0
    assert out["# Trades"] == 1
    assert out["Win Rate [%]"] == 100.0
    assert out["Return [%]"] == pytest.approx(1.0)


def test_explosive_annualisation_is_inf_not_nan() -> None:
    # one 5-minute bar of +1% extrapolated to 105,192 bars overflows a float
    one = make_steps([0.01], position=[1.0], turnover=[1.0], fee=[0.001], action=[1])
    out = compute_stats(one, periods=P5)
    assert out["Return (Ann.) [%]"] == math.inf
    assert out["Calmar Ratio"] == 0.0  # no drawdown: undefined
    assert not [k for k, v in out.items() if isinstance(v, float) and math.isnan(v)]


def test_optional_columns() -> None:
    bare = make_steps(R).drop(columns=["p_hold", "p_buy", "p_sell", "price", "next_price"])
    out = compute_stats(bare, benchmark=False, n_bootstrap=0)
    assert not [k for k in out if k.startswith(("Mean P(", "Beta"))]
    assert out["Sharpe Ratio"] == pytest.approx(MEAN / STD * math.sqrt(P5))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['price', 'next_price'\]"):
        compute_stats(bare)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("equity", np.nan, r"'equity', row 3 .*is not finite"),
        ("equity", -1.0, r"'equity', row 3 .*is negative"),
        ("position", 1.5, r"'position', row 3 .*outside \[-1, 1\]"),
        ("action", 3, r"'action', row 3 .*not 0 \(HOLD\)"),
        ("fee", -0.1, r"'fee', row 3 .*outside \[0, 1\)"),
        ("price", 0.0, r"'price', row 3 .*is not positive"),
    ],
)
def test_bad_values_name_column_and_row(column: str, value: float, message: str) -> None:
    bad = make_steps(R)
    bad[column] = bad[column].astype(float)
    bad.iloc[3, bad.columns.get_loc(column)] = value
    with pytest.raises(ValueError, match=message):
        compute_stats(bad)


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="steps frame is empty"):
        compute_stats(make_steps(R).iloc[:0])
    with pytest.raises(TypeError, match="DatetimeIndex"):
        compute_stats(make_steps(R).reset_index(drop=True))
    with pytest.raises(ValueError, match=r"strictly increasing: row 2 .* after row 1"):
        compute_stats(make_steps(R).iloc[[0, 2, 1, 3]])
    with pytest.raises(ValueError, match="lacks column"):
        compute_stats(make_steps(R).drop(columns=["turnover"]))
    with pytest.raises(ValueError, match="column 'action' is not numeric"):
        compute_stats(make_steps(R).assign(action="BUY"))
    with pytest.raises(ValueError, match=r"periods .* must be a positive number"):
        compute_stats(make_steps(R), periods=0.0)


# ----------------------------------------------------------------------------- reporting


def test_metric_keys_are_mlflow_safe_and_unique(stats: dict[str, float | int | str]) -> None:
    keys = metric_keys(stats, prefix="val/")
    assert all(re.fullmatch(r"val/[a-z0-9_]+", k) for k in keys), keys
    assert len(keys) == sum(not isinstance(v, str) for v in stats.values())
    assert keys["val/sharpe"] == stats["Sharpe Ratio"]
    assert keys["val/return_pct"] == stats["Return [%]"]
    assert "val/start" not in keys


@pytest.mark.parametrize(
    ("key", "short"),
    [
        ("Sharpe Ratio", "sharpe"),
        ("Return (Ann.) [%]", "return_ann_pct"),
        ("Max. Drawdown [%]", "max_drawdown_pct"),
        ("Max. Drawdown Duration [bars]", "max_drawdown_duration_bars"),
        ("# Trades", "n_trades"),
        ("Long Exposure Time [%]", "long_exposure_time_pct"),
        ("Random-Timing p-value", "random_timing_p_value"),
        ("Mean P(HOLD)", "mean_p_hold"),
        ("Turnover (Ann.) [x]", "turnover_ann_x"),
        ("Sharpe 95% CI Low", "sharpe_95pct_ci_low"),
        ("Inventory |mean| [lots]", "inventory_abs_mean_lots"),  # not Inventory mean [lots]'s
    ],
)
def test_short_key(key: str, short: str) -> None:
    assert short_key(key) == short


def test_metric_keys_refuse_collisions() -> None:
    with pytest.raises(ValueError, match="collide on metric name 'sharpe'"):
        metric_keys({"Sharpe Ratio": 1.0, "Sharpe": 2.0})


def test_stats_table_puts_runs_side_by_side(steps: pd.DataFrame) -> None:
    policy = compute_stats(steps, n_bootstrap=0)
    flat = compute_stats(make_steps([0.0] * 10).drop(columns=["p_hold"]), n_bootstrap=0)
    table = stats_table({"policy": policy, "flat": flat})
    assert list(table.columns) == ["policy", "flat"]
    assert list(table.index) == list(policy)
    assert table.loc["Sharpe Ratio", "policy"] == policy["Sharpe Ratio"]
    assert table.loc["# Trades", "flat"] == 0
    assert pd.isna(table.loc["Mean P(HOLD)", "flat"])


def test_a_ruined_account_has_finite_stats() -> None:
    """Equity is exp of the summed log growth and underflows to exactly 0 on a long losing
    split: that is ruin (-100%), not bad input, and every statistic stays finite."""
    steps = make_steps([0.01, -0.5, 0.02, 0.0, 0.0])
    steps["equity"] = [1.01, 1.01 * 1e-300, 0.0, 0.0, 0.0]  # the underflow at row 2
    with pytest.warns(RuntimeWarning, match=r"equity left \[1e-300, 1e\+300\] at row 2 "):
        stats = compute_stats(steps)
    assert stats["Return [%]"] == pytest.approx(-100.0)
    assert stats["Max. Drawdown [%]"] == pytest.approx(-100.0)
    assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    daily = daily_frame(steps)
    assert np.isfinite(daily["return_pct"]).all()


def test_an_equity_past_float64_is_clipped_with_a_warning() -> None:
    """A strong edge over ten million bars overflows exp(sum of log growth) to inf."""
    with np.errstate(over="ignore"):
        steps = make_steps([1.0] * 1100)  # doubling every bar: inf from row 1023
    row = int(np.flatnonzero(steps["equity"].to_numpy() > 1e300)[0])
    assert np.isinf(steps["equity"].iloc[-1])
    with pytest.warns(RuntimeWarning, match=rf"at row {row} "):
        stats = compute_stats(steps)
    assert stats["Equity Final [x]"] == 1e300
    for key in ("Return [%]", "Sharpe Ratio", "Max. Drawdown [%]", "Fees Paid [%]"):
        assert math.isfinite(stats[key]), key
    steps = make_steps([0.01, 0.02, 0.0, 0.01])
    steps["equity"] = [1.01, 1.0, -np.inf, 1.0]
    with pytest.raises(ValueError, match=r"'equity', row 2 .*is not finite"):
        compute_stats(steps)
