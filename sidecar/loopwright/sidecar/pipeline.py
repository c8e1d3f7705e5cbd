"""The sidecar's pipeline: source + test cases in, a registered version or a rejection out.

Stages, in order, stopping at the first that fails and reporting every finding of that stage:

1. ``syntax``        size cap, then the source must compile;
2. ``policy``        the sandbox's AST + RestrictedPython policy (``sandbox.policy``);
3. ``manifest``      the ``@skill(...)`` literals as a validated manifest (name, cron, hosts...);
4. ``capabilities``  tools used are declared, hosts are allowed, no secret literals;
5. ``tests``         the test cases parse, then run in the sandbox with mocked host tools;
6. ``registration``  the author policy, then the registry (active at once, or pending approval).

Nothing in the submitted source runs on the host: stages 1-4 read the syntax tree and stage 5
runs it in a sandbox guest, like a worker would.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

from loopwright.errors import UserError
from loopwright.runner.runtime import Runtime
from loopwright.sandbox.backend import SandboxBackend
from loopwright.sandbox.policy import MAX_SOURCE_BYTES, check_source
from loopwright.sdk.manifest import Manifest, ManifestInvalid, read_manifest
from loopwright.sdk.names import is_reserved, reserved_message
from loopwright.sidecar.capabilities import check_capabilities
from loopwright.sidecar.cases import parse_cases
from loopwright.sidecar.harness import failure_line, run_cases
from loopwright.sidecar.quotas import quotas_of
from loopwright.sidecar.replay import advisory_replay
from loopwright.sidecar.verdict import Finding, ReplayReport, Verdict, rejected
from loopwright.skills_registry.diff import diff_versions
from loopwright.skills_registry.store import AUTHORS, Registry, content_version

MAX_DIFF_CHARS = 20_000
_BACKEND_LOCK = threading.Lock()  # the runtime makes its sandbox backend on first use


class Sidecar:
    """The validation pipeline bound to one runtime (its Redis, settings and sandbox)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.registry = Registry(runtime.redis, runtime.keys)

    @property
    def backend(self) -> SandboxBackend:
        """The runtime's sandbox backend (created once even under concurrent submissions)."""
        with _BACKEND_LOCK:
            return self.rt.sandbox

    def submit(
        self,
        source: str,
        tests: str | list[Any] | None,
        *,
        author: str = "agent",
        approval: Literal["auto", "review"] | None = None,
        dry_run: bool = False,
    ) -> Verdict:
        """Validate ``source`` with its test cases and register it; never raises for bad input.

        ``dry_run`` runs every stage but registration: the verdict says whether the skill
        would be accepted (``registration="dry-run"``) and the registry is not touched.
        """
        if author not in AUTHORS:
            raise UserError(f"author must be one of {list(AUTHORS)}, not {author!r}")
        timings: dict[str, float] = {}
        began = time.perf_counter()

        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            timings[stage] = round((now - since) * 1000, 3)
            return now

        t = began
        findings = self._syntax(source)
        t = lap("syntax", t)
        if findings:
            return rejected("syntax", findings, timings)
        findings = check_source(source)
        t = lap("policy", t)
        if findings:
            return rejected("policy", findings, timings)
        try:
            manifest, entry_line = read_manifest(source)
        except ManifestInvalid as exc:
            lap("manifest", t)
            return rejected("manifest", exc.findings, timings)
        t = lap("manifest", t)
        if is_reserved(manifest.name):  # only the built-in installer registers these
            return rejected(
                "manifest",
                [Finding("name-reserved", entry_line, 0, reserved_message(manifest.name))],
                timings,
                manifest.name,
            )
        findings, warnings = check_capabilities(source, manifest)
        t = lap("capabilities", t)
        if findings:
            return rejected("capabilities", findings, timings, manifest.name)
        cases, raw_tests, findings = parse_cases(
            tests, manifest, self.settings.sidecar_tests_max_bytes
        )
        if findings:
            lap("tests", t)
            return rejected("tests", findings, timings, manifest.name)
        timeout = min(manifest.timeout or float("inf"), self.settings.sidecar_case_timeout)
        results = run_cases(
            self.backend,
            source,
            manifest,
            cases,
            timeout,
            self.settings.step_output_max_bytes,
            quotas_of(self.settings),
        )
        t = lap("tests", t)
        failed = [r for r in results if not r.passed]
        replay = None if failed else self._replay(source, manifest)
        if replay is not None:
            t = lap("replay", t)
        if failed:
            found = [
                Finding(
                    rule="test-failed",
                    line=failure_line(r, entry_line),
                    message=f"test case {r.name!r}: " + "; ".join(r.problems),
                    hint="fix the skill, or the case's mocks/expectations if they are wrong; "
                    "the case's steps and error are in 'cases'",
                )
                for r in failed
            ]
            return rejected("tests", found, timings, manifest.name, results)
        report = {
            "stages": ["syntax", "policy", "manifest", "capabilities", "tests"],
            "cases": [{"name": r.name, "duration_ms": r.duration_ms} for r in results],
            "warnings": [w.to_dict() for w in warnings],
            "timings_ms": dict(timings),
            "checked_at": int(time.time() * 1000),
        }
        if dry_run:
            timings["total"] = round((time.perf_counter() - began) * 1000, 3)
            return Verdict(
                accepted=True,
                name=manifest.name,
                version=content_version(source, manifest.identity(), raw_tests),
                registration="dry-run",
                warnings=warnings,
                cases=results,
                timings_ms=timings,
                summary=f"{manifest.name} passes every stage ({len(results)} test cases); "
                "not registered (dry run)",
                replay=replay,
            )
        mode = approval or self.settings.approval_mode
        reg = self.registry.register(
            source,
            manifest,
            raw_tests,
            author=author,
            report=report,
            mode="activate" if mode == "auto" else "pending",
        )
        lap("registration", t)
        timings["total"] = round((time.perf_counter() - began) * 1000, 3)
        if reg.outcome == "denied":
            return rejected(
                "registration",
                [
                    Finding(
                        rule="name-owned",
                        line=entry_line,
                        message=f"skill {manifest.name!r} belongs to a {reg.owner}; an "
                        f"{author} may not replace it",
                        hint="choose another name for your skill, or ask a person to submit "
                        "this change",
                    )
                ],
                timings,
                manifest.name,
                results,
            )
        verdict = Verdict(
            accepted=True,
            name=manifest.name,
            version=reg.version,
            status=reg.status,
            registration=reg.outcome,
            previous=reg.previous,
            changes=self._changes(manifest, source, raw_tests, reg.previous, reg.version),
            warnings=warnings,
            cases=results,
            next_fires=(
                manifest.trigger.next_fires(3)
                if manifest.trigger is not None and manifest.trigger.type in ("cron", "every")
                else []
            ),
            timings_ms=timings,
            replay=replay,
        )
        verdict.summary = _summary(verdict)
        return verdict

    def _replay(self, source: str, manifest: Manifest) -> ReplayReport | None:
        """Advisory: the candidate on recorded runs of the active version (never rejects)."""
        try:
            return advisory_replay(self.rt, self.backend, source, manifest)
        except Exception as exc:  # the advice failed (or no guest came free), not the submission
            return ReplayReport(against="?", failed=f"{type(exc).__name__}: {exc}"[:300])

    def _syntax(self, source: str) -> list[Finding]:
        cap = min(self.settings.skill_source_max_bytes, MAX_SOURCE_BYTES)
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > cap:
            return [
                Finding(
                    rule="source-too-large",
                    line=1,
                    message=f"the source is {size} bytes; the limit is {cap} bytes",
                    hint="split the skill into smaller skills (ctx.step.invoke) or move data "
                    "out of the source (fetch it with the http tool)",
                )
            ]
        if "\x00" in source:
            return [Finding(rule="syntax-error", line=1, message="NUL byte in the source")]
        try:
            # Compiled, never executed: a full compile also catches what the parser accepts
            # but the compiler refuses (``return`` outside a function).
            compile(source, "<skill>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            return [
                Finding(
                    rule="syntax-error",
                    line=exc.lineno or 1,
                    col=exc.offset or 0,
                    message=f"syntax error: {exc.msg}",
                    hint="fix the Python syntax at this position; skills are Python 3.11 code",
                )
            ]
        except (ValueError, RecursionError, MemoryError) as exc:
            return [Finding(rule="too-complex", line=1, message=f"cannot compile: {exc}")]
        return []

    def _changes(
        self,
        manifest: Manifest,
        source: str,
        tests: list[Any],
        previous: str | None,
        version: str,
    ) -> dict[str, Any]:
        """What this version changes against the version that was active when it registered."""
        before = None
        if previous and previous != version:
            rec = self.registry.version(manifest.name, previous)
            before = (previous, self.registry.source(previous), rec.manifest, rec.tests)
        diff = diff_versions(manifest.name, before, (version, source, manifest.identity(), tests))
        out = diff.model_dump(exclude={"name", "b"})
        out["source_diff"] = out["source_diff"][:MAX_DIFF_CHARS]
        out["summary"] = diff.summary() if previous != version else "unchanged"
        return out


def _summary(v: Verdict) -> str:
    short = (v.version or "")[:12]
    changes = (v.changes or {}).get("summary", "")
    if v.registration == "pending":
        return (
            f"accepted {v.name}@{short}; waiting for approval "
            f"('loopwright skills approve {v.name} {short}'); {changes}"
        )
    if v.registration == "unchanged":
        return f"accepted {v.name}@{short}: already the active version, nothing changed"
    state = "active" if v.status == "active" else f"registered (skill is {v.status})"
    return f"accepted {v.name}@{short}: {state}; {changes}"
