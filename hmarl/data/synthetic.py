"""The built-in synthetic market: seeded regime-switching BTC-like candles, no downloads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmarl.data.timestamps import utc


def _regime_durations(rng: np.random.Generator, mean_bars: float, min_bars: int) -> np.ndarray:
    """Regime lengths: gamma(shape 2), so typically hundreds to thousands of bars."""
    draws = rng.gamma(2.0, mean_bars / 2.0, size=4096)
    return np.maximum(min_bars, np.round(draws)).astype(np.int64)


def _next_regime(rng: np.random.Generator, current: int, log_ratio: float, pull: float) -> int:
    """Any state but the current one; up/down weighted against the distance from the anchor.

    The pull keeps a year of trends near a BTC-like price level instead of a random walk of
    regimes wandering to 0 or 10^6.
    """
    states = np.array([-1, 0, 1])
    weights = np.exp(-pull * log_ratio * states)
    weights[states == current] = 0.0
    return int(rng.choice(states, p=weights / weights.sum()))


def _smooth_noise(rng: np.random.Generator, n: int, halflife: float) -> np.ndarray:
    """Stationary AR(1)-like unit-variance noise (an exponential filter of white noise)."""
    alpha = 1.0 - 0.5 ** (1.0 / halflife)
    white = rng.standard_normal(n)
    stationary_std = np.sqrt(alpha / (2.0 - alpha))
    white[0] *= stationary_std  # start the filter in its stationary distribution
    smooth = pd.Series(white).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return smooth / stationary_std


def _intraday(index: pd.DatetimeIndex, amplitude: float) -> np.ndarray:
    """Activity by UTC hour: mean 1, peak at 15:00 (Europe/US overlap), trough at 03:00."""
    hours = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    return 1.0 + amplitude * np.cos(2.0 * np.pi * (hours - 15.0) / 24.0)


def _regime_path(
    rng: np.random.Generator,
    shocks: np.ndarray,
    drift: float,
    mean_bars: float,
    min_bars: int,
    pull: float,
    flat_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(regime [n] in {-1, 0, 1}, log returns [n]): the regime's drift plus shocks.

    Sequential per regime (a few dozen a year), because the next regime depends on the
    price the previous ones produced.
    """
    n = len(shocks)
    regime = np.zeros(n, dtype=np.int64)
    returns = np.empty(n, dtype=np.float64)
    durations = _regime_durations(rng, mean_bars, min_bars)
    state, pos, log_ratio, k = _next_regime(rng, 2, 0.0, pull), 0, 0.0, 0
    while pos < n:
        if k == len(durations):
            durations, k = _regime_durations(rng, mean_bars, min_bars), 0
        stop = min(n, pos + int(durations[k]))
        regime[pos:stop] = state
        returns[pos:stop] = drift * state + shocks[pos:stop] * (flat_scale if state == 0 else 1.0)
        log_ratio += float(returns[pos:stop].sum())
        state, pos, k = _next_regime(rng, state, log_ratio, pull), stop, k + 1
    return regime, returns


