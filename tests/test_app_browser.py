"""End to end in a real headless browser: the page backtests a period and the report renders.

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
from pathlib import Path

import pytest
from app_store import Store, make_store
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


@pytest.fixture
def server(store: Store, tmp_path: Path) -> Iterator[str]:
    """``python -m hmarl.app`` on a free port, headless; yields its URL."""
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmarl.app", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--", "--store", store.uri],
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
        proc.wait(timeout=30)
        log.close()


def test_page_runs_a_backtest_and_the_report_renders(server: str, tmp_path: Path) -> None:
    console_errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1700})
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.goto(server)
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
        browser.close()
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
