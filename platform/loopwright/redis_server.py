"""The embedded default Redis: a ``redis-server`` that Loopwright starts on demand and reuses.

When ``LOOPWRIGHT_REDIS_URL`` is unset, every command calls :func:`redis_url_for`, which brings
up (or finds) one daemonized ``redis-server`` owned by the data directory. It behaves like a
daemon that the first command starts and later commands share; ``ManagedRedis.stop`` ends it.

Everything lives under ``<data_dir>/redis/``:

* ``redis.conf``  -- generated on every start (see below), so settings changes apply on restart.
* ``redis.sock``  -- the unix socket (mode 700); no TCP port is opened (``port 0``).
* ``redis.pid``, ``redis.log`` -- written by redis-server itself.
* ``appendonlydir/`` -- the AOF (``appendonly yes``, ``appendfsync everysec``), so data survives
  restarts; a crash loses at most about one second of writes. RDB snapshots are off.
* ``start.lock`` -- an ``fcntl.flock`` lock held around check-and-start and around stop, so
  concurrent commands never start two servers on one directory (two servers appending to one
  AOF would corrupt it).

Why a config file rather than command-line flags: redis-server joins command-line arguments into
config text, and how it quotes them has changed between releases; a file we write ourselves with
explicit quoting handles any path (spaces, quotes) the same way on every version.

Unix socket paths are limited to 108 bytes on Linux (104 on macOS) including the terminating
NUL. When ``<data_dir>/redis/redis.sock`` is longer than that, the socket goes to
``/tmp/loopwright-<uid>-<hash12>.sock`` instead, where ``hash12`` is the first 12 hex digits of
the SHA-256 of the resolved data dir: stable for one data dir, distinct between data dirs and
users. ``/tmp`` is used literally (not ``$TMPDIR``) because the point is a short path and macOS's
``$TMPDIR`` is itself long. A socket there that belongs to another user is refused, not used.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.retry import Retry

from loopwright.errors import RedisUnavailableError
from loopwright.settings import Settings

__all__ = ["ManagedRedis", "redis_url_for"]

# sun_path is 108 bytes on Linux and 104 on the BSDs/macOS, both counting the trailing NUL.
_MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
# Short, because a probe of a dead socket must not stall every CLI command.
_PROBE_TIMEOUT = 2.0
_MIN_PROBE_TIMEOUT = 0.05
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 20


class _State(enum.Enum):
    UP = "up"
    LOADING = "loading"  # accepting connections but still replaying the AOF
    DOWN = "down"


class ManagedRedis:
    """A redis-server owned by Loopwright under data_dir/redis/: unix socket, AOF on.

    Instances hold no mutable state, so one may be shared between threads; coordination
    between processes goes through the lock file and the server itself.
    """

    def __init__(self, data_dir: Path, binary: str = "redis-server") -> None:
        """Describe, not start, the server for ``data_dir``; ``binary`` is a name or a path."""
        # Resolved so that the fallback socket hash and every path given to the daemon (which
        # chdirs to its --dir) are the same however the data dir was spelled.
        self._data_dir = Path(data_dir).resolve()
        self._binary = binary
        self._dir = self._data_dir / "redis"
        self._socket_path = _choose_socket_path(self._data_dir, self._dir / "redis.sock")

    @property
    def socket_path(self) -> Path:
        """The unix socket: ``data_dir/redis/redis.sock``, or a short ``/tmp`` path if too long."""
        return self._socket_path

    @property
    def url(self) -> str:
        """``unix://<socket_path>``, percent-quoted so unusual characters survive URL parsing."""
        return "unix://" + quote(str(self._socket_path), safe="/")

    @property
    def log_path(self) -> Path:
        """The server's log file, ``data_dir/redis/redis.log``."""
        return self._dir / "redis.log"

    @property
    def _pid_path(self) -> Path:
        return self._dir / "redis.pid"

    @property
    def _conf_path(self) -> Path:
        return self._dir / "redis.conf"

    @property
    def _lock_path(self) -> Path:
        return self._dir / "start.lock"

    def is_running(self) -> bool:
        """True when PING over the socket gets PONG (a server still loading its AOF: not yet)."""
        return self._probe() is _State.UP

    def ensure_running(self, timeout: float = 10.0) -> str:
        """Start the server unless it is already up, wait until it answers PING, return its URL.

        Raises ``RedisUnavailableError`` when the binary is missing, the server exits during
        startup, or it is not answering within ``timeout`` seconds (with the end of its log).
        """
        deadline = time.monotonic() + timeout
        # Fast path without the lock: the common case is a server some earlier command started.
        if self._probe(deadline) is _State.UP:
            return self.url
        with self._locked(deadline, "start"):
            # Re-check under the lock: another process may have started it while we waited.
            while True:
                state = self._probe(deadline)
                if state is _State.UP:
                    return self.url
                pid = self._live_server_pid()
                if state is _State.DOWN and pid is None:
                    break
                # A server of ours exists but is not answering yet: it is replaying a large AOF
                # (a previous command gave up waiting) or finishing a shutdown. Starting a second
                # one on the same directory is exactly what must never happen, so wait it out.
                if time.monotonic() >= deadline:
                    what = f"pid {pid}" if pid is not None else "loading"
                    raise RedisUnavailableError(
                        f"redis-server ({what}) for {self._data_dir} is not answering on "
                        f"{self._socket_path} after {timeout:g}s; stop it or check "
                        f"{self.log_path}{self._log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL)
            binary = self._find_binary()
            self._remove_stale_files()
            self._launch(binary, deadline, timeout)
            self._wait_for_started_server(deadline, timeout)
        return self.url

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut the server down (SHUTDOWN fsyncs the AOF) and wait for it to exit.

        Returns True if a server was running (or loading) and has now exited, False if there was
        none. Raises ``RedisUnavailableError`` if it is still alive after ``timeout`` seconds.
        """
        if not self._dir.is_dir():
            return False
        deadline = time.monotonic() + timeout
        # Held until the process has exited, so no command starts a new server on this
        # directory while the old one is still flushing its AOF.
        with self._locked(deadline, "stop"):
            pid = self._live_server_pid()
            shutdown_sent = False
            client = self._client(min(_PROBE_TIMEOUT, max(timeout, 0.1)))
            try:
                if not self._socket_is_ours():
                    raise RedisError("socket belongs to another user")
                info = _info(client)
                reported = info.get("process_id")
                if isinstance(reported, int):
                    pid = reported
                client.shutdown()
                shutdown_sent = True
            except RedisError:
                # Not answering (no server, or wedged) or SHUTDOWN refused: fall back to the
                # pidfile; SIGTERM makes redis-server do the same orderly shutdown.
                pass
            finally:
                client.close()
            if pid is None:
                return shutdown_sent
            if not shutdown_sent:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    return False
            while _pid_alive(pid):
                if time.monotonic() >= deadline:
                    raise RedisUnavailableError(
                        f"redis-server (pid {pid}) did not exit within {timeout:g}s of SHUTDOWN; "
                        f"see {self.log_path}{self._log_tail()}"
                    )
                time.sleep(_POLL_INTERVAL)
            return True

    def status(self) -> dict[str, object]:
        """A JSON-friendly summary: running, url, pid, data_dir, binary, version, log_file.

        ``pid`` is the server's own report when it answers, else a live pid from the pidfile
        (e.g. while loading); ``version`` is None unless it is running. Keys are always present.
        """
        running = False
        pid: int | None = None
        version: str | None = None
        if self._socket_path.exists() and self._socket_is_ours():
            client = self._client(_PROBE_TIMEOUT)
            try:
                # INFO is answered even while the AOF loads; PING is not, and decides "running".
                info = _info(client)
                reported = info.get("process_id")
                pid = reported if isinstance(reported, int) else None
                client.ping()
                running = True
                version = str(info.get("redis_version", "")) or None
            except RedisError:
                pass
            finally:
                client.close()
        if pid is None and self._dir.is_dir():
            pid = self._live_server_pid()
        return {
            "running": running,
            "url": self.url,
            "pid": pid,
            "data_dir": str(self._data_dir),
            "binary": self._binary,
            "version": version,
            "log_file": str(self.log_path),
        }

    def _client(self, timeout: float) -> redis.Redis:
        # No retries: redis-py's default retry policy would turn one probe of a dead socket into
        # seconds of backoff, on every CLI command.
        return redis.Redis(
            unix_socket_path=str(self._socket_path),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _probe(self, deadline: float | None = None) -> _State:
        if not self._socket_path.exists() or not self._socket_is_ours():
            return _State.DOWN
        probe_timeout = _PROBE_TIMEOUT
        if deadline is not None:
            # A wedged server accepts connections but never answers; bounding each probe by the
            # caller's deadline keeps ensure_running's timeout honest.
            probe_timeout = min(probe_timeout, max(deadline - time.monotonic(), _MIN_PROBE_TIMEOUT))
        client = self._client(probe_timeout)
        try:
            client.ping()
        except BusyLoadingError:  # a ConnectionError subclass, so it must be caught first
            return _State.LOADING
        except RedisError:
            return _State.DOWN
        finally:
            client.close()
        return _State.UP

    def _socket_is_ours(self) -> bool:
        # Matters for the /tmp fallback: anyone can create a file there, and we must neither
        # talk to another user's server nor try to delete their socket.
        try:
            return self._socket_path.lstat().st_uid == os.getuid()
        except FileNotFoundError:
            return True

    def _live_server_pid(self) -> int | None:
        """The pidfile's pid if that process is alive and is our redis-server, else None."""
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        # After a crash the pid may have been reused by an unrelated process. redis-server sets
        # its process title to "redis-server unixsocket:<path>"; builds that do not, still show
        # the config file path in their argv. Where /proc is unavailable, trust the pidfile.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return pid if not Path("/proc/self").exists() else None
        except OSError:
            return pid
        markers = (f"unixsocket:{self._socket_path}", str(self._conf_path))
        if any(os.fsencode(marker) in cmdline for marker in markers):
            return pid
        return None

    def _find_binary(self) -> str:
        found = shutil.which(self._binary)
        if found is None:
            raise RedisUnavailableError(
                f"redis-server not found (looked for {self._binary!r}): install it with "
                "'apt-get install -y redis-server', "
                "or set LOOPWRIGHT_REDIS_URL to an existing Redis"
            )
        return found

    def _remove_stale_files(self) -> None:
        # Left behind by a server that was SIGKILLed or crashed. redis-server would replace both
        # itself, but a stale pidfile would make us watch the wrong process during startup.
        if self._socket_path.exists() or self._socket_path.is_symlink():
            if not self._socket_is_ours():
                raise RedisUnavailableError(
                    f"{self._socket_path} belongs to another user; remove it or set "
                    "LOOPWRIGHT_REDIS_URL to an existing Redis"
                )
            self._socket_path.unlink(missing_ok=True)
        self._pid_path.unlink(missing_ok=True)

    def _write_config(self) -> Path:
        options = {
            "port": "0",
            "unixsocket": str(self._socket_path),
            "unixsocketperm": "700",
            "daemonize": "yes",
            "pidfile": str(self._pid_path),
            "logfile": str(self.log_path),
            "dir": str(self._dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
        }
        text = "# Generated by Loopwright on every start; edits are overwritten.\n" + "".join(
            f"{key} {_quote_config(value)}\n" for key, value in options.items()
        )
        # Written via rename so a server (re)reading it never sees a half-written file.
        tmp = self._conf_path.with_name(self._conf_path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
        tmp.replace(self._conf_path)
        return self._conf_path

    def _launch(self, binary: str, deadline: float, timeout: float) -> None:
        conf = self._write_config()
        # Output goes to a file, not a pipe: a daemon child that kept a pipe open would make us
        # wait for EOF forever. Config errors are printed here before redis-server daemonizes.
        with tempfile.TemporaryFile(dir=self._dir) as out:
            try:
                # start_new_session keeps the daemon out of our process group, so Ctrl-C on the
                # command that happened to start it does not take it down. The lock fd is
                # O_CLOEXEC and close_fds is on, so the daemon never inherits the lock.
                completed = subprocess.run(
                    [binary, str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    timeout=max(deadline - time.monotonic(), 0.1),
                    check=False,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise RedisUnavailableError(
                    f"redis-server did not daemonize within {timeout:g}s{self._log_tail()}"
                ) from None
            except OSError as exc:
                raise RedisUnavailableError(f"could not run {binary!r}: {exc}") from exc
            if completed.returncode != 0:
                out.seek(0)
                output = out.read().decode(errors="replace").strip()
                raise RedisUnavailableError(
                    f"redis-server exited with status {completed.returncode}: "
                    f"{output or '(no output)'}{self._log_tail()}"
                )

    def _wait_for_started_server(self, deadline: float, timeout: float) -> None:
        seen_pid: int | None = None
        while True:
            if self._probe(deadline) is _State.UP:
                return
            pid = self._read_pid()
            if pid is not None:
                seen_pid = pid
            if seen_pid is not None and not _pid_alive(seen_pid):
                # e.g. a corrupt AOF: redis-server exits during loading, long before the timeout.
                raise RedisUnavailableError(
                    f"redis-server (pid {seen_pid}) exited during startup{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise RedisUnavailableError(
                    f"redis-server did not answer on {self._socket_path} within {timeout:g}s"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            lines = []
        if not lines:
            return f"\n(no log at {self.log_path})"
        return f"\nlast lines of {self.log_path}:\n" + "\n".join(lines)

    @contextmanager
    def _locked(self, deadline: float, purpose: str) -> Iterator[None]:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # flock (not lockf/fcntl record locks): it is per open file description, so it also
        # excludes other threads of this process that open the file themselves.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # Polled rather than blocking so the caller's timeout still holds.
                    if time.monotonic() >= deadline:
                        raise RedisUnavailableError(
                            f"timed out waiting for {self._lock_path} to {purpose} redis-server: "
                            "another loopwright command is starting or stopping it"
                        ) from None
                    time.sleep(_POLL_INTERVAL)
            yield
        finally:
            os.close(fd)  # releases the lock


def redis_url_for(settings: Settings) -> str:
    """The Redis URL every command should use.

    ``settings.redis_url`` when set (nothing is started); otherwise the managed server for
    ``settings.data_dir``, started with ``settings.redis_server_bin`` if it is not already up.
    """
    if settings.redis_url:
        return settings.redis_url
    return ManagedRedis(settings.data_dir, settings.redis_server_bin).ensure_running()


def _choose_socket_path(data_dir: Path, preferred: Path) -> Path:
    if len(os.fsencode(str(preferred))) <= _MAX_SOCKET_PATH_BYTES:
        return preferred
    digest = hashlib.sha256(os.fsencode(str(data_dir))).hexdigest()[:12]
    return Path(f"/tmp/loopwright-{os.getuid()}-{digest}.sock")


def _quote_config(value: str) -> str:
    # redis.conf values are split like a shell line; inside double quotes redis understands
    # backslash escapes, so escape exactly the characters that would end or break the string.
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _info(client: redis.Redis) -> dict[str, object]:
    info = client.info("server")
    if not isinstance(info, dict):
        raise RedisError(f"unexpected INFO reply: {info!r}")
    return {str(key): value for key, value in info.items()}


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon that died while its reaper is busy (or absent, in some containers) lingers as a
    # zombie that os.kill still "finds"; /proc tells the difference where it exists.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    fields = stat.rpartition(")")[2].split()
    return not (fields and fields[0] in {"Z", "X"})
