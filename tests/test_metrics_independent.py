"""compute_stats against a library nobody here wrote (empyrical-reloaded, in the dev extra).

Why: a statistic checked only against our own formulas can share our mistake. empyrical is
Quantopian's reference implementation (kept up by the zipline-reloaded maintainers); it is
given the per-bar returns of our settled equity and the same periods per year, and every
shared figure must agree to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmarl.market.env import EnvParams
from hmarl.market.market_data import MarketData
from hmarl.stats.baselines import momentum_band, momentum_positions, settled_frame
from hmarl.stats.metrics import CRYPTO, EXCHANGE, compute_stats, periods_per_year
from hmarl.steps import EQUITY

empyrical = pytest.importorskip("empyrical", reason="the dev extra installs empyrical-reloaded")


def market(n: int, freq: str, seed: int) -> MarketData:
    """A random-walk market with trends, as the steps table's source (closes and returns)."""
    rng = np.random.default_rng(seed)
    drift = np.repeat(rng.normal(0, 4e-4, n // 200 + 1), 200)[:n]
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 3e-3, n)))
    index = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
    returns = np.append(close[1:] / close[:-1] - 1.0, 0.0)
    empty = np.zeros((n, 3), dtype=np.float32)
    return MarketData(
        index, close, returns, empty, empty, {"all": (0, n - 1)}, ["x"], 2, 2, {}, "fp"
    )


def runs(m: MarketData, env: EnvParams) -> dict[str, pd.DataFrame]:
    """Long only, long and short (momentum), and random exposures: settled with costs."""
    lo, hi = 0, len(m.close) - 1
    rows = np.arange(lo, hi)
    rng = np.random.default_rng(7)
    random = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=hi // 25 + 1), 25)[: hi - lo]
    return {
        "buy_and_hold": settled_frame(m, lo, hi, np.ones(hi - lo), env),
        "momentum": settled_frame(
            m, lo, hi, momentum_positions(m.close, rows, 48, momentum_band(env), env), env
        ),
        "random": settled_frame(m, lo, hi, random, env),
    }


@pytest.mark.parametrize(
    "freq,calendar,seed", [("5min", CRYPTO, 0), ("1h", CRYPTO, 1), ("1D", EXCHANGE, 2)]
)
def test_compute_stats_agrees_with_empyrical(freq: str, calendar: object, seed: int) -> None:
    m = market(3000, freq, seed)
    for name, steps in runs(m, EnvParams(commission=0.001, slippage_bps=2.0)).items():
        stats = compute_stats(steps, calendar=calendar, n_bootstrap=0)  # type: ignore[arg-type]
        equity = np.concatenate(([1.0], steps[EQUITY].to_numpy()))
        r = equity[1:] / equity[:-1] - 1.0
        periods = periods_per_year(pd.DatetimeIndex(steps.index), calendar)  # type: ignore[arg-type]
        assert r.std() > 0 and equity.min() < equity.max(), name  # a run with risk to measure
        theirs = {
            "Return [%]": empyrical.cum_returns_final(r) * 100,
            "Return (Ann.) [%]": empyrical.annual_return(r, annualization=periods) * 100,
            "Volatility (Ann.) [%]": empyrical.annual_volatility(r, annualization=periods) * 100,
            "Sharpe Ratio": empyrical.sharpe_ratio(r, annualization=periods),
            "Sortino Ratio": empyrical.sortino_ratio(r, annualization=periods),
            "Max. Drawdown [%]": empyrical.max_drawdown(r) * 100,
            "Calmar Ratio": empyrical.calmar_ratio(r, annualization=periods),
        }
        for key, value in theirs.items():
            ours = float(stats[key])
            assert ours == pytest.approx(float(value), rel=1e-9, abs=1e-9), (name, key)
