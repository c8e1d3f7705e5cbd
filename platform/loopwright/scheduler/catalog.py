"""The skills that can be triggered, with their declarations, refreshed cheaply every tick."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from loopwright.errors import LoopwrightError
from loopwright.runner.runtime import Runtime
from loopwright.sdk.spec import SkillSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    """One triggerable skill: name, active version, declaration."""

    name: str
    version: str
    spec: SkillSpec


class Catalog:
    """Skill name -> active version, read from Redis each call; declarations cached by version.

    New, changed and removed skills are therefore seen at the next tick without a restart.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._broken: set[str] = set()

    def entries(self) -> list[Entry]:
        """Every known skill whose declaration reads."""
        out: list[Entry] = []
        for name, version in sorted(self.rt.sources.names().items()):
            try:
                _, spec = self.rt.sources.declaration(version, name)
            except LoopwrightError as exc:
                if version not in self._broken:
                    self._broken.add(version)
                    log.error("skill %s@%s cannot be triggered: %s", name, version[:12], exc)
                continue
            out.append(Entry(name, version, spec))
        return out
