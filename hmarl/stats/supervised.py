"""The supervised baseline: a LightGBM classifier of the next move, on the policy's own features.

Why: the first question about any RL trader is whether it beats a plain classifier fed the
same inputs. And the user's earlier direction classifier scored "100% accuracy" because 99%
of its labels were neutral, so this one is built to be honest about class balance:

- **Labels**: the sign of the next-``h``-bar return ``close[t+h] / close[t] - 1`` beyond a cost
  band ``b`` = one round trip's cost ``2 * (commission + slippage)``: down (< -b), neutral, up
  (> b). A move that does not pay for its trade is neutral.
- **Inputs**: the market's window features at t (``macro[t]`` and ``micro[t]``: the causal,
  train-scaled inputs the policy sees), as numpy arrays; no torch.
- **Fit**: on the train split only, on rows whose labels' closes lie inside it too
  (``t + max h`` <= the split's last row; at most ``max_train_rows`` of them, evenly spaced
  over the split, so memory and time stay bounded on markets of many millions of rows),
  with balanced class weights (``n / (3 n_k)``: the labels
  are imbalanced), LightGBM seeded, ``deterministic=True``, one thread.
- **Choice**: ``h`` and the probability threshold on the validation split, by Sharpe after
  costs over a small grid (:data:`HORIZONS` x :data:`THRESHOLDS`; first in grid order on ties),
  as the momentum lookback and the policy's checkpoint are chosen.
- **Positions**: long ``max_position`` while P(up) >= threshold and P(up) > P(down), short
  (flat without shorting) while P(down) >= threshold and P(down) > P(up), flat otherwise;
  settled by :func:`hmarl.market.env.settle` with the strategy's costs and fill rule
  (:func:`hmarl.stats.baselines.settled_frame`).
- **Its own scores** per split: accuracy and balanced accuracy (mean recall over the classes
  present) of the most probable class, and the shares of each class in the labels and in the
  predictions, so "accurate because always neutral" shows.

LightGBM is an optional import (:func:`available`): without it the backtest has no
``supervised`` column and says why.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from hmarl.market.market_data import release_rows
from hmarl.stats.baselines import momentum_band, settled_frame
from hmarl.stats.metrics import CRYPTO, Calendar, compute_stats

if TYPE_CHECKING:
    import pandas as pd

    from hmarl.market.env import EnvParams
    from hmarl.market.market_data import MarketData

NAME = "supervised"  # the run's name in stats.json, beside buy_and_hold, flat, momentum
CLASSES = ("down", "neutral", "up")  # label codes 0, 1, 2
DOWN, NEUTRAL, UP = 0, 1, 2
HORIZONS = (1, 3, 12)  # bars ahead tried on validation (5-minute bars: 5 min, 15 min, 1 h)
THRESHOLDS = (0.4, 0.5, 0.6)  # probability thresholds tried on validation
DEFINITION = (
    "LightGBM classifier of the next-h-bar return beyond one round trip's cost (down / neutral / "
    "up, balanced class weights) on the policy's window features, fit on the train split only; "
    "long while P(up) >= threshold, short (flat without shorting) while P(down) >= threshold, "
    "flat otherwise; h and the threshold chosen on the validation split by Sharpe after costs"
)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SupervisedParams:
    """The grid tried on validation and LightGBM's settings (``baselines.supervised``).

    Why these settings: one thread on a shared 2-core machine, so the fit must stay cheap
    (binning at 63 levels, half the rows and half the features per tree are LightGBM's usual
    speed settings; the seed makes the sampling reproducible).
    """

    horizons: tuple[int, ...] = HORIZONS
    thresholds: tuple[float, ...] = THRESHOLDS
    n_estimators: int = 100  # boosting rounds
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_child_samples: int = 50  # rows per leaf at least: few, noisy labels overfit fast
    max_bin: int = 63  # histogram bins per feature
    subsample: float = 0.5  # share of rows per tree (bagging every round)
    colsample: float = 0.5  # share of features per tree
    max_train_rows: int = 500_000  # fit rows at most, evenly spaced over the train split
    seed: int = 0


@dataclass
class Choice:
    """The classifier chosen on validation, and how it was chosen."""

    horizon: int
    threshold: float
    band: float
    model: Any  # lightgbm.Booster
    val_sharpe: dict[str, float] = field(default_factory=dict)  # "h=3 threshold=0.5" -> Sharpe


def available() -> bool:
    """Whether LightGBM can be imported (the baseline is skipped, and says so, without it)."""
    return importlib.util.find_spec("lightgbm") is not None


PREDICT_BLOCK_ROWS = 262_144
"""Rows whose features are gathered at once to predict: bounded memory on long splits."""


def features(market: MarketData, rows: IntArray) -> npt.NDArray[np.float32]:
    """The policy's inputs at decision rows ``rows``: ``[macro | micro]`` window features.

    The gathered rows are a copy; the cache pages they were read from are released again
    (:func:`hmarl.market.market_data.release_rows`), so a pass over a long market does not keep
    the whole memory-mapped cache in this process's memory."""
    out = np.concatenate([market.macro[rows], market.micro[rows]], axis=1)
    if rows.size:
        for windows in (market.macro, market.micro):
            release_rows(windows, int(rows.min()), int(rows.max()) + 1)
    return out


