"""``loopwright demo``: the example skills end to end, including a worker killed mid-run.

It uses the configured Redis (the managed one by default), so the runs stay in the history
afterwards: ``loopwright runs list`` shows them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.rule import Rule

from loopwright.cli.common import console, open_runtime
from loopwright.cli.common import literal as escape
from loopwright.cli.runs import render_run, start_run
from loopwright.errors import UserError
from loopwright.runner.runtime import Runtime
from loopwright.supervisor import die_with_parent

EXAMPLES = ("hello_pipeline.py", "nightly_digest.py", "slow_report.py", "service_health.py")


class _Procs:
    """Worker and scheduler subprocesses owned by the demo."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "loopwright.cli", name],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl(2)
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise UserError(f"demo: timed out waiting for {what}")


def _finish(rt: Runtime, run_id: str, timeout: float = 60) -> bool:
    run = rt.runs.wait(run_id, timeout=timeout)
    render_run(rt, run_id)
    return run.status.value == "completed"


def run_demo(workdir: str | None, examples_dir: str = "examples") -> int:
    """Run the demo; returns the process exit code."""
    examples = Path(examples_dir)
    missing = [e for e in EXAMPLES if not (examples / e).is_file()]
    if missing:
        raise UserError(f"demo: {examples}/ lacks {missing}; run it from the repository root")
    rt = open_runtime()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="loopwright-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOOPWRIGHT_REDIS_URL": rt.redis_url, "PYTHONUNBUFFERED": "1"}
    procs = _Procs(env, work)
    ok = True
    try:
        console.print(Rule("Loopwright demo"))
        console.print(f"Redis: {rt.redis_url}   files: {work}")
        procs.spawn("scheduler")
        worker = procs.spawn("worker")

        console.print(Rule("1. Five durable steps, in the sandbox"))
        ok &= _finish(rt, start_run(rt, str(examples / "hello_pipeline.py"), {"orders": 12}))

        console.print(Rule("2. Durable sleep: the run parks and frees the worker"))
        digest = start_run(rt, str(examples / "nightly_digest.py"), {"wait": "2s"})
        _wait_for(lambda: rt.runs.get(digest).status.value == "sleeping", 30, "the digest to park")
        console.print(f"run {digest} is [blue]sleeping[/]; no worker is held while it waits")
        ok &= _finish(rt, digest)

        console.print(Rule("3. A worker is killed in the middle of a run"))
        journal = work / "journal.txt"
        # The report journals to a file to make the kill visible: trusted (worker-process) code.
        report = start_run(
            rt, str(examples / "slow_report.py"), {"journal": str(journal)}, trusted=True
        )
        _wait_for(
            lambda: journal.exists() and "analyse" in journal.read_text(), 60, "step 'analyse'"
        )
        os.killpg(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        console.print(f"[red]SIGKILL[/] worker pid {worker.pid} during step 'analyse'")
        fresh = procs.spawn("worker")
        console.print(f"started a new worker, pid {fresh.pid}")
        _wait_for(lambda: f" {fresh.pid}" in journal.read_text(), 60, "the run to resume")
        console.print(
            f"resumed in the new worker {time.monotonic() - killed:.1f}s after the kill, "
            f"at the step it was on"
        )
        ok &= _finish(rt, report)
        console.print("journal (step, pid) — finished steps never ran again:")
        for line in journal.read_text().splitlines():
            console.print(f"  {escape(line)}")

        console.print(Rule("4. Service health (the seed article's scenario, rule-based)"))
        health = str(examples / "service_health.py")
        ok &= _finish(rt, start_run(rt, health, {"p95_ms": 1450, "error_rate": 0.01}))

        console.print(Rule("Inbox"))
        raw: list[str] = rt.redis.lrange(rt.keys.inbox, -5, -1)  # type: ignore[assignment]
        for entry in map(json.loads, raw):
            line = f"  [{entry['level']}] {entry['skill']}: {entry['title']}: {entry['message']}"
            console.print(escape(line))
        console.print(Rule("done" if ok else "[red]some runs did not complete[/]"))
        console.print("Explore: loopwright runs list | loopwright runs show RUN_ID | loopwright up")
    finally:
        procs.stop()
        rt.close()
    return 0 if ok else 1
