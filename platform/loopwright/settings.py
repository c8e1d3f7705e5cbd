"""One settings object for the whole platform, read once at the edge (prefix ``LOOPWRIGHT_``).

Declared as pydantic models are (``name: type = Field(default=..., ge=..., description=...)``)
and validated by pydantic-core through :mod:`loopwright.envmodel`, which loads in milliseconds
where pydantic-settings took ~0.3 s of every CLI command's start-up (docs/benchmarks.md).
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from loopwright.envmodel import BeforeValidator, EnvModel, Field, SecretStr
from loopwright.sdk.durations import parse_duration

__all__ = ["Duration", "Field", "SecretStr", "Settings", "WholeSeconds"]


def _whole_seconds(value: Any) -> int:
    """A duration rounded up to whole seconds (Redis expiries take whole seconds)."""
    return math.ceil(parse_duration(value))


# Every duration setting reads through the one parser: ``14d``, ``2h``, ``90s``, ``500ms`` or a
# plain number of seconds (so environments written before units were accepted keep working).
Duration = Annotated[float, BeforeValidator(parse_duration)]
WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds)]


# A host-name entry of the private allow-list: a name, or ``*.`` and a name (its subdomains).
_HOST_ENTRY = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _private_allow(value: Any) -> str:
    """``LOOPWRIGHT_HTTP_PRIVATE_ALLOW`` checked and normalised: comma-separated CIDR ranges or
    addresses and host names (``*.internal``); the runner reads it with
    ``runner.addresses.PrivateAllow``."""
    if value is None:
        return ""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out: list[str] = []
    for raw in items:
        entry = str(raw).strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            out.append(str(ipaddress.ip_network(entry.strip("[]"), strict=False)))
            continue
        except ValueError:
            pass
        if not _HOST_ENTRY.fullmatch(entry) or entry.rsplit(".", 1)[-1].isdigit():
            raise ValueError(
                f"{str(raw).strip()[:80]!r} is neither an address range (10.1.0.0/16, "
                f"fd12::/48, 10.1.2.3) nor a host name (db.internal, *.internal)"
            )
        out.append(entry)
    return ",".join(out)


def _retired_allow_private(value: Any) -> None:
    """``LOOPWRIGHT_HTTP_ALLOW_PRIVATE`` opened every private address, cloud metadata included;
    it was replaced by an allow-list. Refused at start-up, saying what to set instead."""
    if value is None or str(value).strip().lower() in ("", "0", "false", "no", "off"):
        return None  # the old default asks for nothing the new default does not give
    raise ValueError(
        "LOOPWRIGHT_HTTP_ALLOW_PRIVATE was replaced: unset it and name the private ranges and "
        "hosts skills may reach in LOOPWRIGHT_HTTP_PRIVATE_ALLOW (e.g. "
        "LOOPWRIGHT_HTTP_PRIVATE_ALLOW=10.1.0.0/16,*.internal; loopback only as an exact "
        "address such as 127.0.0.1); cloud metadata addresses stay refused"
    )


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "loopwright"


# Field types the loader reads (loopwright.envmodel): str, int, float, bool, Path, SecretStr,
# Literal[...], X | None, list[X], dict[str, X], Duration, WholeSeconds; Field() takes default,
# default_factory, description, gt/ge/lt/le, pattern, min_length/max_length. Anything else is
# refused when this module is imported, naming the field.
class Settings(EnvModel, env_prefix="LOOPWRIGHT_"):
    """Platform configuration; every field can be set as ``LOOPWRIGHT_<FIELD>``."""

    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: a managed local redis-server under data_dir is started.",
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    redis_server_bin: str = "redis-server"
    key_prefix: str = Field(default="lw", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    queue: str = Field(default="loopwright", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    lease_ttl: Duration = Field(default=4.0, gt=0.2, le=600)
    reaper_interval: Duration = Field(default=0.25, gt=0.01, le=60)
    dispatch_grace: Duration = Field(
        default=5.0, gt=0, description="Seconds a queued run may sit with a vanished RQ job."
    )

    step_output_inline_bytes: int = Field(default=16 * 1024, ge=256)
    step_output_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    run_input_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    run_storage_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=16 * 1024,
        description="Bytes of checkpoints one run may store; beyond it the run fails.",
    )
    skill_source_max_bytes: int = Field(default=256 * 1024, ge=1024)
    run_log_max_entries: int = Field(default=1000, ge=10)
    inline_retry_max_delay: Duration = Field(
        default=1.0, ge=0, description="Retry delays up to this many seconds wait in-process."
    )
    default_run_timeout: Duration = Field(default=3600.0, gt=0)
    max_run_reaps: int = Field(
        default=20, ge=1, description="Lost executors after which a run fails instead of retrying."
    )
    skill_cache_size: int = Field(default=128, ge=1)
    redis_socket_timeout: Duration = Field(default=10.0, gt=0)

    event_retention: WholeSeconds = Field(
        default=24 * 3600, ge=60, description="Seconds an event id deduplicates resends."
    )
    event_stream_max: int = Field(default=100_000, ge=1000)
    cron_catchup: Duration = Field(
        default=10.0, ge=0, description="Missed cron ticks younger than this all fire."
    )
    scheduler_leader_ttl: Duration = Field(default=3.0, gt=0.2, le=120)

    sandbox_backend: Literal["process", "docker"] = "process"
    sandbox_require_isolation: bool = Field(
        default=False, description="Refuse to run sandboxed skills without bubblewrap/Docker."
    )
    sandbox_memory_mb: int = Field(default=512, ge=64, le=65536)
    sandbox_cpu_seconds: int = Field(default=120, ge=1)
    sandbox_max_processes: int = Field(default=32, ge=4)
    sandbox_open_files: int = Field(default=64, ge=16)
    sandbox_pool_size: int = Field(default=1, ge=0, le=16)
    sandbox_docker_image: str = "loopwright-guest:local"
    http_timeout: Duration = Field(default=15.0, gt=0, le=300)
    http_max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Secret values by name (LOOPWRIGHT_SECRETS as a JSON object); skills "
        "reference names only and values are used on the host, never sent to a guest.",
    )
    secret_grants: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="Per secret, the skills and hosts it may be used for (LOOPWRIGHT_SECRET_GRANTS"
        ' as JSON: {"NAME": {"skills": [...], "hosts": [...]}}). A secret without a grant may be '
        "used by any skill that declares it.",
    )
    notify_max_per_run: int = Field(default=100, ge=1)

    approval_mode: Literal["auto", "review"] = Field(
        default="auto",
        description="auto: an accepted skill version becomes active at once; review: it waits "
        "in pending_approval until 'loopwright skills approve NAME VERSION'.",
    )
    sidecar_url: str | None = Field(
        default=None,
        description="Sidecar service the CLI submits to (e.g. http://127.0.0.1:8765); unset: "
        "the CLI runs the validation pipeline itself.",
    )
    sidecar_host: str = "127.0.0.1"
    sidecar_port: int = Field(default=8765, ge=1, le=65535)
    sidecar_token: SecretStr | None = Field(
        default=None,
        description="Platform token ('loopwright tokens create') the CLI presents to the "
        "sidecar service; unset: the local person token in data_dir.",
    )
    sidecar_case_timeout: Duration = Field(
        default=30.0, gt=0, le=600, description="Wall-clock limit of one sandboxed test case."
    )
    sidecar_tests_max_bytes: int = Field(default=256 * 1024, ge=1024)

    # Models (loopwright.llm). ``model`` unset: Anthropic when its key is set, else OpenAI when
    # its key is set, else the offline template model.
    model: str | None = Field(
        default=None,
        description="Builder model: openai:gpt-4.1, anthropic:claude-sonnet-4-5, "
        "ollama:qwen2.5-coder, vllm:NAME, llamacpp:NAME, lmstudio:NAME or offline.",
    )
    critic_model: str | None = Field(
        default=None, description="Optional verifier-critic model (a different model)."
    )
    critic_threshold: float = Field(default=0.7, ge=0, le=1)
    skill_model: str | None = Field(
        default=None, description="Model behind ctx.step.llm in skills (default: ``model``)."
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    ollama_base_url: str = "http://127.0.0.1:11434/v1"
    vllm_base_url: str = "http://127.0.0.1:8000/v1"
    llamacpp_base_url: str = "http://127.0.0.1:8080/v1"
    lmstudio_base_url: str = "http://127.0.0.1:1234/v1"
    llm_timeout: Duration = Field(default=120.0, gt=0, le=3600)
    llm_max_retries: int = Field(default=4, ge=0, le=20)
    llm_max_retry_wait: Duration = Field(
        default=60.0, gt=0, description="Longest retry-after the client honours before failing."
    )
    llm_max_output_tokens: int = Field(default=4096, ge=16, le=200_000)
    llm_pricing: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='USD per million tokens, e.g. {"openai:gpt-4.1": {"input": 2, "output": 8, '
        '"cached": 0.5}}; overrides and extends the built-in table.',
    )

    # Builder agent (loopwright.agent).
    agent_max_steps_per_turn: int = Field(default=40, ge=1, le=10_000)
    agent_max_tokens_per_session: int = Field(default=2_000_000, ge=1000)
    agent_max_cost_per_session: float = Field(default=5.0, ge=0)
    agent_reanchor_steps: int = Field(
        default=30, ge=4, description="Model+tool steps after which the context is re-anchored."
    )
    agent_reanchor_tokens: int = Field(
        default=60_000, ge=1000, description="Prompt size (tokens) that also triggers it."
    )
    agent_keep_turns: int = Field(
        default=4, ge=1, description="Most recent exchanges kept verbatim after re-anchoring."
    )
    agent_max_submissions: int = Field(default=3, ge=1, le=10)
    agent_tool_result_max_chars: int = Field(default=12_000, ge=500)
    agent_message_max_bytes: int = Field(default=64 * 1024, ge=1024)

    # Sidecar service: who may call it, and what one submission may cost (docs/security.md).
    sidecar_agent_token: SecretStr | None = Field(
        default=None,
        description="Platform token the builder agent presents to the sidecar service (its "
        "author should be agent); unset: the local agent token in data_dir.",
    )
    sidecar_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the sidecar answers to besides the bound address and loopback "
        '(JSON list, e.g. ["sidecar"]); any other Host header gets 421.',
    )
    sidecar_case_max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=16 * 1024,
        description="Bytes one test case may record (step outputs, logs, notifications).",
    )
    sidecar_submission_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=16 * 1024,
        description="Bytes all cases of one submission may record together.",
    )
    sidecar_response_max_bytes: int = Field(
        default=12 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest verdict the service returns; beyond it step outputs are left out.",
    )
    sidecar_max_guests: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Test-case guests running at once in one process, across all submissions.",
    )
    sidecar_guest_wait: Duration = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a test case waits for a guest slot before the submission is "
        "refused as busy (HTTP 503).",
    )
    # Limits that hold against hostile skills (security issue, resource limits).
    http_call_max_seconds: Duration = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Wall-clock cap of one http tool call (connect, headers and whole body); "
        "a call also ends at the run's deadline or when the run is cancelled.",
    )
    max_hops: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Longest chain of runs started by events sent or skills invoked by runs "
        "(as AWS Lambda's recursive-loop detection); the step that would go further fails.",
    )
    run_budget_per_root: int = Field(
        default=1000,
        ge=1,
        description="Runs that events and invokes descending from one root event or root run "
        "may start (bounds fan-out: a fan-out of 2 over 16 hops is 65,000 runs).",
    )
    event_backlog_max: int = Field(
        default=100_000,
        ge=10,
        description="Accepted events not yet routed beyond which new events are refused "
        "(backpressure: accepted events are never trimmed before routing).",
    )
    # history: recorded tool calls and replay (w3)
    run_recording: bool = Field(
        default=True,
        description="Record every host-tool call of a run (http, llm, notify, send_event, "
        "invoke) with its checkpoint, for replay; off only to measure its cost.",
    )
    run_recording_max_bytes: int = Field(
        default=1024 * 1024,
        ge=4096,
        description="Bytes of recorded tool calls one run may keep (counted in its storage "
        "quota); a body over 1/16 of it is kept truncated with its sha256, and beyond it the "
        "run is marked 'recording: partial' (never failed).",
    )
    sidecar_replay_runs: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="Recorded runs of the active version the sidecar replays against a new "
        "version of the same skill (labelled runs first); advisory, in its verdict.",
    )

    # history: retention, pins, feedback (issue 10)
    run_retention: WholeSeconds = Field(
        default=14 * 86400,
        ge=1,
        description="How long a finished run (record, steps, outputs, logs) is kept after it "
        "ends, e.g. 14d, 12h, 90s or seconds; pinned runs (feedback, 'runs pin') are kept "
        "until unpinned.",
    )
    retention_batch_runs: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Most runs one retention script call deletes (each call stays ~1-2 ms).",
    )

    # the HTTP API and web pages (issue 13)
    api_host: str = Field(default="127.0.0.1", description="Address 'loopwright serve' binds.")
    api_port: int = Field(default=8700, ge=1, le=65535)
    api_cookie_secure: bool = Field(
        default=False,
        description="Mark session cookies Secure (set it when a TLS proxy is in front).",
    )
    webhooks: dict[str, dict[str, str | int]] = Field(
        default_factory=dict,
        description="Webhook sources as JSON (LOOPWRIGHT_WEBHOOKS): name -> {kind: github|stripe"
        "|hmac, secret: NAME in LOOPWRIGHT_SECRETS, tolerance: seconds}; served at "
        "POST /hooks/{name}.",
    )
    webhook_max_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest webhook delivery body accepted."
    )

    # inbox and failure alerts (issue 15: someone hears about failures)
    inbox_max: int = Field(
        default=10_000,
        ge=10,
        description="Notices the inbox keeps; the oldest go first (acknowledged or not).",
    )
    alert_interval: Duration = Field(
        default=3600.0,
        gt=0,
        description="After a skill's first failure with one error signature, at most one "
        "summary notice (with the count) per this interval while it keeps failing that way.",
    )
    alert_webhook_secret: str | None = Field(
        default=None,
        description="Name of a secret (LOOPWRIGHT_SECRETS) holding a Slack-compatible webhook "
        'URL: platform notices (failure alerts, recoveries) are POSTed to it as {"text": ...}.',
    )

    # ctx.state: a small durable JSON store per skill (issue 15, runner/state.py)
    state_value_max_bytes: int = Field(
        default=64 * 1024,
        ge=16,
        le=1024 * 1024,
        description="Largest JSON value one ctx.state key may hold (bytes of its encoding).",
    )
    state_max_keys: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Most keys one skill's ctx.state may hold (a commit adding more fails the "
        "step without retries).",
    )

    # Private hosts for the http tool (issue 15, runner/addresses.py, runner/netguard.py)
    http_private_allow: Annotated[str, BeforeValidator(_private_allow)] = Field(
        default="",
        description="Private addresses the http tool may reach: comma-separated ranges "
        "(10.1.0.0/16, fd12::/48) and host names (db.internal, *.internal, admitted when they "
        "resolve to a private address or a public one). Loopback, link-local and cloud "
        "metadata addresses only when named exactly (127.0.0.1, not 127.0.0.0/8).",
    )
    http_allow_private: Annotated[str | None, BeforeValidator(_retired_allow_private)] = Field(
        default=None,
        description="Retired (it opened cloud metadata too): set LOOPWRIGHT_HTTP_PRIVATE_ALLOW.",
    )

    # the weekly review: candidates, gate, promotion, watch (issue 11, REVB)
    review_model: str | None = Field(
        default=None,
        description="Model the review's rewrite candidates use (e.g. openai:gpt-4.1); unset: "
        "the builder's model (LOOPWRIGHT_MODEL or the one a key selects).",
    )
    review_cron: str = Field(
        default="0 7 * * 1",
        description="When the built-in weekly-review skill runs (cron, UTC); the scheduler "
        "installs it at start. Empty: no weekly cron (run reviews with 'loopwright review run').",
    )
    review_max_cost: float = Field(
        default=2.0,
        ge=0,
        description="Most model spend (USD) one review may make on rewrite candidates; past "
        "it the remaining skills are reported as 'needs a model' (budget spent).",
    )
    review_grid_max: int = Field(
        default=12,
        ge=1,
        le=50,
        description="Most parameter settings the offline candidate search replays.",
    )
    review_watch_runs: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Runs of a promoted version its watch waits for before it compares them "
        "with the old version's (or LOOPWRIGHT_REVIEW_WATCH_FOR, whichever comes first).",
    )
    review_watch_for: Duration = Field(
        default=86400.0,
        gt=0,
        description="Longest a promotion's watch lasts (e.g. 24h).",
    )
    review_watch_poll: Duration = Field(
        default=600.0,
        gt=0,
        description="How often a promotion's watch counts the new version's runs (a durable "
        "sleep between counts: no worker is held).",
    )

    # the weekly review: selection and the stored reports (issue 11, REVA)
    review_min_runs: int = Field(
        default=20,
        ge=1,
        description="Runs (completed or failed by the skill) an active version needs in the "
        "review window to be scored; fewer: 'insufficient data', never flagged.",
    )
    review_min_success: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Absolute success floor: a version is flagged when the upper bound of its "
        "95% Wilson interval is below it (clearly under the floor, not by chance).",
    )
    review_fdr_q: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="False discovery rate of the baseline-drop tests across the skills of one "
        "review (Benjamini-Hochberg).",
    )
    review_max_bad_feedback: float = Field(
        default=0.20,
        gt=0,
        le=1,
        description="Share of labelled runs labelled bad at which a version is flagged (with "
        "at least 3 labels).",
    )
    review_keep: int = Field(
        default=52,
        ge=1,
        le=10_000,
        description="Stored reviews kept (oldest dropped first): a year of weekly reviews.",
    )
