"""A scripted model server for tests: real HTTP, both real wire protocols, scripted answers.

``ScriptedServer`` listens on 127.0.0.1 and answers ``POST /v1/chat/completions`` (OpenAI)
and ``POST /v1/messages`` (Anthropic) in each protocol's own response and error formats, so
the real providers and the real retry code run against it. Answers come from a script::

    with ScriptedServer(script=[{"status": 429, "retry_after": 1}, {"text": "hello"}]) as srv:
        settings = Settings(openai_base_url=srv.openai_base_url, openai_api_key="k")
        ...
        assert srv.completions == 1 and len(srv.requests) == 2

A reply is a dict. A completion: ``{"text": str, "tool_calls": [{"name": str, "arguments":
dict | str, "id"?: str}], "stop_reason"?: str}`` (string arguments are sent as they are, valid
JSON or not). A failure: ``{"status": 429, "retry_after": 1}`` (``retry_after_ms`` too),
``{"status": 500, "error": "message"}``, ``{"malformed": True}`` (200, body not JSON),
``{"raw": {...}}`` (this JSON body verbatim, with ``status`` if given). ``{"delay": s}``
sleeps before answering and combines with any of them. When the script is empty a
``responder(protocol, request_json)`` answers if given, else the server answers 500
"script exhausted".

Before a reply is taken the server checks what the providers check first: the API key
(``require_key``: missing or wrong → 401), the ``anthropic-version`` header, the body's shape
and that tool results answer the tool calls of the turn before (→ 400). Those answers use no
script entry.

Usage is estimated the same way for both protocols. The prompt is a canonical serialisation
of the request in prompt order (OpenAI: tools, messages; Anthropic: tools, system, messages;
``cache_control`` markers left out), and a token is 4 bytes of it, rounded up. What the
provider's prompt cache serves follows each provider's published rules (lifetime, minimum
size, Anthropic's breakpoints and 20-block lookback; see ``scripted_cache``) on a virtual
clock: ``srv.advance(seconds)`` moves it, nothing else does, so tests never wait.
``srv.usages`` records the usage of every completion answered (``prompt``, ``read``,
``written``, ``cached``, ``output`` tokens). Output tokens are the reply's text plus its tool
calls as JSON, 4 bytes a token, rounded up.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from loopwright.testing.scripted_cache import DEFAULT_TTL_SECONDS, Block, PromptCache
from loopwright.testing.scripted_checks import BadRequestError, check_request

WireProtocol = Literal["openai", "anthropic"]
Reply = dict[str, Any]
Responder = Callable[[str, dict[str, Any]], Reply]

_PATHS: dict[str, WireProtocol] = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}
_COMPLETION_KEYS = {"text", "tool_calls", "stop_reason"}
_DIRECTIVE_KEYS = {"status", "error", "retry_after", "retry_after_ms", "delay", "malformed", "raw"}
_REPLY_KEYS = frozenset(_COMPLETION_KEYS | _DIRECTIVE_KEYS)
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}
MALFORMED_BODY = b'{"choices": [ this is not JSON'


@dataclass(slots=True)
class RecordedRequest:
    """One request the server received; ``headers`` has lower-case names, ``body`` is the
    parsed JSON (``None`` when it was not JSON)."""

    protocol: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    completion: bool = False


class ScriptedServer:
    """A real HTTP model server on 127.0.0.1 answering from a script (see the module doc).

    Use it as a context manager (``__enter__`` starts it, ``__exit__`` stops it). ``requests``
    records every request, ``completions`` counts completion answers sent, ``usages`` the
    usage each completion reported. ``cache_ttl`` is the prompt cache's lifetime in virtual
    seconds. Thread-safe.
    """

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        responder: Responder | None = None,
        require_key: str | None = None,
        cache_ttl: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.responder = responder
        self.require_key = require_key
        self.requests: list[RecordedRequest] = []
        self.completions = 0
        self._script: deque[Reply] = deque(script)
        self.usages: list[dict[str, int]] = []
        self.cache = PromptCache(ttl=cache_ttl)
        self._lock = threading.Lock()
        self._ids = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("the scripted server is already running")
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.scripted = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (only while running)."""
        if self._httpd is None:
            raise RuntimeError("the scripted server is not running: use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        """The base URL for ``openai_base_url`` (and the local OpenAI-compatible providers)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL for ``anthropic_base_url``."""
        return self.url

    # -- script ------------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """Replies left in the script."""
        with self._lock:
            return len(self._script)

    def advance(self, seconds: float) -> None:
        """Move the virtual clock of the prompt cache forward (a pause between requests)."""
        self.cache.advance(seconds)

    def requests_for(self, protocol: str) -> list[RecordedRequest]:
        """The recorded requests of one protocol, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.protocol == protocol]

    # -- request handling (called from handler threads) --------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _count_completion(self, delta: int) -> None:
        with self._lock:
            self.completions += delta

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _answer(self, protocol: WireProtocol, req: RecordedRequest) -> tuple[_Answer, float]:
        """The answer to a request and how long to wait before sending it."""
        try:
            body = check_request(protocol, req.headers, req.body, self.require_key)
        except BadRequestError as bad:
            return _error(protocol, bad.status, bad.message), 0.0
        with self._lock:
            reply = self._script.popleft() if self._script else None
        if reply is None and self.responder is not None:
            try:
                reply = self.responder(protocol, body)
            except Exception as exc:
                return _error(protocol, 500, f"scripted responder raised {exc!r}"), 0.0
        if reply is None:
            return _error(protocol, 500, "script exhausted: no reply left for this request"), 0.0
        unknown = set(reply) - _REPLY_KEYS
        if unknown:
            msg = f"bad script entry: unknown keys {sorted(unknown)}; known: {sorted(_REPLY_KEYS)}"
            return _error(protocol, 500, msg), 0.0
        delay = float(reply.get("delay", 0.0))
        if reply.get("malformed"):
            return _Answer(200, MALFORMED_BODY, {"content-type": "application/json"}), delay
        if "raw" in reply:
            status = int(reply.get("status", 200))
            return _Answer(status, _json(reply["raw"]), {"content-type": "application/json"}), delay
        if "status" in reply and int(reply["status"]) >= 400:
            answer = _error(protocol, int(reply["status"]), reply.get("error"))
            if "retry_after" in reply:
                answer.headers["retry-after"] = str(reply["retry_after"])
            if "retry_after_ms" in reply:
                answer.headers["retry-after-ms"] = str(reply["retry_after_ms"])
            return answer, delay
        prompt, blocks = _canonical(protocol, body)
        usage = {"prompt": math.ceil(len(prompt) / 4), "output": _output_tokens(reply)}
        if protocol == "openai":
            cached_tokens = self.cache.openai(str(body["model"]), prompt)
            usage |= {"cached": cached_tokens, "read": 0, "written": 0}
        else:
            cached = self.cache.anthropic(str(body["model"]), prompt, blocks)
            usage |= {"cached": cached.read, "read": cached.read, "written": cached.written}
        with self._lock:
            self.usages.append(usage)
        build = _openai_completion if protocol == "openai" else _anthropic_completion
        payload = build(reply, body, usage, self._next_id)
        answer = _Answer(200, _json(payload), {"content-type": "application/json"}, True)
        return answer, delay


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    scripted: ScriptedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection frees its thread after this long
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``requests`` instead of an access log."""

    def do_GET(self) -> None:
        self._send(_error("openai", 404, f"no route GET {self.path}"))

    def do_POST(self) -> None:
        scripted = self.server.scripted
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        protocol = _PATHS.get(self.path.split("?", 1)[0])
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = RecordedRequest(
            protocol=protocol or "unknown",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        scripted._record(req)
        if protocol is None:
            self._send(_error("openai", 404, f"no route POST {self.path}"))
            return
        try:
            answer, delay = scripted._answer(protocol, req)
        except Exception as exc:
            # A bug in a script entry must reach the test as an answer, not a dropped socket.
            answer, delay = _error(protocol, 500, f"scripted server failed: {exc!r}"), 0.0
        if delay > 0:
            time.sleep(delay)
        # Counted before sending: once the client has the answer, the count must include it.
        if answer.completion:
            scripted._count_completion(1)
        if not self._send(answer) and answer.completion:
            scripted._count_completion(-1)

    def _send(self, answer: _Answer) -> bool:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (timeout) before the answer was ready.
            self.close_connection = True
            return False
        return True


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _error(protocol: WireProtocol, status: int, message: str | None) -> _Answer:
    """An error answer in the provider's own format."""
    text = message or f"scripted HTTP {status}"
    payload: dict[str, Any]
    if protocol == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "error")
        payload = {"type": "error", "error": {"type": kind, "message": text}}
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "error")
        code = "invalid_api_key" if status == 401 and "Incorrect" in text else None
        payload = {"error": {"message": text, "type": kind, "param": None, "code": code}}
    return _Answer(status, _json(payload), {"content-type": "application/json"})


