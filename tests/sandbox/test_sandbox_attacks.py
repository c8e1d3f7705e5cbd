"""Hostile skills end to end: real CLI, real worker processes, real guest processes.

Every attack here is submitted the way an untrusted skill reaches Loopwright and must be
stopped at one of two points:

* at submit time: ``loopwright run FILE`` runs the policy (``check_source``) and refuses the
  file with the finding's rule id. The same source is then stored directly, bypassing the CLI,
  to show that the guest's own restricted compile refuses it too (defence in depth);
* at run time: the source passes the policy, but a runtime guard, a resource limit or a host
  check ends the run ``failed`` with a clear error.

Each test also checks that the attack had no effect on the host (marker files, listeners,
HTTP servers, the inbox) and that the worker carries on: a benign run on the same worker
completes afterwards (for resource attacks it is queued *behind* the attack).

The ``test_os_layer_*`` tests take the policy away: they run unrestricted Python in exactly
the bubblewrap + rlimit + pids-cgroup configuration a guest gets, to show what the OS layer
holds on its own.

Holes this corpus found were fixed (see docs/security.md, "Holes found and fixed"); what
fails and where.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from textwrap import dedent, indent
from typing import Any

import pytest

from conftest import DOCKER_IMAGE, Cluster, RedisProc, wait_until
from loopwright.inbox import Inbox
from loopwright.runner.records import Run
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.process import (
    GUEST_MODULE,
    ProcessBackend,
    ProcessGuest,
    _guest_code_paths,
)
from loopwright.sdk.manifest import read_declaration

# ---------------------------------------------------------------------------- helpers

BENIGN = """
from loopwright.sdk import skill
import json

@skill(name="benign-after-attack")
def main(ctx):
    doubled = ctx.step.run("double", lambda n: n * 2, ctx.event["data"]["n"])
    return {"doubled": doubled, "parsed": json.loads('{"a": [1, 2]}')}
"""

SECRET_NAME = "ACME_API_TOKEN"
MIB = 1024 * 1024


def src(name: str, body: str, *, header: str = "", options: str = "") -> str:
    """A one-skill module: ``header`` at module level, ``body`` inside ``main(ctx)``."""
    head = dedent(header).strip("\n")
    return (
        "from loopwright.sdk import skill\n"
        + (head + "\n" if head else "")
        + f'\n@skill(name="{name}"{options})\n'
        + "def main(ctx):\n"
        + indent(dedent(body).strip("\n"), "    ")
        + "\n"
    )


def peak_rss_bytes(pid: int) -> int:
    """The high-water mark of a process's resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def environ_of(pid: int) -> bytes:
    """The initial environment of a process, as the kernel keeps it."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


@dataclass
class Lab:
    """One sandbox cluster with one worker, and the checks every attack test shares."""

    cluster: Cluster
    worker: subprocess.Popen[bytes]
    backend: str

    def start(self, source: str, data: Any = None, **kw: Any) -> str:
        """Store ``source`` (never executed here) and start an untrusted run of it."""
        name = self.cluster.skill(source, filename=f"skill-{uuid.uuid4().hex[:8]}.py")
        return self.cluster.start(name, {} if data is None else data, trusted=False, **kw)

    def run(self, source: str, data: Any = None, timeout: float = 30.0, **kw: Any) -> Run:
        """Start an untrusted run and wait for it to end."""
        return self.cluster.wait(self.start(source, data, **kw), timeout=timeout)

    def assert_healthy(self) -> None:
        """The worker is alive and a benign sandboxed run on it completes correctly."""
        assert self.worker.poll() is None, "the worker process died"
        self.assert_benign_completed(self.start_benign(7), 7)

    def start_benign(self, n: int) -> str:
        return self.start(BENIGN, {"n": n})

    def assert_benign_completed(self, run_id: str, n: int) -> None:
        run = self.cluster.wait(run_id, timeout=30)
        assert run.status.value == "completed", run.error
        assert run.output == {"doubled": 2 * n, "parsed": {"a": [1, 2]}}

    def failed(self, source: str, *fragments: str, data: Any = None, **kw: Any) -> Run:
        """The run ends ``failed`` with every fragment in its error; the worker carries on."""
        run = self.run(source, data, **kw)
        assert run.status.value == "failed", (run.status, run.output)
        assert run.output is None
        for fragment in fragments:
            assert fragment in (run.error or ""), run.error
        self.assert_healthy()
        return run

    def failed_with_bystander(self, source: str, timeout: float = 60.0) -> Run:
        """Start the attack with a benign run queued behind it; both must end as expected."""
        attack = self.start(source)
        bystander = self.start_benign(21)
        run = self.cluster.wait(attack, timeout=timeout)
        assert run.status.value == "failed", (run.status, run.output)
        assert run.output is None
        self.assert_benign_completed(bystander, 21)
        assert self.worker.poll() is None, "the worker process died"
        return run

    def refused_at_submit(self, source: str, *findings: tuple[str, str]) -> None:
        """``loopwright run`` refuses the file with each (rule, message) finding; nothing is
        stored or run; the guest refuses the same source when the CLI is bypassed."""
        source = dedent(source)
        name = read_declaration(source).spec.name
        path = self.cluster.tmp / f"attack-{uuid.uuid4().hex[:8]}.py"
        path.write_text(source)
        # When the file is submitted like any untrusted skill
        result = self.cluster.cli("run", str(path))
        stderr = " ".join(result.stderr.split())
        # Then it is refused with the policy's findings, before anything is stored or run
        assert result.returncode != 0, result.stdout
        assert "refused by the sandbox policy" in stderr, stderr
        for rule, message in findings:
            assert f"[{rule}]" in stderr, stderr
            assert message in stderr, stderr
        assert name not in self.cluster.rt.sources.names()
        assert self.cluster.rt.runs.find(skill=name) == []
        # And when the CLI is bypassed (source stored directly), the guest refuses it too
        run = self.run(source)
        assert run.status.value == "failed", (run.status, run.output)
        assert (run.error or "").startswith("policy: line "), run.error
        assert findings[0][1] in (run.error or ""), run.error
        assert self.cluster.rt.runs.steps(run.id) == []
        self.assert_healthy()


def start_lab(cluster: Cluster, backend: str) -> Lab:
    return Lab(cluster, cluster.worker(), backend)


@pytest.fixture
def lab(sandbox_cluster: Cluster, sandbox_backend: str) -> Lab:
    """A sandbox cluster (both backends) with one worker shared by the test's runs."""
    return start_lab(sandbox_cluster, sandbox_backend)


