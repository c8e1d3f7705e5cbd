"""The registry in Redis: immutable content-hashed versions and an atomically switched pointer.

Every change to a skill (register, approve, rollback, pause, resume, retire) is one Lua script:
it updates the skill's record, its version list, and the runnable index ``{p}:skills`` (name ->
active version, for active skills only — what triggers and ``loopwright run NAME`` read) in one
step, bumps the change counter and publishes a change notice. Two concurrent changes of one
skill are therefore serialised by Redis and can never leave the pointer and the index apart.

Runs are pinned to the version they were created with and load its source from
``{p}:src:{version}``, which the registry writes: in-flight runs keep their version, new runs
take the active one.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal

from pydantic import BaseModel
from redis import Redis

from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys
from loopwright.scripts import NAMED, named
from loopwright.sdk.manifest import Manifest, manifest_or_none
from loopwright.sdk.names import is_reserved, reserved_message

Author = Literal["agent", "person", "review"]
Status = Literal["active", "paused", "pending_approval", "retired", "draft"]
AUTHORS: tuple[str, ...] = ("agent", "person", "review")

# Author policy, by (owner, author): the owner is the author of a skill's first registered
# version (a draft run from a file claims no name).
# An agent may not take over a person's skill (a builder session picking a taken name must
# choose another); the weekly review's rewrite of a person's skill always waits for approval.
DENIED: frozenset[tuple[str, str]] = frozenset({("person", "agent")})
NEEDS_REVIEW: frozenset[tuple[str, str]] = frozenset({("person", "review")})

# Shared by the three scripts (after NAMED): ``status`` is the skill's status, read first;
# ``switch`` points the skill at a version; ``finish`` stores the status, keeps the runnable
# index (name -> active version, active skills only) in step with the pointer, bumps the
# change counter and publishes the change notice. Every script ends in ``finish``, so the
# pointer, the status, the index and the notice change together or not at all.
# Keys: K.skill, K.runnable, K.seq; arguments: A.name, A.now (ms, text), A.channel.
_COMMON = """
local status = redis.call('HGET', K.skill, 'status') or ''
local function switch(version, validated)
  redis.call('HSET', K.skill, 'active', version, 'validated', validated, 'updated_at', A.now)
  if status == '' or status == 'pending_approval' or status == 'retired' or status == 'draft' then
    status = 'active'
  end
end
local function finish(action, version, prev)
  redis.call('HSET', K.skill, 'status', status)
  local active = redis.call('HGET', K.skill, 'active')
  if status == 'active' and active then
    redis.call('HSET', K.runnable, A.name, active)
  else
    redis.call('HDEL', K.runnable, A.name)
  end
  local seq = redis.call('INCR', K.seq)
  redis.call('PUBLISH', A.channel, cjson.encode({action = action, name = A.name,
    version = version, previous = prev, status = status, seq = seq, ts = tonumber(A.now)}))
  return seq
end
"""

# Atomically: store a version (once: its content hash is its id) with its source, add it to
# the skill's version list, apply the author policy (an owner/author pair may be denied, or
# forced to wait for approval) and, by mode, switch the active pointer. A ``draft`` (a file
# run with ``loopwright run FILE``) is stored but never switches the pointer: it is marked
# ``draft`` and, for a skill nothing else registered, leaves it in status ``draft`` (not in the
# runnable index, so no trigger starts it). A draft registered again through the sidecar (the
# same content) is promoted: it loses the mark and takes the sidecar's report.
# KEYS (named): src, version (its metadata hash), skill, versions, names, runnable, seq
# ARGV (named): name, version, source, author, now, manifest, tests, report (JSON texts),
#   mode (activate | pending | direct | draft), denied, review (",owner:author," pair lists),
#   channel, validated ('1' when the sidecar validated it)
# Returns {outcome, previous active version or the denying owner, status, change seq}.
REGISTER_LUA = (
    NAMED
    + _COMMON
    + """
