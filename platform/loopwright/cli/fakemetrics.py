"""A small metrics service for the demo: real HTTP on 127.0.0.1, overnight-spike numbers.

``/summary`` is what a health check reads (p95 latency, error rate), ``/breakdown`` the
latency per endpoint and ``/deploys`` the recent deploys, which an incident triage gathers.
``calls`` counts the requests per path, so the demo can show that the skills really called it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeMetrics:
    """The service; a context manager that serves on a free loopback port."""

    def __init__(self, p95_ms: float = 1450.0, error_rate: float = 0.012) -> None:
        self.p95_ms = p95_ms
        self.error_rate = error_rate
        self.calls: Counter[str] = Counter()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def payload(self, path: str) -> Any:
        now = datetime.now(UTC)
        if path == "/summary":
            return {
                "service": "checkout",
                "window": "02:00-02:30",
                "p95_ms": self.p95_ms,
                "error_rate": self.error_rate,
            }
        if path == "/breakdown":
            return {
                "endpoints": [
                    {"endpoint": "/api/cart", "p95_ms": 2310},
                    {"endpoint": "/api/payment", "p95_ms": 1710},
                    {"endpoint": "/api/catalog", "p95_ms": 240},
                ]
            }
        if path == "/deploys":
            at = (now - timedelta(minutes=25)).isoformat().replace("+00:00", "Z")
            older = (now - timedelta(days=2)).isoformat().replace("+00:00", "Z")
            return {
                "deploys": [
                    {"service": "checkout", "version": "v2.14.0", "at": at},
                    {"service": "search", "version": "v7.2.1", "at": older},
                ]
            }
        return None

    def __enter__(self) -> FakeMetrics:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                service.calls[path] += 1
                body = service.payload(path)
                raw = json.dumps(body if body is not None else {"error": "not found"}).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
