"""report.html: linked panels and the stats table of stats.json, self-contained, offline.

A tiny policy is trained in process (synthetic market, windows 48 / 12, no tracking) and
backtested once with the interactive report on; the page is then read as text (what a
browser would fetch) and the helpers are checked on hand-built arrays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_config, tiny_overrides
from hydra import compose, initialize_config_dir

from hmarl.backtest.report import BacktestResult
from hmarl.backtest.run import backtest
from hmarl.config import conf_dir, register_backtest_configs, to_backtest_config
from hmarl.report.html import PANELS, entries_and_exits, format_cell, minmax_rows
from hmarl.train.trainer import train

# Anything that would make a browser fetch from the network: script/link/img sources, CSS.
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", re.I
)


def small_backtest(checkpoint: Path, cache: Path, out: Path, *extra: str) -> BacktestResult:
    """A fast backtest of ``checkpoint`` (no tracking, no PNGs, few null policies)."""
    register_backtest_configs()
    overrides = [
        f"checkpoint={checkpoint}",
        "tracking=none",
        f"cache_dir={cache}",
        "progress=false",
        "plots=false",
        "n_bootstrap=0",
        "fee_multipliers=[1]",
        *extra,
    ]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return backtest(to_backtest_config(compose("backtest", overrides=overrides)), out)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    root = tmp_path_factory.mktemp("html")
    cfg = compose_config(*tiny_overrides(root, "trainer.episodes=2", "trainer.eval_every=1"))
    ckpt = train(cfg, root / "run", progress=False).last_checkpoint
    return small_backtest(ckpt, root / "cache", root / "report", "random_timing=50")


def test_report_html_is_written_self_contained_and_offline(report: BacktestResult) -> None:
    path = report.out_dir / "report.html"
    assert path in report.files
    page = path.read_text(encoding="utf-8")
    assert "<script" in page and "Bokeh" in page  # BokehJS itself is inlined
    assert not re.search(r"<script[^>]+src=", page), "a script is loaded from elsewhere"
    assert not re.search(r"<link[^>]+href=", page), "a stylesheet is loaded from elsewhere"
    # BokehJS's source names URLs in code paths this page never runs (MathJax for TeX labels,
    # Google Maps tiles); the markup and styles around it must fetch nothing. That nothing is
    # fetched when the page runs is checked in a browser with the network cut
    # (tests/test_app_browser.py).
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S | re.I)
    assert not EXTERNAL.search(markup), EXTERNAL.search(markup)
    assert not list(report.out_dir.glob(".report.html.*")), "temporary file left behind"
    assert not list(report.out_dir.glob("*.png")), "plots=false still wrote PNGs"


def test_report_html_has_every_panel_and_the_numbers_of_stats_json(
    report: BacktestResult,
) -> None:
    page = (report.out_dir / "report.html").read_text(encoding="utf-8")
    for name in (*PANELS, "stats", "header"):
        assert f'"name":"{name}"' in page, name
    doc = json.loads((report.out_dir / "stats.json").read_text())
    for run, stats in doc["stats"].items():
        assert f'"{run}"' in page, run
        for key, value in stats.items():
            assert json.dumps(key) in page, key
            assert json.dumps(format_cell(value)) in page, (run, key, value)
    null = doc["random_timing"]["Random-Timing Percentile [%]"]
    assert json.dumps(format_cell(null)) in page
    for label in ("buy_and_hold", "flat", "momentum", "random timing 5-95%", "long entry"):
        assert label in page, label


def test_report_html_can_be_turned_off(report: BacktestResult, tmp_path: Path) -> None:
    ckpt = Path(report.meta["checkpoint"])
    cache = report.out_dir.parent / "cache"
    result = small_backtest(ckpt, cache, tmp_path / "off", "report_html=false", "random_timing=0")
    assert (result.out_dir / "stats.json").is_file()
    assert not (result.out_dir / "report.html").exists()


def test_minmax_rows_keep_spikes_ends_and_bound_the_points() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1.0, 100_003)
    values[12_345], values[77_777] = 50.0, -50.0  # one-bar spikes
    rows = minmax_rows(values, buckets=1000)
    assert rows.size <= 2 * 1000 + 2
    assert np.all(np.diff(rows) > 0)
    assert {0, 12_345, 77_777, values.size - 1} <= set(rows.tolist())
    assert values[rows].max() == values.max() and values[rows].min() == values.min()
    assert np.array_equal(minmax_rows(values[:500], buckets=1000), np.arange(500))


def test_entries_and_exits_follow_the_position() -> None:
    position = np.array([0, 1, 1, 0, -1, -1, 1, 0.5, 0, 0, -1])
    marks = entries_and_exits(position)
    assert marks.long_entries.tolist() == [1, 6]  # 0.5 after 1 is the same trade
    assert marks.short_entries.tolist() == [4, 10]  # the last one is still open: no exit
    assert marks.exits.tolist() == [3, 6, 8]  # a reversal is an exit and an entry


def test_format_cell() -> None:
    assert format_cell(3) == "3"
    assert format_cell(np.int64(7)) == "7"
    assert format_cell(1.23456789) == "1.23457"
    assert format_cell(float("nan")) == ""
    assert format_cell(None) == ""
    assert format_cell(float("inf")) == "inf"
    assert format_cell(True) == "True"
    assert format_cell("2024-01-01T00:00:00+00:00") == "2024-01-01T00:00:00+00:00"
