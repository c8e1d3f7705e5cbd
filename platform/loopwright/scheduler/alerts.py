"""Failure alerts: someone hears when a skill's runs fail for good, and when they recover.

The scheduler leader reads ``{p}:ended`` (every terminal path indexes its run there, in the
same script as the transition: ``run_ended`` in ``runner/lua.py``) from a stored cursor,
``Keys.alerts_cursor`` = ``<end ms> <run id>``, in (end time, run id) order. For each ended run
one script checks that this scheduler still leads and that the cursor is where it read it,
moves the cursor past the run and applies the run to its skill's alert state
(``Keys.alert_state``), posting the notice it calls for through the inbox's own post fragment.
Cursor, state and notice commit together, so a SIGKILL anywhere loses no alert and doubles
none; a deposed leader's late call changes nothing.

The rules, per skill, keyed by ``<origin>:<error signature>`` (``runner/signature.py``, the
one the rollups count):

* a failed run whose signature is not in the state: one notice (source ``alert``, or
  ``platform`` when the platform failed the run and the skill is not to blame);
* the same signature again: counted; a summary with the count is due ``alert_interval`` after
  the last notice for it (``Keys.alerts_due``, flushed by the leader's tick even when no
  further run ends);
* a completed run while any signature is in the state: one ``recovered`` notice; the state
  is cleared, so the next failure is a first failure again.

Cancelled and skipped runs change nothing. Only runs that end less than ``SETTLE_MS`` ago are
left for the next tick: every terminal script stamps ``ended`` with the server clock, so by then
no run can still be indexed behind the cursor. A scheduler meeting no cursor starts at the
present (history from before alerts existed raises nothing), as does the seeder's past.

Notices not from skills are queued for the Slack-compatible webhook named by
``LOOPWRIGHT_ALERT_WEBHOOK_SECRET`` (``inbox/store.py``); :class:`Deliverer` posts them on a
thread of its own, so a slow webhook never delays timers or the reaper. Delivery is at least
once (a crash after the POST and before the bookkeeping sends it again); a failed delivery is
retried with backoff and given up after ``DELIVERY_TRIES``, and never touches the notice.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

from loopwright.inbox import Inbox
from loopwright.inbox.model import Draft, Notice
from loopwright.inbox.store import POST_FRAGMENT
from loopwright.runner.addresses import private_allow
from loopwright.runner.netguard import Hop, HttpPolicy, follow_redirects
from loopwright.runner.runtime import Runtime
from loopwright.runner.signature import sample, signature
from loopwright.scripts import NAMED, named

log = logging.getLogger(__name__)

SETTLE_MS = 1000
IDLE_ADVANCE_MS = 1000
BATCH = 200
DELIVERY_BATCH = 20
DELIVERY_TRIES = 8
DELIVERY_CLAIM_MS = 60_000
DELIVERY_MAX_BODY = 64 * 1024

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Apply one ended run (A.status, A.skill, A.field = '<origin>:<sig>', A.run, A.msg) to the
# skill's alert state, moving the cursor from A.cursor to A.next; the notice to post on a first
# failure or a recovery is in A (inbox_post's fields; a recovery's body is completed here).
# KEYS (named): leader, cursor, state, due, and the inbox's ib_* (only when the caller expects
# a notice: the id is taken beforehand, so a run that posts nothing spends none).
# Returns -1 not the leader, -2 the cursor moved (read it again), -3 a notice is due but no
# notice keys were declared (call again with them; nothing was written), 0 nothing posted,
# 1 posted.
APPLY = (
    NAMED
    + _NOW
    + POST_FRAGMENT
    + """
if redis.call('GET', K.leader) ~= A.owner then return -1 end
if (redis.call('GET', K.cursor) or '') ~= A.cursor then return -2 end
redis.call('SET', K.cursor, A.next)
if A.status == 'failed' then
  local member = A.skill .. '\\n' .. A.field
  local raw = redis.call('HGET', K.state, A.field)
  if not raw then
    if not K.ib_notice then return -3 end
    redis.call('HSET', K.state, A.field, cjson.encode({n = 1, pending = 0,
      notice = string.format('%d', now), first = A.run, last = A.run, msg = A.msg,
      origin = A.origin}))
    inbox_post(A)
    return 1
  end
  local s = cjson.decode(raw)
  s.n = s.n + 1; s.pending = s.pending + 1; s.last = A.run
  redis.call('HSET', K.state, A.field, cjson.encode(s))
  redis.call('ZADD', K.due, 'NX', tonumber(s.notice) + tonumber(A.interval_ms), member)
  return 0
