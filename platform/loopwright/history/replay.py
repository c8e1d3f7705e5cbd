"""Replay a recorded run on any version of its skill (the review's gate and ``runs replay``).

The run's recording (``runner/recording.py``: input, outcome, every host-tool call) is loaded
from Redis and the version runs on it in the sandbox through the sidecar's replay host
(``sidecar/replay.py``): same event and params, tool calls answered from the recording, side
effects captured and never performed, unanswerable calls reported as off-script. The result is
deterministic for a given version and recording.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopwright.errors import UserError
from loopwright.runner.recording import Recording, load_recording
from loopwright.runner.runtime import Runtime
from loopwright.sdk.manifest import Manifest, ManifestInvalid, read_manifest
from loopwright.sidecar.quotas import quotas_of
from loopwright.sidecar.replay import Difference, compare, redactor_for, replay_many


@dataclass(frozen=True)
class Candidate:
    """A version to replay: its source, manifest and (when registered) version id."""

    source: str
    manifest: Manifest
    version: str | None = None


def recording_of(rt: Runtime, run_id: str) -> Recording:
    """The recording of ``run_id``, or a one-line ``UserError`` (unknown, still running, or
    recorded before recording existed / with recording off)."""
    rec = load_recording(rt.redis, rt.keys, run_id)
    if rec is None:
        raise UserError(f"no run {run_id!r}")
    if not rec.ended:
        raise UserError(f"run {run_id} has not ended ({rec.status}); replay it once it has")
    if rec.state == "none":
        raise UserError(
            f"run {run_id} has no recording (it ran before tool calls were recorded, or with "
            "LOOPWRIGHT_RUN_RECORDING off)"
        )
    return rec


def candidate_from_source(source: str, skill: str | None = None) -> Candidate:
    """A candidate from source text; a one-line ``UserError`` when it does not parse or
    declares another skill."""
    try:
        manifest, _ = read_manifest(source)
    except ManifestInvalid as exc:
        first = exc.findings[0].one_line() if exc.findings else "no @skill declaration"
        raise UserError(f"the file is not a valid skill: {first}") from None
    except SyntaxError as exc:
        raise UserError(f"the file does not parse: line {exc.lineno}: {exc.msg}") from None
    if skill is not None and manifest.name != skill:
        raise UserError(f"the file declares skill {manifest.name!r}, the run is of {skill!r}")
    return Candidate(source, manifest)


def candidate_from_version(rt: Runtime, skill: str, version: str) -> Candidate:
    """A registered version of ``skill`` by id or unique prefix; ``UserError`` otherwise."""
    version = version.strip()
    known = [str(v) for v in rt.redis.zrange(rt.keys.registry_versions(skill), 0, -1)]
    hits = [v for v in known if v.startswith(version)] if version else []
    if len(hits) > 1 and version not in hits:
        raise UserError(f"version {version!r} of {skill!r} is ambiguous ({len(hits)} match)")
    chosen = version if version in hits else (hits[0] if hits else None)
    source = rt.redis.get(rt.keys.source(chosen or version)) if (chosen or version) else None
    if source is None:
        raise UserError(f"no version {version!r} of skill {skill!r}")
    cand = candidate_from_source(str(source), skill)
    return Candidate(cand.source, cand.manifest, chosen or version)


def replay_runs(rt: Runtime, cand: Candidate, recordings: list[Recording]) -> list[Difference]:
    """Replay every recording on ``cand`` (warm guests, a few at a time), with differences."""
    st = rt.settings
    timeout = min(cand.manifest.timeout or float("inf"), st.sidecar_case_timeout)
    results = replay_many(
        rt.sandbox,
        cand.source,
        cand.manifest,
        recordings,
        timeout,
        st.step_output_max_bytes,
        quotas_of(st),
        redactor_for(st, cand.manifest),
    )
    return [compare(r, res) for r, res in zip(recordings, results, strict=True)]


def replay_run(
    rt: Runtime, run_id: str, *, version: str | None = None, source: str | None = None
) -> tuple[Candidate, Difference]:
    """Replay ``run_id`` on ``source``, on ``version``, or on the version it ran."""
    rec = recording_of(rt, run_id)
    if source is not None:
        cand = candidate_from_source(source, rec.skill)
    else:
        cand = candidate_from_version(rt, rec.skill, version or rec.version)
    return cand, replay_runs(rt, cand, [rec])[0]
