"""The manifest the registry stores with each version: re-exported from its one home.

The model (:class:`Manifest`) and its reader live in ``loopwright.sdk.manifest`` (the runner
reads the same declaration); findings are ``loopwright.sdk.findings.Finding``.
"""

from loopwright.sdk.findings import Finding
from loopwright.sdk.manifest import (
    CronSpec,
    EventSpec,
    IntervalSpec,
    Manifest,
    ManifestInvalid,
    ParamSpec,
    manifest_or_none,
    read_manifest,
    type_of,
)
from loopwright.sdk.manifest_model import HOST_RE, SECRET_NAME_RE

ManifestFinding = Finding  # the name this module used to define

__all__ = [
    "HOST_RE",
    "SECRET_NAME_RE",
    "CronSpec",
    "EventSpec",
    "IntervalSpec",
    "Manifest",
    "ManifestFinding",
    "ManifestInvalid",
    "ParamSpec",
    "manifest_or_none",
    "read_manifest",
    "type_of",
]