end
if A.status ~= 'completed' or redis.call('EXISTS', K.state) == 0 then return 0 end
if not K.ib_notice then return -3 end
local h = redis.call('HGETALL', K.state)
local failed, kinds = 0, 0
for i = 1, #h, 2 do
  failed = failed + cjson.decode(h[i + 1]).n
  kinds = kinds + 1
  redis.call('ZREM', K.due, A.skill .. '\\n' .. h[i])
end
redis.call('DEL', K.state)
A.body = 'Run ' .. A.run .. ' completed after ' .. failed .. ' failed run(s) with ' .. kinds
  .. ' different error(s).'
inbox_post(A)
return 1
"""
)

# Post the summary of further failures of one signature (A.member, A.field) when it is due.
# KEYS (named): leader, state, due, ib_*. Returns 1 posted, 0 nothing, -1 not the leader.
SUMMARY = (
    NAMED
    + _NOW
    + POST_FRAGMENT
    + """
if redis.call('GET', K.leader) ~= A.owner then return -1 end
local score = redis.call('ZSCORE', K.due, A.member)
if not score or tonumber(score) > now then return 0 end
redis.call('ZREM', K.due, A.member)
local raw = redis.call('HGET', K.state, A.field)
if not raw then return 0 end
local s = cjson.decode(raw)
if s.pending < 1 then return 0 end
A.title = A.skill .. ' kept failing: ' .. s.pending .. ' more failed run(s) with the same error'
A.body = 'Error: ' .. (s.msg or '') .. '\\nFailed runs with this error since it began: ' .. s.n
  .. '; first run ' .. (s.first or '') .. ', latest run ' .. (s.last or '') .. '.'