def labels(close: FloatArray, rows: IntArray, horizon: int, band: float) -> IntArray:
    """Class of the next-``horizon``-bar return at each row: DOWN, NEUTRAL or UP."""
    forward = close[rows + horizon] / close[rows] - 1.0
    return np.where(forward > band, UP, np.where(forward < -band, DOWN, NEUTRAL)).astype(np.int64)


def labelled_rows(market: MarketData, split: str, horizon: int, at_most: int = 0) -> IntArray:
    """Decision rows of ``split`` whose label reads closes inside the split only; with
    ``at_most`` > 0 and more rows than that, ``at_most`` of them evenly spaced (first and last
    kept), so every period of the split is represented."""
    lo, hi = market.splits[split]
    rows = np.arange(lo, max(lo, hi - horizon), dtype=np.int64)
    if 0 < at_most < rows.size:
        rows = rows[np.unique(np.linspace(0, rows.size - 1, at_most).round().astype(np.int64))]
    return rows


def class_weights(y: IntArray) -> FloatArray:
    """Balanced weights ``n / (k n_c)`` over the ``k`` classes present (sklearn's rule)."""
    counts = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    per_class = np.where(present, y.size / (present.sum() * np.maximum(counts, 1.0)), 0.0)
    return per_class[y]


def fit(
    market: MarketData, horizons: Sequence[int], band: float, params: SupervisedParams
) -> dict[int, Any]:
    """One LightGBM booster per horizon on the train split's rows only (module docstring).

    The rows are those whose label for the longest horizon still lies inside the train split,
    the same rows for every horizon, so the features are binned once and only the labels and
    weights change between fits.
    """
    import lightgbm

    rows = labelled_rows(market, "train", max(horizons), params.max_train_rows)
    if rows.size == 0:
        raise ValueError(f"the train split has no rows with a {max(horizons)}-bar label")
    data = lightgbm.Dataset(
        features(market, rows), params={"max_bin": params.max_bin, "verbosity": -1}
    )
    settings = {
        "objective": "multiclass",
        "num_class": len(CLASSES),
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_child_samples,
        "max_bin": params.max_bin,
        "bagging_fraction": params.subsample,
        "bagging_freq": 1 if params.subsample < 1.0 else 0,
        "feature_fraction": params.colsample,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }
    models = {}
    for h in horizons:
        y = labels(market.close, rows, int(h), band)
        data.set_label(y)
        data.set_weight(class_weights(y))
        models[int(h)] = lightgbm.train(settings, data, num_boost_round=params.n_estimators)
    return models


def probabilities(model: Any, market: MarketData, rows: IntArray) -> FloatArray:
    """``[n, 3]`` class probabilities (down, neutral, up) at decision rows ``rows``."""
    out = np.zeros((rows.size, len(CLASSES)), dtype=np.float64)
    for a in range(0, rows.size, PREDICT_BLOCK_ROWS):  # the features of a block at a time
        block = rows[a : a + PREDICT_BLOCK_ROWS]
        out[a : a + block.size] = model.predict(features(market, block))
    return out


def positions(probs: FloatArray, threshold: float, env: EnvParams) -> FloatArray:
    """Long / short / flat from class probabilities (module docstring: "Positions")."""
    up, down = probs[:, UP], probs[:, DOWN]
    short = -env.max_position if env.allow_short else 0.0
    long_ = (up >= threshold) & (up > down)
    short_ = (down >= threshold) & (down > up)
    return np.where(long_, env.max_position, np.where(short_, short, 0.0))


