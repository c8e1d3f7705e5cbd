"""``loopwright redis status|stop`` and ``loopwright stop``: the Redis Loopwright started.

With ``LOOPWRIGHT_REDIS_URL`` unset, the first command starts a ``redis-server`` under the data
directory (``redis_server.ManagedRedis``) and it keeps running by design, so later commands,
workers and the scheduler share it. These commands show it and stop it. Neither starts it:
``status`` of a stopped server says so. A Redis named by ``LOOPWRIGHT_REDIS_URL`` is the
person's, not Loopwright's: it is shown, and stopping it is refused.

Stopping sends SHUTDOWN, which fsyncs the append-only file before the server exits, so every
acknowledged write is on disk; the next command starts the server again and replays the AOF.
While other clients are connected (workers, a scheduler, ``loopwright up``) it refuses unless
``--force``: they would lose their connection mid-run (their runs are durable and resume, but
the person probably did not mean to pull Redis from under them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, literal, load_settings
from loopwright.errors import UserError

if TYPE_CHECKING:
    from loopwright.redis_server import ManagedRedis
    from loopwright.settings import Settings

redis_app = typer.Typer(help="The Redis Loopwright started: status and stop.", no_args_is_help=True)

Force = Annotated[
    bool, typer.Option("--force", help="Stop even while other clients are connected.")
]


def _managed(settings: Settings) -> ManagedRedis:
    from loopwright.redis_server import ManagedRedis

    return ManagedRedis(settings.data_dir, settings.redis_server_bin)


def _external(settings: Settings, managed: ManagedRedis) -> bool:
    """Whether the configured Redis is one Loopwright did not start (a URL naming another)."""
    return settings.redis_url is not None and settings.redis_url != managed.url


def redis_status(settings: Settings) -> dict[str, Any]:
    """The managed server's status (never starting it), with ``managed`` (false when
    ``LOOPWRIGHT_REDIS_URL`` names another Redis) and ``clients`` (connections now)."""
    managed = _managed(settings)
    st: dict[str, Any] = {"managed": not _external(settings, managed), **managed.status()}
    st["clients"] = _clients(managed) if st["running"] else 0
    if not st["managed"]:
        st["configured_url"] = settings.redis_url
    return st


def _clients(managed: ManagedRedis) -> int:
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(managed.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return int(client.info("clients").get("connected_clients", 0))
    except RedisError:
        return 0
    finally:
        client.close()


def stop_managed(settings: Settings, force: bool) -> dict[str, Any]:
    """Stop the managed server (SHUTDOWN: the AOF is flushed first). Returns what happened."""
    managed = _managed(settings)
    if _external(settings, managed):
        raise UserError(
            f"Loopwright did not start the Redis at LOOPWRIGHT_REDIS_URL ({settings.redis_url}); "
            "stop it the way it was started"
        )
    st = redis_status(settings)
    if not st["running"] and st["pid"] is None:
        return {"stopped": False, "pid": None, "detail": "the managed redis is not running"}
    others = max(0, int(st["clients"]) - 1)  # the status probe itself is one
    if others and not force:
        raise UserError(
            f"{others} other client(s) are connected to the managed redis (workers, a "
            "scheduler, 'loopwright up'?): stop them first, or pass --force"
        )
    stopped = managed.stop()
    return {
        "stopped": stopped,
        "pid": st["pid"],
        "detail": f"stopped redis-server pid {st['pid']} (AOF flushed); the next command "
        "starts it again"
        if stopped
        else "the managed redis is not running",
    }


@redis_app.command("status")
def status(as_json: JsonFlag = False) -> None:
    """Whether the managed redis-server runs, its pid, socket, data and log (starts nothing)."""
    st = redis_status(load_settings())
    if as_json:
        emit_json(st)
        return
    if not st["managed"]:
        console.print(
            literal(
                f"Loopwright uses the Redis at LOOPWRIGHT_REDIS_URL ({st['configured_url']}), "
                "which it did not start; its managed redis is "
                + ("running" if st["running"] else "not running")
            ),
            soft_wrap=True,
        )
        return
    state = "running" if st["running"] else "not running (the next command starts it)"
    console.print(literal(f"managed redis: {state}"), soft_wrap=True)
    for key in ("pid", "version", "url", "data_dir", "log_file", "clients"):
        if st.get(key) is not None:
            console.print(literal(f"  {key}: {st[key]}"), soft_wrap=True)


@redis_app.command("stop")
def stop(force: Force = False, as_json: JsonFlag = False) -> None:
    """Stop the managed redis-server cleanly (SHUTDOWN flushes the AOF; no data is lost)."""
    result = stop_managed(load_settings(), force)
    if as_json:
        emit_json(result)
    else:
        console.print(literal(result["detail"]), soft_wrap=True)


def stop_command(force: Force = False, as_json: JsonFlag = False) -> None:
    """Stop what Loopwright started in the background: the managed redis-server."""
    stop(force, as_json)
