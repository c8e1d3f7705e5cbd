"""Durable builder sessions: each chat turn is a run of the built-in ``builder-session`` skill.

The skill is trusted platform code (it runs in the worker or in the ``loopwright chat``
process, never in the sandbox). Its steps are: ``load-session`` (the state at the start of the
turn), one step per model call and per tool call, and ``save-session``. A worker killed in the
middle resumes the turn at the step it was on: finished model calls are not sent again, a skill
accepted by the sidecar is not submitted again.

The session itself lives in one Redis hash: the state JSON (conversation since the last
re-anchoring, ledger of facts, metrics), the number of saved turns and the run of the turn in
progress. Saving is a compare-and-set on the turn number, so a replayed save is a no-op and two
concurrent turns cannot both land.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from loopwright.agent.critic import Critic
from loopwright.agent.loop import Agent
from loopwright.agent.state import new_state
from loopwright.agent.tools import make_toolbox
from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys
from loopwright.llm.errors import ModelConfigError
from loopwright.llm.factory import default_model_spec, make_model
from loopwright.runner.runtime import Runtime
from loopwright.runner.store import new_run_id
from loopwright.sdk.errors import NonRetriableError
from loopwright.skills_registry.store import Registry

BUILTIN_NAME = "builder-session"
BUILTIN_SOURCE = '''\
"""Built-in: one turn of a builder-agent chat session (trusted platform code)."""

from loopwright.agent.session import run_turn
from loopwright.sdk import skill


@skill(name="builder-session", description="One turn of a builder-agent chat session",
       retries=2, backoff=0.5, timeout="30m")
def main(ctx):
    return run_turn(ctx)
'''

SESSION_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")

# KEYS: session, sessions   ARGV: session_id, turn, state_json, now_ms
SAVE_LUA = """
local t = tonumber(redis.call('HGET', KEYS[1], 'turns') or '-1')
if t < 0 then return -1 end
local want = tonumber(ARGV[2])
if t == want then return 1 end
if t ~= want - 1 then return 0 end
redis.call('HSET', KEYS[1], 'turns', want, 'state', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'pending_run')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def ensure_builtin(rt: Runtime) -> str:
    """Register the built-in session skill (idempotent by content); returns its version.

    A version someone else registered under the reserved name is replaced, and logged."""
    reg, squatter = Registry(rt.redis, rt.keys).install_builtin(BUILTIN_SOURCE, BUILTIN_NAME)
    if squatter:
        logging.getLogger(__name__).warning(
            "replaced version %s of the reserved skill %r (not the built-in) with the built-in "
            "version %s",
            squatter[:12],
            BUILTIN_NAME,
            reg.version[:12],
        )
    return reg.version


def check_session_id(session_id: str) -> str:
    if (
        not isinstance(session_id, str)
        or not 1 <= len(session_id) <= 64
        or not set(session_id) <= SESSION_ID_CHARS
    ):
        raise UserError("a session id is 1-64 of lowercase letters, digits and '-'")
    return session_id


@dataclass(slots=True)
class SessionInfo:
    """A session as ``loopwright chat --session`` and ``sessions`` show it."""

    id: str
    model: str
    turns: int
    pending_run: str | None
    created_at: int
    updated_at: int
    state: dict[str, Any]