def synthetic_candles(
    n: int = 105_120,
    seed: int = 0,
    *,
    freq: str = "5min",
    start: str = "2023-01-01",
    with_regime: bool = False,
    start_price: float = 30_000.0,
    bar_vol: float = 0.0015,
    trend_drift: float = 1e-4,
    mean_regime_bars: float = 1_440.0,
    min_regime_bars: int = 144,
    anchor_pull: float = 2.0,
    flat_vol_scale: float = 0.8,
    vol_of_vol: float = 0.35,
    vol_halflife_bars: float = 288.0,
    intraday_amplitude: float = 0.3,
    tail_df: float = 4.0,
    wick_scale: float = 0.5,
    base_volume: float = 120.0,
    volume_vol_elasticity: float = 1.5,
) -> pd.DataFrame:
    """The project's built-in market: regime-switching BTC-like candles, seeded, no downloads.

    Why: tests, examples and smoke training need data with KNOWN, learnable structure. The
    market alternates persistent up / flat / down trend regimes lasting days; a rule that
    knows the regime earns a clearly positive return after 0.1% fees, a coin flip loses, so
    a learner that beats the coin flip has found something real.

    Model, per bar t: log return r_t = trend_drift * regime_t + sigma_t * eps_t with eps_t
    Student-t (unit variance), sigma_t = bar_vol * intraday(hour) * exp(stochastic vol)
    (* flat_vol_scale in flat regimes). open_t = close_{t-1}; high/low extend beyond the
    body by half-normal wicks; volume grows with intraday activity, sigma_t and |eps_t|.
    Regimes last a gamma(2)-distributed number of bars; the next one is any other state,
    up/down weighted against the log-distance from start_price.

    Args:
        n: number of bars; default one year of 5-minute bars (105,120).
        seed: numpy Generator seed; the same seed gives the same frame.
        freq: bar spacing of the index (default "5min"); the dynamics are per bar.
        start: open time of the first bar, UTC (default "2023-01-01").
        with_regime: add an int64 column "regime" (-1 down, 0 flat, +1 up): the ground truth
            that a learned policy can be compared with.
        start_price: first open and the anchor level the regimes lean back to (default
            30,000, BTC-like).
        bar_vol: base per-bar log-return std (default 0.0015 = 0.15%, BTC 5-minute scale).
        trend_drift: per-bar log drift in up (+) and down (-) regimes (default 1e-4: about
            +-14% over a 5-day regime, under 7% of sigma per bar, so the trend is hidden in
            single bars but visible over a 492-bar window, where it is ~1.5 noise std).
        mean_regime_bars: mean regime length in bars (default 1,440 = 5 days of 5-min bars).
        min_regime_bars: shortest regime (default 144 = 12 h), so that trading on a regime
            can pay for the fees of switching into it.
        anchor_pull: how strongly the next regime leans back toward start_price: up/down
            weights exp(-/+ anchor_pull * log(price / start_price)) (default 2.0: at +50%
            a down regime is ~5x likelier than an up one; a year stayed within 13k..78k
            over seeds 0-19, BTC-like, instead of a random walk of trends).
        flat_vol_scale: volatility multiplier in flat regimes (default 0.8; quiet ranges).
        vol_of_vol: std of the log of the stochastic volatility factor (default 0.35:
            volatility clustering, calm and busy days).
        vol_halflife_bars: persistence of the volatility factor (default 288 = one day).
        intraday_amplitude: strength of the daily activity cycle for volatility and volume
            (default 0.3: +-30% around the mean, peak 15:00 UTC).
        tail_df: Student-t degrees of freedom of the shocks (default 4: fat tails like
            crypto returns; must be > 2).
        wick_scale: wick length in units of sigma_t (default 0.5: high/low range ~0.2% as on
            BTC 5-minute bars).
        base_volume: mean volume per bar in base units (default 120 BTC per 5 minutes).
        volume_vol_elasticity: volume ~ (sigma_t / bar_vol) ** elasticity (default 1.5:
            volume and volatility move together as on real exchanges).

    Returns:
        A frame in the load_candles format (plus "regime" if asked); prices rounded to 0.01,
        volume to 1e-5.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one bar")
    if tail_df <= 2:
        raise ValueError(f"tail_df={tail_df}: must be > 2 for a finite variance")
    rng = np.random.default_rng(seed)
    index = pd.date_range(utc(start), periods=n, freq=freq, name="timestamp").as_unit("ns")
    activity = _intraday(index, intraday_amplitude)
    stoch = np.exp(vol_of_vol * _smooth_noise(rng, n, vol_halflife_bars) - vol_of_vol**2 / 2)
    eps = rng.standard_t(tail_df, size=n) * np.sqrt((tail_df - 2.0) / tail_df)
    sigma = bar_vol * activity * stoch
    regime, returns = _regime_path(
        rng,
        sigma * eps,
        trend_drift,
        mean_regime_bars,
        min_regime_bars,
        anchor_pull,
        flat_vol_scale,
    )
    sigma = sigma * np.where(regime == 0, flat_vol_scale, 1.0)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[start_price], close[:-1]])
    wicks = wick_scale * sigma[:, None] * np.abs(rng.standard_normal((n, 2)))
    high = np.maximum(open_, close) * np.exp(wicks[:, 0])
    low = np.minimum(open_, close) * np.exp(-wicks[:, 1])
    volume = (
        base_volume
        * activity
        * (sigma / bar_vol) ** volume_vol_elasticity
        * (0.5 + 0.5 * np.abs(eps))
        * rng.lognormal(-0.125, 0.5, size=n)
    )
    frame = pd.DataFrame(
        {
            "open": np.round(open_, 2),
            "high": np.round(high, 2),
            "low": np.round(low, 2),
            "close": np.round(close, 2),
            "volume": np.round(volume, 5),
        },
        index=index,
    )
    if with_regime:
        frame["regime"] = regime
    return frame
