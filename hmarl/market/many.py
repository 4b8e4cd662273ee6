"""Several markets in one training run (``data.paths``): each its own market, stacked by rows.

Why stacked rows and not one series: a market's features, windows and scaler are built from
its own candles only (:func:`hmarl.market.specialist_data.market_for_model`, one cache entry
per market), so no window, feature or return ever spans two markets. The markets' row arrays
are then laid one after another in one :class:`~hmarl.market.market_data.MarketData` (the
*stacked* market) so that the rollout, the lazy MacroNet cache and the REINFORCE update read
one tensor as for a single market; every episode's rows lie inside one market's train split
(:func:`hmarl.agent.rollout.sample_market_starts`), and validation runs each market's own split.

Scalers: one per market, fitted on that market's own train split. Why not pooled: the
markets' features differ in scale (volume and traded value by orders of magnitude between a
thin and a deep market, volatility by several times), so a pooled z-score would leave the
thin market's inputs near a constant and let the deep one set the scale; per market, each
input reads "unusual for this market", the signal that can transfer. The cost: a checkpoint
can only act on the markets it was trained on (their scalers are in its feature spec), or on
a market the user gives under one of their names.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmarl.config import DataConfig
from hmarl.market.market_data import MarketData

MARKETS_KEY = "markets"  # a many-market checkpoint's feature_spec entry: one dict per market


class MarketsError(ValueError):
    """``data.paths`` that cannot be trained on as asked (exit 2): names the market and the fix."""


def market_paths(patterns: Sequence[str]) -> list[str]:
    """Each file (or each file a glob matches) of ``data.paths``: one market each, in order.

    A pattern that names no file is refused by name (a typo would otherwise drop a market).
    """
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not found:
            raise MarketsError(
                f"data.paths: {pattern!r} matches no file; check the path (globs such as "
                "data/*.csv are expanded here, quoted so the shell leaves them)"
            )
        paths.extend(p for p in found if p not in paths)
    return paths


def market_name(path: str | None) -> str:
    """A market's label in tables: its file name without the extension (``synthetic``)."""
    return Path(path).stem if path else "synthetic"


def named_paths(patterns: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, path)`` of every market of ``data.paths``; two files of one name are refused."""
    out: list[tuple[str, str]] = []
    for path in market_paths(patterns):
        name = market_name(path)
        if any(name == n for n, _ in out):
            raise MarketsError(f"data.paths: two markets are named {name!r}; rename one file")
        out.append((name, path))
    return out


@dataclass
class Part:
    """One market of a stacked run: its own market, and where its rows start in the stack."""

    name: str
    path: str
    offset: int
    market: MarketData

    def rows(self, split: str) -> tuple[int, int]:
        """Decision rows ``[lo, hi)`` of one of this market's splits, in stacked rows."""
        lo, hi = self.market.splits[split]
        return lo + self.offset, hi + self.offset

    def spec(self) -> dict[str, Any]:
        """What a checkpoint keeps of this market: enough to rebuild its inputs by name."""
        return {
            "name": self.name,
            "path": self.path,
            "scalers": self.market.scalers,
            "fingerprint": self.market.fingerprint,
            "splits": {k: list(v) for k, v in self.market.splits.items()},
        }


@dataclass
class Markets:
    """The markets of one run and their stacked rows (see the module docstring)."""

    parts: list[Part]
    stacked: MarketData

    def ranges(self, split: str) -> dict[str, tuple[int, int]]:
        """Each market's decision rows of ``split``, in stacked rows, by name."""
        return {p.name: p.rows(split) for p in self.parts}

    def feature_spec(self) -> dict[str, Any]:
        """The checkpoint's feature spec: the shared inputs, and each market's own scalers
        (``scalers`` at the top is empty: no single scaler fits every market)."""
        return {**self.stacked.feature_spec(), MARKETS_KEY: [p.spec() for p in self.parts]}


def load_markets(data: DataConfig, build: Callable[[DataConfig], MarketData]) -> Markets:
    """Every market of ``data.paths``, each built on its own by ``build`` (its features,
    windows and scaler from its own file: the trainer's one-market loader), then stacked.
    A market that cannot give the windows is refused by name."""
    parts: list[Part] = []
    offset = 0
    for name, path in named_paths(data.paths):
        try:
            market = build(replace(data, path=path, paths=[]))
        except MarketsError:
            raise
        except ValueError as exc:
            raise MarketsError(f"market {name} ({path}): {exc}") from exc
        parts.append(Part(name, path, offset, market))
        offset += len(market.index)
    if len(parts) < 2:
        raise MarketsError(
            f"data.paths={list(data.paths)} names {len(parts)} market: one market is "
            "data.path=<file>; give several files or a glob matching several"
        )
    spacings = {p.name: p.market.bar_seconds for p in parts}
    if len(set(spacings.values())) > 1:
        raise MarketsError(
            f"data.paths: the markets' bars differ in length ({spacings} seconds): the windows "
            "are counted in bars, so one policy needs one bar length; resample them all "
            "(data.resample=5min)"
        )
    return Markets(parts, stack([p.market for p in parts], [p.name for p in parts]))


def stack(markets: Sequence[MarketData], names: Sequence[str]) -> MarketData:
    """The markets' rows one after another (copied into memory), splits left empty: a stacked
    market has no split of its own, only its parts' (:meth:`Part.rows`)."""
    first = markets[0]
    digest = hashlib.sha256()
    for name, m in zip(names, markets, strict=True):
        digest.update(f"{name}:{m.fingerprint};".encode())
    index = pd.DatetimeIndex(np.concatenate([m.index.as_unit("ns").asi8 for m in markets]))
    return MarketData(
        index=index.tz_localize("UTC"),
        close=np.concatenate([m.close for m in markets]),
        returns=np.concatenate([m.returns for m in markets]),
        macro=np.concatenate([np.asarray(m.macro) for m in markets]),
        micro=np.concatenate([np.asarray(m.micro) for m in markets]),
        splits={},
        feature_names=list(first.feature_names),
        macro_window=first.macro_window,
        micro_window=first.micro_window,
        scalers={},
        fingerprint=digest.hexdigest(),
        meta={"markets": list(names)},
        specialists=list(first.specialists),
    )


def check_episode_fits(markets: Markets, length: int) -> None:
    """Refuse, by name, a market whose train split cannot hold one episode (before training)."""
    for part in markets.parts:
        lo, hi = part.market.splits["train"]
        if hi - lo < length:
            raise MarketsError(
                f"market {part.name} ({part.path}): its train split has {hi - lo} decision rows, "
                f"fewer than trainer.episode_len={length}; use a longer file for this market, "
                "drop it from data.paths, or lower trainer.episode_len"
            )
