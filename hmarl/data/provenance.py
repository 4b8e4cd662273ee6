"""Row provenance: which file and row each candle came from, so an error can point at it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def _stamp(ns: int) -> str:
    return str(pd.Timestamp(ns, unit="ns", tz="UTC"))


@dataclass(frozen=True)
class Origin:
    """Where each row came from, so that an error can point at a file and a row.

    ``kinds`` per source: "text" (CSV: 1-based data row and its line number), "table"
    (Parquet: 1-based data row) or "frame" (an in-memory frame: 0-based iloc).
    """

    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    header_lines: tuple[int, ...]
    source: np.ndarray  # [n] index into labels
    row: np.ndarray  # [n] row number within its source

    @property
    def name(self) -> str:
        """One label for the whole frame, for errors that concern no single row."""
        if len(self.labels) == 1:
            return self.labels[0]
        return f"{self.labels[0]} (+{len(self.labels) - 1} more files)"

    def describe(self, i: int, ts: np.ndarray | None = None) -> str:
        """Row i as a reader would look it up: file, row (line) and timestamp."""
        k = int(self.source[i])
        row = int(self.row[i])
        if self.kinds[k] == "frame":
            text = f"{self.labels[k]} iloc {row}"
        elif self.kinds[k] == "text":
            text = f"{self.labels[k]} row {row} (line {row + self.header_lines[k]})"
        else:
            text = f"{self.labels[k]} row {row}"
        if ts is not None:
            text += f", timestamp {_stamp(int(ts[i]))}"
        return text

    def take(self, keep: np.ndarray) -> Origin:
        """The origin of the rows selected by a boolean mask."""
        return Origin(self.labels, self.kinds, self.header_lines, self.source[keep], self.row[keep])


def frame_origin(name: str, n: int) -> Origin:
    return Origin((name,), ("frame",), (0,), np.zeros(n, np.int64), np.arange(n))
