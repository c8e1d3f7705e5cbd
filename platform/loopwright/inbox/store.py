"""The inbox's storage: one hash per notice, sorted-set indexes, a cap, acknowledgement.

Keys (``Keys.inbox_*``): ``inbox:n:<id>`` the notice; ``inbox:all`` every kept id (scored by
the id, which increases); ``inbox:unacked``, ``inbox:skill:<name>``, ``inbox:level:<level>``
the filters, so ``list`` walks the smallest index that answers it instead of every notice;
``inbox:dedupe:<key>`` the id posted with a dedupe key, deleted with that notice;
``inbox:outbox`` ids waiting for the webhook (``scheduler/alerts.py`` delivers them).

Posting is one script (:data:`POST`, also a fragment other scripts include, as the failure
alerts do, so an alert and the state that caused it commit together). A notice's id comes from
``INCR inbox:seq`` just before the script, so every key it writes is declared; a crash in
between leaves a gap in the ids, never a duplicate. The cap is enforced after the post, oldest
first (a crash in between leaves the inbox a few notices over its cap until the next post).

The inbox before issue 15 was a list, ``Keys.inbox``, of JSON entries; every operation first
moves what that list holds into today's storage (one entry per script, compare-and-pop, so two
processes migrating at once move each entry once), which also covers workers of the old version
still writing to it during an upgrade.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

from redis import Redis

from loopwright.errors import SkillAuthorError, UserError
from loopwright.inbox.model import (
    BODY_MAX,
    LEVELS,
    SOURCES,
    TITLE_MAX,
    Draft,
    Notice,
    legacy_draft,
)
from loopwright.keys import Keys
from loopwright.scripts import NAMED, named
from loopwright.settings import Settings

PAGE = 200
MIGRATE_BATCH = 500
TRIM_BATCH = 500

# ``inbox_post(n)``: store the notice ``n`` (``id``, ``level``, ``source``, ``title``, ``body``,
# optional ``skill``, ``run_id``, ``dedupe``, ``ts``) under the declared ``K.ib_*`` keys.
# Returns (1, id) when stored, (0, earlier id) when ``K.ib_dedupe`` already names one (or
# (0, '') when the pre-issue-15 marker ``K.ib_sent_old`` does), (-1, '') when the run's notice
# quota (``K.ib_quota``, ``A.quota``, ``A.quota_ttl``) is spent. ``K.ib_outbox`` (optional)
# queues it for the webhook. Needs NAMED before it.
POST_FRAGMENT = """
local function inbox_post(n)
  if K.ib_dedupe then
    local prev = redis.call('GET', K.ib_dedupe)
    if prev then return 0, prev end
  end
  if K.ib_sent_old and redis.call('EXISTS', K.ib_sent_old) == 1 then return 0, '' end
  if K.ib_quota then
    local used = redis.call('INCR', K.ib_quota)
    redis.call('EXPIRE', K.ib_quota, A.quota_ttl)
    if used > tonumber(A.quota) then return -1, '' end
  end
  local ts = n.ts
  if not ts then
    local t = redis.call('TIME')
    ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local f = {'id', n.id, 'ts', string.format('%d', ts), 'level', n.level, 'source', n.source,
    'title', n.title or '', 'body', n.body or ''}
  if n.skill then f[#f + 1] = 'skill'; f[#f + 1] = n.skill end
  if n.run_id then f[#f + 1] = 'run_id'; f[#f + 1] = n.run_id end
  if K.ib_dedupe then
    f[#f + 1] = 'dedupe'; f[#f + 1] = n.dedupe
    redis.call('SET', K.ib_dedupe, n.id)
  end
  redis.call('HSET', K.ib_notice, unpack(f))
  local score = tonumber(n.id)
  redis.call('ZADD', K.ib_all, score, n.id)
  redis.call('ZADD', K.ib_unacked, score, n.id)
  redis.call('ZADD', K.ib_level, score, n.id)
  if K.ib_skill then redis.call('ZADD', K.ib_skill, score, n.id) end
  if K.ib_outbox then redis.call('ZADD', K.ib_outbox, 0, n.id) end
  return 1, n.id
end
"""

# Post one notice (the fields in A). Returns {status, id, notices kept} (see inbox_post).
POST = (
    NAMED
    + POST_FRAGMENT
    + """
local st, id = inbox_post(A)
return {st, id, redis.call('ZCARD', K.ib_all)}
"""
)

# Move the oldest entry of the pre-issue-15 list into today's storage, if it still is A.raw.
MIGRATE = (
    NAMED
    + POST_FRAGMENT
    + """
if redis.call('LINDEX', K.legacy, 0) ~= A.raw then return 0 end
redis.call('LPOP', K.legacy)
inbox_post(A)
return 1
"""
)

# Forget the oldest notices over the cap. KEYS: all, unacked, outbox, then per notice 4 keys:
# notice, its skill index (the notice key again for none), its level index, its dedupe marker
# (the notice key again for none). ARGV: the ids, in the same order.
TRIM = """
for i, id in ipairs(ARGV) do
  local b = 3 + (i - 1) * 4
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  if KEYS[b + 2] ~= KEYS[b + 1] then redis.call('ZREM', KEYS[b + 2], id) end
  redis.call('ZREM', KEYS[b + 3], id)
  if KEYS[b + 4] ~= KEYS[b + 1] and redis.call('GET', KEYS[b + 4]) == id then
    redis.call('DEL', KEYS[b + 4])
  end
  redis.call('DEL', KEYS[b + 1])
end
return #ARGV
"""

# Acknowledge notices not yet acknowledged. KEYS: unacked, then the notices; ARGV: who, then
# their ids. Returns how many were acknowledged now.
ACK = """
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local n = 0
for i = 2, #ARGV do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 'acked_at') == 0 then
    redis.call('HSET', key, 'acked_by', ARGV[1], 'acked_at', now)
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


class InboxQuotaError(SkillAuthorError):
    """A run posted as many notices as it may (``LOOPWRIGHT_NOTIFY_MAX_PER_RUN``)."""


class Inbox:
    """The platform inbox: post, list with filters, get, acknowledge (see the module doc)."""

    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._post = redis.register_script(POST)
        self._migrate_one = redis.register_script(MIGRATE)
        self._trim = redis.register_script(TRIM)
        self._ack = redis.register_script(ACK)

    # Writing ------------------------------------------------------------------------------

    def post(
        self,
        *,
        level: str,
        title: str,
        body: str = "",
        source: str = "platform",
        skill: str | None = None,
        run_id: str | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Store a notice and return its id; a ``dedupe_key`` already posted stores nothing
        and returns the earlier notice's id (for as long as that notice is kept)."""
        draft = self.draft(
            level=level, title=title, body=body, source=source, skill=skill, run_id=run_id,
            dedupe_key=dedupe_key,
        )  # fmt: skip
        _status, notice_id = self.post_draft(draft)
        return notice_id

    @staticmethod
    def draft(
        *,
        level: str,
        title: str,
        body: str = "",
        source: str = "platform",
        skill: str | None = None,
        run_id: str | None = None,
        dedupe_key: str | None = None,
    ) -> Draft:
        """A checked draft: level and source from their lists (else ``UserError``), title and
        body capped."""
        if level not in LEVELS:
            raise UserError(f"inbox: level {level!r} is not one of {', '.join(LEVELS)}")
        if source not in SOURCES:
            raise UserError(f"inbox: source {source!r} is not one of {', '.join(SOURCES)}")
        return Draft(
            level=level,
            source=source,
            title=str(title)[:TITLE_MAX],
            body=str(body)[:BODY_MAX],
            skill=skill or None,
            run_id=run_id or None,
            dedupe_key=dedupe_key or None,
        )

    def post_draft(
        self,
        draft: Draft,
        *,
        quota: tuple[str, int, int] | None = None,
        old_marker: str | None = None,
    ) -> tuple[int, str]:
        """Store ``draft``: (1, id) stored, (0, earlier id or '') a repeat. ``quota`` is
        (counter key, most notices, counter TTL s): over it raises :class:`InboxQuotaError`;
        ``old_marker`` a pre-issue-15 dedupe marker that also counts as posted."""
        self.migrate()
        notice_id = str(self._redis.incr(self._keys.inbox_seq))
        keys = self.post_keys(notice_id, draft)
        keys["ib_quota"] = quota[0] if quota else None
        keys["ib_sent_old"] = old_marker
        args = self.post_args(notice_id, draft)
        if quota:
            args.update(quota=quota[1], quota_ttl=quota[2])
        k, a = named(keys, args)
        status, got, kept = self._post(keys=k, args=a)
        if int(status) < 0:
            raise InboxQuotaError(
                f"notify: this run posted its quota of {quota[1] if quota else 0} notices"
            )
        if int(kept) > self._settings.inbox_max:
            self.trim()
        return int(status), str(got or "")

    def post_keys(self, notice_id: str, draft: Draft) -> dict[str, str | None]:
        """The ``K.ib_*`` keys :data:`POST_FRAGMENT` writes for ``draft`` stored as
        ``notice_id`` (for scripts that include the fragment)."""
        k = self._keys
        deliver = bool(self._settings.alert_webhook_secret) and draft.source != "skill"
        return {
            "ib_notice": k.inbox_notice(notice_id),
            "ib_all": k.inbox_all,
            "ib_unacked": k.inbox_unacked,
            "ib_level": k.inbox_by_level(draft.level),
            "ib_skill": k.inbox_by_skill(draft.skill) if draft.skill else None,
            "ib_dedupe": k.inbox_dedupe(draft.dedupe_key) if draft.dedupe_key else None,
            "ib_outbox": k.inbox_outbox if deliver else None,
        }

    @staticmethod
    def post_args(notice_id: str, draft: Draft) -> dict[str, Any]:
        """The notice fields :data:`POST_FRAGMENT` reads (``inbox_post(A)``)."""
        return {
            "id": notice_id,
            "level": draft.level,
            "source": draft.source,
            "title": draft.title,
            "body": draft.body,
            "skill": draft.skill,
            "run_id": draft.run_id,
            "dedupe": draft.dedupe_key,
            "ts": draft.ts,
        }

    def trim(self) -> int:
        """Forget the oldest notices beyond ``inbox_max``; returns how many."""
        k, dropped = self._keys, 0
        while True:
            over = int(self._redis.zcard(k.inbox_all)) - self._settings.inbox_max
            if over <= 0:
                return dropped
            ids = [str(x) for x in self._redis.zrange(k.inbox_all, 0, min(over, TRIM_BATCH) - 1)]
            pipe = self._redis.pipeline(transaction=False)
            for notice_id in ids:
                pipe.hmget(k.inbox_notice(notice_id), ["skill", "level", "dedupe"])
            keys = [k.inbox_all, k.inbox_unacked, k.inbox_outbox]
            for notice_id, (skill, level, dedupe) in zip(ids, pipe.execute(), strict=True):
                own = k.inbox_notice(notice_id)
                keys += [
                    own,
                    k.inbox_by_skill(str(skill)) if skill else own,
                    k.inbox_by_level(str(level) if level in LEVELS else "info"),
                    k.inbox_dedupe(str(dedupe)) if dedupe else own,
                ]
            dropped += int(self._trim(keys=keys, args=ids))

    def migrate(self) -> int:
        """Move the pre-issue-15 list's entries into today's storage; returns how many."""
        k, moved = self._keys, 0
        if not self._redis.exists(k.inbox):
            return 0
        while True:
            raw: list[str] = self._redis.lrange(k.inbox, 0, MIGRATE_BATCH - 1)  # type: ignore[assignment]
            if not raw:
                break
            for entry in raw:
                draft = legacy_draft(str(entry))
                notice_id = str(self._redis.incr(k.inbox_seq))
                keys = {"legacy": k.inbox, **self.post_keys(notice_id, draft)}
                keys["ib_outbox"] = None  # old notices were never meant for the webhook
                ka, aa = named(keys, {"raw": entry, **self.post_args(notice_id, draft)})
                if not int(self._migrate_one(keys=ka, args=aa)):
                    break  # another process moved it first: read the list again
                moved += 1
        if moved:
            self.trim()
        return moved

    # Reading ------------------------------------------------------------------------------

    def get(self, notice_id: str) -> Notice | None:
        """One notice, or None when there is no such id (or it was dropped by the cap)."""
        self.migrate()
        if not str(notice_id).isdigit():
            return None
        h: dict[str, str] = self._redis.hgetall(self._keys.inbox_notice(str(notice_id)))  # type: ignore[assignment]
        return Notice.from_hash(h) if h else None

    def list(
        self,
        skill: str | None = None,
        level: str | None = None,
        unacknowledged: bool = False,
        limit: int = 50,
    ) -> builtins.list[Notice]:
        """The newest notices that match, newest first. Walks the smallest index that answers
        the filter (a skill's, the unacknowledged, a level's, or all) and checks the rest."""
        if level is not None and level not in LEVELS:
            raise UserError(f"inbox: level {level!r} is not one of {', '.join(LEVELS)}")
        self.migrate()
        k = self._keys
        if skill:
            index = k.inbox_by_skill(skill)
        elif unacknowledged:
            index = k.inbox_unacked
        elif level:
            index = k.inbox_by_level(level)
        else:
            index = k.inbox_all
        out: builtins.list[Notice] = []
        start = 0
        while len(out) < limit:
            ids = [str(x) for x in self._redis.zrevrange(index, start, start + PAGE - 1)]
            if not ids:
                break
            start += len(ids)
            for n in self._read(ids):
                if level and n.level != level:
                    continue
                if unacknowledged and n.acknowledged:
                    continue
                if skill and n.skill != skill:
                    continue
                out.append(n)
                if len(out) >= limit:
                    break
        return out

    def _read(self, ids: Iterable[str]) -> builtins.list[Notice]:
        pipe = self._redis.pipeline(transaction=False)
        for notice_id in ids:
            pipe.hgetall(self._keys.inbox_notice(notice_id))
        return [Notice.from_hash(h) for h in pipe.execute() if h]

    # Acknowledging ------------------------------------------------------------------------

    def ack(self, ids: Iterable[str], who: str) -> int:
        """Acknowledge notices by id (``who``: a person or token name); returns how many were
        acknowledged now (unknown and already acknowledged ids count 0)."""
        self.migrate()
        wanted = [str(i) for i in ids if str(i).isdigit()]
        done = 0
        for at in range(0, len(wanted), PAGE):
            chunk = wanted[at : at + PAGE]
            keys = [self._keys.inbox_unacked] + [self._keys.inbox_notice(i) for i in chunk]
            done += int(self._ack(keys=keys, args=[who, *chunk]))
        return done

    def unacknowledged_ids(self, skill: str | None = None) -> builtins.list[str]:
        """Every unacknowledged id (of one skill), oldest first (``inbox ack --all``)."""
        self.migrate()
        ids = [str(x) for x in self._redis.zrange(self._keys.inbox_unacked, 0, -1)]
        if not skill:
            return ids
        mine = {str(x) for x in self._redis.zrange(self._keys.inbox_by_skill(skill), 0, -1)}
        return [i for i in ids if i in mine]
