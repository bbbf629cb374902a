"""`sixfold dashboard`: the live quorum as one web page on 127.0.0.1 (issue 12).

The three AZs as columns with a tile per node, the writer and the readers, a commit-rate and
reader-lag chart, and the last events. One thread looks at the cluster about 4 times a
second (the status `sixfold status` gathers); the page gets each look by server-sent events
(`/events`), so it updates live with no reload. `/status.json` gives one look.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sixfold.cluster import Endpoints
from sixfold.tools.events import History
from sixfold.tools.status import gather_status

log = logging.getLogger("sixfold.dashboard")

LOOK_EVERY_S = 0.25
STATE_TIMEOUT_S = 1.0  # a member slower than this is shown down (a hung one slows the view)
PORT_DEFAULT = 7300
PAGE = Path(__file__).with_name("dashboard.html")
STREAM_S_MAX = 3600.0  # one event stream lives at most this long; the browser reconnects


class Looker:
    """Looks at the cluster in a thread of its own; the latest look, as JSON, for every page."""

    def __init__(self, target: Endpoints) -> None:
        self.target = target
        self.history = History()
        self.snapshot = "{}"
        self.changed = threading.Condition()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                status = asyncio.run(gather_status(self.target, STATE_TIMEOUT_S))
            except Exception:  # keep looking: the page shows the last look meanwhile
                log.exception("dashboard: looking at the cluster failed")
            else:
                self.history.update(status, time.monotonic())
                with self.changed:
                    self.snapshot = json.dumps(self._view(status))
                    self.changed.notify_all()
            self.stopped.wait(max(LOOK_EVERY_S - (time.monotonic() - started), 0))

    def _view(self, status: dict[str, Any]) -> dict[str, Any]:
        h = self.history
        return {
            "status": status,
            "rates": list(h.rates),
            "lags": list(h.lags),
            "events": list(h.events)[-8:],
        }

    def next_snapshot(self, seen: str, timeout_s: float) -> str:
        """The latest look once it differs from `seen` (or after `timeout_s`)."""
        with self.changed:
            if self.snapshot == seen:
                self.changed.wait(timeout_s)
            return self.snapshot


def handler_for(looker: Looker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.read_bytes())
            elif self.path == "/status.json":
                self._send(HTTPStatus.OK, "application/json", looker.snapshot.encode())
            elif self.path == "/events":
                self._stream()
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

        def _send(self, code: HTTPStatus, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = ""
            deadline = time.monotonic() + STREAM_S_MAX
            try:
                while time.monotonic() < deadline and not looker.stopped.is_set():
                    seen = looker.next_snapshot(seen, timeout_s=1.0)
                    self.wfile.write(f"data: {seen}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the page went away

        def log_message(self, format: str, *args: object) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler


def run_dashboard(target: Endpoints, port: int = PORT_DEFAULT, seconds: float | None = None) -> int:
    looker = Looker(target)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(looker))
    except OSError as exc:
        raise SystemExit(f"sixfold: dashboard: port {port} on 127.0.0.1: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=looker.run, name="dashboard-looker", daemon=True).start()
    threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True).start()
    print(f"dashboard on http://127.0.0.1:{server.server_port}/ (Ctrl-C stops it)", flush=True)
    deadline = time.monotonic() + seconds if seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        looker.stopped.set()
        server.shutdown()
    return 0