class SessionStore:
    """Sessions in Redis: create, start a turn, load and save (compare-and-set)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._save = redis.register_script(SAVE_LUA)

    def create(self, model: str, session_id: str | None = None) -> str:
        sid = check_session_id(session_id) if session_id else "s-" + secrets.token_hex(6)
        ts = now_ms()
        created = self.redis.hsetnx(self.keys.session(sid), "id", sid)
        if not created:
            raise UserError(f"session {sid!r} already exists")
        self.redis.hset(
            self.keys.session(sid),
            mapping={
                "model": model,
                "turns": 0,
                "state": json.dumps(new_state(sid, model)),
                "created_at": ts,
                "updated_at": ts,
            },
        )
        self.redis.zadd(self.keys.sessions, {sid: ts})
        return sid

    def get(self, session_id: str) -> SessionInfo:
        h: dict[str, str] = self.redis.hgetall(self.keys.session(check_session_id(session_id)))  # type: ignore[assignment]
        if not h or "state" not in h:
            raise NotFoundError(f"unknown session {session_id!r} (start one with loopwright chat)")
        return SessionInfo(
            id=session_id,
            model=h["model"],
            turns=int(h["turns"]),
            pending_run=h.get("pending_run") or None,
            created_at=int(h["created_at"]),
            updated_at=int(h["updated_at"]),
            state=json.loads(h["state"]),
        )

    def list(self, limit: int = 20) -> list[SessionInfo]:
        ids = self.redis.zrevrange(self.keys.sessions, 0, limit - 1)
        return [self.get(str(i)) for i in ids]

    def pending(self, rt: Runtime, session_id: str) -> str | None:
        """The run of an unfinished turn (after a crash), if any."""
        info = self.get(session_id)
        run = info.pending_run
        if run and rt.runs.exists(run) and not rt.runs.get(run).status.terminal:
            return run
        return None

    def start_turn(self, rt: Runtime, session_id: str, message: str) -> str:
        """Create the run of the next turn; refuses while another turn is unfinished."""
        if not isinstance(message, str) or not message.strip():
            raise UserError("the message is empty")
        cap = rt.settings.agent_message_max_bytes
        if len(message.encode("utf-8", "surrogatepass")) > cap:
            raise UserError(f"the message is over {cap} bytes; shorten it or attach less")
        version = ensure_builtin(rt)
        key = self.keys.session(check_session_id(session_id))
        run_id = new_run_id()
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                info = self.get(session_id)
                busy = self.pending(rt, session_id)
                if busy:
                    raise UserError(
                        f"session {session_id} has a turn in progress (run {busy}); "
                        "resume it with: loopwright chat --session " + session_id
                    )
                pipe.multi()
                pipe.hset(key, "pending_run", run_id)
                pipe.execute()
            except WatchError:
                raise UserError(f"session {session_id} changed meanwhile; try again") from None
        return rt.runs.create(
            skill=BUILTIN_NAME,
            version=version,
            data={"session": session_id, "turn": info.turns + 1, "message": message},
            trusted=True,
            run_id=run_id,
        )

    def load_turn(self, session_id: str, turn: int) -> dict[str, Any]:
        """Step body: the state the turn starts from (and when it started)."""
        info = self.get(session_id)
        if info.turns != turn - 1:
            raise NonRetriableError(
                f"session {session_id} is at turn {info.turns}; turn {turn} cannot start "
                "(another turn ran meanwhile)"
            )
        return {"state": info.state, "started_ms": now_ms()}

    def save_turn(
        self, session_id: str, turn: int, state: dict[str, Any], started_ms: int
    ) -> dict[str, Any]:
        """Step body: store the state after the turn (compare-and-set on the turn number)."""
        state["metrics"]["wall_ms"] += max(0, now_ms() - started_ms)
        res = int(
            self._save(
                keys=[self.keys.session(session_id), self.keys.sessions],
                args=[session_id, turn, json.dumps(state), now_ms()],
            )
        )
        if res != 1:
            raise NonRetriableError(f"session {session_id}: turn {turn} could not be saved")
        return dict(state["metrics"])


def build_agent(rt: Runtime, model_spec: str | None) -> Agent:
    """The builder for a session: its model, the toolbox, the critic when configured."""
    s = rt.settings
    model = make_model(model_spec, s)
    critic = None
    if s.critic_model:
        if s.critic_model == model.name:
            raise ModelConfigError(
                f"LOOPWRIGHT_CRITIC_MODEL is the builder's own model ({model.name}); a critic "
                "must be a different model (or unset it)"
            )
        critic = Critic(make_model(s.critic_model, s), s.critic_threshold)
    return Agent(model, make_toolbox(rt), s, critic)


def run_turn(ctx: Any) -> dict[str, Any]:
    """The built-in skill's body: load, run the agent's turn, save."""
    from loopwright.runner.execute import current_runtime

    rt = current_runtime()
    data = ctx.event["data"]
    sid, turn, message = str(data["session"]), int(data["turn"]), str(data["message"])
    store = SessionStore(rt.redis, rt.keys)
    loaded = ctx.step.run("load-session", store.load_turn, sid, turn)
    state = loaded["state"]
    agent = build_agent(rt, state.get("model") or default_model_spec(rt.settings))
    result = agent.turn(ctx.step, state, message, key=f"{sid}:{turn}")
    metrics = ctx.step.run(
        "save-session", store.save_turn, sid, turn, result.state, loaded["started_ms"]
    )
    report = result.report()
    report["metrics"] = metrics
    report["session"] = sid
    report["turn"] = turn
    return report
