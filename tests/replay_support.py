"""Shared pieces of the recording and replay tests: a metrics server that counts alert POSTs,
and the health-check skill in two versions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Metrics:
    """A real HTTP server on 127.0.0.1: GET /metrics answers ``p95``; POST /alert counts."""

    p95: int = 150
    posts: int = 0
    gets: int = 0
    flaky: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    def start(self) -> Metrics:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, payload: Any, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                server.gets += 1
                server.seen.append({"path": self.path, "headers": dict(self.headers.items())})
                if self.path.startswith("/flaky"):
                    server.flaky += 1
                    self._answer({"try": server.flaky}, 503 if server.flaky == 1 else 200)
                elif self.path.startswith("/big"):
                    self._answer({"blob": "x" * 200_000})
                elif self.path.startswith("/echo"):
                    self._answer({"path": self.path, "headers": dict(self.headers.items())})
                else:
                    self._answer({"p95": server.p95})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                server.posts += 1
                server.seen.append({"path": self.path, "body": body})
                self._answer({"ok": True, "n": server.posts})

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    server = Metrics().start()
    yield server
    server.stop()


HEALTH = """
from loopwright.sdk import skill

@skill(name="health", tools=["http", "notify"], http_allow=["127.0.0.1"],
       params={{"threshold": {threshold}}})
def main(ctx):
    base = ctx.event["data"]["base"]
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json(base + "/metrics"))
    if m["p95"] > ctx.params["threshold"]:
        ctx.step.run("page", lambda: ctx.tools.http.post_json(base + "/alert", {{"p95": m["p95"]}}))
        ctx.step.run("tell", lambda: ctx.tools.notify("p95 high: " + str(m["p95"])))
        return {{"alert": True, "p95": m["p95"]}}
    return {{"alert": False, "p95": m["p95"]}}
"""


def health(threshold: int) -> str:
    """The health check with its alert threshold."""
    return HEALTH.format(threshold=threshold)
