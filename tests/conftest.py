"""Shared fixtures: the real-data folder beside the checkout.

Plain helper functions (configs, tiny markets, the CLI) live in ``helpers.py``: tests import
them from there, never from this file, which pytest loads as a plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_binance import FakeBinance, serving
from helpers import REPO

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data not available: {SHARED_DATA} is absent (a fresh clone has no ../shared)"
        )
    return SHARED_DATA


@pytest.fixture
def server() -> Iterator[tuple[FakeBinance, str]]:
    """A fake data.binance.vision on 127.0.0.1 (``tests/fake_binance.py``) and its base URL."""
    with serving() as served:
        yield served


# The longest file first (about 4 minutes of training): `make test` runs the files on two
# pytest-xdist workers (`--dist loadfile`, files in collection order), and a long file collected
# in the middle ends up running alone at the end while the other worker sits idle.
FIRST = ("test_learning.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in FIRST)  # stable: the rest keep their order
