"""Benchmark: build_features + window_stats(492) + window_stats(60) on 1 and 5 years of 5-min bars.

Prints wall seconds (best of --repeat runs, time.perf_counter) and peak memory measured with
tracemalloc in a separate run (numpy and pandas report their buffers to tracemalloc; timing
runs are done without it because tracing slows allocation). The same windows computed with
pandas ``rolling(window).mean()/.std(ddof=0)`` are the reference; ratio = reference / ours.

    .venv/bin/python scripts/bench_features.py [--years 1 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import pandas as pd

from hmarl.market.features import build_features
from hmarl.market.windows import window_stats

BARS_PER_YEAR = 105_120  # 365 days of 5-minute bars
WINDOWS = (492, 60)
TARGET_WINDOWS_S = 0.3  # per 100k candles, both windows
TARGET_TOTAL_S = 1.0  # per 100k candles, features + both windows


def random_walk_candles(n: int, seed: int = 0) -> pd.DataFrame:
    """Valid 5-minute candles from a seeded geometric random walk, ~3% zero-volume bars."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0015, n)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.0005, n))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.0005, n))
    volume = rng.lognormal(3.0, 1.0, n) * (rng.random(n) > 0.03)
    index = pd.date_range("2020-01-01", periods=n, freq="5min", tz="UTC")
    frame = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame(frame, index=index)


def ours(x: np.ndarray) -> list[np.ndarray]:
    return [window_stats(x, w) for w in WINDOWS]


def pandas_reference(x: np.ndarray) -> list[np.ndarray]:
    """The same [mean | std | last] blocks from pandas rolling windows (float32 out)."""
    frame = pd.DataFrame(x)
    out = []
    for w in WINDOWS:
        rolling = frame.rolling(w, min_periods=w)
        mean, std = rolling.mean(), rolling.std(ddof=0)
        last = frame.where(mean.notna())
        out.append(pd.concat([mean, std, last], axis=1).to_numpy(np.float32))
    return out


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak traced allocation (MiB) while fn runs, above what was allocated before it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest |ours - reference| over finite entries, relative to the entry's magnitude."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(np.isnan(x), np.isnan(y)), "NaN layout differs from pandas"
        ok = np.isfinite(y)
        diff = np.abs(x[ok].astype(np.float64) - y[ok]) / np.maximum(np.abs(y[ok]), 1e-6)
        worst = max(worst, float(diff.max()))
    return worst


def bench(years: int, repeat: int) -> None:
    n = years * BARS_PER_YEAR
    candles = random_walk_candles(n, seed=years)
    x = build_features(candles).to_numpy()
    per_100k = 100_000 / n
    t_feat = best_time(lambda: build_features(candles), repeat)
    t_win = best_time(lambda: ours(x), repeat)
    t_ref = best_time(lambda: pandas_reference(x), repeat)
    m_feat = peak_mib(lambda: build_features(candles))
    m_win = peak_mib(lambda: ours(x))
    m_ref = peak_mib(lambda: pandas_reference(x))
    rel = max_difference(ours(x), pandas_reference(x))
    total = t_feat + t_win
    print(f"\n{years} year(s): {n:,} candles, {x.shape[1]} features, windows {WINDOWS}")
    print(f"  build_features      {t_feat:7.3f} s  peak {m_feat:7.1f} MiB")
    print(
        f"  window_stats (both) {t_win:7.3f} s  peak {m_win:7.1f} MiB"
        f"  = {t_win * per_100k:.3f} s/100k (target < {TARGET_WINDOWS_S})"
    )
    print(
        f"  features + windows  {total:7.3f} s"
        f"               = {total * per_100k:.3f} s/100k (target < {TARGET_TOTAL_S})"
    )
    print(
        f"  pandas rolling ref  {t_ref:7.3f} s  peak {m_ref:7.1f} MiB"
        f"  ratio ref/ours {t_ref / t_win:.1f}x"
    )
    print(f"  max relative difference ours vs pandas: {rel:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best is shown")
    args = parser.parse_args()
    print("time: best of --repeat, perf_counter; memory: tracemalloc peak in a separate run")
    for years in args.years:
        bench(years, args.repeat)


if __name__ == "__main__":
    main()