local owner = redis.call('HGET', K.skill, 'owner')
local mode = A.mode
if owner then
  local pair = ',' .. owner .. ':' .. A.author .. ','
  if string.find(A.denied, pair, 1, true) then return {'denied', owner, status, 0} end
  if mode == 'activate' and string.find(A.review, pair, 1, true) then mode = 'pending' end
end
local prev = redis.call('HGET', K.skill, 'active') or ''
local exists = redis.call('HGET', K.version, 'name')
if not exists then
  redis.call('SET', K.src, A.source)
  redis.call('HSET', K.version, 'name', A.name, 'author', A.author, 'parent', prev,
    'created_at', A.now, 'manifest', A.manifest, 'tests', A.tests, 'report', A.report,
    'validated', A.validated,
    'approved', (mode == 'pending' or mode == 'draft') and '0' or '1',
    'draft', (mode == 'draft') and '1' or '0')
  local n = redis.call('HINCRBY', K.skill, 'n', 1)
  redis.call('ZADD', K.versions, n, A.version)
  redis.call('SADD', K.names, A.name)
  redis.call('HSETNX', K.skill, 'created_at', A.now)
elseif mode ~= 'draft' and redis.call('HGET', K.version, 'draft') == '1' then
  redis.call('HSET', K.version, 'draft', '0', 'author', A.author, 'report', A.report,
    'validated', A.validated)
end
-- a draft does not claim the name: the owner is the author of the first registered version
if not owner and mode ~= 'draft' then redis.call('HSET', K.skill, 'owner', A.author) end
local outcome
if prev == A.version then
  outcome = 'unchanged'
elseif mode == 'draft' then
  outcome = 'draft'
  if status == '' then status = 'draft' end
elseif mode == 'pending' then
  outcome = 'pending'
  if status == '' or status == 'draft' then status = 'pending_approval' end
elseif mode == 'direct' and prev ~= '' and redis.call('HGET', K.skill, 'validated') == '1' then
  outcome = 'stored'
else
  redis.call('HSET', K.version, 'approved', '1')
  switch(A.version, redis.call('HGET', K.version, 'validated') or '0')
  outcome = 'activated'
end
local seq = finish(outcome, A.version, prev)
return {outcome, prev, status, seq}
"""
)

# Atomically: point a skill at one of its versions (approve a pending one, or roll back to an
# approved one), marking it approved and keeping the runnable index in step.
# KEYS (named): version (its metadata hash), skill, runnable, seq
# ARGV (named): name, version, action (approve | rollback), now, channel
# Returns {outcome ('unknown', 'not-approved', 'unchanged' or the action), previous, status,
#   change seq}.
SET_ACTIVE_LUA = (
    NAMED
    + _COMMON
    + """
if redis.call('HGET', K.version, 'name') ~= A.name then return {'unknown', '', status, 0} end
if redis.call('HGET', K.version, 'draft') == '1' then return {'draft', '', status, 0} end
if A.action == 'rollback' and redis.call('HGET', K.version, 'approved') ~= '1' then
  return {'not-approved', '', status, 0}
end
redis.call('HSET', K.version, 'approved', '1')
local prev = redis.call('HGET', K.skill, 'active') or ''
local outcome = 'unchanged'
if prev ~= A.version then
  switch(A.version, redis.call('HGET', K.version, 'validated') or '0')
  outcome = A.action
end
local seq = finish(outcome, A.version, prev)
return {outcome, prev, status, seq}
"""
)

# Atomically: pause, resume or retire a skill (its status and the runnable index together);
# resuming a cron skill also drops its cron cursor so missed ticks are not caught up.
# KEYS (named): cron (the skill's cron cursor), skill, runnable, seq
# ARGV (named): name, action (pause | resume | retire), now, channel
# Returns {outcome ('unknown', 'unchanged', 'invalid' or the action), active, status, seq}.
SET_STATUS_LUA = (
    NAMED
    + _COMMON
    + """
if status == '' then return {'unknown', '', status, 0} end
local active = redis.call('HGET', K.skill, 'active') or ''
local want = ({pause = 'paused', resume = 'active', retire = 'retired'})[A.action]
if status == want then return {'unchanged', active, status, 0} end
if A.action == 'pause' and status ~= 'active' then return {'invalid', active, status, 0} end
if A.action == 'resume' and (active == '' or status == 'pending_approval') then
  return {'invalid', active, status, 0}
