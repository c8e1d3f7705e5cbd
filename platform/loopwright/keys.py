"""Every Redis key Loopwright uses is built here, under one prefix.

The keyspace is a small state machine (see ``docs/runner.md``):

* ``{p}:run:{id}``            hash   the run record (status, fence, lease, input, output, ...)
* ``{p}:run:{id}:steps``      hash   seq -> step record JSON (the checkpoints)
* ``{p}:run:{id}:out:{seq}``  string a step output too large to keep inline
* ``{p}:run:{id}:logs``       list   ``ctx.log`` lines (capped)
* ``{p}:run:{id}:children``   set    child run ids (for cancellation cascade)
* ``{p}:runs``                zset   every run id by creation time (history)
* ``{p}:runs:skill:{name}``   zset   run ids of one skill by creation time
* ``{p}:runs:status:{st}``    zset   terminal runs of one status by creation time (written by
                                     ``run_ended``; ``runner/indexes.py``)
* ``{p}:runs:sig:{sig}``      zset   runs with one error signature by creation time; the
                                     signatures in use are ``{p}:runs:sigs`` (zset, score 0, lex)
* ``{p}:runs:indexed``        string how far the status/signature backfill has walked ``runs``
                                     (``<score> <run id>``, or ``done``)
* ``{p}:leases``              zset   running run id -> lease expiry (ms)       (reaper reads it)
* ``{p}:timers``              zset   parked run id -> wake time (ms)           (scheduler reads it)
* ``{p}:queued``              zset   dispatched run id -> dispatch time (ms)   (lost-dispatch check)
* ``{p}:waiting``             zset   runs waiting for an event or a child run, by park time
* ``{p}:ended``               zset   ended runs (any terminal status) by end time (ms): written
                                     by every terminal path, for rollups and retention
* ``{p}:src:{version}``       string skill source by content hash
* ``{p}:skills``              hash   skill name -> active version, for *active* skills only (the
                                     registry keeps it in step; triggers and ``run NAME`` read it)
* ``{p}:reg:skill:{name}``    hash   registry: status, active pointer, owner, times
* ``{p}:reg:versions:{name}`` zset   registry: the skill's versions in registration order
* ``{p}:reg:ver:{version}``   hash   registry: one immutable version (author, parent, manifest...)
* ``{p}:reg:names``           set    registry: every skill name ever registered
* ``{p}:reg:seq``             string registry change counter; ``{p}:reg:changes`` its channel
* ``{p}:inbox``               list   the inbox before issue 15 (migrated on first use, then gone)
* ``{p}:inbox:sent:{key}``    string dedupe marker of a notice by idempotency key (before issue 15)
* ``{p}:notify``              channel run-state notices (``--wait`` listens here)
* ``{p}:inbox:n:{id}``        hash   one inbox notice (``loopwright.inbox``); ids: ``:inbox:seq``
* ``{p}:inbox:all|unacked``   zset   notice ids (scored by id); ``:skill:{name}``, ``:level:{l}``
* ``{p}:inbox:dedupe:{key}``  string the notice id posted with a dedupe key
* ``{p}:inbox:outbox``        zset   notice ids waiting for the webhook -> next attempt (ms)
* ``{p}:alerts:cursor``       string how far failure alerts read ``ended`` (``<ms> <run id>``)
* ``{p}:alerts:skill:{name}`` hash   a failing skill's signatures; ``{p}:alerts:due`` summaries
* ``{p}:scheduler:heartbeat`` string set by every scheduler tick, expires when none runs
* ``{p}:events``              stream accepted events (consumer group ``router``)
* ``{p}:event:seen:{id}``     string event-id dedupe marker (retention window)
* ``{p}:trig:{skill}:{src}``  string run started for an event id / cron tick (exactly once)
* ``{p}:waiters:{event}``     hash   ``run_id:seq`` -> match, runs in wait_for_event
* ``{p}:scheduler:leader``    string cron leader lease; ``:epoch`` its fencing counter
* ``{p}:cron:last:{skill}``   string last cron tick fired for a skill (leader-fenced cursor)
* ``{p}:cron:ledger:{skill}`` list  each decided tick (run, skipped or missed and why), capped
* ``{p}:conc:{skill}:{key}``  zset   runs holding a concurrency slot -> lease expiry
* ``{p}:rate:{skill}:{key}``  zset   starts inside the rate-limit window
* ``{p}:idem:{skill}:{key}``  string idempotency marker; ``{p}:debounce:*`` debounced bursts
* ``{p}:session:{id}``        hash   builder chat session: state JSON, turns, pending turn run
* ``{p}:sessions``            zset   session ids by last update
* ``{p}:auth:token:{id}``     hash   platform token: name, SHA-256 of the secret, scopes, author
* ``{p}:auth:tokens``         zset   token ids by creation time
* ``{p}:run:{id}:calls``      list   recorded host-tool calls of a run (JSON, in order; replay)
* ``{p}:rollup:{skill}:{version}:{yyyymmdd}`` hash per-version daily rollup (runs by status,
                                     origin, durations, signatures; ``runner/rollup.py``)
* ``{p}:rollups:{skill}``     zset   ``<day>:<version>`` of a skill's rollups, scored by day
* ``{p}:gone:{id}``           string tombstone of a run retention deleted inside the event
                                     dedupe window (its trigger claim must not restart it)
* ``{p}:pins``                set    pinned run ids (kept by retention until unpinned)
* ``{p}:retention:deleted``   string counter of runs deleted by retention
* ``{p}:api:idem:{token}:{h}`` string a POST's stored answer under its Idempotency-Key
* ``{p}:audit``               stream who did what through the API and the pages (capped)
* ``{p}:web:login:{h}``       string one-time login code -> token id (TTL)
* ``{p}:web:session:{h}``     hash   browser session: token id, CSRF secret (TTL)

* ``{p}:state:{skill}``       hash   a skill's ``ctx.state`` (values, versions, its clock)

* ``{p}:review:{id}``         string one stored weekly review (JSON, ``review/store.py``)
* ``{p}:reviews``             zset   review ids by start time (capped: LOOPWRIGHT_REVIEW_KEEP)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder bound to one prefix; pass it around instead of formatting strings."""

    prefix: str = "lw"

    def run(self, run_id: str) -> str:
        """The run record hash."""
        return f"{self.prefix}:run:{run_id}"

    def steps(self, run_id: str) -> str:
        """The run's checkpoints: seq -> step record."""
        return f"{self.prefix}:run:{run_id}:steps"

    def step_output(self, run_id: str, seq: int) -> str:
        """A large step output stored outside the steps hash."""
        return f"{self.prefix}:run:{run_id}:out:{seq}"

    def step_output_pattern(self, run_id: str) -> str:
        """Glob over a run's large outputs (for clean-up)."""
        return f"{self.prefix}:run:{run_id}:out:*"

    def logs(self, run_id: str) -> str:
        """The run's log lines."""
        return f"{self.prefix}:run:{run_id}:logs"

    def notices(self, run_id: str) -> str:
        """How many notices a run posted (quota)."""
        return f"{self.prefix}:run:{run_id}:notices"

    def children(self, run_id: str) -> str:
        """Ids of runs started by this run."""
        return f"{self.prefix}:run:{run_id}:children"

    @property
    def runs(self) -> str:
        """All runs by creation time."""
        return f"{self.prefix}:runs"

    def runs_by_skill(self, skill: str) -> str:
        """Runs of one skill by creation time."""
        return f"{self.prefix}:runs:skill:{skill}"

    # status and error-signature indexes (issue 13; ``runner/indexes.py``)
    def runs_by_status(self, status: str) -> str:
        """Terminal runs of one status by creation time."""
        return f"{self.prefix}:runs:status:{status}"

    def runs_by_sig(self, sig: str) -> str:
        """Runs with one error signature by creation time."""
        return f"{self.prefix}:runs:sig:{sig}"

    @property
    def runs_sigs(self) -> str:
        """The error signatures that have a ``runs_by_sig`` index (zset, all scores 0)."""
        return f"{self.prefix}:runs:sigs"

    @property
    def runs_indexed(self) -> str:
        """How far the status/signature backfill has walked ``runs`` (``<score> <id>``|done)."""
        return f"{self.prefix}:runs:indexed"

    @property
    def leases(self) -> str:
        """Running runs by lease expiry (ms)."""
        return f"{self.prefix}:leases"

    @property
    def timers(self) -> str:
        """Parked runs by wake time (ms)."""
        return f"{self.prefix}:timers"

    @property
    def waiting(self) -> str:
        """Runs parked in ``waiting`` (event or child), by park time."""
        return f"{self.prefix}:waiting"

    @property
    def ended(self) -> str:
        """Ended runs (completed, failed, cancelled, skipped) by end time (ms)."""
        return f"{self.prefix}:ended"

    @property
    def queued(self) -> str:
        """Dispatched, not yet started runs by dispatch time (ms)."""
        return f"{self.prefix}:queued"

    def source(self, version: str) -> str:
        """Skill source by content hash."""
        return f"{self.prefix}:src:{version}"

    @property
    def skills(self) -> str:
        """Skill name -> active version of every active skill (kept by the registry)."""
        return f"{self.prefix}:skills"

    def registry_skill(self, name: str) -> str:
        """Registry record of one skill: status, active pointer, owner."""
        return f"{self.prefix}:reg:skill:{name}"

    def registry_versions(self, name: str) -> str:
        """A skill's versions by registration order."""
        return f"{self.prefix}:reg:versions:{name}"

    def registry_version(self, version: str) -> str:
        """One immutable skill version's metadata."""
        return f"{self.prefix}:reg:ver:{version}"

    @property
    def registry_names(self) -> str:
        """Every registered skill name."""
        return f"{self.prefix}:reg:names"

    @property
    def registry_seq(self) -> str:
        """Counter bumped by every registry change."""
        return f"{self.prefix}:reg:seq"

    @property
    def registry_channel(self) -> str:
        """Pub/sub channel of registry change notices (JSON)."""
        return f"{self.prefix}:reg:changes"

    def session(self, session_id: str) -> str:
        """One builder chat session."""
        return f"{self.prefix}:session:{session_id}"

    @property
    def sessions(self) -> str:
        """Builder sessions by last update."""
        return f"{self.prefix}:sessions"

    @property
    def inbox(self) -> str:
        """The platform inbox list."""
        return f"{self.prefix}:inbox"

    def inbox_sent(self, idempotency_key: str) -> str:
        """Marker that a notice with this idempotency key was already posted."""
        return f"{self.prefix}:inbox:sent:{idempotency_key}"

    @property
    def run_changes_channel(self) -> str:
        """Pub/sub channel for run state changes (its name, ``:notify``, kept for data)."""
        return f"{self.prefix}:notify"

    @property
    def events(self) -> str:
        """The event stream (router consumer group reads it)."""
        return f"{self.prefix}:events"

    def event_seen(self, event_id: str) -> str:
        """Dedupe marker of an accepted event id (expires after the retention window)."""
        return f"{self.prefix}:event:seen:{event_id}"

    def trigger_done(self, source_id: str, skill: str) -> str:
        """Run id started for (event id or cron tick, skill): exactly-once starts."""
        return f"{self.prefix}:trig:{skill}:{source_id}"

    def waiters(self, event_name: str) -> str:
        """Runs waiting for an event name: ``run_id:seq`` -> match JSON."""
        return f"{self.prefix}:waiters:{event_name}"

    @property
    def scheduler_leader(self) -> str:
        """Cron leader lease: holder id."""
        return f"{self.prefix}:scheduler:leader"

    @property
    def scheduler_epoch(self) -> str:
        """Fencing counter bumped at every leadership change."""
        return f"{self.prefix}:scheduler:epoch"

    def cron_last(self, skill: str) -> str:
        """Last cron tick (ms) fired for a skill."""
        return f"{self.prefix}:cron:last:{skill}"

    def cron_ledger(self, skill: str) -> str:
        """Occurrence ledger of a timed skill: JSON per decided tick, newest first, capped."""
        return f"{self.prefix}:cron:ledger:{skill}"

    def concurrency_slots(self, skill: str, key: str) -> str:
        """Runs holding one of a skill's concurrency slots (per key), by lease expiry."""
        return f"{self.prefix}:conc:{skill}:{key}"

    def rate_window(self, skill: str, key: str) -> str:
        """Starts of a skill in its rate-limit window (per key)."""
        return f"{self.prefix}:rate:{skill}:{key}"

    def idempotency(self, skill: str, key: str) -> str:
        """Marker that a trigger with this idempotency key started the skill recently."""
        return f"{self.prefix}:idem:{skill}:{key}"

    def debounce(self, skill: str, key: str) -> str:
        """The latest event of a debounced burst."""
        return f"{self.prefix}:debounce:{skill}:{key}"

    @property
    def debounce_due(self) -> str:
        """Debounced bursts by the time their run starts."""
        return f"{self.prefix}:debounce:due"

    @property
    def scheduler_heartbeat(self) -> str:
        """Present while some scheduler has ticked recently."""
        return f"{self.prefix}:scheduler:heartbeat"

    # Platform tokens (loopwright.auth) --------------------------------------------------------

    def auth_token(self, token_id: str) -> str:
        """One platform token's record (hash): name, SHA-256 of the secret, scopes, author."""
        return f"{self.prefix}:auth:token:{token_id}"

    @property
    def auth_tokens(self) -> str:
        """Every token id by creation time (ms); revoked ones stay listed."""
        return f"{self.prefix}:auth:tokens"

    def root_runs(self, root: str) -> str:
        """Runs started so far on behalf of one root event or root run (the fan-out budget)."""
        return f"{self.prefix}:root:{root}:runs"

    def limit_notice(self, root: str, limit: str) -> str:
        """Marker that the inbox was told once that a root's chain hit ``limit``."""
        return f"{self.prefix}:root:{root}:notice:{limit}"

    # history: recorded tool calls (w3)
    def run_calls(self, run_id: str) -> str:
        """The run's recorded host-tool calls, one JSON entry each, in order (replay)."""
        return f"{self.prefix}:run:{run_id}:calls"

    # history: rollups (w2)
    def rollup(self, skill: str, version: str, day: str) -> str:
        """Per-version daily rollup hash (``day`` is ``yyyymmdd`` UTC; ``runner/rollup.py``)."""
        return f"{self.prefix}:rollup:{skill}:{version}:{day}"

    def rollup_index(self, skill: str) -> str:
        """Zset of a skill's rollups: member ``<day>:<version>``, score the day as a number."""
        return f"{self.prefix}:rollups:{skill}"

    # history: retention, pins, feedback -------------------------------------------------------

    def tombstone(self, run_id: str) -> str:
        """Marker that retention deleted this run while its trigger claim may still live: the
        claim must not start the run again (expires with the event dedupe window)."""
        return f"{self.prefix}:gone:{run_id}"

    @property
    def pins(self) -> str:
        """Pinned run ids (feedback, ``runs pin``): exempt from retention until unpinned."""
        return f"{self.prefix}:pins"

    @property
    def retention_deleted(self) -> str:
        """Counter of runs retention has deleted (doctor, tests, benchmarks)."""
        return f"{self.prefix}:retention:deleted"

    # The HTTP API and web sessions (``loopwright.api``).

    def api_idempotency(self, token_id: str, key_hash: str) -> str:
        """A POST's stored answer under its ``Idempotency-Key`` (per token; expires)."""
        return f"{self.prefix}:api:idem:{token_id}:{key_hash}"

    @property
    def audit(self) -> str:
        """Stream of who did what through the API and the pages (capped)."""
        return f"{self.prefix}:audit"

    def web_login(self, code_hash: str) -> str:
        """A one-time login code (hashed) -> the token id it signs in as; short TTL."""
        return f"{self.prefix}:web:login:{code_hash}"

    def web_session(self, session_hash: str) -> str:
        """A browser session (hashed cookie) -> token id and CSRF secret; expires."""
        return f"{self.prefix}:web:session:{session_hash}"

    # inbox and failure alerts (issue 15; ``loopwright.inbox``, ``scheduler/alerts.py``) ------

    @property
    def inbox_seq(self) -> str:
        """Counter giving notices their increasing ids."""
        return f"{self.prefix}:inbox:seq"

    def inbox_notice(self, notice_id: str) -> str:
        """One notice (hash): level, source, title, body, skill, run, ack fields."""
        return f"{self.prefix}:inbox:n:{notice_id}"

    @property
    def inbox_all(self) -> str:
        """Every kept notice id, scored by the id (the inbox's order and its cap)."""
        return f"{self.prefix}:inbox:all"

    @property
    def inbox_unacked(self) -> str:
        """Ids of notices nobody has acknowledged."""
        return f"{self.prefix}:inbox:unacked"

    def inbox_by_skill(self, skill: str) -> str:
        """Ids of one skill's notices."""
        return f"{self.prefix}:inbox:skill:{skill}"

    def inbox_by_level(self, level: str) -> str:
        """Ids of the notices of one level (info, warning, error)."""
        return f"{self.prefix}:inbox:level:{level}"

    def inbox_dedupe(self, dedupe_key: str) -> str:
        """The id of the notice posted with this dedupe key (lives as long as the notice)."""
        return f"{self.prefix}:inbox:dedupe:{dedupe_key}"

    @property
    def inbox_outbox(self) -> str:
        """Notice ids waiting for webhook delivery, scored by the next attempt time (ms)."""
        return f"{self.prefix}:inbox:outbox"

    @property
    def alerts_cursor(self) -> str:
        """How far failure alerts have read ``ended``: ``<end ms> <run id>``."""
        return f"{self.prefix}:alerts:cursor"

    def alert_state(self, skill: str) -> str:
        """A skill's failing signatures (hash ``<origin>:<sig>`` -> JSON), while it fails."""
        return f"{self.prefix}:alerts:skill:{skill}"

    @property
    def alerts_due(self) -> str:
        """``<skill>\\n<origin>:<sig>`` -> when its summary of further failures is due (ms)."""
        return f"{self.prefix}:alerts:due"

    # ctx.state (issue 15): one hash per skill, not per version
    def skill_state(self, skill: str) -> str:
        """Hash of a skill's ``ctx.state``: ``v:KEY`` -> JSON value, ``m:KEY`` -> "version
        updated_ms run_id", ``#`` -> the skill's version clock (``runner/state.py``)."""
        return f"{self.prefix}:state:{skill}"

    # the weekly review ---------------------------------------------------------------------------

    def review(self, review_id: str) -> str:
        """One stored review (JSON)."""
        return f"{self.prefix}:review:{review_id}"

    @property
    def reviews(self) -> str:
        """Stored review ids, scored by start time (ms)."""
        return f"{self.prefix}:reviews"
