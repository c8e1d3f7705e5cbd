"""The versioned skills registry: immutable content-hashed versions and an active pointer.

A version is addressed by the hash of its source, manifest and tests and never changes; each
skill has an active pointer switched atomically (Lua), a status (active, paused,
pending_approval, retired), its version list, and per version the author (agent, person,
review), the parent version and the sidecar's validation report. The runnable index
``{p}:skills`` that triggers and ``loopwright run NAME`` read holds active skills only, and
every change is published on ``{p}:reg:changes``. See docs/registry.md.
"""

from loopwright.skills_registry.diff import VersionDiff, diff_refs, diff_versions
from loopwright.skills_registry.manifest import (
    CronSpec,
    EventSpec,
    Manifest,
    ManifestFinding,
    ManifestInvalid,
    ParamSpec,
    read_manifest,
)
from loopwright.skills_registry.store import (
    AUTHORS,
    Change,
    Registration,
    Registry,
    SkillRecord,
    SkillStateError,
    VersionRecord,
    content_version,
    version_state,
)

__all__ = [
    "AUTHORS",
    "Change",
    "CronSpec",
    "EventSpec",
    "Manifest",
    "ManifestFinding",
    "ManifestInvalid",
    "ParamSpec",
    "Registration",
    "Registry",
    "SkillRecord",
    "SkillStateError",
    "VersionDiff",
    "VersionRecord",
    "content_version",
    "diff_refs",
    "diff_versions",
    "read_manifest",
    "version_state",
]
