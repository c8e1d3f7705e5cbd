"""Is the platform alive: workers, queue, scheduler and Redis, read the same way everywhere.

``loopwright doctor``, ``run --wait`` and the API's health routes count through here.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopwright.runner.runtime import Runtime


def live_workers(rt: Runtime) -> int:
    """Workers on the runtime's queue that are alive.

    RQ's ``Worker.all`` lists a SIGKILLed worker until its key expires, and an idle worker
    beats only once per dequeue timeout (minutes), so neither the listing nor the key's TTL
    tells a dead worker from a quiet one. A worker on this host is alive when its process
    exists; a worker elsewhere when its last heartbeat is younger than its TTL.
    """
    from rq import Worker

    here = socket.gethostname()
    live = 0
    for w in Worker.all(queue=rt.dispatcher.queue):
        if w.hostname == here and w.pid:
            live += _process_exists(w.pid)
            continue
        beat = w.last_heartbeat
        ttl = float(w.worker_ttl or 420)  # RQ's default
        if beat is not None and time.time() - beat.timestamp() <= ttl + 60:
            live += 1
    return live


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, killed but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def health(rt: Runtime) -> dict[str, Any]:
    """Workers, queue depth, scheduler heartbeat and Redis memory, as one JSON object."""
    info = rt.redis.info("memory")
    server = rt.redis.info("server")
    workers = live_workers(rt)
    beat = str(rt.redis.get(rt.keys.scheduler_heartbeat) or "")
    return {
        "redis": {
            "ok": True,
            "version": server.get("redis_version"),
            "used_memory": info.get("used_memory"),
            "used_memory_human": info.get("used_memory_human"),
        },
        "workers": {"ok": workers > 0, "live": workers, "queue": rt.settings.queue},
        "queue": {"waiting": rt.dispatcher.queue.count},
        "scheduler": {"ok": bool(beat), "heartbeat": beat or None},
    }