def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
    calls = reply.get("tool_calls") or []
    return [c for c in calls if isinstance(c, dict)]


def _output_tokens(reply: Reply) -> int:
    text = str(reply.get("text") or "")
    calls = "".join(
        json.dumps({"name": c.get("name"), "arguments": c.get("arguments")}, sort_keys=True)
        for c in _tool_calls(reply)
    )
    return math.ceil(len((text + calls).encode("utf-8")) / 4)


def _openai_completion(
    reply: Reply, request: dict[str, Any], usage: dict[str, int], next_id: Callable[[], int]
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.get("text") or None,
        "refusal": None,
    }
    calls = _tool_calls(reply)
    if calls:
        message["tool_calls"] = [
            {
                "id": str(c.get("id") or f"call_scripted_{next_id()}"),
                "type": "function",
                "function": {
                    "name": c.get("name"),
                    "arguments": c["arguments"]
                    if isinstance(c.get("arguments"), str)
                    else json.dumps(c.get("arguments") or {}),
                },
            }
            for c in calls
        ]
    finish = reply.get("stop_reason") or ("tool_calls" if calls else "stop")
    return {
        "id": f"chatcmpl-scripted-{next_id()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": usage["prompt"],
            "completion_tokens": usage["output"],
            "total_tokens": usage["prompt"] + usage["output"],
            "prompt_tokens_details": {"cached_tokens": usage["cached"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_scripted",
    }


def _anthropic_completion(
    reply: Reply, request: dict[str, Any], usage: dict[str, int], next_id: Callable[[], int]
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.get("text"):
        content.append({"type": "text", "text": reply["text"]})
    calls = _tool_calls(reply)
    for c in calls:
        args = c.get("arguments")
        if isinstance(args, str):
            # The real API always sends an object; a string that is not one is passed through
            # so tests can drive the client's handling of broken arguments.
            try:
                decoded = json.loads(args)
            except ValueError:
                decoded = None
            args = decoded if isinstance(decoded, dict) else args
        content.append(
            {
                "type": "tool_use",
                "id": str(c.get("id") or f"toolu_scripted_{next_id()}"),
                "name": c.get("name"),
                "input": {} if args is None else args,
            }
        )
    stop = reply.get("stop_reason") or ("tool_use" if calls else "end_turn")
    return {
        "id": f"msg_scripted_{next_id()}",
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt"] - usage["read"] - usage["written"],
            "cache_creation_input_tokens": usage["written"],
            "cache_read_input_tokens": usage["read"],
            "output_tokens": usage["output"],
        },
    }


# -- token accounting --------------------------------------------------------------------------


def canonical_prompt(protocol: str, body: dict[str, Any]) -> bytes:
    """The deterministic serialisation the server's token estimates are based on."""
    return _canonical(protocol, body)[0]


def _canonical(protocol: str, body: dict[str, Any]) -> tuple[bytes, list[Block]]:
    """The canonical prompt and its content blocks (a message with string content is one
    block; the role line of a message with a block list belongs to its first block)."""
    tools = body.get("tools") or []
    segments: list[tuple[Any, bool, bool]] = [(t, _marked(t), True) for t in tools]
    if protocol == "anthropic":
        system = body.get("system")
        if isinstance(system, list):
            segments.extend((b, _marked(b), True) for b in system)
        elif system:
            segments.append((system, False, True))
    for m in body.get("messages") or []:
        content = m.get("content") if protocol == "anthropic" else None
        if isinstance(content, list):
            segments.append(({"role": m.get("role")}, False, False))
            segments.extend((b, _marked(b), True) for b in content)
        else:
            segments.append((m, _marked(m), True))
    out = bytearray()
    blocks: list[Block] = []
    for value, marked, is_block in segments:
        out += json.dumps(
            _unmarked(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        out += b"\n"
        if is_block:
            blocks.append(Block(len(out), marked))
    return bytes(out), blocks


def _marked(value: Any) -> bool:
    return isinstance(value, dict) and "cache_control" in value


def _unmarked(value: Any) -> Any:
    """A block without its own ``cache_control`` (a key of the same name inside a tool's
    input or schema is data, and stays)."""
    if not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k != "cache_control"}
    if value.get("type") == "tool_result" and isinstance(value.get("content"), list):
        out["content"] = [_unmarked(b) for b in value["content"]]
    return out
