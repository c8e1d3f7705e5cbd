"""The docker backend: each guest is a fresh container of a locally built guest image.

Layers applied by the engine, outside the guest, whatever it does inside:
- no network at all (``network_mode=none``), a read-only root, a private 16 MiB ``/tmp``
  (noexec), no IPC namespace sharing and no ``/dev/shm``;
- an unprivileged user (65534), every capability dropped, ``no-new-privileges``, the
  engine's default seccomp profile;
- cgroup limits on memory (no swap: going over it is an OOM kill), CPU (one core) and
  process count, and rlimits on CPU seconds, file size and open files; no core dumps. (No
  address-space rlimit as in the process backend: runc applies rlimits before it loads the
  seccomp filter, and its Go runtime cannot start under one.)
- the guest's output is never logged by the engine (log driver ``none``): an untrusted guest
  cannot fill the host's disk through ``docker logs``;
- one container per run, force-removed by the host after it; the guest's stdin closes when
  the host's attach connection goes (``StdinOnce``), so a guest whose worker died exits by
  itself, and the leftovers of dead workers are removed when a backend starts.

The image holds a minimal Debian (debootstrap ``minbase`` with Python 3.11) and only the
pure-Python code the guest imports: ``RestrictedPython``, ``loopwright.sdk`` and
``loopwright.sandbox``. It is built here, from the engine's local store, without a registry:
see :func:`ensure_image` and ``sandbox/image/build.sh``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import LogConfig, Ulimit

from loopwright.sandbox.docker_image import (
    API_TIMEOUT,
    DEFAULT_IMAGE,
    GUEST_COMMAND,
    GUEST_USER,
    NETWORK_ERRORS,
    connect,
    ensure_image,
    image_exists,
)
from loopwright.sandbox.host import SandboxError, wait_ready
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.process import GUEST_ENV
from loopwright.sandbox.protocol import ProtocolError
from loopwright.sandbox.watchdog import Watchdog

log = logging.getLogger(__name__)


# Containers carry who started them, so leftovers can be told apart from another worker's
# live guests.
GUEST_LABEL = "loopwright.sandbox.guest"
OWNER_LABEL = "loopwright.sandbox.owner"

GUEST_TMPFS = {"/tmp": "size=16m,noexec,nosuid,nodev"}
NANO_CPUS = 1_000_000_000
SEND_TIMEOUT = 30.0
LEFTOVER_AGE = 120.0
# Exit codes above 128 are 128 + the signal that killed the guest (it runs as the
# container's pid 1, so only signals the kernel forces, like SIGKILL, can end it).
_SIGNAL_HINTS = {
    signal.SIGKILL: "it used up its CPU time limit, or the host killed it",
    signal.SIGSEGV: "it crashed",
    signal.SIGABRT: "it aborted (often: out of memory)",
    signal.SIGXFSZ: "it exceeded its file size limit",
}


# ---------------------------------------------------------------------------------------
# Guests


def _raw_socket(conn: Any) -> socket.socket:
    """The socket under the SDK's hijacked attach connection (unix or TCP, TLS or not)."""
    if isinstance(conn, socket.socket):
        return conn
    sock = getattr(conn, "_sock", None)
    if isinstance(sock, socket.socket):
        return sock
    raise SandboxError(
        f"unsupported Docker connection for attaching to a guest: {type(conn).__name__}"
    )


