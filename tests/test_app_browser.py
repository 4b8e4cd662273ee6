"""End to end in a real headless browser: the page backtests a period and the report renders;
the per-day quoting demo runs a quoting checkpoint on tick days and shows its tables and plot.

Drives Debian's chromium (``/usr/bin/chromium``, installed by ``.ci/run``; no browser
download) with playwright. ``python -m hmarl.app`` is started as a user starts it, against a
store holding one tiny training run; the test runs a backtest from the page, checks that
the embedded report rendered its panels with no console error, saves a screenshot under the
test's temp folder, and opens the written report.html from disk with the network cut to
prove it fetches nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from app_store import QuoteStore, Store, make_quote_store, make_store
from helpers import REPO

CHROMIUM = Path("/usr/bin/chromium")
PANELS = ("price", "equity", "drawdown", "position", "probabilities", "stats")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"no {CHROMIUM} (apt-get install chromium; .ci/run installs it in CI)",
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

# The report's panels exist as named Bokeh models and each figure drew on a canvas.
PANELS_MISSING = (
    "names => (window.Bokeh && Bokeh.documents.length)"
    " ? names.filter(n => Bokeh.documents[0].get_model_by_name(n) === null) : names"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return make_store(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def quote_store(tmp_path_factory: pytest.TempPathFactory) -> QuoteStore:
    return make_quote_store(tmp_path_factory.mktemp("browser-quote"), backtest=False)


@pytest.fixture
def server(store: Store, tmp_path: Path) -> Iterator[str]:
    """``python -m hmarl.app`` on a free port, headless; yields its URL."""
    yield from serve(tmp_path, "--store", store.uri)


@pytest.fixture
def quote_server(quote_store: QuoteStore, tmp_path: Path) -> Iterator[str]:
    """The page on the quoting store, with its tick folder (``--ticks``)."""
    yield from serve(tmp_path, "--store", quote_store.uri, "--ticks", str(quote_store.ticks))


def serve(tmp_path: Path, *page_args: str) -> Iterator[str]:
    """Start ``python -m hmarl.app`` headless in ``tmp_path``; yield its URL; stop it."""
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmarl.app", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--", *page_args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the page did not start: {(tmp_path / 'streamlit.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:  # Streamlit's graceful shutdown took ~4 s a test; nothing of it is checked here
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


@contextmanager
def browser_page(url: str, console_errors: list[str]) -> Iterator[Any]:
    """Chromium on ``url`` (a tall viewport), its console errors and page errors collected."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1700})
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.goto(url)
        yield page
        browser.close()


def test_page_runs_a_backtest_and_the_report_renders(server: str, tmp_path: Path) -> None:
    console_errors: list[str] = []
    with browser_page(server, console_errors) as page:
        page.get_by_role("tab", name="Backtest a period").click(timeout=90_000)
        page.get_by_role("button", name="Run backtest").click(timeout=60_000)
        page.wait_for_selector("iframe", timeout=180_000)
        frame = next(f for f in page.frames if f != page.main_frame and "Bokeh" in f.content())
        frame.wait_for_function("() => document.querySelectorAll('*').length > 0")
        frame.wait_for_function(f"() => ({PANELS_MISSING})({list(PANELS)!r}).length === 0")
        canvases = frame.locator("canvas")
        canvases.first.wait_for(timeout=60_000)
        assert canvases.count() >= 5  # one per panel at least
        page.get_by_text("report:").first.wait_for()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert not console_errors, console_errors
    reports = list((tmp_path / "backtests" / "app").glob("backtest-*/report.html"))
    assert len(reports) == 1


def test_report_html_opens_with_the_network_cut(store: Store, tmp_path: Path) -> None:
    """Run a backtest through the page's function, then open report.html from disk offline."""
    from hmarl.app import backend as app

    client = app.open_page_store(store.uri)
    result = app.run_period_backtest(
        client, store.uri, "hmarl", store.run_id, "best.pt", app.Period(), tmp_path / "bt"
    )
    requests: list[str] = []
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(("file:", "data:", "blob:"))
                else (requests.append(route.request.url), route.abort())[-1]
            ),
        )
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((result.out_dir / "report.html").resolve().as_uri())
        page.wait_for_function(f"() => ({PANELS_MISSING})({list(PANELS)!r}).length === 0")
        page.locator("canvas").first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not requests, f"report.html tried the network: {requests}"
    assert not errors, errors


def test_page_runs_the_per_day_quoting_demo(quote_server: str, tmp_path: Path) -> None:
    """Choose tickers and days, run the checkpoint, see the tables, a day's plot and the
    download buttons; no console error."""
    console_errors: list[str] = []
    with browser_page(quote_server, console_errors) as page:
        page.get_by_role("tab", name="Quote per day").click(timeout=90_000)
        page.get_by_role("button", name="Run per-day evaluation").click(timeout=60_000)
        page.get_by_text("ticker-day(s); files:").wait_for(timeout=120_000)
        image = page.locator("img[src*='media']").first  # the chosen ticker-day's day.png
        image.wait_for(timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('img')].some(i => i.naturalWidth > 100)"
        )
        for name in ("daily_metrics.csv", "aggregated_by_day.csv", "aggregated_by_liquidity.csv"):
            assert page.get_by_role("button", name=name).count() == 1, name
        with page.expect_download() as download:
            page.get_by_role("button", name="daily_metrics.csv").click()
        saved = tmp_path / "daily.csv"
        download.value.save_as(saved)
        page.screenshot(path=str(tmp_path / "days.png"), full_page=True)
    assert saved.read_text().startswith("ticker,day,liquidity")
    assert not console_errors, console_errors
    assert len(list((tmp_path / "backtests" / "app").glob("days-*/agent/daily_metrics.csv"))) == 1
