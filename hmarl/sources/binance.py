"""Download Binance public kline dumps (data.binance.vision), verified and resumable.

Why a downloader of its own: the public dumps are the cheapest source of long, gap-checked
candle histories, but a training run must never start on a half-downloaded or corrupt
month. Every zip is checked against its published SHA-256 (``<zip>.CHECKSUM``) before it
takes its final name, so a file under its final name is always complete; a re-run skips
what is already verified and fetches only the rest.

Layout (``{base}`` defaults to https://data.binance.vision)::

    {base}/data/spot/monthly/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM}.zip
    {base}/data/spot/daily/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM-DD}.zip
    {base}/data/futures/um/...   (USD-M futures, same shape)

Parsing goes through :func:`hmarl.data.load_candles` with ``fmt="binance"``: one kline
parser in the project, so the millisecond/microsecond switch of 2025 is handled in one place.
Only the standard library talks to the network (``urllib``); nothing is fetched at import.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import threading
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from tqdm import tqdm

from hmarl.data.reading import load_candles
from hmarl.io import write_parquet, write_text

BASE_URL = "https://data.binance.vision"
MARKET_PATHS = {"spot": "spot", "um": "futures/um"}
# Binance interval name -> pandas bar spacing used to validate the result (None: irregular).
INTERVAL_FREQ: dict[str, str | None] = {
    "1s": "1s",
    "1m": "1min",
    "3m": "3min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1h",
    "2h": "2h",
    "4h": "4h",
    "6h": "6h",
    "8h": "8h",
    "12h": "12h",
    "1d": "1D",
    "3d": "3D",
    "1w": "7D",
    "1mo": None,
}
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SYMBOL = re.compile(r"^[A-Z0-9_]{2,30}$")

Period = Literal["monthly", "daily"]
Log = Callable[[str], None] | None


class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message names the URL."""


class NotFoundError(DownloadError):
    """HTTP 404: the symbol, interval or period does not exist on the server."""


class ChecksumError(DownloadError):
    """A zip did not match its published SHA-256, even after one re-fetch."""


class NetworkError(DownloadError):
    """The connection failed; files verified so far stay, and a re-run resumes."""


@dataclass(frozen=True)
class RemoteFile:
    """One zip of the public dump and the period it covers."""

    url: str
    name: str
    period: Period

    @property
    def checksum_url(self) -> str:
        """The sibling file holding ``<sha256>  <name>``."""
        return self.url + ".CHECKSUM"