def choose(
    market: MarketData,
    env: EnvParams,
    params: SupervisedParams = SupervisedParams(),
    calendar: Calendar = CRYPTO,
) -> Choice:
    """Fit one classifier per horizon on train; keep the (h, threshold) of best val Sharpe.

    A Sharpe that is undefined (a flat run: no variance) ranks below any number.
    """
    if not params.horizons or not params.thresholds:
        raise ValueError("the supervised baseline's horizon and threshold grids must not be empty")
    band = momentum_band(env)  # one round trip's cost
    lo, hi = market.splits["val"]
    val_rows = np.arange(lo, hi, dtype=np.int64)
    best: Choice | None = None
    best_score = -math.inf
    grid: dict[str, float] = {}
    for h, model in fit(market, params.horizons, band, params).items():
        probs = probabilities(model, market, val_rows)
        for threshold in params.thresholds:
            frame = settled_frame(market, lo, hi, positions(probs, threshold, env), env)
            sharpe = float(compute_stats(frame, calendar=calendar, n_bootstrap=0)["Sharpe Ratio"])
            grid[f"h={h} threshold={threshold:g}"] = sharpe
            score = sharpe if math.isfinite(sharpe) else -math.inf
            if best is None or score > best_score:
                best, best_score = Choice(h, float(threshold), band, model), score
    assert best is not None
    best.val_sharpe = grid
    return best


def supervised_steps(
    choice: Choice, market: MarketData, lo: int, hi: int, env: EnvParams
) -> pd.DataFrame:
    """The chosen classifier's steps frame over decision rows [lo, hi), settled with ``env``."""
    probs = probabilities(choice.model, market, np.arange(lo, hi, dtype=np.int64))
    return settled_frame(market, lo, hi, positions(probs, choice.threshold, env), env)


def scores(choice: Choice, market: MarketData) -> dict[str, dict[str, Any]]:
    """Per split: rows, accuracy, balanced accuracy and class shares (labels, predictions).

    On the chosen horizon's labels, each split's rows labelled from its own closes only.
    """
    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        rows = labelled_rows(market, split, choice.horizon)
        y = labels(market.close, rows, choice.horizon, choice.band)
        predicted = probabilities(choice.model, market, rows).argmax(axis=1)
        out[split] = {
            "rows": int(rows.size),
            "accuracy": float((predicted == y).mean()) if rows.size else math.nan,
            "balanced_accuracy": balanced_accuracy(y, predicted),
            "label_shares": shares(y),
            "predicted_shares": shares(predicted),
        }
    return out


def balanced_accuracy(y: IntArray, predicted: IntArray) -> float:
    """Mean recall over the classes present in ``y`` (NaN without rows)."""
    recalls = [
        float((predicted[y == k] == k).mean()) for k in range(len(CLASSES)) if (y == k).any()
    ]
    return float(np.mean(recalls)) if recalls else math.nan


def shares(codes: IntArray) -> dict[str, float]:
    """Share of each class among ``codes`` (NaN without rows)."""
    n = codes.size
    counts = np.bincount(codes, minlength=len(CLASSES))
    return {name: float(counts[k] / n) if n else math.nan for k, name in enumerate(CLASSES)}


def describe(choice: Choice, market: MarketData, rows: tuple[int, int]) -> dict[str, Any]:
    """stats.json's ``supervised`` entry: the rule, the choice, the grid and the scores."""
    lo, hi = rows
    t_lo, _ = market.splits["train"]
    _, v_hi = market.splits["val"]
    return {
        "definition": DEFINITION,
        "horizon_bars": choice.horizon,
        "threshold": choice.threshold,
        "band": choice.band,
        "chosen_on": "val split, best Sharpe after costs",
        "fit_on": "train split (labels from train closes only)",
        "val_sharpe_by_choice": choice.val_sharpe,
        # the reported bars overlap those it was fit or chosen on
        "in_sample": lo < v_hi and t_lo < hi,
        "scores": scores(choice, market),
    }


def summary_lines(info: dict[str, Any]) -> list[str]:
    """The report's lines on the classifier (console summary and report.html alike)."""
    if "skipped" in info:
        return [f"supervised baseline: skipped ({info['skipped']})"]
    lines = [
        f"supervised baseline (LightGBM): horizon {info['horizon_bars']} bars, threshold "
        f"{info['threshold']:g}, band {info['band']:.4g} ({info['chosen_on']}; {info['fit_on']})"
    ]
    for split, s in info["scores"].items():
        labels_ = "/".join(f"{s['label_shares'][c]:.0%}" for c in CLASSES)
        predicted = "/".join(f"{s['predicted_shares'][c]:.0%}" for c in CLASSES)
        lines.append(
            f"  {split}: accuracy {s['accuracy']:.3f}, balanced accuracy "
            f"{s['balanced_accuracy']:.3f} ({s['rows']} rows); down/neutral/up labels "
            f"{labels_}, predicted {predicted}"
        )
    return lines