def _close_attach(conn: Any) -> None:
    """Close a hijacked attach connection for good, in the order that leaves no warnings."""
    sock = conn if isinstance(conn, socket.socket) else getattr(conn, "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # ends the connection whatever else holds the fd
    # The SDK's HTTP response still wraps the socket: close it first (closing it after the
    # socket makes http.client flush a closed file), then the socket itself.
    response = getattr(conn, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()
    for item in (conn, sock):
        close = getattr(item, "close", None)
        if callable(close):
            with contextlib.suppress(OSError):
                close()


class DockerGuest:
    """One guest container and its attach connection (the guest's stdin, stdout and stderr).

    With ``tty=False`` the engine multiplexes stdout and stderr on the connection in frames
    of an 8-byte header (stream: 1 stdout, 2 stderr; then the big-endian payload size) and a
    payload. Stdout bytes make the protocol's lines (capped like ``LineReader``); stderr bytes
    go to a capped buffer kept for :meth:`describe_exit`.
    """

    def __init__(
        self, client: docker.DockerClient, container_id: str, conn: Any, limits: GuestLimits
    ) -> None:
        self.client = client
        self.id = container_id
        self.limits = limits
        self.started = time.monotonic()
        self._conn = conn  # holds the SDK's response, which must not be collected early
        self._sock = _raw_socket(conn)
        self._raw = bytearray()
        self._frame_stream = 0
        self._frame_left = 0
        self._out = bytearray()
        self._err = bytearray()
        self._keep_stdout = True
        self._eof = False
        self._killed = False
        self._exit: str | None = None

    def send(self, data: bytes, deadline: float | None = None) -> None:
        """Write to the guest's stdin by ``deadline`` (at most ``SEND_TIMEOUT`` from now);
        ``TimeoutError`` when the guest stops reading its input."""
        if self._killed:
            raise BrokenPipeError("the guest was killed")
        cap = time.monotonic() + SEND_TIMEOUT
        end = cap if deadline is None else min(cap, deadline)
        view = memoryview(data)
        try:
            while view:
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the guest stopped reading its input")
                self._sock.settimeout(left)
                view = view[self._sock.send(view) :]
        finally:
            self._sock.settimeout(None)

    def alive(self) -> bool:
        """False once the connection has ended (the container is gone); never waits."""
        with contextlib.suppress(TimeoutError, ValueError, OSError):
            for _ in range(16):  # what is already there; a waiting guest sends nothing more
                if self._eof or self._killed:
                    break
                self._receive(time.monotonic())
        return not (self._eof or self._killed)

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next line of the guest's stdout; None at EOF; ``TimeoutError`` past deadline."""
        while True:
            nl = self._out.find(b"\n")
            if nl >= 0:
                line = bytes(self._out[:nl])
                del self._out[: nl + 1]
                return line
            if len(self._out) > self.limits.message_max_bytes:
                raise ProtocolError(f"message over the {self.limits.message_max_bytes}-byte cap")
            if self._eof or self._killed:
                return None
            self._receive(deadline)

    def _receive(self, deadline: float | None) -> None:
        """Read one chunk from the connection (waiting until ``deadline``) and demultiplex it."""
        pending = getattr(self._sock, "pending", None)  # TLS: decrypted bytes select can't see
        if not (callable(pending) and pending()):
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                raise TimeoutError("the guest did not answer in time")
        try:
            chunk = self._sock.recv(1 << 16)
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            self._eof = True
            return
        self._demux(chunk)

    def _demux(self, chunk: bytes) -> None:
        raw = self._raw
        raw += chunk
        pos = 0
        while True:
            if self._frame_left == 0:
                if len(raw) - pos < 8:
                    break
                self._frame_stream = raw[pos]
                self._frame_left = int.from_bytes(raw[pos + 4 : pos + 8], "big")
                pos += 8
                continue
            if pos >= len(raw):
                break
            take = min(self._frame_left, len(raw) - pos)
            payload = raw[pos : pos + take]
            pos += take
            self._frame_left -= take
            if self._frame_stream == 1:
                if self._keep_stdout:
                    self._out += payload
            else:  # stderr (2), or anything the engine adds later: never the protocol
                self._err += payload
                over = len(self._err) - self.limits.stderr_max_bytes
                if over > 0:
                    del self._err[:over]  # keep the tail: that is where tracebacks end
        del raw[:pos]

    def kill(self) -> None:
        """Force-remove the container (SIGKILL and delete) and close the connection.

        Never raises: a guest that is already gone is fine, and an engine error is logged
        (the container is then removed as a leftover when a backend next starts).
        """
        if self._killed:
            return
        self._killed = True
        self._close_connection()
        try:
            self.client.api.remove_container(self.id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                log.warning("could not remove guest container %s: %s", self.id[:12], exc)
        except NETWORK_ERRORS as exc:
            log.warning("could not remove guest container %s: %s", self.id[:12], exc)

    def _close_connection(self) -> None:
        _close_attach(self._conn)

    def describe_exit(self) -> str:
        """Exit code (with OOM and signal hints) from the engine, and the tail of stderr."""
        if self._exit is None:
            self._drain_stderr(time.monotonic() + 1.0)
            what = self._exit_status()
            tail = self._err.decode("utf-8", "replace").strip()[-600:]
            self._exit = what + (f"; stderr: {tail}" if tail else "")
        return self._exit

    def _drain_stderr(self, deadline: float) -> None:
        """Collect what the guest still had to say on stderr, up to its EOF or ``deadline``."""
        self._keep_stdout = False  # lines past this point are never read: don't hold them
        with contextlib.suppress(TimeoutError, ValueError, OSError):
            while not (self._eof or self._killed):
                self._receive(deadline)

    def _exit_status(self) -> str:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                state = self.client.api.inspect_container(self.id)["State"]
            except NotFound:
                return "the container is gone (removed)"
            except NETWORK_ERRORS as exc:
                return f"the engine did not say how it ended ({exc})"
            if not state.get("Running") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if state.get("Running"):
            return "still running"
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            mib = self.limits.memory_bytes // (1024 * 1024)
            what = (
                f"killed by the out-of-memory killer: it went over its {mib} MiB memory limit "
                f"(exit code {code})"
            )
        elif code > 128:
            try:
                sig = signal.Signals(code - 128)
            except ValueError:
                what = f"exit code {code}"
            else:
                hint = _SIGNAL_HINTS.get(sig, "signal")
                what = f"killed by {sig.name}: {hint} (exit code {code})"
        else:
            what = f"exit code {code}"
        if state.get("Error"):
            what += f" (engine: {state['Error']})"
        return what


# ---------------------------------------------------------------------------------------
# The backend


class DockerBackend:
    """Starts one container per guest from the local guest image; keeps a warm pool.

    The pool is refilled by a background thread, so a run never waits for the next
    container to be created. ``image`` is built (or rebuilt, when the guest's code changed)
    at start unless ``build=False``; ``client`` lets a caller share its engine connection.
    """

    name = "docker"

    def __init__(
        self,
        limits: GuestLimits,
        *,
        image: str,
        pool_size: int = 1,
        client: docker.DockerClient | None = None,
        build: bool = True,
    ) -> None:
        self.limits = limits
        self.image = image
        self.pool_size = pool_size
        self._own_client = client is None
        self.client = client if client is not None else connect()
        try:
            if build:
                ensure_image(image, client=self.client)
            elif not image_exists(self.client, image):
                raise SandboxError(
                    f"the guest image {image} is missing: build it with "
                    f"sandbox/image/build.sh {image}"
                )
        except BaseException:
            self._close_client()
            raise
        self.owner = owner_id()
        sweep_leftovers(self.client)
        # When this process ends, however it ends, its containers are removed at once (a
        # busy guest would otherwise run on until its CPU limit, and a stopped one stay).
        self.watchdog = Watchdog(then=[sys.executable, "-m", "loopwright.sandbox.docker", "sweep"])
        self.watchdog.env()
        self._host_config = self._make_host_config()
        self._pool: collections.deque[DockerGuest] = collections.deque()
        self._starting = 0
        self._cond = threading.Condition()
        self._refiller: threading.Thread | None = None
        self._closed = False

    def _make_host_config(self) -> Any:
        lim = self.limits
        return self.client.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs=dict(GUEST_TMPFS),
            ipc_mode="none",
            mem_limit=lim.memory_bytes,
            memswap_limit=lim.memory_bytes,  # equal: no swap on top of the memory limit
            nano_cpus=NANO_CPUS,
            pids_limit=lim.max_processes,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            ulimits=[
                # The guest is the container's pid 1, which ignores SIGXCPU at a soft limit:
                # the hard limit's SIGKILL is what ends it, so both are the same.
                Ulimit(name="cpu", soft=lim.cpu_seconds, hard=lim.cpu_seconds),
                Ulimit(name="fsize", soft=lim.file_size_bytes, hard=lim.file_size_bytes),
                Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
                Ulimit(name="core", soft=0, hard=0),
            ],
            log_config=LogConfig(type=LogConfig.types.NONE),
            oom_score_adj=1000,  # under host memory pressure, guests go first
            privileged=False,
        )

    def spawn(self) -> DockerGuest:
        """Create, attach to and start a container; it boots while nobody waits for ready."""
        api = self.client.api
        try:
            created = api.create_container(
                self.image,
                command=list(GUEST_COMMAND),
                user=GUEST_USER,
                hostname="sandbox",
                stdin_open=True,  # with detach=False the SDK also sets StdinOnce
                tty=False,
                environment=dict(GUEST_ENV),
                working_dir="/tmp",
                network_disabled=True,
                labels={GUEST_LABEL: "1", OWNER_LABEL: self.owner},
                host_config=self._host_config,
                use_config_proxy=False,  # no proxy variables from ~/.docker/config.json
            )
        except NETWORK_ERRORS as exc:
            raise SandboxError(f"could not create a guest container: {exc}") from None
        container_id = str(created["Id"])
        conn: Any = None
        try:
            # Attach before start, so not a byte of the guest's output is missed.
            conn = api.attach_socket(
                container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            guest = DockerGuest(self.client, container_id, conn, self.limits)
            api.start(container_id)
        except (SandboxError, *NETWORK_ERRORS) as exc:
            if conn is not None:
                _close_attach(conn)
            with contextlib.suppress(*NETWORK_ERRORS):
                api.remove_container(container_id, force=True)
            if isinstance(exc, SandboxError):
                raise
            raise SandboxError(f"could not start a guest container: {exc}") from None
        return guest

    def acquire(self) -> DockerGuest:
        """A ready guest: from the warm pool when one is there; the pool refills behind."""
        with self._cond:
            if self._closed:
                raise SandboxError("the docker sandbox backend is closed")
            guest = self._pool.popleft() if self._pool else None
            self._cond.notify_all()
        self._start_refiller()
        for attempt in range(2):
            try:
                if guest is None:
                    guest = self.spawn()
                wait_ready(guest, self.limits.start_timeout)
                if not guest.alive():  # said ready, then ended (removed while pooled)
                    raise SandboxError(f"the guest ended while it waited: {guest.describe_exit()}")
                return guest
            except (SandboxError, ProtocolError) as exc:
                if guest is not None:
                    guest.kill()
                if attempt == 1:
                    if isinstance(exc, ProtocolError):
                        raise SandboxError(f"the guest broke the protocol: {exc}") from None
                    raise
                guest = None  # a pooled guest may have died while it waited: one fresh try
            except BaseException:
                if guest is not None:
                    guest.kill()
                raise
        raise AssertionError("unreachable")

    def refill(self) -> None:
        """Start guests until the pool holds ``pool_size`` (here, in the caller's thread)."""
        while self._spawn_for_pool():
            pass

    def _spawn_for_pool(self) -> bool:
        """Start one guest into the pool if it is short; False when it is full or closed."""
        with self._cond:
            if self._closed or len(self._pool) + self._starting >= self.pool_size:
                return False
            self._starting += 1
        guest: DockerGuest | None = None
        try:
            guest = self.spawn()
        finally:
            with self._cond:
                self._starting -= 1
                if guest is not None and not self._closed:
                    self._pool.append(guest)
                    guest = None
        if guest is not None:  # closed while it was starting
            guest.kill()
            return False
        return True

    def _start_refiller(self) -> None:
        with self._cond:
            if self._closed or self.pool_size <= 0 or self._refiller is not None:
                return
            self._refiller = threading.Thread(
                target=self._refill_loop, name="loopwright-docker-pool", daemon=True
            )
        self._refiller.start()

    def _refill_loop(self) -> None:
        """Keep the pool full until closed; back off while the engine refuses."""
        backoff = 0.5
        while True:
            with self._cond:
                while not self._closed and len(self._pool) + self._starting >= self.pool_size:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self._spawn_for_pool()
                backoff = 0.5
            except SandboxError as exc:
                log.warning("could not refill the guest pool: %s (retrying)", exc)
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        """Remove pooled containers, stop the refill thread, close the engine connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            pooled = list(self._pool)
            self._pool.clear()
            refiller = self._refiller
        if refiller is not None:
            refiller.join(timeout=API_TIMEOUT)
        for guest in pooled:
            guest.kill()
        self.watchdog.close(wait=False)
        self._close_client()

    def _close_client(self) -> None:
        if self._own_client:
            with contextlib.suppress(*NETWORK_ERRORS):
                self.client.close()

    def protections(self) -> dict[str, Any]:
        """Which layers hold (for ``loopwright doctor``)."""
        return {
            "backend": self.name,
            "image": self.image,
            "network_isolation": True,
            "filesystem_isolation": True,
            "read_only_root": True,
            "memory_mb": self.limits.memory_bytes // (1024 * 1024),
            "cpus": NANO_CPUS / 1e9,
            "cpu_seconds": self.limits.cpu_seconds,
            "pids_limit": self.limits.max_processes,
            "non_root": True,
            "cap_drop": "ALL",
            "no_new_privileges": True,
            "warm_pool": self.pool_size,
        }


# ---------------------------------------------------------------------------------------
# Leftovers


def owner_id(pid: int | None = None) -> str:
    """``host:pid:start-time`` of a process, the owner label of the containers it starts.

    The start time tells a live owner from a later process that reuses its pid.
    """
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_gone(owner: str) -> bool:
    """True when ``owner`` is a process of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or not started:
        return False  # another host's (or an unknown) owner: cannot tell
    if not Path("/proc/self/stat").exists():
        return False
    return _start_time(int(pid_text)) != started


def sweep_leftovers(client: docker.DockerClient, *, min_age: float = LEFTOVER_AGE) -> int:
    """Remove guest containers nobody will use again; returns how many were removed.

    Removed: every guest whose worker process on this host is gone, and every guest that is
    not running (exited, created, dead) and older than ``min_age`` seconds. A running guest
    of a live worker, or of another host, is left alone: it may be in the middle of a run.
    """
    try:
        found = client.api.containers(all=True, filters={"label": GUEST_LABEL})
    except NETWORK_ERRORS as exc:
        log.warning("could not list leftover guest containers: %s", exc)
        return 0
    now = time.time()
    removed = 0
    for item in found:
        labels = item.get("Labels") or {}
        age = now - float(item.get("Created") or now)
        stale = item.get("State") != "running" and age > min_age
        if stale or owner_gone(str(labels.get(OWNER_LABEL, ""))):
            try:
                client.api.remove_container(item["Id"], force=True)
                removed += 1
            except NotFound:
                pass
            except NETWORK_ERRORS as exc:
                log.warning("could not remove leftover guest %s: %s", item["Id"][:12], exc)
    if removed:
        log.info("removed %d leftover guest container(s)", removed)
    return removed


# ---------------------------------------------------------------------------------------
# Command line (sandbox/image/build.sh)


def main(argv: list[str] | None = None) -> int:
    """``python -m loopwright.sandbox.docker build [TAG]`` / ``sweep``."""
    parser = argparse.ArgumentParser(
        prog="python -m loopwright.sandbox.docker", description="The docker sandbox's image."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the guest image unless it is up to date")
    build.add_argument("tag", nargs="?", default=DEFAULT_IMAGE)
    build.add_argument("--rebuild", action="store_true", help="build even when up to date")
    build.add_argument(
        "--rebuild-base", action="store_true", help="debootstrap the Debian base again too"
    )
    sub.add_parser("sweep", help="remove leftover guest containers of dead workers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "build":
            started = time.monotonic()
            tag = ensure_image(args.tag, rebuild=args.rebuild, rebuild_base=args.rebuild_base)
            print(f"{tag} is up to date ({time.monotonic() - started:.1f}s)")
        else:
            client = connect()
            try:
                print(f"removed {sweep_leftovers(client)} leftover guest container(s)")
            finally:
                client.close()
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
