"""The sidecar: turns submitted skill source into a registered version or a structured rejection.

Library entry point :func:`submit`; the same pipeline is served over HTTP by
``loopwright sidecar`` (:mod:`loopwright.sidecar.service`) and reached with
:class:`loopwright.sidecar.client.SidecarClient`. See docs/registry.md.
"""

from __future__ import annotations

from typing import Any, Literal

from loopwright.sidecar.verdict import CaseResult, Finding, Verdict


def submit(
    source: str,
    tests: str | list[Any] | None,
    *,
    author: str = "agent",
    approval: Literal["auto", "review"] | None = None,
    runtime: Any = None,
) -> Verdict:
    """Validate ``source`` with its test cases (JSON text or a list) and register it.

    ``runtime`` is a ``loopwright.runner.runtime.Runtime``; without one, settings are read
    from the environment and a runtime is opened and closed for this call.
    """
    from loopwright.runner.runtime import Runtime
    from loopwright.settings import Settings
    from loopwright.sidecar.pipeline import Sidecar

    own = runtime is None
    rt = Runtime(Settings()) if own else runtime
    try:
        return Sidecar(rt).submit(source, tests, author=author, approval=approval)
    finally:
        if own:
            rt.close()


__all__ = ["CaseResult", "Finding", "Verdict", "submit"]