end
if A.action == 'resume' then
  -- a resumed cron skill starts from now: ticks missed while paused are not caught up
  redis.call('DEL', K.cron)
end
status = want
redis.call('HSET', K.skill, 'updated_at', A.now)
local seq = finish(A.action, active, active)
return {A.action, active, status, seq}
"""
)

# Atomically: delete a skill from the registry unless one of its runs is in flight. Python
# reads the skill's versions and its runs that were not finished (so every key is declared);
# the script first checks nothing changed since (the version count, and the run index's size
# and newest member: a run created meanwhile means "read again"), then re-reads those runs'
# status. It removes the record, the version list, every version's metadata and source, the
# name, the runnable index entry (so no trigger or ``run NAME`` finds it) and the cron cursor,
# and publishes the change. Runs, their index and rollups are history and stay.
# KEYS (named): skill, versions, names, runnable, seq, cron, runs (the skill's run index);
#   v1..vN (version metadata), s1..sN (sources), r1..rM (runs not finished at the read)
# ARGV (named): name, now, channel, nruns, newest (the run index's newest member or ''),
#   versions (N ids), runs (M ids)
# Returns {'unknown' | 'changed' | 'busy' | 'deleted', detail (JSON: in-flight counts by
#   status for 'busy')}.
DELETE_LUA = (
    NAMED
    + """
if redis.call('EXISTS', K.skill) == 0 then return {'unknown', '{}'} end
local newest = redis.call('ZREVRANGE', K.runs, 0, 0)[1] or ''
if redis.call('ZCARD', K.runs) ~= tonumber(A.nruns) or newest ~= A.newest
    or redis.call('ZCARD', K.versions) ~= #A.versions then
  return {'changed', '{}'}
end
local busy, n = {}, 0
for i = 1, #A.runs do
  local st = redis.call('HGET', K['r' .. i], 'status')
  if st == 'queued' or st == 'running' or st == 'sleeping' or st == 'waiting' then
    busy[st] = (busy[st] or 0) + 1
    n = n + 1
  end
end
if n > 0 then return {'busy', cjson.encode(busy)} end
for i = 1, #A.versions do redis.call('DEL', K['v' .. i], K['s' .. i]) end
redis.call('DEL', K.skill, K.versions, K.cron, K.state)
redis.call('SREM', K.names, A.name)
redis.call('HDEL', K.runnable, A.name)
local seq = redis.call('INCR', K.seq)
redis.call('PUBLISH', A.channel, cjson.encode({action = 'delete', name = A.name,
  seq = seq, ts = tonumber(A.now)}))
