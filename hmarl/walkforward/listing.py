"""The walk-forward folders under a root, as one table (what the page lists).

A folder counts when it holds ``walkforward.json`` (written last, when its tables and stitched
reports are complete); each stitched market is one row, with the path of its ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SUMMARY = "walkforward.json"


def walkforward_table(root: str | Path = "walkforward") -> pd.DataFrame:
    """One row per (walk-forward folder, market): folds, stitched returns, its report."""
    rows = []
    for summary in sorted(Path(root).glob(f"**/{SUMMARY}")):
        try:
            doc = json.loads(summary.read_text())
        except (OSError, ValueError):  # being written or damaged: not listed
            continue
        for market in doc.get("stitched", []):
            name = market.get("market")
            folds = doc.get("markets", {}).get(name, {}).get("folds", [])
            rows.append(
                {
                    "folder": str(summary.parent),
                    **market,
                    "folds": len(folds),
                    "report": str(summary.parent / str(name) / "stitched" / "report.html"),
                }
            )
    return pd.DataFrame.from_records(rows)
