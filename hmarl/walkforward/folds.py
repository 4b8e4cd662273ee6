"""Fold arithmetic: train / validation / test row ranges of each fold, and the refusals.

Why rows first and dates second: the lengths are counted on the market's own bars, and each
fold then becomes a training config by dates (``data.start``, ``data.val_start``,
``data.test_start``, ``data.end``), so the fold's splits are cut by the one split rule
(:func:`hmarl.data.splits.chronological_split`, through ``data.val_start`` / ``test_start``)
that every training run uses: a fold trains exactly as ``python -m hmarl.train`` with those
four keys would.

Every refusal here is a ``ValueError`` (exit 2) raised before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from hmarl.config import DataConfig
from hmarl.walkforward.schema import Unit, WalkForwardConfig, WindowMode

DAY_SECONDS = 86_400.0
MIN_SEGMENT = 3  # bars of a validation or test segment: two decisions and the bar after


class WalkForwardError(ValueError):
    """A walk-forward that cannot run as asked (exit 2): says what, where, and what to do."""


@dataclass(frozen=True)
class Fold:
    """One fold's candle rows, half-open, in the market's row numbers."""

    number: int
    start: int  # first training candle (the windows' warm-up is taken from here)
    val_start: int
    test_start: int
    end: int  # one past the last test candle

    @property
    def name(self) -> str:
        return f"fold_{self.number:02d}"


@dataclass(frozen=True)
class Lengths:
    """A walk-forward's lengths in bars of one market."""

    train: int
    val: int
    test: int
    step: int


def bar_lengths(wf: WalkForwardConfig, bar_seconds: float) -> Lengths:
    """The configured lengths in bars: as given, or days times the bars a day holds."""
    per = DAY_SECONDS / bar_seconds if wf.unit == Unit.days else 1.0
    step = wf.test if wf.step is None else wf.step
    train, val, test, step_bars = (round(x * per) for x in (wf.train, wf.val, wf.test, step))
    return Lengths(train, val, test, step_bars)


def plan_folds(
    n_bars: int,
    lengths: Lengths,
    mode: WindowMode,
    *,
    wanted: int | None = None,
    min_train: int = 0,
    market: str = "the market",
) -> list[Fold]:
    """The folds that fit in ``n_bars``: fold k starts its test ``k * step`` bars after fold 0's.

    Rolling: each fold trains on the ``train`` bars before its validation. Expanding: every
    fold trains from bar 0, so fold k's training is ``train + k * step`` bars. Refused (with
    the fix): empty lengths, a step shorter than the test (overlapping test segments would
    count bars twice in the stitched record), training shorter than ``min_train`` (the windows
    and features need that many candles), no fold or fewer folds than ``wanted``.
    """
    where = f"walkforward on {market}"
    for key in ("train", "val", "test", "step"):
        if getattr(lengths, key) < 1:
            raise WalkForwardError(
                f"{where}: walkforward.{key} is {getattr(lengths, key)} bars (empty folds); "
                "give every length at least one bar"
            )
    for key in ("val", "test"):
        if getattr(lengths, key) < MIN_SEGMENT:
            raise WalkForwardError(
                f"{where}: walkforward.{key} is {getattr(lengths, key)} bars; a segment needs at "
                f"least {MIN_SEGMENT} (two decisions and the bar after); lengthen it"
            )
    if lengths.step < lengths.test:
        raise WalkForwardError(
            f"{where}: walkforward.step ({lengths.step} bars) is shorter than walkforward.test "
            f"({lengths.test} bars), so test segments overlap and the stitched record would "
            "count bars twice; set walkforward.step >= walkforward.test (or leave it unset)"
        )
    if lengths.train < min_train:
        raise WalkForwardError(
            f"{where}: walkforward.train is {lengths.train} bars, shorter than the {min_train} "
            "candles the windows and features need (hmarl.market.market_data.candles_needed); "
            "lengthen walkforward.train or shorten features.macro_window"
        )
    span = lengths.train + lengths.val + lengths.test
    fit = 0 if n_bars < span else (n_bars - span) // lengths.step + 1
    if fit == 0 or (wanted is not None and fit < wanted):
        asked = f"{wanted} folds asked" if wanted is not None else "at least one fold asked"
        raise WalkForwardError(
            f"{where}: {n_bars} bars hold {fit} fold(s) of train {lengths.train} + val "
            f"{lengths.val} + test {lengths.test} bars every {lengths.step} ({asked}); "
            "shorten the lengths or walkforward.step, lower walkforward.folds, or use more data"
        )
    count = fit if wanted is None else wanted
    folds = []
    for k in range(count):
        val_start = lengths.train + k * lengths.step
        start = 0 if mode == WindowMode.expanding else val_start - lengths.train
        test_start = val_start + lengths.val
        folds.append(Fold(k, start, val_start, test_start, test_start + lengths.test))
    return folds


def fold_data(
    data: DataConfig, index: pd.DatetimeIndex, fold: Fold, path: str | None
) -> DataConfig:
    """The fold as a training run's data config: the market's file and the fold's dates.

    ``data.end`` is exclusive, so it is the first bar after the fold (one bar spacing after
    the market's last bar when the fold reaches it).
    """
    if fold.end < len(index):
        end = index[fold.end]
    else:
        end = index[-1] + (index[-1] - index[-2])
    return replace(
        data,
        path=path,
        paths=[],
        start=index[fold.start].isoformat(),
        val_start=index[fold.val_start].isoformat(),
        test_start=index[fold.test_start].isoformat(),
        end=end.isoformat(),
    )
