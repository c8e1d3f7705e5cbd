"""``loopwright doctor``: what is installed and reachable, and what to do about what is not."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, literal, live_workers, load_settings
from loopwright.errors import LoopwrightError

if TYPE_CHECKING:
    from loopwright.runner.runtime import Runtime
    from loopwright.settings import Settings


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (
        (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else None
    )


def _sandbox_check(settings: Settings) -> dict[str, Any]:
    """Which sandbox backend is active and which protections hold on this machine."""
    from loopwright.sandbox.backend import make_backend
    from loopwright.sandbox.limits import GuestLimits

    try:
        backend = make_backend(
            settings.sandbox_backend,
            GuestLimits(
                memory_bytes=settings.sandbox_memory_mb * 1024 * 1024,
                cpu_seconds=settings.sandbox_cpu_seconds,
                max_processes=settings.sandbox_max_processes,
            ),
            pool_size=0,
            require_isolation=settings.sandbox_require_isolation,
            docker_image=settings.sandbox_docker_image,
        )
    except (LoopwrightError, OSError) as exc:
        return {"ok": False, "detail": f"{settings.sandbox_backend} backend unavailable: {exc}"}
    try:
        prot = backend.protections()
    finally:
        backend.close()
    held = [k for k, v in prot.items() if v is True]
    missing = [k for k, v in prot.items() if v is False]
    detail = f"{prot.get('backend')}: " + ", ".join(held)
    if missing:
        detail += " | MISSING: " + ", ".join(missing)
    if not prot.get("network_isolation"):
        detail += " (install bubblewrap or use the docker backend for network isolation)"
    return {"ok": True, "detail": detail, "protections": prot}


def _model_check(settings: Settings) -> dict[str, Any]:
    """Which model the builder will use, and whether it can be built (key, model string)."""
    from loopwright.llm.errors import ModelConfigError
    from loopwright.llm.factory import default_model_spec, make_model
    from loopwright.llm.pricing import known_price

    spec = default_model_spec(settings)
    try:
        make_model(spec, settings)
    except ModelConfigError as exc:
        return {"ok": False, "detail": f"{spec}: {exc}"}
    if spec == "offline":
        detail = "offline template model (set LOOPWRIGHT_MODEL and an API key for a real one)"
    else:
        price = "priced" if known_price(spec, settings) else "no price known (set LLM_PRICING)"
        detail = f"{spec} ({price})"
    if settings.critic_model:
        detail += f"; critic {settings.critic_model}"
    return {"ok": True, "detail": detail}


def _history_check(rt: Runtime) -> dict[str, Any]:
    """Redis memory used, runs kept (pinned among them) and the oldest run's age."""
    from loopwright.service.runs import RunService

    mem = rt.redis.info("memory")
    kept = RunService(rt.redis, rt.keys).kept()
    age = "-"
    if kept.oldest_ms is not None:
        days = max(0.0, time.time() - kept.oldest_ms / 1000) / 86400
        age = f"{days:.1f} days" if days >= 1 else f"{days * 24:.1f} hours"
    retention = rt.settings.run_retention / 86400
    return {
        "ok": True,
        "detail": f"redis memory {mem.get('used_memory_human', '?')}; {kept.runs} runs kept "
        f"({kept.pinned} pinned), oldest {age}; retention {retention:g} days, "
        f"{kept.deleted} deleted so far",
        "memory_bytes": int(mem.get("used_memory", 0)),
        "runs": kept.runs,
        "pinned": kept.pinned,
        "oldest_ms": kept.oldest_ms,
    }


def collect() -> dict[str, Any]:
    """Every check as a dict of name -> {ok, detail}; ``ok`` is false for whatever needs action."""
    import importlib.metadata
    import platform

    from redis.exceptions import RedisError

    from loopwright.redis_server import ManagedRedis
    from loopwright.runner.runtime import Runtime

    settings = load_settings()
    checks: dict[str, dict[str, Any]] = {}
    checks["python"] = {"ok": True, "detail": platform.python_version()}
    checks["loopwright"] = {"ok": True, "detail": importlib.metadata.version("loopwright")}
    checks["rq"] = {"ok": True, "detail": importlib.metadata.version("rq")}
    binary = shutil.which(settings.redis_server_bin)
    checks["redis-server binary"] = {
        "ok": binary is not None or settings.redis_url is not None,
        "detail": _version([binary, "--version"])
        if binary
        else "not found: apt-get install -y redis-server (needed for the managed Redis)",
    }
    managed = ManagedRedis(settings.data_dir, settings.redis_server_bin)
    if settings.redis_url is None or settings.redis_url == managed.url:
        st = managed.status()
        running = f"running (pid {st['pid']}; stop it with: loopwright redis stop)"
        checks["managed redis"] = {
            "ok": True,
            "detail": f"{running if st['running'] else 'not running (starts on demand)'} "
            f"at {managed.url}, data in {settings.data_dir}",
            "running": st["running"],
            "pid": st["pid"],
        }
    else:
        checks["managed redis"] = {
            "ok": True,
            "detail": "not used: LOOPWRIGHT_REDIS_URL names a Redis Loopwright did not start",
            "running": False,
            "pid": None,
        }
    try:
        rt = Runtime(settings)
        info = rt.redis.info("server")
        aof = rt.redis.config_get("appendonly").get("appendonly", "?")
        checks["redis"] = {
            "ok": True,
            "detail": f"{rt.redis_url} (redis {info.get('redis_version')}, appendonly={aof})",
        }
        workers = live_workers(rt)
        checks["workers"] = {
            "ok": workers > 0,
            "detail": f"{workers} live on queue '{settings.queue}', "
            f"{rt.dispatcher.queue.count} job(s) waiting"
            + ("" if workers else " (start with: loopwright up)"),
        }
        checks["history"] = _history_check(rt)
        beat = str(rt.redis.get(rt.keys.scheduler_heartbeat) or "")
        checks["scheduler"] = {
            "ok": bool(beat),
            "detail": f"alive ({beat})" if beat else "not running (start with: loopwright up)",
        }
    except (LoopwrightError, RedisError) as exc:
        checks["redis"] = {"ok": False, "detail": str(exc)}
    checks["sandbox"] = _sandbox_check(settings)
    checks["builder model"] = _model_check(settings)
    docker = shutil.which("docker")
    checks["docker client"] = {"ok": True, "detail": docker or "not found"}
    return checks


def doctor(as_json: JsonFlag = False) -> None:
    """Check what is installed and reachable; exits 1 when something needs action."""
    checks = collect()
    if as_json:
        emit_json(checks)
    else:
        from rich.table import Table

        table = Table("check", "ok", "detail")
        for name, c in checks.items():
            ok = "[green]yes[/]" if c["ok"] else "[red]NO[/]"
            table.add_row(name, ok, literal(c["detail"]))
        console.print(table)
    if not all(c["ok"] for c in checks.values()):
        raise typer.Exit(1)
