"""A local HTTP server that mimics data.binance.vision, for the downloaders' offline tests.

The server holds files by URL path (zips in the real dump formats and their ``.CHECKSUM``
files), counts every request, and can serve a corrupt body, drop a connection or answer 404,
so resume, verification and error messages are tested without the internet. The klines
downloader's tests and the tick (bookTicker / trades / aggTrades) downloader's tests share it
through the ``server`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeBinance:
    """Files by URL path; each path may hold several bodies served in turn (the last repeats).

    ``drop`` paths announce a long body, send a few bytes and close: a broken connection.
    """

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self.requests: Counter[str] = Counter()
        self.drop: set[str] = set()
        self.lock = threading.Lock()

    def next_body(self, path: str) -> bytes | None:
        """Count the request and pick the body for it (None: 404)."""
        with self.lock:
            self.requests[path] += 1
            bodies = self.bodies.get(path)
            if not bodies:
                return None
            return bodies[min(self.requests[path], len(bodies)) - 1]

    def publish(self, path: str, name: str, body: bytes) -> None:
        """Serve ``body`` at ``path`` and its ``<sha256>  <name>`` at ``path.CHECKSUM``."""
        digest = hashlib.sha256(body).hexdigest()
        self.bodies[path] = [body]
        self.bodies[path + ".CHECKSUM"] = [f"{digest}  {name}\n".encode()]


def zip_csv(name: str, text: str) -> bytes:
    """A zip holding ``<name without .zip>.csv`` with ``text``, as Binance publishes it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name.removesuffix(".zip") + ".csv", text)
    return buffer.getvalue()


def _handler(fake: FakeBinance) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = fake.next_body(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if self.path in fake.drop:
                self.send_header("Content-Length", str(len(body) + 1000))
                self.end_headers()
                self.wfile.write(body[:10])
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serving() -> Iterator[tuple[FakeBinance, str]]:
    """A FakeBinance on 127.0.0.1 with an ephemeral port and its base URL; shut down after."""
    fake = FakeBinance()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
