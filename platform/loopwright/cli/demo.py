"""``loopwright demo``: the example skills end to end, including a worker killed mid-run.

It uses the configured Redis (the managed one by default) under its own key prefix and queue
(the person's prefix and queue with ``-demo`` appended: ``lw-demo``, ``loopwright-demo``), so
the person's own skills, runs and workers are never touched, and nothing the demo registers
can fire in their installation afterwards. Each demo starts by clearing that keyspace, so
running it twice gives the same result, and ends by pausing what it registered (its skills
call a fake service that stops with the demo). The runs stay to explore:
``LOOPWRIGHT_KEY_PREFIX=lw-demo loopwright runs list``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.rule import Rule

from loopwright.cli.common import console, load_settings, open_runtime
from loopwright.cli.common import literal as escape
from loopwright.cli.runs import render_run, start_run
from loopwright.errors import UserError
from loopwright.runner.runtime import Runtime
from loopwright.settings import Settings
from loopwright.supervisor import die_with_parent

EXAMPLES = ("hello_pipeline.py", "nightly_digest.py", "slow_report.py", "service_health.py")
DEMO_SUFFIX = "-demo"


def demo_settings(base: Settings) -> Settings:
    """``base`` with the demo's own key prefix and queue: ``-demo`` always appended (within the
    settings' length limits), so a person whose own prefix happens to end in ``-demo`` never
    has it cleared by the demo."""

    def own(value: str, limit: int) -> str:
        return value[: limit - len(DEMO_SUFFIX)] + DEMO_SUFFIX

    return base.model_copy(
        update={"key_prefix": own(base.key_prefix, 32), "queue": own(base.queue, 64)}
    )


def demo_env(rt: Runtime) -> dict[str, str]:
    """The environment of the demo's worker, scheduler and sidecar processes."""
    return {
        **os.environ,
        "LOOPWRIGHT_REDIS_URL": rt.redis_url,
        "LOOPWRIGHT_KEY_PREFIX": rt.settings.key_prefix,
        "LOOPWRIGHT_QUEUE": rt.settings.queue,
        "PYTHONUNBUFFERED": "1",
    }


def reset_keyspace(rt: Runtime) -> int:
    """Delete every key of the demo's prefix and its RQ queue (the last demo's runs, skills,
    jobs): the demo starts from the same empty state every time. Returns how many went.

    Only ever called with :func:`demo_settings`: the prefix ends in ``-demo``."""
    prefix, queue = rt.settings.key_prefix, rt.settings.queue
    if not prefix.endswith(DEMO_SUFFIX) or not queue.endswith(DEMO_SUFFIX):
        raise UserError(f"demo: refusing to clear keyspace {prefix!r}: not a demo keyspace")
    removed = 0
    for pattern in (f"{prefix}:*", f"rq:*:{queue}"):
        batch: list[str] = []
        for key in rt.redis.scan_iter(match=pattern, count=1000):
            batch.append(str(key))
            if len(batch) >= 500:
                removed += int(rt.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(rt.redis.unlink(*batch))
    return removed


def pause_skills(rt: Runtime) -> list[str]:
    """Pause every active skill of the demo's keyspace (built-ins aside): they call a fake
    service that stops with the demo, so nothing of it may fire if someone starts a
    scheduler on the demo's prefix. Returns the names paused."""
    from loopwright.sdk.names import is_reserved
    from loopwright.skills_registry.store import Registry

    registry = Registry(rt.redis, rt.keys)
    paused = []
    for rec in registry.skills():
        if rec.status == "active" and not is_reserved(rec.name):
            registry.pause(rec.name)
            paused.append(rec.name)
    return paused


def explore_hint(rt: Runtime, paused: list[str]) -> str:
    """How to look at what the demo left (its own prefix), said at the end."""
    st = rt.settings
    env = f"LOOPWRIGHT_KEY_PREFIX={st.key_prefix} LOOPWRIGHT_QUEUE={st.queue}"
    lines = [
        f"The demo kept its data apart from yours, under the key prefix {st.key_prefix!r}. "
        f"Explore it with: {env} loopwright runs list (or skills list, inbox, runs show RUN_ID)."
    ]
    if paused:
        lines.append(
            f"Its skills ({', '.join(paused)}) are paused: they call a fake service that "
            "stopped with the demo. Running the demo again starts from a clean slate."
        )
    return "\n".join(lines)


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
    rt = open_runtime(demo_settings(load_settings()))
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="loopwright-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    reset_keyspace(rt)
    procs = _Procs(demo_env(rt), work)
    ok = True
    paused: list[str] = []
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
        from loopwright.inbox import Inbox

        for n in reversed(Inbox(rt.redis, rt.keys, rt.settings).list(limit=5)):
            line = f"  [{n.level}] {n.skill or n.source}: {n.title}: {n.body}"
            console.print(escape(line))
        console.print(Rule("done" if ok else "[red]some runs did not complete[/]"))
    finally:
        procs.stop()
        paused = pause_skills(rt)
    console.print(escape(explore_hint(rt, paused)), soft_wrap=True)
    rt.close()
    return 0 if ok else 1
