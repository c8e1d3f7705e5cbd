"""Skill sources by content hash, and loading a skill module in-process (trusted path)."""

from __future__ import annotations

import hashlib
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from loopwright.errors import SkillLoadError
from loopwright.keys import Keys
from loopwright.runner.ports import Registration, ServicesMissingError, SkillRegistrar
from loopwright.sdk.errors import SkillDefinitionError
from loopwright.sdk.manifest import ManifestError, read_declaration
from loopwright.sdk.spec import SkillSpec, spec_of


@dataclass(frozen=True, slots=True)
class LoadedSkill:
    """A skill module executed in-process: its spec and entry function."""

    spec: SkillSpec
    fn: Callable[..., Any]
    version: str
    filename: str


def version_of(source: str) -> str:
    """Content hash that names a skill version."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:24]


def load_skill(source: str, filename: str, version: str | None = None) -> LoadedSkill:
    """Execute ``source`` as a fresh module and return its single ``@skill`` function.

    Trusted code only: this runs the module in the current process. Untrusted skills go
    through the sandbox.
    """
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise SkillLoadError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    module = types.ModuleType(f"loopwright_skill_{(version or version_of(source))[:12]}")
    module.__file__ = filename
    try:
        exec(code, module.__dict__)
    except SkillDefinitionError as exc:
        raise SkillLoadError(f"{filename}: invalid @skill(...): {exc}") from None
    except (Exception, SystemExit) as exc:
        raise SkillLoadError(
            f"{filename}: the module failed while loading: {type(exc).__name__}: {exc}"
        ) from None
    found = [
        (name, obj, spec)
        for name, obj in vars(module).items()
        if callable(obj) and (spec := spec_of(obj)) is not None
    ]
    if not found:
        raise SkillLoadError(
            f"{filename}: no @skill-decorated function; decorate the entry function with "
            f"@skill(name=...) from loopwright.sdk"
        )
    if len(found) > 1:
        names = ", ".join(n for n, _, _ in found)
        raise SkillLoadError(f"{filename}: {len(found)} @skill functions ({names}); one per module")
    _, fn, spec = found[0]
    return LoadedSkill(spec=spec, fn=fn, version=version or version_of(source), filename=filename)


def read_skill_file(path: Path, max_bytes: int) -> str:
    """Read a skill file as UTF-8 with a size cap; clear errors for every way it can fail."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SkillLoadError(f"{path}: no such file") from None
    except OSError as exc:
        raise SkillLoadError(f"{path}: cannot read: {exc.strerror}") from None
    if not path.is_file():
        raise SkillLoadError(f"{path}: not a regular file")
    if size > max_bytes:
        raise SkillLoadError(f"{path}: {size} bytes, over the {max_bytes}-byte skill source cap")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SkillLoadError(f"{path}: not UTF-8 text") from None


class SourceStore:
    """Skill sources in Redis by version, plus an LRU of loaded skills for this process.

    Writing a version and explaining why a skill cannot run are the registry's business: they
    go through ``registrar`` (:class:`loopwright.runner.ports.SkillRegistrar`).
    """

    def __init__(
        self, redis: Redis, keys: Keys, cache_size: int, registrar: SkillRegistrar | None = None
    ) -> None:
        self._registrar = registrar
        self._redis = redis
        self._keys = keys
        self._cache: OrderedDict[str, LoadedSkill] = OrderedDict()
        self._declared: OrderedDict[str, tuple[str, SkillSpec]] = OrderedDict()
        self._cache_size = cache_size

    def put(self, source: str, name: str) -> str:
        """Register ``source`` as a version of ``name`` written by a person and return its
        version (``loopwright run FILE``; the caller has policy-checked it, no sidecar tests).

        It becomes the active version unless the active one was validated by the sidecar: a
        local file never silently replaces a tested version (the run still uses the file's).
        """
        if self._registrar is None:
            raise ServicesMissingError("registering a skill file")
        return self._registrar.register_direct(source, name).version

    def put_draft(self, source: str, name: str) -> Registration:
        """Store ``source`` as a draft of ``name`` for one run (``loopwright run FILE``): the
        registry keeps it (the run is pinned to its version) but never makes it active, so it
        takes no trigger and ``skills list`` hides it. Its ``outcome`` is ``draft``, or
        ``unchanged`` when the file is the skill's active version already."""
        if self._registrar is None:
            raise ServicesMissingError("registering a skill file")
        return self._registrar.register_draft(source, name)

    def resolve(self, name: str) -> str:
        """The active version of ``name``; a clear error when it is unknown, paused, retired
        or waiting for approval (the registry keeps ``{p}:skills`` to active skills only)."""
        version = self._redis.hget(self._keys.skills, name)
        if not version:
            if self._registrar is None:
                raise SkillLoadError(f"skill {name!r} has no active version")
            raise self._registrar.not_runnable(name)
        return str(version)

    def names(self) -> dict[str, str]:
        """Every active skill's name and active version (what triggers may start)."""
        return dict(self._redis.hgetall(self._keys.skills))  # type: ignore[arg-type]

    def declaration(self, version: str, name: str) -> tuple[str, SkillSpec]:
        """Source and spec of ``version`` for the sandbox, read from the syntax tree (never run)."""
        hit = self._declared.get(version)
        if hit is not None:
            self._declared.move_to_end(version)
            return hit
        source = self._redis.get(self._keys.source(version))
        if source is None:
            raise SkillLoadError(f"skill {name!r} version {version} has no stored source")
        try:
            spec = read_declaration(str(source)).spec
        except ManifestError as exc:
            raise SkillLoadError(f"skill {name!r}: {exc}") from None
        self._declared[version] = (str(source), spec)
        if len(self._declared) > self._cache_size:
            self._declared.popitem(last=False)
        return str(source), spec

    def load(self, version: str, name: str) -> LoadedSkill:
        """The loaded skill for ``version`` (cached)."""
        hit = self._cache.get(version)
        if hit is not None:
            self._cache.move_to_end(version)
            return hit
        source = self._redis.get(self._keys.source(version))
        if source is None:
            raise SkillLoadError(f"skill {name!r} version {version} has no stored source")
        loaded = load_skill(str(source), f"<skill {name}@{version[:12]}>", version)
        self._cache[version] = loaded
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return loaded