return {'deleted', '{}'}
"""
)

IN_FLIGHT = ("queued", "running", "sleeping", "waiting")


def content_version(source: str, manifest: dict[str, Any] | None, tests: Any) -> str:
    """The version id: a hash of source, manifest and tests (the same content, the same id)."""
    blob = json.dumps(
        {"source": source, "manifest": manifest, "tests": tests},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)


class SkillRecord(BaseModel):
    """One skill: status, active pointer, owner (author of its first version), versions."""

    name: str
    status: Status
    active: str | None
    owner: str
    created_at: int
    updated_at: int
    versions: int
    pending: list[str]
    drafts: list[str] = []


class VersionRecord(BaseModel):
    """One immutable version: who wrote it, what it was derived from, how it was validated."""

    name: str
    version: str
    author: str
    parent: str | None
    created_at: int
    approved: bool
    validated: bool
    draft: bool = False
    manifest: dict[str, Any] | None
    tests: list[Any] | None
    report: dict[str, Any] | None


class Registration(BaseModel):
    """What a register call did: ``activated``, ``unchanged``, ``pending`` (waits for approval),
    ``stored`` (kept, not activated), ``draft`` (a file run as a one-off, never activated) or
    ``denied`` (author policy)."""

    outcome: Literal["activated", "unchanged", "pending", "stored", "draft", "denied"]
    name: str
    version: str
    previous: str | None
    status: str
    seq: int
    owner: str | None = None


class Change(BaseModel):
    """What a pointer or status change did."""

    action: str
    name: str
    version: str | None
    previous: str | None
    status: str


class Deletion(BaseModel):
    """What a delete did: ``deleted`` (with the versions purged and the runs kept as history)
    or ``busy`` (nothing changed: ``in_flight`` counts the skill's unfinished runs by status)."""

    outcome: Literal["deleted", "busy"]
    name: str
    versions: int
    runs_kept: int
    in_flight: dict[str, int] = {}


class SkillStateError(UserError):
    """The skill exists but cannot run now (paused, retired, waiting for approval)."""


class Registry:
    """Versioned skills in Redis (see the module docstring for the guarantees)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._register = redis.register_script(REGISTER_LUA)
        self._set_active = redis.register_script(SET_ACTIVE_LUA)
        self._set_status = redis.register_script(SET_STATUS_LUA)
        self._delete = redis.register_script(DELETE_LUA)

    # Writing ---------------------------------------------------------------

    def register(
        self,
        source: str,
        manifest: Manifest | None,
        tests: list[Any] | None,
        *,
        name: str | None = None,
        author: str = "agent",
        report: dict[str, Any] | None = None,
        mode: Literal["activate", "pending", "direct", "draft"] = "activate",
        builtin: bool = False,
    ) -> Registration:
        """Store a version (idempotent by content) and, per ``mode``, make it active.

        ``activate`` switches the pointer; ``pending`` waits for :meth:`approve`; ``direct``
        (a person's ``loopwright run FILE``) switches it only while the active version was not
        validated by the sidecar, so a local file never silently replaces a tested version;
        ``draft`` (``loopwright run FILE``) stores the version and never switches the pointer.
        """
        if author not in AUTHORS:
            raise UserError(f"author must be one of {list(AUTHORS)}, not {author!r}")
        skill_name = manifest.name if manifest is not None else name
        if not skill_name:
            raise UserError("a version needs a skill name")
        if is_reserved(skill_name) and not builtin:  # before the script: nothing is stored
            raise UserError(reserved_message(skill_name))
        identity = manifest.identity() if manifest is not None else None
        version = content_version(source, identity, tests)
        k = self.keys
        raw = self._call(
            self._register,
            named(
                {
                    "src": k.source(version),
                    "version": k.registry_version(version),
                    "skill": k.registry_skill(skill_name),
                    "versions": k.registry_versions(skill_name),
                    "names": k.registry_names,
                    "runnable": k.skills,
                    "seq": k.registry_seq,
                },
                {
                    "name": skill_name,
                    "version": version,
                    "source": source,
                    "author": author,
                    "now": str(now_ms()),
                    "manifest": json.dumps(identity),
                    "tests": json.dumps(tests),
                    "report": json.dumps(report),
                    "mode": mode,
                    "denied": "," + ",".join(f"{o}:{a}" for o, a in sorted(DENIED)) + ",",
                    "review": "," + ",".join(f"{o}:{a}" for o, a in sorted(NEEDS_REVIEW)) + ",",
                    "channel": k.registry_channel,
                    "validated": "0" if mode in ("direct", "draft") else "1",
                },
            ),
        )
        outcome, prev, status, seq = (str(x) for x in raw)
        return Registration(
            outcome=outcome,  # type: ignore[arg-type]
            name=skill_name,
            version=version,
            previous=None if outcome == "denied" else prev or None,
            status=status,
            seq=int(seq),
            owner=prev if outcome == "denied" else None,
        )

    def register_direct(self, source: str, name: str, author: str = "person") -> Registration:
        """A source run straight from a file (policy-checked by the caller, no sidecar tests)."""
        manifest = manifest_or_none(source)
        if manifest is not None and manifest.name != name:
            manifest = None
        report = {"mode": "direct", "stages": ["policy"], "note": "run from a file"}
        return self.register(
            source, manifest, None, name=name, author=author, report=report, mode="direct"
        )

    def register_draft(self, source: str, name: str, author: str = "person") -> Registration:
        """A file run once with ``loopwright run FILE``: stored as a draft version of ``name``
        (policy-checked by the caller, no sidecar tests) that never becomes active, so it takes
        no trigger and is not listed among active skills. Its run is pinned to it."""
        manifest = manifest_or_none(source)
        if manifest is not None and manifest.name != name:
            manifest = None
        report = {"mode": "draft", "stages": ["policy"], "note": "run once from a file"}
        return self.register(
            source, manifest, None, name=name, author=author, report=report, mode="draft"
        )

    @staticmethod
    def _call(script: Any, call: tuple[list[str], list[str]]) -> Any:
        keys, args = call
        return script(keys=keys, args=args)

    def install_builtin(self, source: str, name: str) -> tuple[Registration, str | None]:
        """Register a built-in skill under its reserved name and make it the active version.

        The only path that may register a reserved name. Returns the registration and the
        version it displaced when that one was not installed by this method (a squatter from
        before names were reserved), so the caller can say so.
        """
        before = self.redis.hget(self.keys.registry_skill(name), "active")
        squatter = None
        if before:
            report = self.redis.hget(self.keys.registry_version(str(before)), "report") or "null"
            builtin = (json.loads(report) or {}).get("mode") == "builtin"
            # Same text as the built-in: an earlier install (before installs were marked).
            if not builtin and self.redis.get(self.keys.source(str(before))) != source:
                squatter = str(before)
        reg = self.register(
            source,
            manifest_or_none(source),
            None,
            name=name,
            author="person",
            report={"mode": "builtin", "stages": [], "note": "installed by the platform"},
            mode="activate",
            builtin=True,
        )
        if reg.status == "paused":
            self.resume(name)
        return reg, squatter if squatter != reg.version else None

    def _change(self, script: Any, name: str, version: str, key: str, action: str) -> Change:
        """Run SET_ACTIVE (``key``: the version's hash) or SET_STATUS (``key``: the cron
        cursor; ``version`` is '')."""
        k = self.keys
        raw = self._call(
            script,
            named(
                {
                    "version" if version else "cron": key,
                    "skill": k.registry_skill(name),
                    "runnable": k.skills,
                    "seq": k.registry_seq,
                },
                {
                    "name": name,
                    "version": version or None,
                    "action": action,
                    "now": str(now_ms()),
                    "channel": k.registry_channel,
                },
            ),
        )
        outcome, prev, status, _seq = (str(x) for x in raw)
        if outcome == "unknown":
            raise NotFoundError(self._unknown(name, version if action != "status" else None))
        if outcome == "draft":
            raise SkillStateError(
                f"version {version[:12]} of {name!r} is a draft run from a file: register it "
                f"with 'loopwright skills submit FILE' (the sidecar validates it first)"
            )
        if outcome == "not-approved":
            raise SkillStateError(
                f"version {version[:12]} of {name!r} was never approved: approve it with "
                f"'loopwright skills approve {name} {version[:12]}'"
            )
        if outcome == "invalid":
            raise SkillStateError(f"cannot {action} skill {name!r}: it is {status}")
        active = self.redis.hget(k.registry_skill(name), "active")
        return Change(
            action=outcome,
            name=name,
            version=str(active) if active else None,
            previous=prev or None,
            status=status,
        )

    def approve(self, name: str, ref: str) -> Change:
        """Approve a version (``review`` mode) and make it active."""
        version = self.version_for_ref(name, ref)
        return self._change(
            self._set_active, name, version, self.keys.registry_version(version), "approve"
        )

    def rollback(self, name: str, ref: str) -> Change:
        """Make an earlier (approved) version active again."""
        version = self.version_for_ref(name, ref)
        return self._change(
            self._set_active, name, version, self.keys.registry_version(version), "rollback"
        )

    def _status(self, name: str, action: str) -> Change:
        self.skill(name)  # unknown names fail here with a clear message
        return self._change(self._set_status, name, "", self.keys.cron_last(name), action)

    def pause(self, name: str) -> Change:
        """Stop new runs (triggers and ``run NAME``); runs in flight go on."""
        return self._status(name, "pause")

    def resume(self, name: str) -> Change:
        """Let a paused (or retired) skill run again from its active version."""
        return self._status(name, "resume")

    def retire(self, name: str) -> Change:
        """Take a skill out of service; its versions stay for history and rollback."""
        return self._status(name, "retire")

    def delete(self, name: str, *, attempts: int = 20) -> Deletion:
        """Purge ``name`` (versions, sources, record, runnable entry, cron cursor, its
        ``ctx.state``) in one
        script, unless a run of it is in flight; its runs and rollups stay as history.

        Reserved names are the caller's check (the service layer). A run created between the
        read and the script makes the script answer ``changed``; the read is then repeated.
        """
        k = self.keys
        for _ in range(attempts):
            versions = self.version_ids(name)
            index = k.runs_by_skill(name)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(index)
            pipe.zrevrange(index, 0, 0)
            pipe.zrange(index, 0, -1)
            nruns, newest, run_ids = pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
            for run_id in run_ids:
                pipe.hget(k.run(str(run_id)), "status")
            open_ids = [
                str(r) for r, st in zip(run_ids, pipe.execute(), strict=True) if st in IN_FLIGHT
            ]
            keys: dict[str, str | None] = {
                "skill": k.registry_skill(name),
                "versions": k.registry_versions(name),
                "names": k.registry_names,
                "runnable": k.skills,
                "seq": k.registry_seq,
                "cron": k.cron_last(name),
                "state": k.skill_state(name),
                "runs": index,
            }
            for i, v in enumerate(versions, 1):
                keys[f"v{i}"] = k.registry_version(v)
                keys[f"s{i}"] = k.source(v)
            for i, run_id in enumerate(open_ids, 1):
                keys[f"r{i}"] = k.run(run_id)
            args = {
                "name": name,
                "now": str(now_ms()),
                "channel": k.registry_channel,
                "nruns": int(nruns),
                "newest": str(newest[0]) if newest else "",
                "versions": versions,
                "runs": open_ids,
            }
            outcome, detail = (str(x) for x in self._call(self._delete, named(keys, args)))
            if outcome == "unknown":
                raise NotFoundError(self._unknown(name))
            if outcome == "changed":
                continue
            counts = {str(st): int(n) for st, n in (json.loads(detail) or {}).items()}
            return Deletion(
                outcome=outcome,  # type: ignore[arg-type]
                name=name,
                versions=len(versions),
                runs_kept=int(nruns),
                in_flight=counts,
            )
        raise UserError(f"skill {name!r} kept changing while it was being deleted; try again")

    # Reading ---------------------------------------------------------------

    def _unknown(self, name: str, version: str | None = None) -> str:
        if version:
            return f"skill {name!r} has no version {version!r} (see 'loopwright skills versions')"
        return f"unknown skill {name!r} (see 'loopwright skills list')"

    def names(self) -> list[str]:
        """Every registered skill name, sorted."""
        return sorted(str(n) for n in self.redis.smembers(self.keys.registry_names))

    def skill(self, name: str) -> SkillRecord:
        """The record of ``name``; ``NotFoundError`` when it was never registered."""
        raw: dict[str, str] = self.redis.hgetall(self.keys.registry_skill(name))  # type: ignore[assignment]
        if not raw or "status" not in raw:
            raise NotFoundError(self._unknown(name))
        versions = [str(v) for v in self.redis.zrange(self.keys.registry_versions(name), 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for v in versions:
            pipe.hmget(self.keys.registry_version(v), "approved", "draft")
        marks = pipe.execute()
        return SkillRecord(
            name=name,
            status=raw["status"],  # type: ignore[arg-type]
            active=raw.get("active") or None,
            owner=raw.get("owner", "-" if raw["status"] == "draft" else "?"),
            created_at=int(raw.get("created_at", 0)),
            updated_at=int(raw.get("updated_at", raw.get("created_at", 0))),
            versions=len(versions),
            pending=[v for v, (a, d) in zip(versions, marks, strict=True) if a == "0" and d != "1"],
            drafts=[v for v, (_, d) in zip(versions, marks, strict=True) if d == "1"],
        )

    def skills(self) -> list[SkillRecord]:
        """Every registered skill."""
        out = []
        for name in self.names():
            try:
                out.append(self.skill(name))
            except NotFoundError:  # registered but its record is half-written: skip
                continue
        return out

    def version_ids(self, name: str) -> list[str]:
        """The skill's version ids, oldest first."""
        return [str(v) for v in self.redis.zrange(self.keys.registry_versions(name), 0, -1)]

    def version_for_ref(self, name: str, ref: str) -> str:
        """A full version id from ``ref`` (a full id or a unique prefix of at least 4 chars)."""
        ids = self.version_ids(name)
        if not ids and not self.redis.exists(self.keys.registry_skill(name)):
            raise NotFoundError(self._unknown(name))
        if ref in ids:
            return ref
        hits = [v for v in ids if len(ref) >= 4 and v.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UserError(f"version prefix {ref!r} of {name!r} is ambiguous: {hits}")
        raise NotFoundError(self._unknown(name, ref))

    def version(self, name: str, ref: str | None = None) -> VersionRecord:
        """One version of ``name`` (the active one when ``ref`` is None)."""
        if ref is None:
            active = self.skill(name).active
            if active is None:
                raise SkillStateError(
                    f"skill {name!r} has no active version yet (its versions: "
                    f"'loopwright skills versions {name}')"
                )
            ref = active
        version = self.version_for_ref(name, ref)
        raw: dict[str, str] = self.redis.hgetall(self.keys.registry_version(version))  # type: ignore[assignment]
        return VersionRecord(
            name=raw["name"],
            version=version,
            author=raw.get("author", "?"),
            parent=raw.get("parent") or None,
            created_at=int(raw.get("created_at", 0)),
            approved=raw.get("approved") == "1",
            validated=raw.get("validated") == "1",
            draft=raw.get("draft") == "1",
            manifest=json.loads(raw.get("manifest") or "null"),
            tests=json.loads(raw.get("tests") or "null"),
            report=json.loads(raw.get("report") or "null"),
        )

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of ``name``, oldest first."""
        self.skill(name)
        return [self.version(name, v) for v in self.version_ids(name)]

    def source(self, version: str) -> str:
        """The stored source of a version."""
        text = self.redis.get(self.keys.source(version))
        if text is None:
            raise NotFoundError(f"version {version} has no stored source")
        return str(text)

    @property
    def seq(self) -> int:
        """The change counter (bumped by every change; cheap to poll)."""
        return int(self.redis.get(self.keys.registry_seq) or 0)

    def not_runnable(self, name: str) -> UserError:
        """The error for ``run NAME`` / ``invoke`` of a skill that is not in the runnable index."""
        status = self.redis.hget(self.keys.registry_skill(name), "status")
        if status == "paused":
            return SkillStateError(
                f"skill {name!r} is paused: resume it with 'loopwright skills resume {name}'"
            )
        if status == "retired":
            return SkillStateError(
                f"skill {name!r} is retired: resume it with 'loopwright skills resume {name}'"
            )
        if status == "draft":
            return SkillStateError(
                f"skill {name!r} is a draft (only ever run from a file): run it from its file "
                f"again (loopwright run path/to/skill.py) or register it with "
                f"'loopwright skills submit FILE'"
            )
        if status == "pending_approval":
            return SkillStateError(
                f"skill {name!r} is waiting for approval: 'loopwright skills versions {name}' "
                f"lists its versions, 'loopwright skills approve {name} VERSION' activates one"
            )
        return NotFoundError(
            f"unknown skill {name!r}: submit it (loopwright skills submit FILE) or run it once "
            f"from its file (loopwright run path/to/skill.py)"
        )


def version_state(skill: SkillRecord, version: VersionRecord) -> str:
    """How a version stands: active/paused/retired (the pointer), pending_approval, inactive."""
    if skill.active == version.version:
        return skill.status if skill.status != "pending_approval" else "active"
    if version.draft:
        return "draft"
    return "pending_approval" if not version.approved else "inactive"
