"""A pids cgroup per guest, where the host may create one: a fork bomb meets a hard limit.

RLIMIT_NPROC does not bind a process whose real user is root (the kernel exempts it), and
inside bubblewrap's user namespace the guest still counts as root outside it. A pids cgroup
limits the guest's whole process tree whoever it runs as. Supported: cgroup v1's ``pids``
hierarchy and cgroup v2 with the ``pids`` controller enabled; elsewhere it reports itself
unavailable and the guest runs with rlimits only.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

STALE_AFTER_S = 600.0  # a guest's cgroup is joined milliseconds after it is made
V1_ROOT = Path("/sys/fs/cgroup/pids")
V2_ROOT = Path("/sys/fs/cgroup")
PARENT = "loopwright"


def pids_root() -> Path | None:
    """The folder under which guest cgroups can be made, or None."""
    if (V1_ROOT / "cgroup.procs").exists() and os.access(V1_ROOT, os.W_OK):
        return V1_ROOT / PARENT
    controllers = V2_ROOT / "cgroup.subtree_control"
    pids = controllers.exists() and "pids" in controllers.read_text().split()
    if pids and os.access(V2_ROOT, os.W_OK):
        return V2_ROOT / PARENT
    return None


class PidsCgroup:
    """One guest's cgroup: made before the guest starts, removed after it ends."""

    def __init__(self, root: Path, max_pids: int) -> None:
        root.mkdir(exist_ok=True)
        if root.parent == V2_ROOT:
            (root / "cgroup.subtree_control").write_text("+pids")
        self.path = root / f"guest-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(max_pids))

    def join_path(self) -> str:
        """The file a child writes its own pid into (from ``preexec_fn``) to join."""
        return str(self.path / "cgroup.procs")

    def remove(self) -> None:
        """Remove the cgroup (it must be empty: the guest was killed and reaped)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def sweep_stale(root: Path, older_than: float = STALE_AFTER_S) -> int:
    """Remove empty ``guest-*`` cgroups left by hosts that died before cleaning up; returns how
    many went. A cgroup with a process in it, or younger than ``older_than`` seconds (another
    host may be about to start its guest in it), is left alone."""
    removed = 0
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than
    for path in root.glob("guest-*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime > cutoff or (path / "cgroup.procs").read_text().strip():
                continue
            path.rmdir()
            removed += 1
    return removed
