"""Every CLI command with a broken configuration or bad usage: one readable line, no traceback.

The sweep runs in-process through typer's ``CliRunner`` (the root group's ``invoke`` is the one
choke point that turns failures into lines, so the runner exercises the real handling) and a
few whole-process runs check the entry point itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from conftest import Cluster, free_port, wait_until
from loopwright.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "examples" / "hello_pipeline.py")

# Every command that talks to Redis, the registry or the sandbox (long-running services that
# wait for Redis on purpose, 'worker' without --burst and 'scheduler', are left out).
COMMANDS: list[list[str]] = [
    ["run", HELLO],
    ["run", "hello-pipeline", "--wait"],
    ["runs", "list"],
    ["runs", "show", "r-1"],
    ["runs", "cancel", "r-1"],
    ["events", "send", "incident.opened", "--data", "{}"],
    ["inbox"],
    ["skills", "submit", HELLO],
    ["skills", "list"],
    ["skills", "show", "hello-pipeline"],
    ["skills", "versions", "hello-pipeline"],
    ["skills", "diff", "hello-pipeline", "a", "b"],
    ["skills", "approve", "hello-pipeline", "a"],
    ["skills", "rollback", "hello-pipeline", "a"],
    ["skills", "pause", "hello-pipeline"],
    ["skills", "resume", "hello-pipeline"],
    ["skills", "retire", "hello-pipeline"],
    ["skills", "export", "out"],
    ["skills", "import", "out"],
    ["chat", "--list"],
    ["chat", "-m", "hi"],
    ["sidecar", "--watch", ".", "--once"],
    ["mcp"],
    ["worker", "--burst"],
]


def _clean_env(**overrides: str) -> dict[str, str | None]:
    """The environment for one invocation: no LOOPWRIGHT_* from outside, then ``overrides``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LOOPWRIGHT_")}
    env.update(overrides)
    return env


def _assert_one_line(result: Result, argv: list[str]) -> str:
    code, stderr, exc = result.exit_code, result.stderr, result.exception
    assert code != 0, (argv, result.stdout)
    assert exc is None or isinstance(exc, SystemExit), (argv, repr(exc))
    assert "Traceback" not in stderr, (argv, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, (argv, stderr)
    assert lines[0].startswith("loopwright: error: "), (argv, lines[0])
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    try:
        yield tmp_path
    finally:
        os.chdir(old)


BROKEN = {
    "no redis": lambda tmp: {"LOOPWRIGHT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    "bad setting": lambda tmp: {
        "LOOPWRIGHT_REDIS_URL": "redis://127.0.0.1:1/0",
        "LOOPWRIGHT_LEASE_TTL": "abc",
    },
    "unwritable data dir": lambda tmp: {"LOOPWRIGHT_DATA_DIR": str(_a_file(tmp) / "data")},
}


def _a_file(tmp: Path) -> Path:
    path = tmp / "plain-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_every_command_with_a_broken_configuration_prints_one_line(
    broken: str, in_tmp: Path
) -> None:
    runner = CliRunner()
    env = _clean_env(**BROKEN[broken](in_tmp))
    seen = set()
    for argv in COMMANDS:
        result = runner.invoke(app, argv, env=env, prog_name="loopwright")
        seen.add(_assert_one_line(result, argv))
    if broken == "bad setting":
        assert seen == {
            "loopwright: error: invalid setting LOOPWRIGHT_LEASE_TTL: Value error, not a "
            "duration: 'abc' (use e.g. 30, '500ms', '30s', '2m', '1h', '1d')"
        }
    if broken == "no redis":
        assert all("Redis" in line for line in seen), seen


def test_doctor_with_a_broken_configuration_exits_non_zero_without_a_traceback(
    in_tmp: Path,
) -> None:
    runner = CliRunner()
    for broken in sorted(BROKEN):
        result = runner.invoke(app, ["doctor"], env=_clean_env(**BROKEN[broken](in_tmp)))
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_docker_backend_without_an_engine_is_one_line(cluster: Cluster, in_tmp: Path) -> None:
    env = {
        **{k: v for k, v in cluster.env.items() if k.startswith("LOOPWRIGHT_")},
        "LOOPWRIGHT_SANDBOX_BACKEND": "docker",
        "DOCKER_HOST": f"unix://{in_tmp / 'no-engine.sock'}",
    }
    result = CliRunner().invoke(app, ["skills", "submit", HELLO], env=_clean_env(**env))
    line = _assert_one_line(result, ["skills", "submit"])
    assert "docker" in line.lower(), line


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["runs", "show"],
        ["inbox", "--limit", "0"],
        ["runs", "list", "--limit", "abc"],
        ["up", "-n", "0"],
        ["worker", "-n", "0"],
        ["run"],
        ["events", "send"],
        ["skills", "bogus"],
    ],
)
def test_usage_errors_print_the_usage_line_and_exit_2(argv: list[str]) -> None:
    result = CliRunner().invoke(app, argv, prog_name="loopwright")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Usage: loopwright"), result.stderr
    assert "Error: " in result.stderr