@pytest.fixture
def secret() -> str:
    return "acme-" + uuid.uuid4().hex


def sandbox_settings(backend: str, **overrides: Any) -> dict[str, Any]:
    """The settings of conftest's ``sandbox_cluster``, with overrides."""
    base: dict[str, Any] = {
        "sandbox_backend": backend,
        "sandbox_docker_image": DOCKER_IMAGE,
        "sandbox_cpu_seconds": 5,
        "http_private_allow": "127.0.0.1",
    }
    return {**base, **overrides}


@pytest.fixture
def secret_lab(make_cluster: Any, sandbox_backend: str, secret: str) -> Lab:
    """A lab whose worker holds a secret twice: in its own environment and as a platform
    secret (LOOPWRIGHT_SECRETS) that skills may name."""
    cluster = make_cluster(**sandbox_settings(sandbox_backend, secrets={"PAYMENTS_KEY": secret}))
    return Lab(cluster, cluster.worker(env={SECRET_NAME: secret}), sandbox_backend)


@pytest.fixture
def strict_lab(make_cluster: Any, sandbox_backend: str) -> Lab:
    """A lab as configured in production: the http tool may not reach private addresses."""
    cluster = make_cluster(**sandbox_settings(sandbox_backend, http_private_allow=""))
    return start_lab(cluster, sandbox_backend)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A real HTTP server on 127.0.0.1 that records every request it receives."""

    replies: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    reflect: set[str] = field(default_factory=set)  # paths answering with the request headers
    requests: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append(
                    Seen(self.command, self.path, dict(self.headers.items()), body)
                )
                path = self.path.split("?")[0]
                status, payload, headers = recorder.replies.get(path, (200, b'{"ok": true}', {}))
                if path in recorder.reflect:
                    payload = json.dumps(dict(self.headers.items())).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = handle_any  # noqa: N815 - http.server's naming
            do_POST = handle_any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.start()
    yield rec
    rec.stop()


@dataclass
class Listener:
    """A plain TCP listener on 127.0.0.1 that an attack must never reach."""

    sock: socket.socket

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def received_nothing(self) -> bool:
        """True when no connection is waiting in the backlog."""
        self.sock.settimeout(0.3)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return True
        conn.close()
        return False


@pytest.fixture
def listener() -> Iterator[Listener]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield Listener(sock)
    sock.close()


# ============================================================ refused at submit time
# dunder walks, format strings, frames, builtins


def test_dunder_walk_to_subclasses_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("dunder-walk", "return len(().__class__.__bases__[0].__subclasses__())"),
        ("underscore-name", 'Attribute "__class__" starts with "_"'),
        ("underscore-name", 'Attribute "__bases__" starts with "_"'),
        ("underscore-name", 'Attribute "__subclasses__" starts with "_"'),
    )


def test_str_format_attribute_walk_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("format-walk", 'return "{0.__class__.__mro__}".format(1)'),
        ("forbidden-attribute", '".format" is not allowed'),
    )


def test_str_format_map_attribute_walk_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("format-map-walk", 'return "{x.__class__}".format_map({"x": 1})'),
        ("forbidden-attribute", '".format_map" is not allowed'),
    )


def test_string_formatter_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "formatter-walk",
            'return Formatter().vformat("{0.__class__}", [1], {})',
            header="from string import Formatter",
        ),
        ("import-not-allowed", 'Module "string" cannot be imported'),
    )


def test_fullwidth_spelling_of_format_is_normalised_and_refused_at_submit(lab: Lab) -> None:
    # Python NFKC-normalises identifiers: fullwidth ".format" (U+FF46...) is ".format".
    lab.refused_at_submit(
        src("fullwidth-format", 'return "{0.__class__}".\uff46\uff4f\uff52\uff4d\uff41\uff54(1)'),
        ("forbidden-attribute", '".format" is not allowed'),
    )


def test_generator_frame_walk_to_globals_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "gen-frame-walk",
            """
            def gen():
                yield 1
            return str(gen().gi_frame.f_back.f_globals)
            """,
        ),
        ("forbidden-attribute", 'Attribute "gi_frame" is not accessible'),
        ("forbidden-attribute", 'Attribute "f_back" is not accessible'),
        ("forbidden-attribute", 'Attribute "f_globals" is not accessible'),
    )


def test_coroutine_frame_walk_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "coro-frame-walk",
            "return str(probe().cr_frame.f_globals)",
            header="async def probe():\n    return 1",
        ),
        ("statement-not-allowed", "Async functions are not allowed."),
        ("forbidden-attribute", 'Attribute "cr_frame" is not accessible'),
    )


def test_async_generator_frame_walk_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "agen-frame-walk",
            "return str(agen().ag_frame.f_globals)",
            header="async def agen():\n    yield 1",
        ),
        ("statement-not-allowed", "Async functions are not allowed."),
        ("forbidden-attribute", 'Attribute "ag_frame" is not accessible'),
    )


def test_traceback_frame_walk_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "traceback-walk",
            """
            try:
                1 / 0
            except ZeroDivisionError as exc:
                return str(exc.__traceback__.tb_frame.f_globals)
            """,
        ),
        ("underscore-name", 'Attribute "__traceback__" starts with "_"'),
        ("forbidden-attribute", 'Attribute "tb_frame" is not accessible'),
    )


def test_builtins_access_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("builtins-grab", 'return __builtins__["open"]("/etc/passwd").read()'),
        ("underscore-name", 'Name "__builtins__" starts with "_"'),
    )


def test_positional_only_parameter_shadowing_a_guard_is_refused_at_submit(lab: Lab) -> None:
    # A parameter named like RestrictedPython's _getattr_ guard would replace the guard for
    # every attribute access in the function body.
    lab.refused_at_submit(
        src(
            "posonly-guard",
            "return peek(getattr)",
            header="""
            def peek(_getattr_, /):
                return str(().__class__)
            """,
        ),
        ("underscore-name", 'Parameter "_getattr_" starts with "_"'),
    )


def test_except_star_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "except-star",
            """
            seen = []
            try:
                raise ValueError("x")
            except* ValueError as group:
                seen.append(group)
            return str(seen)
            """,
        ),
        ("statement-not-allowed", "except* (exception groups) is not allowed."),
    )


def test_class_overriding_getattribute_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "sneaky-class",
            "return Sneaky().anything",
            header="""
            class Sneaky:
                def __getattribute__(self, name):
                    return name
            """,
        ),
        ("class-not-allowed", 'Class "Sneaky": class definitions are not allowed.'),
        ("underscore-name", 'Function "__getattribute__" starts with "_"'),
    )


def test_operator_attrgetter_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "attrgetter-walk",
            'return str(attrgetter("__class__.__mro__")(1))',
            header="from operator import attrgetter",
        ),
        ("import-not-allowed", 'Module "operator" cannot be imported'),
    )


def test_module_attribute_poisoning_by_name_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "poison-json",
            'json.loads = lambda text: "poisoned"\nreturn 1',
            header="import json",
        ),
        ("module-write", 'Cannot assign or delete "json.loads"'),
    )


# imports, dynamic code, files


def test_import_os_is_refused_at_submit(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-os"
    lab.refused_at_submit(
        src("os-system", f'return os.system("touch {marker}")', header="import os"),
        ("import-not-allowed", 'Module "os" cannot be imported in a skill.'),
    )
    assert not marker.exists()


def test_import_sys_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("sys-modules", 'return sys.modules["os"].environ["HOME"]', header="import sys"),
        ("import-not-allowed", 'Module "sys" cannot be imported in a skill.'),
    )


def test_import_subprocess_is_refused_at_submit(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-subprocess"
    lab.refused_at_submit(
        src(
            "subprocess-run",
            f'return subprocess.run(["touch", "{marker}"]).returncode',
            header="import subprocess",
        ),
        ("import-not-allowed", 'Module "subprocess" cannot be imported in a skill.'),
    )
    assert not marker.exists()


def test_import_ctypes_is_refused_at_submit(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-ctypes"
    lab.refused_at_submit(
        src(
            "ctypes-system",
            f'return ctypes.CDLL(None).system(b"touch {marker}")',
            header="import ctypes",
        ),
        ("import-not-allowed", 'Module "ctypes" cannot be imported in a skill.'),
    )
    assert not marker.exists()


def test_import_importlib_is_refused_at_submit(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-importlib"
    lab.refused_at_submit(
        src(
            "importlib-os",
            f'return importlib.import_module("os").system("touch {marker}")',
            header="import importlib",
        ),
        ("import-not-allowed", 'Module "importlib" cannot be imported in a skill.'),
    )
    assert not marker.exists()


def test_dunder_import_call_is_refused_at_submit(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-dunder-import"
    lab.refused_at_submit(
        src("dunder-import", f'return __import__("os").system("touch {marker}")'),
        ("underscore-name", 'Name "__import__" starts with "_"'),
    )
    assert not marker.exists()


def test_platform_internals_and_redis_imports_are_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "reach-redis",
            "return str(runner)",
            header="from loopwright import runner\nimport redis",
        ),
        ("import-not-allowed", 'Only "sdk" can be imported from the loopwright package.'),
        ("import-not-allowed", 'Module "redis" cannot be imported in a skill.'),
    )


def test_open_etc_passwd_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("read-passwd", 'return open("/etc/passwd").read()'),
        ("forbidden-builtin", '"open" is not available in a skill.'),
    )


def test_writing_outside_tmp_is_refused_at_submit(lab: Lab) -> None:
    target = lab.cluster.tmp / "written-by-skill"
    lab.refused_at_submit(
        src("write-host-file", f'return open("{target}", "w").write("pwned")'),
        ("forbidden-builtin", '"open" is not available in a skill.'),
    )
    assert not target.exists()


def test_eval_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("eval-dunder", 'return str(eval("().__class__.__mro__"))'),
        ("forbidden-builtin", '"eval" is not available in a skill.'),
    )


def test_exec_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("exec-import", 'exec("import os")\nreturn 1'),
        ("forbidden-builtin", '"exec" is not available in a skill.'),
    )


# processes, threads, network, environment


def test_fork_bomb_is_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src("fork-bomb", "while True:\n    os.fork()", header="import os"),
        ("import-not-allowed", 'Module "os" cannot be imported in a skill.'),
    )


def test_threads_are_refused_at_submit(lab: Lab) -> None:
    lab.refused_at_submit(
        src(
            "thread-flood",
            "for i in range(1000):\n    threading.Thread(target=len, args=[[]]).start()",
            header="import threading",
        ),
        ("import-not-allowed", 'Module "threading" cannot be imported in a skill.'),
    )


def test_socket_to_loopback_is_refused_at_submit(lab: Lab, listener: Listener) -> None:
    lab.refused_at_submit(
        src(
            "loopback-socket",
            f'socket.create_connection(("127.0.0.1", {listener.port})).sendall(b"pwned")',
            header="import socket",
        ),
        ("import-not-allowed", 'Module "socket" cannot be imported in a skill.'),
    )
    assert listener.received_nothing()


def test_host_environment_secrets_are_refused_at_submit_and_absent_from_guests(
    secret_lab: Lab, secret: str
) -> None:
    lab = secret_lab
    # Given a worker with a secret in its environment and in LOOPWRIGHT_SECRETS
    worker_env = environ_of(lab.worker.pid)
    assert f"{SECRET_NAME}={secret}".encode() in worker_env
    assert b"LOOPWRIGHT_SECRETS=" in worker_env and secret.encode() in worker_env
    # When a skill asks for them, it is refused (and the bypassed run fails in the guest)
    lab.refused_at_submit(
        src(
            "steal-env",
            f'return [os.environ["{SECRET_NAME}"], os.environ["LOOPWRIGHT_SECRETS"]]',
            header="import os",
        ),
        ("import-not-allowed", 'Module "os" cannot be imported in a skill.'),
    )
    # Then no guest process the worker started (the warm-pool guest waits right now) has them
    if lab.backend == "process":
        guests = wait_until(lambda: descendants(lab.worker.pid), timeout=10)
        for pid in guests:
            env = environ_of(pid)
            assert secret.encode() not in env, f"guest pid {pid} sees the secret"
            assert SECRET_NAME.encode() not in env and b"LOOPWRIGHT_" not in env


# ============================================================ stopped at run time
# routes the static policy cannot see: attribute names built from strings


def test_dunder_attribute_built_from_strings_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src("built-dunder", 'return str(getattr((), "__cla" + "ss__"))'),
        "sandbox guard refused: attribute '__class__' is refused",
    )


def test_getattr_default_does_not_hide_a_dunder_probe(lab: Lab) -> None:
    lab.failed(
        src("probe-with-default", 'return str(getattr(1, "__cla" + "ss__", None))'),
        "sandbox guard refused: attribute '__class__' is refused",
    )


def test_format_method_fetched_by_built_name_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src(
            "built-format",
            'fmt = getattr("{0.__class__.__mro__}", "for" + "mat")\nreturn fmt(1)',
        ),
        "sandbox guard refused: attribute 'format' is refused",
    )


def test_format_map_fetched_by_built_name_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src(
            "built-format-map",
            'fmt = getattr("{x.__class__}", "format" + "_map")\nreturn fmt({"x": 1})',
        ),
        "sandbox guard refused: attribute 'format_map' is refused",
    )


def test_generator_frame_fetched_by_built_name_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src("built-gi-frame", 'g = (n for n in [1])\nreturn str(getattr(g, "gi_" + "frame"))'),
        "sandbox guard refused: attribute 'gi_frame' is refused",
    )


def test_traceback_fetched_by_built_name_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src(
            "built-traceback",
            """
            try:
                1 / 0
            except ZeroDivisionError as exc:
                return str(getattr(exc, "__trace" + "back__"))
            """,
        ),
        "sandbox guard refused: attribute '__traceback__' is refused",
    )


def test_function_globals_fetched_by_built_name_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src("built-globals", 'return str(getattr(main, "__glo" + "bals__")["__builtins__"])'),
        "sandbox guard refused: attribute '__globals__' is refused",
    )


def test_attribute_error_obj_leak_fails_the_run(lab: Lab) -> None:
    # AttributeError.obj is the object the failed lookup ran on: here the guest's step
    # object, which holds the protocol channel.
    lab.failed(
        src(
            "attribute-error-obj",
            """
            try:
                getattr(ctx.step, "no" + "thing")
            except AttributeError as exc:
                return repr(exc.obj)
            """,
        ),
        "sandbox guard refused: AttributeError.obj is refused (it can leak objects)",
    )


def test_getattr_as_a_higher_order_function_fails_the_run(lab: Lab) -> None:
    # operator.attrgetter is not importable; functools.reduce(getattr, ...) is the same walk.
    lab.failed(
        src(
            "reduce-getattr",
            'return str(functools.reduce(getattr, ["__cla" + "ss__", "__ba" + "se__"], ()))',
            header="import functools",
        ),
        "sandbox guard refused: attribute '__class__' is refused",
    )


def test_module_attribute_leading_to_another_module_fails_the_run(lab: Lab) -> None:
    # re.enum is the real enum module, whose sys attribute is the real sys module.
    lab.failed(
        src("re-enum-sys", 'return str(getattr(re, "en" + "um"))', header="import re"),
        "sandbox guard refused: re.enum is not available in the sandbox",
    )


def test_protocol_channel_behind_ctx_is_unreachable(lab: Lab) -> None:
    lab.failed(
        src("grab-channel", 'return repr(getattr(ctx.step, "_" + "ch"))'),
        "sandbox guard refused: attribute '_ch' is refused",
    )


def test_swallowed_guard_refusals_yield_nothing(lab: Lab) -> None:
    # GuardViolation derives from BaseException, but `except BaseException` still catches
    # it: a skill can keep probing after a refusal (see docs/security.md). Each probe must
    # still come back empty-handed.
    run = lab.run(
        src(
            "swallow-refusals",
            """
            got = []
            for obj, name in [((), "__cla" + "ss__"), (main, "__glo" + "bals__"),
                              ("{0}", "for" + "mat"), (ctx.step, "_" + "ch")]:
                try:
                    got.append(repr(getattr(obj, name)))
                except BaseException as exc:
                    got.append("refused")
            return got
            """,
        )
    )
    assert run.status.value == "completed", run.error
    assert run.output == ["refused"] * 4
    lab.assert_healthy()


# module poisoning and per-run isolation


def test_module_poisoning_through_an_alias_fails_and_the_next_run_sees_the_real_module(
    lab: Lab,
) -> None:
    # Given a run that writes to json through an alias the static policy cannot track
    lab.failed(
        src(
            "poison-json-alias",
            'alias = json\nalias.loads = lambda text: "poisoned"\nreturn 1',
            header="import json",
        ),
        "sandbox guard refused: modules are read-only",
    )
    # And one that writes an attribute onto the real json.loads function object
    lab.failed(
        src(
            "poison-json-function",
            "fn = json.loads\nfn.poisoned = True\nreturn 1",
            header="import json",
        ),
        "sandbox guard refused: cannot assign to or delete from function objects",
    )
    # Then runs after them on the same worker parse JSON with the real json.loads
    # (failed() checked it with BENIGN, which returns json.loads('{"a": [1, 2]}'))


def test_in_guest_mutation_of_a_shared_function_does_not_reach_the_next_run(lab: Lab) -> None:
    # Given a run that succeeds in mutating a real stdlib function inside its guest
    # (@skill(...) sets an attribute on whatever function it decorates)
    first = lab.run(
        src(
            "mark-shared-function",
            'skill(name="hijacked")(statistics.mean)\nreturn spec_of(statistics.mean).name',
            header="from loopwright.sdk import spec_of\nimport statistics",
        )
    )
    assert first.status.value == "completed" and first.output == "hijacked"
    # When the next run on the same worker looks at the same function
    second = lab.run(
        src(
            "inspect-shared-function",
            "return spec_of(statistics.mean) is None",
            header="from loopwright.sdk import spec_of\nimport statistics",
        )
    )
    # Then it sees the pristine one: every run gets a fresh guest process
    assert second.status.value == "completed" and second.output is True
    lab.assert_healthy()


def test_pickle_shaped_payloads_round_trip_as_inert_strings(lab: Lab) -> None:
    marker = lab.cluster.tmp / "pwned-by-unpickling"
    # A protocol-0 pickle that runs os.system when loaded, and a protocol-4 one as latin-1
    proto0 = f"cos\nsystem\n(S'touch {marker}'\ntR."
    proto4 = "\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x8c\x06system\x93."
    big = proto0 + "#" * (64 * 1024)  # over the inline limit: stored in its own key
    run = lab.run(
        src(
            "pickle-shaped",
            """
            data = ctx.event["data"]
            a = ctx.step.run("proto0", lambda: data["proto0"])
            b = ctx.step.run("proto4", lambda: data["proto4"])
            c = ctx.step.run("big", lambda: data["big"])
            return {"proto0": a, "proto4": b, "big": c}
            """,
        ),
        {"proto0": proto0, "proto4": proto4, "big": big},
    )
    expected = {"proto0": proto0, "proto4": proto4, "big": big}
    assert run.status.value == "completed", run.error
    assert run.output == expected
    assert [s.output for s in lab.cluster.rt.runs.steps(run.id)] == [proto0, proto4, big]
    assert not marker.exists(), "something unpickled a step output"
    lab.assert_healthy()
    assert not marker.exists()


def test_print_cannot_forge_protocol_messages(lab: Lab) -> None:
    forged = json.dumps({"op": "end", "output_json": json.dumps("forged")})
    run = lab.run(
        src("forge-end", f"print({forged!r})\nreturn 'genuine'"),
    )
    assert run.status.value == "completed", run.error
    assert run.output == "genuine"
    lab.assert_healthy()


# resource exhaustion


def test_infinite_loop_is_killed_by_the_cpu_limit(lab: Lab) -> None:
    run = lab.failed_with_bystander(src("spin", "while True:\n    pass"))
    assert (run.error or "").startswith("sandbox: "), run.error


def test_cpu_limit_failure_says_so(
    lab: Lab, request: pytest.FixtureRequest, sandbox_backend: str
) -> None:
    run = lab.run(src("spin-for-message", "while True:\n    pass"))
    assert run.status.value == "failed"
    assert "cpu time limit" in (run.error or "").lower(), run.error


def test_huge_power_is_killed_by_the_cpu_limit(lab: Lab) -> None:
    run = lab.failed_with_bystander(src("huge-power", "return 10 ** (10 ** 8)"))
    assert (run.error or "").startswith("sandbox: "), run.error


def test_huge_string_hits_the_memory_limit(lab: Lab) -> None:
    run = lab.failed_with_bystander(src("huge-string", 'return len("a" * 10 ** 10)'))
    assert "memory" in (run.error or "").lower(), run.error


def test_growing_list_hits_the_memory_limit(lab: Lab) -> None:
    run = lab.failed_with_bystander(
        src("growing-list", 'hoard = []\nwhile True:\n    hoard.append("x" * 10 ** 6)')
    )
    assert "memory" in (run.error or "").lower(), run.error


def test_deep_recursion_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src("deep-recursion", "def dive(n):\n    return dive(n + 1)\nreturn dive(0)"),
        "RecursionError: maximum recursion depth exceeded",
    )


def test_deeply_nested_output_fails_the_run(lab: Lab) -> None:
    lab.failed(
        src(
            "deep-output",
            "nested = []\nfor i in range(100000):\n    nested = [nested]\nreturn nested",
        ),
        "RecursionError",
    )


def test_step_output_of_100_mb_is_refused_without_host_memory_blowup(lab: Lab) -> None:
    before = peak_rss_bytes(lab.worker.pid)
    run = lab.failed_with_bystander(
        src("huge-step-output", 'return ctx.step.run("big", lambda: "x" * (100 * 1024 * 1024))')
    )
    assert "cap" in (run.error or ""), run.error
    # The host reads at most the message cap (about 2 MiB), never the 100 MB
    assert peak_rss_bytes(lab.worker.pid) - before < 48 * MIB


def test_step_output_over_the_cap_names_the_step(lab: Lab) -> None:
    run = lab.run(
        src("huge-step-named", 'return ctx.step.run("big", lambda: "x" * (100 * 1024 * 1024))')
    )
    assert run.status.value == "failed"
    assert "step 'big'" in (run.error or "") and "output" in (run.error or ""), run.error


def test_return_value_of_100_mb_is_refused(lab: Lab) -> None:
    run = lab.failed_with_bystander(src("huge-return", 'return "x" * (100 * 1024 * 1024)'))
    assert "cap" in (run.error or ""), run.error


def test_printing_100_mb_is_capped_in_the_guest(lab: Lab) -> None:
    before = peak_rss_bytes(lab.worker.pid)
    run = lab.run(
        src(
            "print-flood",
            'chunk = "x" * (1024 * 1024)\nfor i in range(100):\n    print(chunk)\nreturn "done"',
        )
    )
    assert run.status.value == "completed", run.error
    assert run.output == "done"
    assert peak_rss_bytes(lab.worker.pid) - before < 48 * MIB
    lab.assert_healthy()


def test_log_flood_is_capped(lab: Lab) -> None:
    run = lab.run(
        src(
            "log-flood",
            'for i in range(1500):\n    ctx.log.info("line " + str(i))\n'
            'ctx.log.error("y" * 100000)\nreturn "logged"',
        )
    )
    assert run.status.value == "completed", run.error
    logs = lab.cluster.rt.runs.logs(run.id)
    assert len(logs) == lab.cluster.settings.run_log_max_entries
    assert logs[-1]["message"] == "y" * 4000
    lab.assert_healthy()


def test_busy_loop_past_the_run_timeout_is_killed(lab: Lab) -> None:
    run = lab.failed_with_bystander(
        src("spin-timeout", "while True:\n    pass", options=', timeout="1s"')
    )
    assert "run exceeded its 1s timeout" in (run.error or ""), run.error


def test_catastrophic_regex_is_stopped_by_the_run_timeout(lab: Lab) -> None:
    run = lab.failed_with_bystander(
        src(
            "redos",
            'return bool(re.match("(a+)+$", "a" * 64 + "b"))',
            header="import re",
            options=', timeout="1s"',
        )
    )
    assert "run exceeded its 1s timeout" in (run.error or ""), run.error


# ============================================================ host tools misuse


def test_http_to_a_host_outside_http_allow_is_refused(lab: Lab, recorder: Recorder) -> None:
    lab.failed(
        src(
            "http-not-allowed",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{recorder.url("/x")}")',
            options=', tools=["http"], http_allow=["api.example.com"]',
        ),
        "host '127.0.0.1' is not in this skill's http_allow",
    )
    assert recorder.requests == []


def test_http_tool_that_was_not_declared_is_refused(lab: Lab, recorder: Recorder) -> None:
    lab.failed(
        src(
            "http-undeclared",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{recorder.url("/x")}")',
            options=', http_allow=["127.0.0.1"]',
        ),
        "tool 'http' is not declared",
    )
    assert recorder.requests == []


def test_file_url_is_refused(lab: Lab) -> None:
    lab.failed(
        src(
            "http-file-url",
            'return ctx.step.run("get", ctx.tools.http.get_json, "file:///etc/passwd")',
            options=', tools=["http"], http_allow=["127.0.0.1", ""]',
        ),
        "only http(s) URLs are allowed",
    )


def test_credentials_in_the_url_cannot_disguise_the_host(lab: Lab, recorder: Recorder) -> None:
    # The allowed name appears in the URL, but the host it points at is "localhost".
    url = f"http://127.0.0.1@localhost:{recorder.port}/x"
    lab.failed(
        src(
            "http-userinfo",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{url}")',
            options=', tools=["http"], http_allow=["127.0.0.1"]',
        ),
        "credentials in URLs are refused",
    )
    assert recorder.requests == []


def test_http_redirect_to_an_undeclared_host_is_refused(lab: Lab, recorder: Recorder) -> None:
    recorder.replies["/jump"] = (302, b"", {"Location": f"http://localhost:{recorder.port}/in"})
    lab.failed(
        src(
            "http-redirect",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{recorder.url("/jump")}")',
            options=', tools=["http"], http_allow=["127.0.0.1"]',
        ),
        "host 'localhost' is not in this skill's http_allow",
    )
    assert [r.path for r in recorder.requests] == ["/jump"]


@pytest.mark.parametrize(
    ("target", "allow"),
    [
        ("http://127.0.0.1:{port}/meta", "127.0.0.1"),
        ("http://localhost:{port}/meta", "localhost"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ],
    ids=["loopback", "name-resolving-to-loopback", "cloud-metadata"],
)
def test_http_to_a_private_address_is_refused_when_private_is_not_allowed(
    strict_lab: Lab, recorder: Recorder, target: str, allow: str
) -> None:
    # The skill declares the private host itself: http_allow is the author's own claim, so
    # the operator's http_private_allow="" is what must stop it.
    assert strict_lab.cluster.settings.http_private_allow == ""
    url = target.format(port=recorder.port)
    strict_lab.failed(
        src(
            "http-private",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{url}")',
            options=f', tools=["http"], http_allow=["{allow}"]',
        ),
        "addresses are refused",
    )
    assert recorder.requests == []


def test_notify_channel_cannot_reveal_a_secret_value(
    make_cluster: Any, sandbox_backend: str, secret: str
) -> None:
    cluster = make_cluster(**sandbox_settings(sandbox_backend, secrets={"DB_PASSWORD": secret}))
    lab = start_lab(cluster, sandbox_backend)
    run = lab.run(
        src(
            "secret-via-channel",
            """
            def leak():
                try:
                    ctx.tools.notify("x", channel="slack:DB_PASSWORD")
                except Exception as exc:
                    return str(exc)
            return ctx.step.run("leak", leak)
            """,
            options=', tools=["notify"], secrets=["DB_PASSWORD"], retries=0',
        )
    )
    recorded = json.dumps([run.to_dict(), [s.to_dict() for s in cluster.rt.runs.steps(run.id)]])
    assert secret not in recorded, "the secret's value reached the guest"
    lab.assert_healthy()


def test_an_echoing_host_cannot_hand_a_secret_value_to_the_guest(
    make_cluster: Any, sandbox_backend: str, secret: str, recorder: Recorder
) -> None:
    cluster = make_cluster(**sandbox_settings(sandbox_backend, secrets={"PAYMENTS_KEY": secret}))
    lab = start_lab(cluster, sandbox_backend)
    recorder.reflect.add("/echo")
    url = recorder.url("/echo")
    run = lab.run(
        src(
            "secret-via-echo",
            f"""
            headers = {{"X-Key": "{{{{secret:PAYMENTS_KEY}}}}"}}
            echoed = ctx.step.run("echo", ctx.tools.http.get_json, "{url}", None, headers)
            return echoed["X-Key"]
            """,
            options=', tools=["http"], secrets=["PAYMENTS_KEY"], http_allow=["127.0.0.1"]',
        )
    )
    recorded = json.dumps([run.to_dict(), [s.to_dict() for s in cluster.rt.runs.steps(run.id)]])
    assert secret not in recorded, "the secret's value reached the guest"
    lab.assert_healthy()


def test_notify_outside_a_step_is_refused(lab: Lab) -> None:
    lab.failed(
        src("notify-outside", 'ctx.tools.notify("hello")\nreturn 1', options=', tools=["notify"]'),
        "host tools can only be called inside a step",
    )
    from loopwright.inbox import Inbox

    assert Inbox(lab.cluster.rt.redis, lab.cluster.rt.keys, lab.cluster.rt.settings).list() == []


def test_http_outside_a_step_is_refused(lab: Lab, recorder: Recorder) -> None:
    lab.failed(
        src(
            "http-outside",
            f'return ctx.tools.http.get_json("{recorder.url("/x")}")',
            options=', tools=["http"], http_allow=["127.0.0.1"]',
        ),
        "host tools can only be called inside a step",
    )
    assert recorder.requests == []


def test_notify_flood_cannot_evict_other_runs_notices(lab: Lab) -> None:
    # Given a run that posted a notice
    victim = lab.run(
        src(
            "victim-notice",
            'ctx.step.run("tell", ctx.tools.notify, "keep me")\nreturn 1',
            options=', tools=["notify"]',
        )
    )
    assert victim.status.value == "completed"
    # When another run floods the inbox
    lab.run(
        src(
            "notify-flood",
            """
            def flood():
                for i in range(10001):
                    ctx.tools.notify("spam " + str(i))
            ctx.step.run("flood", flood)
            return 1
            """,
            options=', tools=["notify"], retries=0',
        ),
        timeout=60,
    )
    # Then the first run's notice is still there
    rt = lab.cluster.rt
    inbox = Inbox(rt.redis, rt.keys, rt.settings).list(limit=100_000)
    assert any(n.run_id == victim.id for n in inbox)


# ============================================================ host-side robustness
# values a guest may legitimately send that the host cannot handle


CRASH_REASON = (
    "an exception in the host while answering a guest request ({what}) escapes run_session; "
    "Executor._run's generic handler then reads skill.filename, unbound for sandboxed runs, so "
    "the RQ job dies with UnboundLocalError and the run stays 'running' (with a scheduler it "
    "is reaped and crash-loops until max_run_reaps, repeating its host effects)"
)


def test_unrepresentable_sleep_duration_fails_the_run_cleanly(lab: Lab) -> None:
    run = lab.cluster.wait(lab.start(src("sleep-forever", 'ctx.step.sleep("nap", 1e308)')), 6)
    assert run.status.value == "failed" and run.reaps == 0
    assert "UnboundLocalError" not in (run.error or ""), run.error
    lab.assert_healthy()


def test_nan_from_an_allowed_http_endpoint_ends_the_run_once(lab: Lab, recorder: Recorder) -> None:
    recorder.replies["/nan"] = (200, b'{"value": NaN}', {})
    run_id = lab.start(
        src(
            "http-nan",
            f'return ctx.step.run("get", ctx.tools.http.get_json, "{recorder.url("/nan")}")',
            options=', tools=["http"], http_allow=["127.0.0.1"], retries=0',
        )
    )
    run = lab.cluster.wait(run_id, 6)
    assert run.reaps == 0 and "UnboundLocalError" not in (run.error or ""), run.error
    assert len(recorder.requests) == 1
    lab.assert_healthy()


def test_lone_surrogate_step_output_survives_replay(lab: Lab) -> None:
    lab.cluster.scheduler()
    run_id = lab.start(
        src(
            "surrogate-replay",
            'value = ctx.step.run("odd", lambda: chr(55296))\n'
            'ctx.step.sleep("nap", 0.2)\nreturn len(value)',
        )
    )
    run = lab.cluster.wait(run_id, 8)
    assert run.reaps == 0 and "UnboundLocalError" not in (run.error or ""), run.error
    assert run.status.value == "completed" and run.output == 1, run.error
    lab.assert_healthy()


DEEP_SOURCE = (
    'from loopwright.sdk import skill\n\n@skill(name="deep-nesting")\ndef main(ctx):\n'
    "    return " + "-" * 100_000 + "1\n"
)
DEEP_REASON = (
    "read_declaration (sdk/manifest.py) calls ast.parse and catches only SyntaxError; a deeply "
    "nested expression raises MemoryError (or RecursionError) there, before check_source's "
    "'too-complex' finding is reached: {what}"
)


def test_deeply_nested_source_is_refused_at_submit_with_a_finding(lab: Lab) -> None:
    path = lab.cluster.tmp / "deep.py"
    path.write_text(DEEP_SOURCE)
    result = lab.cluster.cli("run", str(path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-400:]
    assert "[too-complex]" in " ".join(result.stderr.split())
    lab.assert_healthy()


def test_deeply_nested_source_stored_directly_fails_the_run_cleanly(lab: Lab) -> None:
    rt = lab.cluster.rt
    version = rt.sources.put(DEEP_SOURCE, "deep-nesting")
    run_id = rt.runs.create(skill="deep-nesting", version=version, data={}, trusted=False)
    run = lab.cluster.wait(run_id, 6)
    assert run.status.value == "failed" and run.reaps == 0, run.error
    lab.assert_healthy()


# ============================================================ the OS layer on its own
# Unrestricted Python (no policy, no guards) in the exact bubblewrap + rlimits + pids cgroup
# configuration of a guest: what holds if a skill ever escapes the policy.

OS_LIMITS = GuestLimits(cpu_seconds=5)

PROBE = """
import json


