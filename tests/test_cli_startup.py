"""The CLI starts fast: hot commands import only what they use, and the settings load without
pydantic (``loopwright.envmodel``) yet check values exactly as pydantic-core does.

The timing itself is a benchmark (``bench/cli.py``, docs/benchmarks.md); these tests pin the
causes, which a timing on a loaded machine cannot: what a command imports, and that the fast
settings path gives pydantic's answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr as PydanticSecretStr
from pydantic_core import ValidationError
from typer.testing import CliRunner

from conftest import Cluster
from loopwright.cli.main import COMMANDS, app
from loopwright.envmodel import EnvModel, Field
from loopwright.settings import SecretStr, Settings

# What no hot command may load: the validation libraries (settings validate without them), the
# parameter coercion of typer 0.27+, and the layers only other commands need.
HEAVY = (
    "pydantic",
    "pydantic_settings",
    "pydantic_core",
    "typer._adapters",
    "rich.markdown",
    "httpx",
    "loopwright.agent",
    "loopwright.llm",
    "loopwright.sidecar",
    "loopwright.sandbox",
    "loopwright.skills_registry",
    "loopwright.history",
    "loopwright.sdk.manifest_model",
    # the runner's write side, the skill decorator and context, the inbox: reading history
    # and sending an event need none of them (runner.store and sdk/__init__ import them lazily)
    "loopwright.runner.transitions",
    "loopwright.runner.lease",
    "loopwright.runner.lua",
    "loopwright.runner.rollup",
    "loopwright.runner.flow",
    "loopwright.sdk.spec",
    "loopwright.sdk.context",
    "loopwright.sdk.triggers",
    "loopwright.inbox",
)

_PROBE = """
import json, sys
sys.argv = ["loopwright", *json.loads(sys.argv[1])]
try:
    from loopwright.cli.main import run
    run()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(OUT, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def _modules_of(cluster: Cluster, tmp_path: Path, *argv: str) -> set[str]:
    """The modules a CLI command's process had loaded when it ended (it must succeed)."""
    out = tmp_path / "modules.json"
    code = _PROBE.replace("OUT", repr(str(out)))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), (argv, proc.stdout, proc.stderr)
    return set(result["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_hot_commands_import_only_what_they_use(cluster: Cluster, tmp_path: Path) -> None:
    # Given a run to show
    run_id = cluster.rt.runs.create(skill="hello", version="v1", data={})
    # When each hot command runs as its own process
    for argv in (
        ("runs", "list"),
        ("runs", "show", run_id),
        ("events", "send", "startup.probe", "--data", '{"n": 1}'),
        ("--help",),
    ):
        modules = _modules_of(cluster, tmp_path, *argv)
        # Then none of the heavy modules was loaded
        assert _heavy(modules) == [], argv
    # And --help, which imports every command's module, loads no Redis, rich or runner
    modules = _modules_of(cluster, tmp_path, "--help")
    assert not [m for m in modules if m.split(".")[0] in ("redis", "rich", "rq")]
    assert not [m for m in modules if m.startswith(("loopwright.runner", "loopwright.settings"))]


def test_the_first_command_module_loads_only_when_its_command_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    modules = _modules_of(cluster, tmp_path, "runs", "list")
    loaded = {m.rpartition(".")[2] for m in modules if m.startswith("loopwright.cli.")}
    assert "runs" in loaded
    assert not loaded & {"chat", "skills", "doctor", "services", "tokens", "dev", "mcp", "demo"}


def test_every_listed_command_loads_and_has_help() -> None:
    # Every "module:attribute" in the table resolves, in --help and on its own
    runner = CliRunner()
    result = runner.invoke(app, ["--help"], prog_name="loopwright")
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"  {name} " in result.output, name
        sub = runner.invoke(app, [name, "--help"], prog_name="loopwright")
        assert sub.exit_code == 0 and "Usage: loopwright" in sub.output, (name, sub.output)


# --- The settings: pydantic's answers without pydantic -----------------------------------

# (field, value): valid values the plain check decides, and values it hands to pydantic-core
# (bad ones, and ones whose coercion is subtle, like " 5" or "True").
SAMPLES: list[tuple[str, Any]] = [
    ("lease_ttl", "2500ms"),
    ("lease_ttl", 3),
    ("lease_ttl", "1h"),  # over its bound
    ("lease_ttl", "abc"),
    ("lease_ttl", True),
    ("sandbox_pool_size", "3"),
    ("sandbox_pool_size", " 3"),
    ("sandbox_pool_size", "3.0"),
    ("sandbox_pool_size", "١٢"),  # digits, but not ASCII ones
    ("sandbox_pool_size", 99),
    ("sandbox_pool_size", True),
    ("critic_threshold", "0.5"),
    ("critic_threshold", "1e-1"),
    ("critic_threshold", "nan"),
    ("critic_threshold", 2),
    ("http_allow_private", "true"),
    ("http_allow_private", "True"),
    ("http_allow_private", "0"),
    ("http_allow_private", "maybe"),
    ("http_allow_private", 1),
    ("http_private_allow", "10.1.0.0/16,*.internal"),
    ("http_private_allow", "169.254.0.0/16"),
    ("http_private_allow", "not a range!"),
    ("key_prefix", "lw-1"),
    ("key_prefix", "has space"),
    ("key_prefix", 5),
    ("sandbox_backend", "docker"),
    ("sandbox_backend", "vm"),
    ("redis_url", None),
    ("redis_url", "redis://127.0.0.1:1/0"),
    ("data_dir", "/tmp/x"),
    ("data_dir", 5),
    ("sidecar_allowed_hosts", ["a", "b"]),
    ("sidecar_allowed_hosts", ["a", 1]),
    ("sidecar_allowed_hosts", "a"),
    ("llm_pricing", {"m": {"input": 1, "output": "2"}}),
    ("llm_pricing", {"m": {"input": "x"}}),
    ("run_retention", "1.5s"),
    ("run_retention", "14d"),
    ("event_retention", "10s"),  # under its 60 s floor
]


def _by_core(field: str, value: Any) -> tuple[str, Any]:
    """pydantic-core's answer for one field: ("ok", value) or ("error", its errors)."""
    try:
        return "ok", Settings._get_validator().validate_python({field: value})[field]
    except ValidationError as exc:
        return "error", exc.errors(include_url=False, include_context=False)


def _by_settings(field: str, value: Any) -> tuple[str, Any]:
    try:
        return "ok", getattr(Settings(**{field: value}), field)
    except ValidationError as exc:
        return "error", exc.errors(include_url=False, include_context=False)


@pytest.mark.parametrize(("field", "value"), SAMPLES)
def test_a_value_is_checked_as_pydantic_core_checks_it(field: str, value: Any) -> None:
    got, want = _by_settings(field, value), _by_core(field, value)
    assert got == want
    if got[0] == "ok":
        assert type(got[1]) is type(want[1])


def test_a_valid_environment_loads_without_pydantic(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LOOPWRIGHT_LEASE_TTL": "2500ms",
        "loopwright_queue": "lower-case-name",  # names are case-insensitive
        "LOOPWRIGHT_SECRETS": '{"TOKEN": "hunter2"}',
        "LOOPWRIGHT_NOT_A_SETTING": "ignored",
        "LOOPWRIGHT_HTTP_PRIVATE_ALLOW": "10.1.0.0/16",
    }
    code = (
        "import json, sys; from loopwright.settings import Settings; s = Settings(); "
        "print(json.dumps([s.lease_ttl, s.queue, s.secrets['TOKEN'].get_secret_value(), "
        "s.http_private_allow, sorted(m for m in sys.modules if m.startswith('pydantic'))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [2.5, "lower-case-name", "hunter2", "10.1.0.0/16", []]


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPWRIGHT_QUEUE", "from-env")
    monkeypatch.setenv("LOOPWRIGHT_KEY_PREFIX", "envprefix")
    st = Settings(queue="from-kwargs")
    assert (st.queue, st.key_prefix) == ("from-kwargs", "envprefix")


def test_bad_json_in_the_environment_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPWRIGHT_SECRETS", "{not json")
    with pytest.raises(ValidationError) as caught:
        Settings()
    first = caught.value.errors()[0]
    assert first["loc"] == ("secrets",) and first["msg"].startswith("Invalid JSON")


def test_secrets_never_print_and_accept_pydantic_secrets() -> None:
    st = Settings(openai_api_key=PydanticSecretStr("sk-1"), secrets={"A": "hunter2"})
    assert isinstance(st.openai_api_key, SecretStr)
    assert st.openai_api_key.get_secret_value() == "sk-1"
    shown = repr(st) + str(st.model_dump())
    assert "sk-1" not in shown and "hunter2" not in shown and "**********" in shown


def test_model_copy_applies_the_update_and_leaves_the_original() -> None:
    st = Settings(queue="q1")
    copied = st.model_copy(update={"queue": "q2"})
    assert (st.queue, copied.queue, copied.key_prefix) == ("q1", "q2", st.key_prefix)
    assert Settings(**st.model_dump()) == st


def test_an_unsupported_field_type_is_refused_where_it_is_declared() -> None:
    with pytest.raises(TypeError, match=r"Bad\.when: type .* is not supported"):

        class Bad(EnvModel, env_prefix="X_"):
            when: complex = Field(default=0j)

    with pytest.raises(TypeError, match=r"Bad2\.name: constraint ge does not apply"):

        class Bad2(EnvModel):
            name: str = Field(default="a", ge=1)
