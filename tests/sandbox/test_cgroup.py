"""Guest pids cgroups left behind by hosts that died (SIGKILLed workers, short-lived CLI
processes whose reaper thread never ran) are swept when a process backend starts."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from loopwright.sandbox.cgroup import PidsCgroup, pids_root, sweep_stale

ROOT = pids_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="no writable pids cgroup hierarchy here")


def test_sweep_removes_old_empty_guest_cgroups_only() -> None:
    # A private parent, so the sweep cannot touch guests other tests are starting.
    assert ROOT is not None
    root = ROOT / f"sweep-test-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    if (root / "cgroup.subtree_control").exists():  # cgroup v2: delegate pids to children
        (root / "cgroup.subtree_control").write_text("+pids")
    stale = PidsCgroup(root, 8)
    busy = PidsCgroup(root, 8)
    other = root / f"not-a-guest-{uuid.uuid4().hex[:8]}"
    other.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (busy.path / "cgroup.procs").write_text(str(sleeper.pid))
        assert sweep_stale(root) == 0 or stale.path.exists()  # young: left alone by default
        assert stale.path.exists()
        sweep_stale(root, older_than=0)
        assert not stale.path.exists()  # old enough and empty: gone
        assert busy.path.exists()  # a live process inside: kept
        assert other.exists()  # not ours: kept
    finally:
        sleeper.kill()
        sleeper.wait()
        other.rmdir()
        busy.remove()
        root.rmdir()
    assert not busy.path.exists()