def attempt(label, fn):
    try:
        value = fn()
    except BaseException as exc:
        print(json.dumps([label, "refused", type(exc).__name__ + ": " + str(exc)]), flush=True)
    else:
        print(json.dumps([label, "ok", repr(value)[:4000]]), flush=True)
"""


@dataclass
class Escaped:
    """What an unrestricted guest reported, one [label, outcome, detail] line per attempt."""

    results: dict[str, tuple[str, str]]
    exit: str
    guest: ProcessGuest

    def refused(self, label: str, *fragments: str) -> str:
        outcome, detail = self.results[label]
        assert outcome == "refused", f"{label}: {detail}"
        for fragment in fragments:
            assert fragment in detail, detail
        return detail

    def ok(self, label: str) -> str:
        outcome, detail = self.results[label]
        assert outcome == "ok", f"{label}: {detail}"
        return detail


def run_unrestricted(code: str, limits: GuestLimits = OS_LIMITS) -> Escaped:
    """Run ``code`` with ``python -I -c`` instead of the guest module, same argv otherwise."""
    backend = ProcessBackend(limits, pool_size=0)
    if not backend.bwrap:
        pytest.skip("bubblewrap is not installed: the process backend has no OS isolation here")
    assert backend.argv[-3:] == ["-I", "-m", GUEST_MODULE], backend.argv
    argv = [*backend.argv[:-3], "-I", "-c", PROBE + dedent(code)]
    guest = ProcessGuest(argv, limits, backend.cgroup_root)
    results: dict[str, tuple[str, str]] = {}
    try:
        while (line := guest.read_line(time.monotonic() + 30)) is not None:
            label, outcome, detail = json.loads(line)
            results[label] = (outcome, detail)
        exit_text = guest.describe_exit()
    finally:
        guest.kill()
    return Escaped(results, exit_text, guest)


def test_os_layer_alone_hides_etc_passwd() -> None:
    assert Path("/etc/passwd").exists()
    escaped = run_unrestricted(
        """
        import os
        attempt("passwd", lambda: open("/etc/passwd").read())
        attempt("shadow", lambda: open("/etc/shadow").read())
        attempt("etc", lambda: os.listdir("/etc"))
        attempt("root", lambda: sorted(os.listdir("/")))
        """
    )
    escaped.refused("passwd", "FileNotFoundError")
    escaped.refused("shadow", "FileNotFoundError")
    escaped.refused("etc", "FileNotFoundError")
    # Only the system folders and the tops of the guest's read-only code binds exist
    visible = set(json.loads(escaped.ok("root").replace("'", '"')))
    code_tops = {Path(path).parts[1] for path in _guest_code_paths()}
    assert visible <= {"usr", "bin", "lib", "lib64", "sbin", "proc", "dev", "tmp"} | code_tops
    assert not visible & {"etc", "var", "srv", "opt", "mnt", "boot"} - code_tops


def test_os_layer_alone_hides_the_host_environment(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv(SECRET_NAME, secret)
    escaped = run_unrestricted(
        f"""
        import os
        needle = "{secret[::-1]}"[::-1].encode()  # reversed: not in this probe's cmdline
        attempt("env", lambda: dict(os.environ))
        def scan():
            hits = []
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    for name in ("environ", "cmdline"):
                        try:
                            if needle in open("/proc/" + pid + "/" + name, "rb").read():
                                hits.append(pid + "/" + name)
                        except OSError:
                            pass
            return hits
        attempt("proc-scan", scan)
        attempt("host-pid-environ", lambda: open("/proc/{os.getpid()}/environ", "rb").read())
        """
    )
    env = escaped.ok("env")
    assert secret not in env and SECRET_NAME not in env
    assert escaped.ok("proc-scan") == "[]"
    escaped.refused("host-pid-environ")


def test_os_layer_alone_cannot_modify_the_host_filesystem(tmp_path: Path) -> None:
    name = f"escaped-{uuid.uuid4().hex[:8]}"
    escaped = run_unrestricted(
        f"""
        import sys
        attempt("usr", lambda: open("/usr/{name}", "w"))
        attempt("venv", lambda: open(sys.prefix + "/{name}", "w"))
        attempt("host-tmp-path", lambda: open("{tmp_path}/{name}", "w"))
        attempt("private-tmp", lambda: open("/tmp/{name}", "w").write("x"))
        """
    )
    escaped.refused("usr", "Read-only file system")
    escaped.refused("venv", "Read-only file system")
    escaped.refused("host-tmp-path", "No such file or directory")
    escaped.ok("private-tmp")
    # Nothing written inside appears outside: /tmp is private to the guest
    for place in (Path("/usr"), Path(sys.prefix), tmp_path, Path("/tmp")):
        assert not (place / name).exists(), place


def test_os_layer_alone_refuses_writes_outside_tmp() -> None:
    escaped = run_unrestricted(
        """
        for place in ("/", "/work", "/root"):
            attempt(place, lambda: open(place.rstrip("/") + "/escaped", "w").write("x"))
        """
    )
    # "/" always exists and must be read-only. "/work" and "/root" exist inside the sandbox only
    # as parents of bound code folders (it depends on where the checkout and Python live):
    # there, read-only; elsewhere, absent. Either way nothing may be written.
    escaped.refused("/", "Read-only file system")
    for place in ("/work", "/root"):
        detail = escaped.refused(place)
        assert "Read-only file system" in detail or "No such file or directory" in detail, detail


def test_os_layer_alone_caps_tmp_at_16_mib() -> None:
    escaped = run_unrestricted(
        """
        def fill():
            with open("/tmp/fill", "wb") as f:
                for i in range(64):
                    f.write(b"x" * (1 << 20))
        attempt("fill", fill)
        """
    )
    escaped.refused("fill", "OSError")


def test_os_layer_alone_blocks_connections_to_host_loopback(
    listener: Listener, redis_server: RedisProc
) -> None:
    redis_port = redis_server.port
    escaped = run_unrestricted(
        f"""
        import socket
        attempt("listener", lambda: socket.create_connection(("127.0.0.1", {listener.port}), 2))
        attempt("redis", lambda: socket.create_connection(("127.0.0.1", {redis_port}), 2))
        attempt("ipv6", lambda: socket.create_connection(("::1", {listener.port}), 2))
        attempt("outside", lambda: socket.create_connection(("1.1.1.1", 443), 2))
        attempt("interfaces", lambda: open("/proc/net/dev").read())
        """
    )
    escaped.refused("listener", "ConnectionRefusedError")
    escaped.refused("redis", "ConnectionRefusedError")
    escaped.refused("ipv6")
    escaped.refused("outside", "OSError")
    interfaces = escaped.ok("interfaces")
    assert "eth" not in interfaces and "ens" not in interfaces and "docker" not in interfaces
    assert listener.received_nothing()


def test_os_layer_alone_has_no_dns() -> None:
    escaped = run_unrestricted(
        """
        import socket
        attempt("example", lambda: socket.getaddrinfo("example.com", 443))
        attempt("resolv", lambda: open("/etc/resolv.conf").read())
        """
    )
    escaped.refused("example", "gaierror")
    escaped.refused("resolv", "FileNotFoundError")


def test_os_layer_alone_caps_forks_at_the_pids_limit() -> None:
    limits = OS_LIMITS
    escaped = run_unrestricted(
        """
        import os, time
        def bomb():
            children = 0
            for i in range(200):  # bounded, in case the limit is missing
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                children += 1
            return children
        attempt("bomb", bomb)
        """,
        limits,
    )
    escaped.refused("bomb", "BlockingIOError")
    # Every process of the guest died with it: its cgroup is emptied and removed
    cgroup = escaped.guest.cgroup
    if cgroup is not None:
        wait_until(lambda: not cgroup.path.exists(), timeout=10)


def test_os_layer_alone_caps_threads() -> None:
    escaped = run_unrestricted(
        """
        import threading, time
        def flood():
            started = 0
            for i in range(200):
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
                started += 1
            return started
        attempt("threads", flood)
        """
    )
    escaped.refused("threads", "RuntimeError: can't start new thread")


def test_os_layer_alone_caps_memory() -> None:
    escaped = run_unrestricted('attempt("alloc", lambda: len(bytearray(1 << 30)))')
    escaped.refused("alloc", "MemoryError")


def test_os_layer_alone_runs_without_privileges_or_host_processes() -> None:
    escaped = run_unrestricted(
        f"""
        import os
        attempt("ids", lambda: (os.getuid(), os.geteuid(), os.getgid()))
        attempt("caps", lambda: [l.split()[1] for l in open("/proc/self/status")
                                 if l.startswith("CapEff")])
        attempt("pids", lambda: [p for p in os.listdir("/proc") if p.isdigit()])
        attempt("signal-host", lambda: os.kill({os.getpid()}, 0))
        attempt("hostname", lambda: os.uname().nodename)
        """
    )
    assert escaped.ok("ids") == "(65534, 65534, 65534)"
    assert escaped.ok("caps") == "['0000000000000000']"
    assert len(json.loads(escaped.ok("pids").replace("'", '"'))) <= 3
    escaped.refused("signal-host", "ProcessLookupError")
    assert escaped.ok("hostname") == "'sandbox'"


def test_os_layer_alone_kills_a_cpu_burner() -> None:
    started = time.monotonic()
    escaped = run_unrestricted("while True:\n    pass", GuestLimits(cpu_seconds=1))
    assert time.monotonic() - started < 10
    assert escaped.results == {}
    assert "exit code 0" not in escaped.exit, escaped.exit
