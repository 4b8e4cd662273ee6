"""Kept for old imports only: the market's tensors now live in :mod:`hmarl.market`."""

from __future__ import annotations

from hmarl.market import (
    CACHE_FORMAT,
    MarketData,
    build_market,
    cache_key,
    cached_market,
    candles_needed,
    decision_splits,
    load_market_candles,
    market_for_config,
    resolve_feature_names,
)

__all__ = [
    "CACHE_FORMAT",
    "MarketData",
    "build_market",
    "cache_key",
    "cached_market",
    "candles_needed",
    "decision_splits",
    "load_market_candles",
    "market_for_config",
    "resolve_feature_names",
]
