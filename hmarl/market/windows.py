"""Per-timestep window summaries (mean | std | last) and the train-split scaler.

MacroNet and MicroNet see each feature reduced over a trailing window to three numbers.
Computing them with prefix sums costs O(T*N) whatever the window (492 or 60), instead of
O(T*N*window) for a per-t loop.

Conventions:
- row t summarises rows ``t - window + 1 .. t`` inclusive (the decision at the close of t
  sees bar t, never t + 1); rows ``t < window - 1`` are NaN;
- std is the population std (ddof=0): the window is the whole sample being described;
- a column's three statistics at t are NaN when its window holds a non-finite value, so a
  row is all-finite exactly when every column's window is clean (no value is ever filled);
- for stability each column is shifted by its first finite value before the sums: a
  causal shift, unlike the column mean, which would let future rows change past values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-8
"""Scaler columns with a train std below this get std 1.0 (constant columns pass centred)."""


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    """View ``x`` as a float64 [T, N] matrix or say why it cannot be one."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [T, N], got shape {arr.shape}")
    return arr


def _prefix(x: np.ndarray) -> np.ndarray:
    """Prefix sums with a zero first row: ``p[b] - p[a]`` is the sum of rows ``a .. b-1``."""
    out = np.zeros((x.shape[0] + 1, x.shape[1]), dtype=np.float64)
    np.cumsum(x, axis=0, out=out[1:])
    return out


def _window_sums(p: np.ndarray, window: int) -> np.ndarray:
    """Sums over rows ``t - window + 1 .. t`` for each t >= window - 1."""
    return p[window:] - p[:-window]


def window_stats(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window [mean | std | last] of each column: [T, N] -> float32 [T, 3N].

    Sums run in float64 on values shifted by each column's first finite value; the variance
    ``E[z^2] - E[z]^2`` has rounding-level negatives clamped to 0. Accuracy falls for a
    column that drifts far from its first value relative to its window std, so feed
    roughly stationary features (returns, oscillators), not raw prices.
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    arr = _as_matrix(x, "x")
    n_rows, n_cols = arr.shape
    out = np.full((n_rows, 3 * n_cols), np.nan, dtype=np.float32)
    if n_rows < window:
        return out
    finite = np.isfinite(arr)
    first = np.argmax(finite, axis=0)  # first finite row per column (0 when none)
    shift = np.where(finite.any(axis=0), arr[first, np.arange(n_cols)], 0.0)
    z = np.where(finite, arr - shift, 0.0)
    dirty = _window_sums(_prefix((~finite).astype(np.float64)), window) > 0
    mean = _window_sums(_prefix(z), window) / window
    var = _window_sums(_prefix(np.square(z, out=z)), window) / window - np.square(mean)
    valid = out[window - 1 :]
    valid[:, 2 * n_cols :] = arr[window - 1 :]
    valid[:, n_cols : 2 * n_cols] = np.sqrt(np.maximum(var, 0.0, out=var), out=var)
    valid[:, :n_cols] = np.add(mean, shift, out=mean)
    for block in range(3):
        valid[:, block * n_cols : (block + 1) * n_cols][dirty] = np.nan
    return out


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-column z-score fitted on the train rows only and kept for inference.

    Fitting on all rows would leak the validation and test distribution into training;
    saving the statistics in the checkpoint makes backtests scale exactly like training.
    """

    mean: np.ndarray  # [C] float64
    std: np.ndarray  # [C] float64, > 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(f"scaler mean {mean.shape} and std {std.shape} must be equal 1-D")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("scaler mean must be finite and std finite and > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def fit(cls, x: np.ndarray, rows: tuple[int, int]) -> Scaler:
        """Fit on rows ``[start, stop)`` (half-open, like a slice), skipping rows with NaN.

        Uses the population std (ddof=0); a column whose std is below ``STD_FLOOR`` gets
        std 1.0 so that a constant feature maps to 0 instead of dividing by zero.
        """
        arr = _as_matrix(x, "scaler input")
        start, stop = rows
        if not 0 <= start < stop <= arr.shape[0]:
            raise ValueError(f"scaler rows [{start}, {stop}) outside [0, {arr.shape[0]})")
        part = arr[start:stop]
        part = part[np.isfinite(part).all(axis=1)]
        if part.shape[0] == 0:
            raise ValueError(f"scaler rows [{start}, {stop}) hold no all-finite row")
        std = part.std(axis=0)
        return cls(part.mean(axis=0), np.where(std < STD_FLOOR, 1.0, std))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as float32 over the last axis; NaN stays NaN."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"scaler fitted on {self.mean.shape[0]} columns, input has shape {arr.shape}"
            )
        return ((arr - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, so checkpoints load with ``torch.load(weights_only=True)``."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Scaler:
        """Inverse of ``to_dict``; a missing key is an error, not a silent identity scaler."""
        missing = {"mean", "std"} - set(d)
        if missing:
            raise ValueError(f"scaler dict lacks keys {sorted(missing)}; has {sorted(d)}")
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))