def _entry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwright.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")},
             **(env or {})},
    )  # fmt: skip


def test_entry_point_version_usage_and_failure() -> None:
    import importlib.metadata

    version = _entry("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"loopwright {importlib.metadata.version('loopwright')}"
    bare = _entry()
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "Usage: loopwright" in bare.stdout + bare.stderr
    bogus = _entry("bogus")
    assert bogus.returncode == 2 and "No such command 'bogus'" in bogus.stderr
    assert "Traceback" not in bogus.stderr
    down = _entry("runs", "list", env={"LOOPWRIGHT_REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("loopwright: error: ")


# doctor and live workers


def test_doctor_counts_only_live_workers_and_its_ok_column_is_true(cluster: Cluster) -> None:
    def doctor() -> tuple[int, dict[str, dict[str, object]]]:
        proc = cluster.cli("doctor", "--json")
        return proc.returncode, json.loads(proc.stdout)

    code, checks = doctor()
    assert code == 1
    assert not checks["workers"]["ok"] and not checks["scheduler"]["ok"]
    assert str(checks["workers"]["detail"]).startswith("0 live")
    cluster.scheduler()
    w1, w2 = cluster.worker(), cluster.worker()
    wait_until(lambda: len(__import__("rq").Worker.all(queue=cluster.rt.dispatcher.queue)) == 2)
    wait_until(lambda: cluster.rt.redis.exists(cluster.rt.keys.scheduler_heartbeat))
    code, checks = doctor()
    assert str(checks["workers"]["detail"]).startswith("2 live"), checks
    assert checks["workers"]["ok"] and checks["scheduler"]["ok"]
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    code, checks = doctor()
    assert str(checks["workers"]["detail"]).startswith("1 live"), checks
    w2.send_signal(signal.SIGKILL)
    w2.wait()
    # RQ still lists both (their keys have not expired): the live count does not.
    assert len(__import__("rq").Worker.all(queue=cluster.rt.dispatcher.queue)) == 2
    code, checks = doctor()
    assert code == 1 and not checks["workers"]["ok"]
    assert str(checks["workers"]["detail"]).startswith("0 live"), checks


def test_run_wait_says_at_once_that_only_dead_workers_are_registered(cluster: Cluster) -> None:
    w = cluster.worker()
    wait_until(lambda: __import__("rq").Worker.all(queue=cluster.rt.dispatcher.queue))
    w.send_signal(signal.SIGKILL)
    w.wait()
    proc = cluster.cli("run", HELLO, "--wait", "--wait-timeout", "1")
    assert proc.returncode == 1
    assert "no worker is consuming queue" in proc.stderr


# Terminal injection: what a skill controls is printed as literal text.

HOSTILE = (
    "boom [/] [link=http://x]click[/link] \x1b]8;;http://evil\x1b\\here\x1b]8;;\x1b\\ \x1b[2J\u202e"
)
HOSTILE_SKILL = f"""
from loopwright.sdk import skill

@skill(name="hostile", tools=["notify"])
def main(ctx):
    ctx.step.run("tell", lambda: ctx.tools.notify({HOSTILE!r}, title={HOSTILE!r}))
    ctx.log.info({HOSTILE!r})
    ctx.step.run("say", lambda: {HOSTILE!r})
    raise ValueError({HOSTILE!r})
"""


def _literal_ok(text: str, whole: bool = True) -> None:
    assert "\x1b" not in text and "\u202e" not in text, repr(text)
    assert "[/]" in text and "[link=http://x]" in text, text
    if whole:  # 'runs list' shows the first 60 characters of an error
        assert "\\x1b]8;;http://evil" in text, text
        assert "\\x1b[2J" in text and "\\u202e" in text, text


def test_hostile_text_from_a_skill_prints_literally_everywhere(cluster: Cluster) -> None:
    cluster.worker()
    path = cluster.tmp / "hostile.py"
    path.write_text(HOSTILE_SKILL)
    waited = cluster.cli("run", str(path), "--wait", "--trusted")
    assert waited.returncode == 1 and "Traceback" not in waited.stderr, waited.stderr
    _literal_ok(waited.stdout + waited.stderr)
    run_id = cluster.rt.runs.find(skill="hostile")[0].id
    env = {"COLUMNS": "400"}
    for argv in (["runs", "list"], ["runs", "show", run_id], ["inbox"]):
        proc = subprocess.run(
            [sys.executable, "-m", "loopwright.cli", *argv],
            env={**cluster.env, **env}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr
        _literal_ok(proc.stdout, whole=argv != ["runs", "list"])


def test_literal_makes_markup_and_control_characters_visible() -> None:
    from rich.console import Console

    from loopwright.cli.common import literal, one_line

    console = Console(record=True, width=400, force_terminal=False)
    console.print(literal(HOSTILE))
    out = console.export_text()
    _literal_ok(out)
    assert "\n" not in one_line("a\nb\r\x1b[2J").strip()
    assert one_line("a\nb\x1b[2J") == "a b\\x1b[2J"


# The exception tree.


def _defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a loopwright module (all modules imported)."""
    import importlib
    import pkgutil

    import loopwright

    names = [
        info.name
        for info in pkgutil.walk_packages(loopwright.__path__, "loopwright.")
        if not info.name.endswith("__main__")
    ]
    modules = []
    for attempt in range(2):  # a package-level import cycle can need a second pass
        retry = []
        for name in names:
            try:
                modules.append(importlib.import_module(name))
            except ImportError:
                if attempt:
                    raise
                retry.append(name)
        names = retry
    found: dict[str, type[BaseException]] = {}
    for module in modules:
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_platform_exception_is_in_the_one_tree() -> None:
    from loopwright.errors import (
        InfrastructureError,
        LoopwrightError,
        PlatformError,
        SkillAuthorError,
        UserError,
    )
    from loopwright.sdk.errors import RunInterrupt, SkillError

    branches = (UserError, SkillAuthorError, InfrastructureError, PlatformError)
    # Private signals and test doubles that never leave their module, and the CLI's carrier of
    # an already-translated failure (a click exception by necessity).
    private = {"_RetryableError", "_Stop", "_Defer", "BadRequestError", "CommandFailed"}
    outside = []
    for exc in _defined_exceptions():
        if exc.__name__ in private or issubclass(exc, (RunInterrupt, SkillError)):
            continue
        if exc in (LoopwrightError, *branches):
            continue
        if not (issubclass(exc, LoopwrightError) and issubclass(exc, branches)):
            outside.append(f"{exc.__module__}.{exc.__qualname__}")
    assert not outside, f"not under a LoopwrightError branch: {outside}"


def test_the_tree_sorts_by_who_can_fix_it() -> None:
    from loopwright.errors import InfrastructureError, PlatformError, SkillAuthorError, UserError
    from loopwright.llm.errors import ModelConfigError, ModelUnavailableError
    from loopwright.runner.execute import GuestFailedError
    from loopwright.sandbox.guards import GuardViolation
    from loopwright.sandbox.host import GuestTimeoutError, SandboxError
    from loopwright.sandbox.policy import PolicyViolation
    from loopwright.sandbox.protocol import ProtocolError
    from loopwright.sdk.errors import RunInterrupt
    from loopwright.sdk.manifest import ManifestError
    from loopwright.skills_registry.manifest import ManifestInvalid

    assert issubclass(SandboxError, InfrastructureError)
    assert issubclass(GuestTimeoutError, SandboxError)
    assert issubclass(ModelUnavailableError, InfrastructureError)
    for exc in (PolicyViolation, ManifestError, ManifestInvalid, GuestFailedError):
        assert issubclass(exc, SkillAuthorError), exc
    assert issubclass(ModelConfigError, UserError)
    assert issubclass(ProtocolError, PlatformError)
    # A guard refusal must end the run: skill code's "except Exception" cannot swallow it.
    assert issubclass(GuardViolation, RunInterrupt) and not issubclass(GuardViolation, Exception)


def test_the_guest_imports_only_the_sdk_and_the_sandbox() -> None:
    code = (
        "import sys, loopwright.sandbox.guest\n"
        "print(sorted(m for m in sys.modules if m.startswith('loopwright')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(proc.stdout.replace("'", '"'))
    allowed = ("loopwright.sdk", "loopwright.sandbox")
    assert [m for m in modules if m != "loopwright" and not m.startswith(allowed)] == []
