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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


CHUNK_ROWS = 1 << 16
"""Rows per block of :func:`window_blocks`: memory O(CHUNK_ROWS * N) whatever the market's T."""


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")


def window_blocks(
    x: np.ndarray, window: int, chunk: int = CHUNK_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`window_stats` in row blocks: yields ``(start, float32 [rows, 3N])`` in order.

    Why blocks: a market of millions of rows would otherwise hold several float64 [T, N]
    temporaries (prefix sums of values, squares and NaN counts) at once. The prefix sums are
    carried from block to block (a cumulative sum continued from the previous block's last
    row adds in the same order as one over all rows), so every value is bit-identical to a
    single pass, whatever ``chunk``.
    """
    _check_window(window)
    arr = _as_matrix(x, "x")
    n_rows, n_cols = arr.shape
    chunk = max(int(chunk), 1)
    finite_cols = np.zeros(n_cols, dtype=bool)
    shift = np.zeros(n_cols, dtype=np.float64)
    for start in range(0, n_rows, chunk):  # each column's first finite value (see module doc)
        block = np.isfinite(arr[start : start + chunk])
        new = block.any(axis=0) & ~finite_cols
        if new.any():
            rows = np.argmax(block[:, new], axis=0) + start
            shift[new] = arr[rows, np.flatnonzero(new)]
            finite_cols |= new
        if finite_cols.all():
            break
    # prefix rows p[t+1-window .. t] of (z, z^2, non-finite) carried into the next block
    hist = np.zeros((window, 3 * n_cols), dtype=np.float64)
    for start in range(0, n_rows, chunk):
        part = arr[start : start + chunk]
        rows = part.shape[0]
        finite = np.isfinite(part)
        z = np.where(finite, part - shift, 0.0)
        values = np.concatenate([z, np.square(z), (~finite).astype(np.float64)], axis=1)
        values = np.concatenate([hist[-1:], values])
        _cumsum_rows(values)  # values[k] = p[start + k]
        ext = np.concatenate([hist[:-1], values])  # ext[j] = p[start + 1 - window + j]
        sums = ext[window : window + rows] - ext[:rows]  # rows start .. start + rows - 1
        hist = ext[-window:]
        out = np.full((rows, 3 * n_cols), np.nan, dtype=np.float32)
        first = max(window - 1 - start, 0)  # rows before window - 1 have no full window
        if first < rows:
            s = sums[first:]
            mean = s[:, :n_cols] / window
            var = s[:, n_cols : 2 * n_cols] / window - np.square(mean)
            dirty = s[:, 2 * n_cols :] > 0
            valid = out[first:]
            valid[:, 2 * n_cols :] = part[first:]
            valid[:, n_cols : 2 * n_cols] = np.sqrt(np.maximum(var, 0.0, out=var), out=var)
            valid[:, :n_cols] = np.add(mean, shift, out=mean)
            for block in range(3):
                valid[:, block * n_cols : (block + 1) * n_cols][dirty] = np.nan
        yield start, out


WIDE_COLUMNS = 256
"""From this many columns :func:`_cumsum_rows` adds row by row instead of ``np.cumsum``."""


def _cumsum_rows(values: np.ndarray) -> None:
    """``np.cumsum(values, axis=0)`` in place, bit-identical (both add row k to the running
    row k - 1, in that order). Why two ways: numpy's cumulative sum down the rows of a
    C-ordered array walks each column with a stride, ~10 ns an element, while one vectorised
    add per row costs ~1 us a row; the row loop wins on wide, short arrays (the
    Avellaneda-Stoikov features of a batch of paths: 3 x 2 x B columns, a few hundred rows),
    numpy on long, narrow ones (a market's features: 3N columns, up to 65,536 rows)."""
    if values.shape[1] < WIDE_COLUMNS:
        np.cumsum(values, axis=0, out=values)
        return
    for k in range(1, values.shape[0]):
        np.add(values[k - 1], values[k], out=values[k])


def window_stats(x: np.ndarray, window: int, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """Trailing-window [mean | std | last] of each column: [T, N] -> float32 [T, 3N].

    Sums run in float64 on values shifted by each column's first finite value; the variance
    ``E[z^2] - E[z]^2`` has rounding-level negatives clamped to 0. Accuracy falls for a
    column that drifts far from its first value relative to its window std, so feed
    roughly stationary features (returns, oscillators), not raw prices. Computed in row
    blocks (:func:`window_blocks`).
    """
    _check_window(window)
    arr = _as_matrix(x, "x")
    out = np.full((arr.shape[0], 3 * arr.shape[1]), np.nan, dtype=np.float32)
    for start, block in window_blocks(arr, window, chunk):
        out[start : start + len(block)] = block
    return out


def _carried_sum(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """``total + part[0] + part[1] + ...`` row by row, in numpy's order for ``sum(axis=0)``."""
    if total is None:
        return np.add.reduce(part, axis=0) if part.shape[0] else np.zeros(part.shape[1])
    return np.add.reduce(np.concatenate([total[None], part]), axis=0)


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
        return cls.fit_blocks(
            lambda: (arr[a : min(a + CHUNK_ROWS, stop)] for a in range(start, stop, CHUNK_ROWS)),
            rows,
        )

    @classmethod
    def fit_blocks(
        cls, blocks: Callable[[], Iterable[np.ndarray]], rows: tuple[int, int]
    ) -> Scaler:
        """:meth:`fit` from the row blocks ``blocks()`` yields (called twice: mean, then std).

        Why blocks: the train split of a large market need never be in memory at once. The
        sums run row after row with the total carried between blocks, which is exactly the
        order of numpy's ``mean(axis=0)`` / ``std(axis=0)`` over all rows, so the scaler is
        bit-identical to one fitted on the whole array.
        """
        total: np.ndarray | None = None
        count = 0
        for block in blocks():
            part = np.asarray(block, dtype=np.float64)
            part = part[np.isfinite(part).all(axis=1)]
            total = _carried_sum(total, part)
            count += part.shape[0]
        if total is None or count == 0:
            raise ValueError(f"scaler rows [{rows[0]}, {rows[1]}) hold no all-finite row")
        mean = total / count
        squares: np.ndarray | None = None
        for block in blocks():
            part = np.asarray(block, dtype=np.float64)
            dev = part[np.isfinite(part).all(axis=1)] - mean
            squares = _carried_sum(squares, np.multiply(dev, dev, out=dev))
        assert squares is not None
        std = np.sqrt(squares / count)
        return cls(mean, np.where(std < STD_FLOOR, 1.0, std))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as float32 over the last axis; NaN stays NaN."""
        arr = np.asarray(x)  # blocks are cast to float64 below, one at a time
        if arr.ndim < 1 or arr.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"scaler fitted on {self.mean.shape[0]} columns, input has shape {arr.shape}"
            )
        out = np.empty(arr.shape, dtype=np.float32)
        flat, dest = arr.reshape(-1, arr.shape[-1]), out.reshape(-1, arr.shape[-1])
        for a in range(0, flat.shape[0], CHUNK_ROWS):  # float64 temporaries of one block only
            dest[a : a + CHUNK_ROWS] = (flat[a : a + CHUNK_ROWS] - self.mean) / self.std
        return out

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
