"""``loopwright demo``: the seed article's scenario, end to end, with the offline model.

A person tells the builder that latency spikes overnight go unnoticed. The builder (the
offline template model, no API key needed) writes a 30-minute health-check skill and an
incident-triage skill with their test cases; the sidecar service validates them, runs the tests
in the sandbox and registers them. Then the health check runs against a local fake metrics
service, finds the service degraded and sends ``incident.detected``; the event router starts
the triage, which gathers the breakdown and recent deploys and posts to the platform inbox.
The demo ends with the skills and their run history.

Everything happens under the demo's own key prefix and queue (``cli/demo.py``:
:func:`demo_settings`): it starts from a cleared demo keyspace and pauses its skills on the
way out (Ctrl-C included), so the 30-minute health check never fires against the stopped
fake metrics service, and the person's own registry is never touched.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path

import httpx
from rich.rule import Rule
from rich.table import Table

from loopwright.agent.session import SessionStore, ensure_builtin
from loopwright.cli.chat import drive, render_report
from loopwright.cli.common import console, fmt_ts, load_settings, open_runtime
from loopwright.cli.common import literal as escape
from loopwright.cli.demo import (
    _Procs,
    _wait_for,
    demo_env,
    demo_settings,
    explore_hint,
    pause_skills,
    reset_keyspace,
)
from loopwright.cli.fakemetrics import FakeMetrics
from loopwright.cli.runs import render_run
from loopwright.errors import UserError
from loopwright.runner.execute import install_runtime
from loopwright.runner.runtime import Runtime
from loopwright.skills_registry.store import Registry

SKILLS = ("health-check", "incident-triage")


def request_text(metrics_url: str) -> str:
    return (
        "Our services have latency spikes overnight and nobody notices until the morning. "
        f"The metrics are at {metrics_url}/summary. Check them every 30 minutes and when "
        "something is off, triage it and tell us in the inbox."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise UserError(f"demo: the sidecar did not answer at {url}")


def _latest_run(rt: Runtime, skill: str, since_ms: int) -> str | None:
    runs = rt.runs.find(skill=skill, since_ms=since_ms, limit=1)
    return runs[0].id if runs else None


def _history(rt: Runtime, registry: Registry, since_ms: int) -> None:
    table = Table(title="Skills", title_justify="left")
    for col in ("skill", "version", "trigger", "status", "author", "tests"):
        table.add_column(col)
    for name in SKILLS:
        rec = registry.skill(name)
        ver = registry.version(name)
        manifest = ver.manifest or {}
        trig = manifest.get("trigger") or {}
        trigger = trig.get("expr") or trig.get("event") or trig.get("name") or "manual"
        table.add_row(
            escape(name),
            escape(ver.version[:12]),
            escape(f"{trig.get('type', '')} {trigger}".strip()),
            escape(rec.status),
            escape(ver.author),
            str(len(ver.tests or [])),
        )
    console.print(table)
    runs = Table(title="Run history", title_justify="left")
    for col in ("created", "skill", "run", "status", "output"):
        runs.add_column(col)
    for name in SKILLS:
        for r in reversed(rt.runs.find(skill=name, since_ms=since_ms, limit=10)):
            out = json.dumps(r.output, default=str) if r.output is not None else r.error or ""
            runs.add_row(
                fmt_ts(r.created_at), escape(r.skill), escape(r.id), r.status.value,
                escape(out[:40]),
            )  # fmt: skip
    console.print(runs)


def _earlier_demo_skills(person: Runtime) -> list[str]:
    """Demo skills an older ``make demo`` registered in the person's own keyspace (before
    the demo had one of its own): the name, and a source that calls a local fake service."""
    registry = Registry(person.redis, person.keys)
    names = set(registry.names())
    found = []
    for name in SKILLS:
        if name not in names:
            continue
        try:
            rec = registry.skill(name)
            text = registry.source(rec.active) if rec.active else ""
        except UserError:
            continue
        if rec.status == "active" and "127.0.0.1" in text:
            found.append(name)
    return found


def run_scenario(workdir: str | None) -> int:
    """The demo; returns the process exit code."""
    base = demo_settings(load_settings())
    person = open_runtime(load_settings())
    leftovers = _earlier_demo_skills(person)
    person.close()
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="loopwright-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    sidecar_url = f"http://127.0.0.1:{port}"
    first = open_runtime(base)
    redis_url = first.redis_url
    first.close()
    local = {"redis_url": redis_url, "sidecar_url": sidecar_url}
    settings = base.model_copy(update={**local, "http_private_allow": "127.0.0.1"})
    rt = open_runtime(settings)
    reset_keyspace(rt)
    install_runtime(rt)
    env = {
        **demo_env(rt),
        "LOOPWRIGHT_SIDECAR_PORT": str(port),
        "LOOPWRIGHT_HTTP_PRIVATE_ALLOW": "127.0.0.1",  # the fake metrics service, exactly
        "PYTHONUNBUFFERED": "1",
    }
    procs = _Procs(env, work)
    started_ms = int(time.time() * 1000)
    ok = True
    paused: list[str] = []
    sid = ""
    try:
        with FakeMetrics() as metrics:
            console.print(Rule("Loopwright demo: the builder, the sidecar, durable skills"))
            console.print(f"Redis {redis_url} · sidecar {sidecar_url} · metrics {metrics.url}")
            console.print(f"files and process logs: {work}")
            procs.spawn("sidecar")
            procs.spawn("scheduler")
            procs.spawn("worker")
            procs.spawn("worker")
            _wait_http(sidecar_url + "/v1/health", 30)

            console.print(Rule("1. A person asks the builder (offline template model)"))
            request = request_text(metrics.url)
            console.print(f"[bold]you>[/] {escape(request)}")
            ensure_builtin(rt)
            store = SessionStore(rt.redis, rt.keys)
            sid = store.create("offline")
            report = drive(rt, store.start_turn(rt, sid, request), 600, show=True)
            render_report(report)
            registry = Registry(rt.redis, rt.keys)
            missing = [n for n in SKILLS if n not in registry.names()]
            if missing:
                raise UserError(f"demo: the builder did not register {missing}")

            console.print(Rule("2. The health check runs against the metrics service"))
            version = rt.sources.resolve("health-check")
            health = rt.runs.create(skill="health-check", version=version, data={})
            console.print(
                f"started health-check run {health} by hand (its cron fires every 30 min)"
            )
            health_run = rt.runs.wait(health, timeout=60)
            render_run(rt, health)
            ok &= health_run.status.value == "completed"

            console.print(Rule("3. The incident event starts the triage, which notifies"))
            _wait_for(
                lambda: _latest_run(rt, "incident-triage", started_ms) is not None,
                30,
                "the incident-triage run",
            )
            triage = _latest_run(rt, "incident-triage", started_ms)
            assert triage is not None
            triage_run = rt.runs.wait(triage, timeout=60)
            render_run(rt, triage)
            ok &= triage_run.status.value == "completed"
            console.print(
                "metrics service calls: "
                + ", ".join(f"{p} x{n}" for p, n in sorted(metrics.calls.items()))
            )

        console.print(Rule("Inbox"))
        from loopwright.inbox import Inbox

        for n in reversed(Inbox(rt.redis, rt.keys, rt.settings).list(limit=5)):
            line = f"[{n.level}] {n.skill or n.source}: {n.title}: {n.body}"
            console.print(escape(line))
        console.print(Rule("Skills and run history"))
        _history(rt, Registry(rt.redis, rt.keys), started_ms)
        console.print(Rule("done" if ok else "[red]some runs did not complete[/]"))
    finally:
        procs.stop()
        install_runtime(None)
        paused = pause_skills(rt)  # also on Ctrl-C: nothing may fire at the stopped service
    st = rt.settings
    console.print(
        escape(
            f"Continue the conversation: LOOPWRIGHT_KEY_PREFIX={st.key_prefix} "
            f"LOOPWRIGHT_QUEUE={st.queue} loopwright chat --session {sid}\n"
            + explore_hint(rt, paused)
            + "\nThe crash-resume tour: loopwright demo --runner"
        ),
        soft_wrap=True,
    )
    if leftovers:
        console.print(
            escape(
                f"An earlier demo left {', '.join(leftovers)} in your own installation, calling a "
                "fake service that is gone; remove them with: "
                + " && ".join(f"loopwright skills delete {n} --yes" for n in leftovers)
            ),
            soft_wrap=True,
        )
    rt.close()
    return 0 if ok else 1