A.run_id = s.last
s.pending = 0
s.notice = string.format('%d', now)
redis.call('HSET', K.state, A.field, cjson.encode(s))
inbox_post(A)
return 1
"""
)

# Claim a due outbox entry for DELIVERY_CLAIM_MS (so two schedulers never post it at once).
# KEYS: outbox   ARGV: id, now ms, claim until ms. Returns 1 claimed.
CLAIM = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# A delivery failed: count it on the notice (never recreating a dropped one) and retry at
# ARGV[2] ms, or give up after ARGV[3] tries. KEYS: outbox, notice   ARGV: id, retry at, tries.
# Returns the tries so far (0 when the notice is gone).
RETRY = """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]); return 0 end
local n = redis.call('HINCRBY', KEYS[2], 'deliver_tries', 1)
if n >= tonumber(ARGV[3]) then redis.call('ZREM', KEYS[1], ARGV[1])
else redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1]) end
return n
"""


@dataclass(frozen=True, slots=True)
class Ended:
    """What an ended run tells the alerts."""

    run_id: str
    status: str
    skill: str
    origin: str
    sig: str
    error: str


class Alerts:
    """Consumes ``ended`` into alert notices; the scheduler leader calls :meth:`tick`."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.inbox = Inbox(rt.redis, rt.keys, rt.settings)
        self._apply = rt.redis.register_script(APPLY)
        self._summary = rt.redis.register_script(SUMMARY)

    def _server_ms(self) -> int:
        sec, usec = self.rt.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    def tick(self) -> int:
        """Consume what ended since the cursor and post due summaries; returns notices
        posted. Only the leader's calls change anything (each script checks the lease)."""
        self.inbox.migrate()
        now = self._server_ms()
        posted = self.consume(now)
        posted += self.summaries(now)
        if posted:
            self.inbox.trim()
        return posted

    def consume(self, now: int) -> int:
        """Apply the runs that ended after the cursor and before ``now - SETTLE_MS``."""
        rt, k = self.rt, self.rt.keys
        until = now - SETTLE_MS
        cursor = str(rt.redis.get(k.alerts_cursor) or "")
        if not cursor:
            rt.redis.set(k.alerts_cursor, f"{until} ", nx=True)
            return 0
        at_s, _, after = cursor.partition(" ")
        at = int(at_s)
        posted = 0
        # Runs that ended in the cursor's millisecond and are already applied come first: when
        # a whole batch is such runs, read a larger one, so they can never stall the cursor.
        num = BATCH
        while True:
            rows: list[tuple[str, float]] = rt.redis.zrangebyscore(  # type: ignore[assignment]
                k.ended, at, until, start=0, num=num, withscores=True
            )
            fresh = [(str(m), int(sc)) for m, sc in rows if not (int(sc) == at and str(m) <= after)]
            if fresh or len(rows) < num:
                break
            num *= 2
        for run_id, end in fresh:
            nxt = f"{end} {run_id}"
            res = self._apply_one(cursor, nxt, self._read(run_id))
            if res < 0:
                return posted  # not the leader, or another process moved the cursor
            posted += res
            cursor = nxt
        if len(rows) < num and at < until:
            # Nothing more ended up to ``until``: move the cursor there (no new run can be
            # indexed before it), so the next read starts at the present.
            self._advance_empty(cursor, until)
        return posted

    def _advance_empty(self, cursor: str, until: int) -> None:
        at_s, _, _after = cursor.partition(" ")
        if int(at_s) + IDLE_ADVANCE_MS > until:
            return  # moved at most once a second when idle: one small write, not every tick
        self._apply_one(cursor, f"{until} ", None)

    def _read(self, run_id: str) -> Ended | None:
        names = ["status", "skill", "origin", "sig", "error"]
        h = self.rt.redis.hmget(self.rt.keys.run(run_id), names)
        d = {n: str(x) if x is not None else "" for n, x in zip(names, h, strict=True)}
        if not d["status"] or not d["skill"]:
            return None  # deleted by retention, or not a skill's run
        origin = d["origin"] if d["origin"] in ("skill", "platform") else "skill"
        error = d["error"]
        sig = d["sig"] or (signature(error) if error else "none")
        return Ended(run_id, d["status"], d["skill"], origin, sig, sample(error))

    def _apply_one(
        self, cursor: str, nxt: str, run: Ended | None, *, with_notice: bool | None = None
    ) -> int:
        rt, k = self.rt, self.rt.keys
        keys: dict[str, str | None] = {
            "leader": k.scheduler_leader,
            "cursor": k.alerts_cursor,
        }
        args: dict[str, object] = {"owner": rt.instance_id, "cursor": cursor, "next": nxt}
        if with_notice is None:
            with_notice = self._expects_notice(run)
        if run is not None and run.status in ("failed", "completed"):
            keys.update(state=k.alert_state(run.skill), due=k.alerts_due)
            if with_notice:
                draft = self._draft(run)
                notice_id = str(rt.redis.incr(k.inbox_seq))
                keys.update(self.inbox.post_keys(notice_id, draft))
                args.update(self.inbox.post_args(notice_id, draft))
            args.update(
                status=run.status,
                run=run.run_id,
                skill=run.skill,
                field=f"{run.origin}:{run.sig}",
                origin=run.origin,
                msg=run.error,
                interval_ms=int(rt.settings.alert_interval * 1000),
            )
        else:
            args["status"] = "other"
        ka, aa = named(keys, args)
        res = int(self._apply(keys=ka, args=aa))
        if res == -3 and not with_notice:
            return self._apply_one(cursor, nxt, run, with_notice=True)
        return res

    def _expects_notice(self, run: Ended | None) -> bool:
        """Whether applying ``run`` will post (the leader alone writes the state, so this read
        holds until the script runs; a wrong guess costs one more call, see ``-3``)."""
        if run is None:
            return False
        state = self.rt.keys.alert_state(run.skill)
        if run.status == "completed":
            return bool(self.rt.redis.exists(state))
        if run.status == "failed":
            return not self.rt.redis.hexists(state, f"{run.origin}:{run.sig}")
        return False

    @staticmethod
    def _draft(run: Ended) -> Draft:
        if run.status == "completed":
            return Inbox.draft(
                level="info",
                source="alert",
                title=f"{run.skill} recovered",
                skill=run.skill,
                run_id=run.run_id,
            )
        platform = run.origin == "platform"
        return Inbox.draft(
            level="error",
            source="platform" if platform else "alert",
            title=f"{run.skill}: a platform failure stopped a run"
            if platform
            else f"{run.skill} failed",
            body=f"Error: {run.error}\nSignature {run.sig}; further failures with this error "
            f"are summarised at most once per LOOPWRIGHT_ALERT_INTERVAL.",
            skill=run.skill,
            run_id=run.run_id,
        )

    def summaries(self, now: int) -> int:
        """Post the summaries that are due; returns how many."""
        rt, k = self.rt, self.rt.keys
        posted = 0
        for member in rt.redis.zrangebyscore(k.alerts_due, "-inf", now, start=0, num=BATCH):
            skill, _, field = str(member).partition("\n")
            origin = field.partition(":")[0]
            draft = Inbox.draft(
                level="error",
                source="platform" if origin == "platform" else "alert",
                title="",
                skill=skill,
            )
            notice_id = str(rt.redis.incr(k.inbox_seq))
            keys: dict[str, str | None] = {
                "leader": k.scheduler_leader,
                "state": k.alert_state(skill),
                "due": k.alerts_due,
                **self.inbox.post_keys(notice_id, draft),
            }
            args = {
                **self.inbox.post_args(notice_id, draft),
                "owner": rt.instance_id,
                "member": str(member),
                "field": field,
            }
            ka, aa = named(keys, args)
            res = int(self._summary(keys=ka, args=aa))
            if res < 0:
                return posted
            posted += res
        return posted