@dataclass(frozen=True)
class FetchReport:
    """What :func:`fetch_files` did: verified local paths (plan order) and counts."""

    paths: list[Path]
    downloaded: int
    present: int


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_klines` did, for the CLI's last log line and for tests."""

    paths: list[Path]
    downloaded: int
    present: int
    parquet: Path
    candles: int


def exit_code(download: Callable[[], object]) -> int:
    """Run a downloader's CLI action: 0 when it worked; else one ``error:`` line on stderr and
    2 for a bad request or bad data (``ValueError``, ``DataError`` included) or 1 for a
    download that failed (network, checksum, disk), so scripts can tell the two apart."""
    try:
        download()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# --- plan ---------------------------------------------------------------------------------


def _month_starts(start: date, end: date) -> Iterator[date]:
    """First day of every month that intersects [start, end]."""
    month = start.replace(day=1)
    while month <= end:
        yield month
        month = (month + timedelta(days=32)).replace(day=1)


def _days(first: date, last: date) -> Iterator[date]:
    """Every day in [first, last]."""
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def file_url(
    symbol: str, market: str, interval: str, period: Period, stamp: str, base_url: str = BASE_URL
) -> RemoteFile:
    """URL of one zip; ``stamp`` is ``YYYY-MM`` (monthly) or ``YYYY-MM-DD`` (daily)."""
    name = f"{symbol}-{interval}-{stamp}.zip"
    url = (
        f"{base_url.rstrip('/')}/data/{MARKET_PATHS[market]}/{period}/klines/"
        f"{symbol}/{interval}/{name}"
    )
    return RemoteFile(url=url, name=name, period=period)


def check_request(symbol: str, market: str, interval: str, start: date, end: date) -> None:
    """Fail before any request on an argument the server would only answer with a 404."""
    if not _SYMBOL.match(symbol):
        raise ValueError(f"symbol {symbol!r} must be upper-case letters/digits, e.g. BTCUSDT")
    if market not in MARKET_PATHS:
        raise ValueError(f"market {market!r} is not one of {sorted(MARKET_PATHS)}")
    if interval not in INTERVAL_FREQ:
        raise ValueError(f"interval {interval!r} is not one of {list(INTERVAL_FREQ)}")
    if end < start:
        raise ValueError(f"end date {end} is before start date {start}")


def plan_files(
    symbol: str,
    market: str,
    interval: str,
    start: date,
    end: date,
    *,
    today: date | None = None,
    base_url: str = BASE_URL,
) -> list[RemoteFile]:
    """Zips covering the UTC days [start, end], oldest first.

    Why the mix: a monthly zip is one request for ~30 days, but it exists only for months
    that are over, and it cannot be cut; so whole, finished months come monthly and the
    rest (partial months at either end, the current month) day by day. Daily files appear
    the day after, so ``end`` must be before ``today`` (UTC). A month that ended only a day
    or two ago may not be published monthly yet: its 404 names the URL; ending the range
    inside that month (daily files) works around it.
    """
    check_request(symbol, market, interval, start, end)
    today = today or datetime.now(UTC).date()
    if end >= today:
        raise ValueError(
            f"end date {end} is not published yet: daily files appear the day after, "
            f"so the latest end date today ({today}, UTC) is {today - timedelta(days=1)}"
        )
    plan: list[RemoteFile] = []
    for first in _month_starts(start, end):
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        if start <= first and last <= end:
            plan.append(file_url(symbol, market, interval, "monthly", f"{first:%Y-%m}", base_url))
            continue
        for day in _days(max(start, first), min(end, last)):
            plan.append(file_url(symbol, market, interval, "daily", f"{day:%Y-%m-%d}", base_url))
    return plan


# --- network ------------------------------------------------------------------------------


class _Deadline:
    """A time limit for a WHOLE request: when it expires, the request's sockets are shut down.

    Why: urllib's ``timeout`` bounds each socket operation, so a server that sends one byte
    a second never trips it and a download with ``--timeout 3`` ran past 30 s. A watchdog
    timer that shuts the socket down ends any blocked read at once, headers included.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """End blocked reads on ``sock`` (the plain socket call: an SSL socket stays wrapped)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment included) whose sockets ``deadline`` sees."""

    class HTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class HTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HTTPConnection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(HTTPSConnection, req, context=getattr(self, "_context", None))

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


@contextmanager
def _request(url: str, timeout: float) -> Iterator[http.client.HTTPResponse]:
    """GET ``url`` with ``timeout`` seconds for the whole request, body included.

    A 404 and other HTTP errors become errors that name the URL; a request still running
    at the deadline is cut and reported as too slow.
    """
    deadline = _Deadline(timeout)
    try:
        with deadline, _opener(deadline).open(url, timeout=timeout) as response:
            yield response
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"not found: symbol or month missing: {url} (HTTP 404)") from exc
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if deadline.expired:
            raise _too_slow(url, timeout) from exc
        raise NetworkError(f"network failure fetching {url}: {exc}") from exc
    if deadline.expired:  # the cut socket looked like the end of the body
        raise _too_slow(url, timeout)


def _too_slow(url: str, timeout: float) -> NetworkError:
    return NetworkError(
        f"network failure fetching {url}: no complete answer within --timeout {timeout:g} s "
        "(the whole request); the server is too slow: retry later or raise --timeout"
    )


def fetch_checksum(remote: RemoteFile, timeout: float) -> str:
    """The published SHA-256 of ``remote``, checked to name the same file."""
    with _request(remote.checksum_url, timeout) as response:
        text = response.read().decode("ascii", errors="replace")
    return parse_checksum(text, remote.name, remote.checksum_url)


def parse_checksum(text: str, name: str, where: str) -> str:
    """Digest from ``"<sha256>  <filename>"``; ``where`` names the source in errors."""
    parts = text.split()
    if len(parts) != 2 or not _SHA256.match(parts[0].lower()):
        raise DownloadError(f"malformed checksum file {where}: expected '<sha256>  {name}'")
    if Path(parts[1]).name != name:
        raise DownloadError(f"checksum file {where} names {parts[1]!r}, expected {name!r}")
    return parts[0].lower()


def _download(url: str, part: Path, timeout: float) -> str:
    """Stream ``url`` into ``part`` (overwriting leftovers); return the body's SHA-256."""
    digest = hashlib.sha256()
    received = 0
    with part.open("wb") as sink, _request(url, timeout) as response:
        announced = response.headers.get("Content-Length")
        while chunk := response.read1(_CHUNK):  # read1: return what arrived, never wait for more
            try:
                sink.write(chunk)
            except OSError as exc:  # a local disk problem, not a network failure
                raise DownloadError(
                    f"cannot write {part}: {exc.strerror or exc}; free some space or choose "
                    "another --out-dir, then re-run"
                ) from exc
            digest.update(chunk)
            received += len(chunk)
    # http.client returns a short body without raising when the peer closes early.
    if announced is not None and announced.isdigit() and received != int(announced):
        raise NetworkError(
            f"network failure fetching {url}: connection closed after {received} of "
            f"{announced} bytes"
        )
    return digest.hexdigest()


# --- local files --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """SHA-256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def zip_problem(path: Path) -> str | None:
    """Why ``path`` is no readable kline zip (damaged, or not exactly one CSV), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        return str(exc) or type(exc).__name__
    if bad is not None:
        return f"member {bad} is damaged (CRC mismatch)"
    if len(members) != 1:
        return f"it should hold exactly one .csv file, holds {members}"
    return None


def _is_verified(zip_path: Path, sum_path: Path) -> bool:
    """True when the zip and its saved checksum exist and agree and the zip reads (no network)."""
    if not (zip_path.is_file() and sum_path.is_file()):
        return False
    try:
        expected = parse_checksum(sum_path.read_text(), zip_path.name, str(sum_path))
    except DownloadError:
        return False
    return sha256_file(zip_path) == expected and zip_problem(zip_path) is None


def _damaged_upstream(remote: RemoteFile, problem: str) -> DownloadError:
    return DownloadError(
        f"{remote.name} from {remote.url} matches its published checksum but is not a "
        f"readable zip ({problem}): the published file itself is damaged; leave that period "
        "out of the date range (or report it to the mirror) and re-run"
    )


def fetch_file(remote: RemoteFile, out_dir: Path, *, timeout: float = 30.0) -> bool:
    """Make ``out_dir/<name>`` a verified copy of ``remote``; True when bytes were fetched.

    A zip already verified against its saved ``.CHECKSUM`` costs no request. Otherwise
    the published checksum is fetched; a local zip that matches it is kept, anything else
    (truncated, corrupt, a leftover ``.part``) is downloaded again into ``<name>.part`` and
    renamed only after its SHA-256 matches. A mismatch is re-fetched once, then fails.
    """
    zip_path = out_dir / remote.name
    sum_path = out_dir / (remote.name + ".CHECKSUM")
    if _is_verified(zip_path, sum_path):
        return False
    expected = fetch_checksum(remote, timeout)
    checksum_text = f"{expected}  {remote.name}\n"
    if zip_path.is_file() and sha256_file(zip_path) == expected:
        problem = zip_problem(zip_path)
        if problem is None:
            write_text(sum_path, checksum_text)
            return False
        zip_path.unlink()  # "verified" once but unreadable: never keep it under its name
        sum_path.unlink(missing_ok=True)
        raise _damaged_upstream(remote, problem)
    part = out_dir / (remote.name + ".part")
    actual = ""
    for _attempt in range(2):
        actual = _download(remote.url, part, timeout)
        if actual == expected:
            problem = zip_problem(part)
            if problem is not None:
                part.unlink(missing_ok=True)
                raise _damaged_upstream(remote, problem)
            os.replace(part, zip_path)
            write_text(sum_path, checksum_text)
            return True
    part.unlink(missing_ok=True)
    raise ChecksumError(
        f"checksum mismatch for {remote.name} from {remote.url} after a re-fetch: "
        f"expected sha256 {expected}, got {actual}"
    )


def fetch_files(
    plan: Sequence[RemoteFile],
    out_dir: Path,
    *,
    timeout: float = 30.0,
    progress: bool = True,
) -> FetchReport:
    """Fetch and verify every file of ``plan`` into ``out_dir``, in order.

    On a failure the error says how many files are already verified; those stay on disk,
    so running the same command again resumes where this one stopped.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    downloaded = 0
    with tqdm(plan, desc="binance", unit="file", disable=not progress) as bar:
        for remote in bar:
            bar.set_postfix_str(remote.name)
            try:
                fetched = fetch_file(remote, out_dir, timeout=timeout)
            except NetworkError as exc:
                raise NetworkError(
                    f"{exc}; {len(paths)} of {len(plan)} files are downloaded and verified in "
                    f"{out_dir}; re-run the same command to resume"
                ) from exc
            downloaded += int(fetched)
            paths.append(out_dir / remote.name)
    return FetchReport(paths=paths, downloaded=downloaded, present=len(paths) - downloaded)


# --- candles ------------------------------------------------------------------------------


def candles_from_zips(
    paths: Sequence[Path],
    start: date,
    end: date,
    *,
    interval: str,
    gap_policy: str = "error",
    log: Log = print,
) -> pd.DataFrame:
    """One validated candle frame from the zips, sorted and clipped to the UTC days [start, end].

    The index is the bar OPEN time (the candle convention of :mod:`hmarl.data`); a bar
    opening on ``end`` is kept, one opening the day after is not. ``load_candles`` sorts the
    files by time, checks spacing (``gap_policy``) and clips, so this adds no parser.
    """
    return load_candles(
        [str(path) for path in paths],
        fmt="binance",
        gap_policy=gap_policy,
        freq=INTERVAL_FREQ[interval],
        min_candles=1,
        start=start.isoformat(),
        end=(end + timedelta(days=1)).isoformat(),
        log=log,
    )


def default_parquet_path(
    out_dir: Path, symbol: str, market: str, interval: str, start: date, end: date
) -> Path:
    """``<out_dir>/<SYMBOL>-<market>-<interval>-<start>_<end>.parquet``."""
    return out_dir / f"{symbol}-{market}-{interval}-{start:%Y%m%d}_{end:%Y%m%d}.parquet"


def download_klines(
    symbol: str,
    interval: str,
    start: date,
    end: date,
    out_dir: Path,
    *,
    market: str = "spot",
    base_url: str = BASE_URL,
    out_parquet: Path | None = None,
    gap_policy: str = "error",
    timeout: float = 30.0,
    today: date | None = None,
    progress: bool = True,
    log: Log = print,
) -> DownloadResult:
    """Download, verify and merge klines for the UTC days [start, end] into one Parquet.

    The zips stay in ``out_dir`` (they are the resume state and the audit trail); the
    Parquet (default :func:`default_parquet_path`) holds OHLCV float64 columns indexed by
    the UTC bar open time, ready for ``load_candles(path, fmt="parquet")``.
    """
    symbol = symbol.upper()
    plan = plan_files(symbol, market, interval, start, end, today=today, base_url=base_url)
    n_monthly = sum(remote.period == "monthly" for remote in plan)
    say = log or (lambda _message: None)
    say(f"binance: {len(plan)} files ({n_monthly} monthly, {len(plan) - n_monthly} daily)")
    report = fetch_files(plan, out_dir, timeout=timeout, progress=progress)
    frame = candles_from_zips(
        report.paths, start, end, interval=interval, gap_policy=gap_policy, log=log
    )
    parquet = out_parquet or default_parquet_path(out_dir, symbol, market, interval, start, end)
    write_parquet(parquet, frame)
    say(
        f"binance: {report.downloaded} downloaded, {report.present} already present; "
        f"{len(frame)} candles {frame.index[0]} .. {frame.index[-1]} -> {parquet}"
    )
    return DownloadResult(
        paths=report.paths,
        downloaded=report.downloaded,
        present=report.present,
        parquet=parquet,
        candles=len(frame),
    )
