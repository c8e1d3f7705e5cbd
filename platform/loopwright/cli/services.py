"""``loopwright up``, ``worker`` and ``scheduler``: the long-running processes."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from loopwright.cli.common import err_console, literal, load_settings, open_runtime
from loopwright.errors import RedisUnavailableError

if TYPE_CHECKING:
    from loopwright.runner.runtime import Runtime
    from loopwright.supervisor import Child

log = logging.getLogger("loopwright.services")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def service_runtime() -> Runtime:
    """A runtime for a long-running service: wait for Redis with backoff instead of exiting.

    One-shot commands fail fast when Redis is down; a worker or scheduler started during an
    outage (a restart, a deploy) must come up when Redis does.
    """
    from loopwright.assembly import build_runtime

    rt = build_runtime(load_settings())
    wait = 0.5
    while True:
        try:
            rt.ping()
            return rt
        except RedisUnavailableError as exc:
            log.warning("%s; retrying in %.1fs", exc, wait)
            time.sleep(wait)
            wait = min(30.0, wait * 2)


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (so the API child will not crash-loop)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _child(name: str, *args: str) -> Child:
    from loopwright.supervisor import Child

    return Child(name, [sys.executable, "-m", "loopwright.cli", *args])


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")]


def up(
    workers: Annotated[int, typer.Option("--workers", "-n", min=1, max=64)] = 2,
    api: Annotated[
        bool, typer.Option("--api/--no-api", help="Serve the HTTP API (LOOPWRIGHT_API_PORT).")
    ] = True,
    verbose: Verbose = False,
) -> None:
    """Start everything: the managed Redis when needed, workers, the scheduler and the HTTP API
    (its one-time login URL is printed). Ctrl-C stops."""
    from loopwright.redis_server import ManagedRedis
    from loopwright.supervisor import Supervisor

    _logging(verbose)
    settings = load_settings()
    env = dict(os.environ)
    on_tick = None
    if settings.redis_url is None:
        managed = ManagedRedis(settings.data_dir, settings.redis_server_bin)
        env["LOOPWRIGHT_REDIS_URL"] = managed.ensure_running()
        err_console.print(literal(f"managed Redis at {managed.url} (data in {settings.data_dir})"))

        def on_tick() -> None:
            if not managed.is_running():
                err_console.print("[yellow]managed Redis is down; restarting it[/]")
                managed.ensure_running()

    children = [_child(f"worker-{i + 1}", "worker") for i in range(workers)]
    children.append(_child("scheduler", "scheduler"))
    extra = ["--verbose"] if verbose else []
    for c in children:
        c.argv += extra
    if api and _port_free(settings.api_host, settings.api_port):
        children.append(_child("api", "serve"))
    elif api:
        err_console.print(
            f"[yellow]port {settings.api_port} on {literal(settings.api_host)} is taken: not "
            "serving the API (set LOOPWRIGHT_API_PORT, or --no-api)[/]"
        )
    code = Supervisor(children, env=env, on_tick=on_tick).run()
    raise typer.Exit(code)


def worker(
    n: Annotated[int, typer.Option("-n", min=1, max=64, help="Number of worker processes.")] = 1,
    burst: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    verbose: Verbose = False,
) -> None:
    """Run worker process(es) executing runs from the queue."""
    from loopwright.supervisor import Supervisor

    _logging(verbose)
    if n > 1:
        args = ["worker"] + (["--burst"] if burst else []) + (["--verbose"] if verbose else [])
        children = [_child(f"worker-{i + 1}", *args) for i in range(n)]
        raise typer.Exit(Supervisor(children).run())
    from loopwright.runner.worker import run_worker

    rt = open_runtime() if burst else service_runtime()
    run_worker(rt, burst=burst)


def scheduler(verbose: Verbose = False) -> None:
    """Run the scheduler: wakes sleeping runs, reaps expired leases, re-dispatches lost runs."""
    _logging(verbose)
    from loopwright.scheduler.loop import run_until_signalled

    rt = service_runtime()
    if rt.settings.review_cron:
        from loopwright.review.loop import ensure_builtin as ensure_review

        ensure_review(rt)  # the weekly review's cron trigger is its built-in skill's
    run_until_signalled(rt)