def slack_text(n: Notice) -> str:
    """The ``text`` of a Slack-compatible message for a notice. Everything after the level is
    text we do not control (skill errors): ``&``, ``<`` and ``>`` are escaped as Slack asks, so
    a message cannot mention ``<!channel>`` or hide a link."""

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    head = f"[{n.level}] {esc(n.title)}" if n.title else f"[{n.level}]"
    lines = [head]
    if n.body:
        lines.append(esc(n.body))
    where = " ".join(
        p
        for p in (f"skill {n.skill}" if n.skill else "", f"run {n.run_id}" if n.run_id else "")
        if p
    )
    if where:
        lines.append(esc(where))
    return "\n".join(lines)[:8000]


class Deliverer:
    """Posts queued notices to the Slack-compatible webhook (see the module doc)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.inbox = Inbox(rt.redis, rt.keys, rt.settings)
        self._claim = rt.redis.register_script(CLAIM)
        self._retry = rt.redis.register_script(RETRY)
        self._warned = False

    def url(self) -> str | None:
        """The webhook URL, or None when none is configured (a missing secret is logged)."""
        st = self.rt.settings
        if not st.alert_webhook_secret:
            return None
        value = st.secrets.get(st.alert_webhook_secret)
        if value is None:
            if not self._warned:
                log.warning(
                    "LOOPWRIGHT_ALERT_WEBHOOK_SECRET names %r, which is not in "
                    "LOOPWRIGHT_SECRETS: alerts stay in the inbox only",
                    st.alert_webhook_secret,
                )
                self._warned = True
            return None
        return value.get_secret_value()

    def deliver_due(self) -> int:
        """Post every due notice once; returns how many were delivered."""
        url = self.url()
        if url is None:
            return 0
        rt, k = self.rt, self.rt.keys
        sec, usec = rt.redis.time()
        now = int(sec) * 1000 + int(usec) // 1000
        delivered = 0
        for member in rt.redis.zrangebyscore(
            k.inbox_outbox, "-inf", now, start=0, num=DELIVERY_BATCH
        ):
            nid = str(member)
            claim: list[str | int] = [nid, now, now + DELIVERY_CLAIM_MS]
            if not int(self._claim(keys=[k.inbox_outbox], args=claim)):
                continue
            notice = self.inbox.get(nid)
            if notice is None:
                rt.redis.zrem(k.inbox_outbox, nid)
                continue
            try:
                self._post(url, notice)
            except Exception as exc:  # any failure: retry later; the notice stays
                tries = int(rt.redis.hget(k.inbox_notice(nid), "deliver_tries") or 0) + 1
                wait_ms = min(3_600_000, 2_000 * 2 ** min(tries - 1, 11))  # 2 s, 4 s ... 1 h
                n = int(
                    self._retry(
                        keys=[k.inbox_outbox, k.inbox_notice(nid)],
                        args=[nid, now + wait_ms, DELIVERY_TRIES],
                    )
                )
                log.warning(
                    "alert webhook: notice %s not delivered (try %d of %d): %s",
                    nid, n, DELIVERY_TRIES, exc,
                )  # fmt: skip
                continue
            rt.redis.zrem(k.inbox_outbox, nid)
            delivered += 1
        return delivered

    def _post(self, url: str, notice: Notice) -> None:
        st = self.rt.settings
        policy = HttpPolicy(
            (), private_allow(st.http_private_allow), st.http_timeout, DELIVERY_MAX_BODY
        )
        body = json.dumps({"text": slack_text(notice)}, separators=(",", ":")).encode()
        hop = Hop(
            "POST",
            url,
            {
                "Content-Type": "application/json",
                "Idempotency-Key": f"{self.rt.keys.prefix}:inbox:{notice.id}",
            },
            body,
            frozenset(),
        )
        # The operator chose this URL when storing the secret (as notify's slack channel).
        status, _data, host = follow_redirects(hop, policy, check_host=False)
        if status >= 300:
            raise ConnectionError(f"POST {host} answered {status}")

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Deliver until ``stop`` is set; Redis and network failures are logged, not fatal."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:  # keep delivering after any failure
                log.warning("alert webhook delivery failed: %s", exc)
            stop.wait(interval)
