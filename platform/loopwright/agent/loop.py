"""The builder's turn: a ReAct loop whose every model call and tool call is a durable step.

``Agent.turn`` is deterministic given its step outputs: on a replay after a crash the model
calls and tool calls that finished come back from their checkpoints, the code between them
recomputes the same conversation, and execution continues at the first unfinished step.
Around the loop sits the engineering that makes it dependable:

- **budgets**: steps per turn, tokens and money per session; hitting one ends the turn with a
  summary of what was done;
- **re-anchoring**: past a step or prompt-size threshold the conversation is compacted into a
  summary plus the most recent exchanges; the system prompt and the tool definitions are never
  touched, so the provider's prefix cache keeps hitting;
- **loop detection** (:mod:`loopwright.agent.detect`): a first detection adds a corrective
  note, a second ends the turn with a report;
- **Reflexion**: a rejected submission comes back with its findings and a request for a short
  self-critique; after ``agent_max_submissions`` rejections of one skill the turn ends with an
  honest report;
- an optional **verifier-critic** (a different model) scores each submission first; a score
  under the threshold counts as a rejection.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from loopwright.agent.detect import Detection, LoopDetector, announces_action
from loopwright.agent.prompts import BUILDER_SYSTEM, CRITERIA, CRITIC_SYSTEM, NOTE
from loopwright.agent.tools import ToolBox, ToolResult
from loopwright.errors import InfrastructureError
from loopwright.llm.errors import ModelError
from loopwright.llm.pricing import cost_usd
from loopwright.llm.types import Completion, Message, Model, ToolSpec, Usage
from loopwright.sdk.errors import NonRetriableError, StepFailedError
from loopwright.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
EMPTY_ANSWER = "(the model gave an empty answer)"
SKILL_NAME = re.compile(r"""name\s*=\s*["']([a-z][a-z0-9-]{0,63})["']""")


class Steps(Protocol):
    """Where the loop's steps run: ``ctx.step`` (durable) or :class:`InlineSteps`."""

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


class InlineSteps:
    """Steps that just call the function (benchmarks, one-off use without durability)."""

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


def new_metrics() -> dict[str, Any]:
    return {
        "turns": 0,
        "steps": 0,
        "model_calls": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "rejections": 0,
        "accepted": 0,
        "loops_detected": 0,
        "reanchors": 0,
        "wall_ms": 0,
    }


def new_state(session_id: str, model: str) -> dict[str, Any]:
    """A fresh session state (what the session store keeps between turns)."""
    return {
        "id": session_id,
        "model": model,
        "messages": [],
        "since_anchor": 0,
        "metrics": new_metrics(),
        "ledger": {"skills": {}, "runs": [], "requests": []},
    }


def estimate_tokens(messages: list[Message]) -> int:
    return (
        sum(len(m.content) + len(json.dumps([c.arguments for c in m.tool_calls])) for m in messages)
        // 4
    )


@dataclass(slots=True)
class TurnResult:
    """How a turn ended: the reply for the person, why it stopped early (if it did), the
    session state to save, and this turn's tool activity (for rendering)."""

    reply: str
    stopped: str | None
    state: dict[str, Any]
    activity: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "stopped": self.stopped,
            "metrics": self.state["metrics"],
            "activity": self.activity,
        }


class Critic:
    """A second model that scores a submission against the rubric in ``CRITIC_SYSTEM``."""

    def __init__(self, model: Model, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    def review(self, source: str, tests: Any) -> dict[str, Any]:
        """Scores, mean score and notes; an unusable answer fails the review (fail closed)."""
        prompt = (
            f"Skill source:\n```python\n{source}\n```\nTest cases:\n```json\n"
            + json.dumps(tests, indent=1)[:20000]
            + "\n```"
        )
        try:
            comp = self.model.complete(CRITIC_SYSTEM, [Message("user", prompt)], [], max_tokens=800)
        except ModelError as exc:
            return {
                "passed": False,
                "score": 0.0,
                "notes": f"critic unavailable: {exc}",
                "usage": Usage().to_dict(),
                "model": self.model.name,
            }
        out: dict[str, Any] = {"usage": comp.usage.to_dict(), "model": self.model.name}
        match = re.search(r"\{.*\}", comp.text, re.DOTALL)
        try:
            raw = json.loads(match.group(0)) if match else None
            scores = {c: max(0.0, min(1.0, float(raw[c]))) for c in CRITERIA}  # type: ignore[index]
        except (ValueError, TypeError, KeyError):
            out.update(passed=False, score=0.0, notes="critic answer was not the JSON asked for")
            return out
        score = sum(scores.values()) / len(scores)
        out.update(
            passed=score >= self.threshold,
            score=round(score, 3),
            scores=scores,
            notes=str(raw.get("notes", ""))[:2000],  # type: ignore[union-attr]
        )
        return out


class Agent:
    """One builder: model, tools, optional critic and the settings that bound them."""

    def __init__(
        self, model: Model, toolbox: ToolBox, settings: Settings, critic: Critic | None = None
    ) -> None:
        self.model = model
        self.toolbox = toolbox
        self.settings = settings
        self.critic = critic
        self.system = BUILDER_SYSTEM
        self.tools: list[ToolSpec] = toolbox.specs()

    # Steps' bodies: plain functions of their inputs returning JSON.

    def _complete(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            comp = self.model.complete(
                self.system,
                [Message.from_dict(m) for m in messages],
                self.tools,
                max_tokens=self.settings.llm_max_output_tokens,
            )
        except ModelError as exc:
            if exc.retryable:
                raise
            raise NonRetriableError(f"{type(exc).__name__}: {exc}") from None
        return comp.to_dict()

    def _tool(self, name: str, arguments: dict[str, Any], key: str) -> dict[str, Any]:
        return self.toolbox.call(name, arguments, key=key).to_dict()

    # The loop.

    def turn(self, steps: Steps, state: dict[str, Any], request: str, key: str) -> TurnResult:
        """Answer ``request``: model and tool steps until a final answer or a stop."""
        s = self.settings
        m = state["metrics"]
        ledger = state["ledger"]
        m["turns"] += 1
        ledger["requests"] = (ledger["requests"] + [request[:500]])[-10:]
        messages = [Message.from_dict(x) for x in state["messages"]]
        messages.append(Message("user", request))
        detector = LoopDetector()
        detections = 0
        submissions: dict[str, int] = {}
        activity: list[dict[str, Any]] = []
        turn_steps = 0
        i = 0

        def done(reply: str, stopped: str | None, add_message: bool) -> TurnResult:
            if add_message:
                messages.append(Message("assistant", reply))
            state["messages"] = [x.to_dict() for x in messages]
            return TurnResult(reply, stopped, state, activity)

        while True:
            stop = self._budget_stop(m, turn_steps)
            if stop is not None:
                return done(self._stop_report(stop, activity), stop.split(":")[0], True)
            if (
                state["since_anchor"] >= s.agent_reanchor_steps
                or estimate_tokens(messages) >= s.agent_reanchor_tokens
            ):
                messages = self._reanchor(state, messages, request)
            i += 1
            try:
                raw = steps.run(f"model-{i}", self._complete, [x.to_dict() for x in messages])
            except (StepFailedError, NonRetriableError, ModelError) as exc:
                # Durable steps turn a failed call into StepFailedError; inline steps raise.
                return done(f"The model call failed, so I stopped: {exc}", "model-error", True)
            comp = Completion.from_dict(raw)
            self._account(m, comp.usage, self.model.name)
            m["model_calls"] += 1
            turn_steps += 1
            m["steps"] += 1
            state["since_anchor"] += 1
            messages.append(comp.message())
            if not comp.tool_calls:
                if not comp.text.strip():
                    # An empty final answer would make the next request invalid for providers
                    # that refuse empty text blocks; keep a visible placeholder instead.
                    messages[-1].content = EMPTY_ANSWER
                    return done(EMPTY_ANSWER, None, False)
                if not announces_action(comp.text):
                    return done(comp.text, None, False)
                det = detector.on_text(comp.text)
                if det is None:
                    messages.append(
                        Message(
                            "user",
                            f"{NOTE} You said you would act but called "
                            "no tool. Call the tool now, or give your final "
                            "answer.",
                        )
                    )
                    continue
                detections += 1
                m["loops_detected"] += 1
                if detections >= 2:
                    return done(self._loop_report(det, activity), "loop", True)
                messages.append(Message("user", self._corrective(det)))
                detector.reset()
                continue
            notes: list[str] = []
            final: tuple[str, str] | None = None
            for j, call in enumerate(comp.tool_calls, 1):
                if turn_steps >= s.agent_max_steps_per_turn:
                    # Every call still gets a result, so the conversation stays well-formed.
                    messages.append(
                        Message(
                            "tool",
                            "not run: the step budget of this turn is used up",
                            tool_call_id=call.id,
                            name=call.name,
                            is_error=True,
                        )
                    )
                    final = final or (
                        self._stop_report(
                            self._budget_stop(m, turn_steps) or "steps: budget", activity
                        ),
                        "steps",
                    )
                    continue
                result = self._run_call(steps, call.name, call.arguments, call.error, i, j, key, m)
                turn_steps += 1
                m["steps"] += 1
                state["since_anchor"] += 1
                m["tool_calls"] += 1
                if not result.ok:
                    m["tool_errors"] += 1
                messages.append(
                    Message(
                        "tool",
                        result.content,
                        tool_call_id=call.id,
                        name=call.name,
                        is_error=not result.ok,
                    )
                )
                activity.append(_activity(call.name, call.arguments, result))
                _record(ledger, call.name, call.arguments, result)
                verdict = result.data if isinstance(result.data, dict) else None
                if call.name == "write_skill" and verdict is not None and "accepted" in verdict:
                    if verdict["accepted"]:
                        m["accepted"] += 1
                    else:
                        m["rejections"] += 1
                        name = verdict.get("name") or _skill_name(call.arguments) or "(unnamed)"
                        submissions[name] = submissions.get(name, 0) + 1
                        if submissions[name] >= s.agent_max_submissions:
                            final = (
                                self._reflexion_report(name, submissions[name], verdict, activity),
                                "rejected",
                            )
                        else:
                            notes.append(self._reflexion(name, submissions[name], verdict))
                det = detector.on_tool(call.name, call.arguments, result.ok, result.content)
                if det is not None and final is None:
                    m["loops_detected"] += 1
                    detections += 1
                    if detections >= 2:
                        final = (self._loop_report(det, activity), "loop")
                    else:
                        notes.append(self._corrective(det))
                        detector.reset()
            if final is not None:
                return done(final[0], final[1], True)
            for note in notes:
                messages.append(Message("user", note))

    def _run_call(
        self,
        steps: Steps,
        name: str,
        arguments: dict[str, Any],
        error: str | None,
        i: int,
        j: int,
        key: str,
        m: dict[str, Any],
    ) -> ToolResult:
        if error is not None:
            return ToolResult(
                False,
                f"the arguments of {name} were not a JSON object ({error}); "
                "call it again with valid JSON arguments",
            )
        if name not in self.toolbox.names:
            return self.toolbox.call(name, arguments)  # the unknown-tool message, no effects
        if name == "write_skill" and self.critic is not None:
            review = steps.run(
                f"critic-{i}-{j}",
                self.critic.review,
                arguments.get("source", ""),
                arguments.get("tests"),
            )
            self._account(m, Usage.from_dict(review.get("usage") or {}), str(review["model"]))
            if not review["passed"]:
                view = {
                    "accepted": False,
                    "name": _skill_name(arguments),
                    "stage": "critic",
                    "summary": f"the reviewer scored it {review['score']:.2f} (needs "
                    f"{self.critic.threshold:.2f})",
                    "scores": review.get("scores"),
                    "findings": [{"rule": "critic", "message": review["notes"]}],
                }
                return ToolResult(False, json.dumps(view), view)
        try:
            raw = steps.run(f"tool-{i}-{j}-{name}", self._tool, name, arguments, f"{key}:{i}:{j}")
        except (StepFailedError, InfrastructureError, RedisError) as exc:
            # An outage that outlasted the step's retries: tell the model (and the person).
            return ToolResult(False, f"{name} could not run (platform problem, retried): {exc}")
        return ToolResult.from_dict(raw)

    def _account(self, m: dict[str, Any], usage: Usage, model: str) -> None:
        m["input_tokens"] += usage.input_tokens
        m["output_tokens"] += usage.output_tokens
        m["cached_tokens"] += usage.cached_tokens
        m["cost_usd"] = round(m["cost_usd"] + cost_usd(model, usage, self.settings), 6)

    def _budget_stop(self, m: dict[str, Any], turn_steps: int) -> str | None:
        s = self.settings
        if turn_steps >= s.agent_max_steps_per_turn:
            return f"steps: {turn_steps} steps in this turn (limit {s.agent_max_steps_per_turn})"
        tokens = m["input_tokens"] + m["output_tokens"]
        if tokens >= s.agent_max_tokens_per_session:
            return (
                f"tokens: {tokens} tokens in this session (limit {s.agent_max_tokens_per_session})"
            )
        if s.agent_max_cost_per_session and m["cost_usd"] >= s.agent_max_cost_per_session:
            return (
                f"money: ${m['cost_usd']:.4f} spent in this session "
                f"(limit ${s.agent_max_cost_per_session:.2f})"
            )
        return None

    # Re-anchoring.

    def _reanchor(
        self, state: dict[str, Any], messages: list[Message], request: str
    ) -> list[Message]:
        """A summary message plus the last ``agent_keep_turns`` exchanges, starting at an
        assistant message so no tool result loses its call."""
        starts = [k for k, msg in enumerate(messages) if msg.role == "assistant"]
        keep = self.settings.agent_keep_turns
        cut = starts[-keep] if len(starts) >= keep else (starts[0] if starts else len(messages))
        state["since_anchor"] = 0
        state["metrics"]["reanchors"] += 1
        summary = Message("user", summarize(state["ledger"], request))
        return [summary, *messages[cut:]]

    # Reports and notes.

    def _reflexion(self, name: str, n: int, verdict: dict[str, Any]) -> str:
        return (
            f"{NOTE} Submission {n} of {self.settings.agent_max_submissions} for skill {name!r} "
            f"was rejected at stage {verdict.get('stage')}. Before you resubmit, critique your "
            "last attempt in one or two sentences: what caused each finding and what you will "
            "change. Then call write_skill with the fix."
        )

    def _reflexion_report(
        self, name: str, n: int, verdict: dict[str, Any], activity: list[dict[str, Any]]
    ) -> str:
        findings = verdict.get("findings") or []
        shown = "\n".join(
            f"- {f.get('message', '')} [{f.get('rule', '')}]" for f in findings[:5]
        ) or "- " + str(verdict.get("summary", ""))
        return (
            f"I could not get skill {name!r} accepted: {n} submissions were rejected, the "
            f"limit for one request. Nothing was registered for it. The last rejection (stage "
            f"{verdict.get('stage')}) said:\n{shown}\n"
            "You can rephrase the request, relax a requirement, or write the skill yourself "
            "with `loopwright skills submit`." + _done_line(activity)
        )

    def _corrective(self, det: Detection) -> str:
        return (
            f"{NOTE} Loop detected ({det.pattern}): {det.message}. Stop repeating it. Change "
            "your approach (re-read the findings, use a different tool or different "
            "arguments) or give the person your final answer now."
        )

    def _loop_report(self, det: Detection, activity: list[dict[str, Any]]) -> str:
        return (
            f"I stopped because I was going in circles ({det.pattern}: {det.message}), even "
            "after correcting course once." + _done_line(activity)
        )

    def _stop_report(self, stop: str, activity: list[dict[str, Any]]) -> str:
        kind, _, detail = stop.partition(": ")
        return f"I stopped: the {kind} budget is used up ({detail})." + _done_line(activity)


def _skill_name(arguments: dict[str, Any]) -> str | None:
    match = SKILL_NAME.search(str(arguments.get("source", "")))
    return match.group(1) if match else None


def _activity(name: str, arguments: dict[str, Any], result: ToolResult) -> dict[str, Any]:
    item: dict[str, Any] = {"tool": name, "ok": result.ok}
    if name in ("write_skill", "test_skill"):
        item["skill"] = _skill_name(arguments)
        if isinstance(result.data, dict):
            item["verdict"] = {
                k: result.data.get(k) for k in ("accepted", "name", "version", "stage", "summary")
            }
    elif isinstance(arguments.get("name"), str):
        item["name"] = arguments["name"]
    if not result.ok and not isinstance(result.data, dict):
        item["error"] = result.content[:300]
    if name == "run_skill" and isinstance(result.data, dict):
        item["run"] = {k: result.data.get(k) for k in ("run_id", "status")}
    return item


def _done_line(activity: list[dict[str, Any]]) -> str:
    accepted = [
        f"{a['verdict']['name']}@{str(a['verdict']['version'])[:12]}"
        for a in activity
        if a["tool"] == "write_skill" and (a.get("verdict") or {}).get("accepted")
    ]
    runs = [f"{a['run']['run_id']} ({a['run']['status']})" for a in activity if a.get("run")]
    parts = [f"{len(activity)} tool calls this turn"]
    if accepted:
        parts.append("registered: " + ", ".join(accepted))
    else:
        parts.append("nothing was registered")
    if runs:
        parts.append("runs: " + ", ".join(runs))
    return "\nDone so far: " + "; ".join(parts) + "."


def summarize(ledger: dict[str, Any], request: str) -> str:
    """The re-anchoring summary: built from the session's ledger of facts, deterministic."""
    lines = [f"{NOTE} Context re-anchored: earlier messages were compacted into this summary."]
    lines.append(f"Current request: {request[:2000]}")
    earlier = list(ledger["requests"][:-1])
    if earlier:
        lines.append("Earlier requests: " + " | ".join(r[:200] for r in earlier[-5:]))
    skills = ledger["skills"]
    if skills:
        lines.append("Skills so far:")
        for name, info in sorted(skills.items()):
            if info.get("accepted"):
                lines.append(f"- {name}: registered version {str(info.get('version'))[:12]}")
            else:
                lines.append(
                    f"- {name}: last submission rejected at {info.get('stage')}: "
                    f"{str(info.get('summary', ''))[:300]}"
                )
    if ledger["runs"]:
        lines.append(
            "Runs started: "
            + ", ".join(f"{r['skill']} {r['run_id']} ({r['status']})" for r in ledger["runs"][-8:])
        )
    lines.append("Continue from here; the most recent exchanges follow.")
    return "\n".join(lines)


def _record(ledger: dict[str, Any], name: str, arguments: dict[str, Any], r: ToolResult) -> None:
    if name == "write_skill" and isinstance(r.data, dict) and "accepted" in r.data:
        skill = r.data.get("name") or _skill_name(arguments) or "(unnamed)"
        ledger["skills"][skill] = {
            "accepted": bool(r.data["accepted"]),
            "version": r.data.get("version"),
            "stage": r.data.get("stage"),
            "summary": r.data.get("summary"),
        }
    elif name == "run_skill" and isinstance(r.data, dict) and "run_id" in r.data:
        ledger["runs"] = (
            ledger["runs"]
            + [
                {
                    "skill": arguments.get("name"),
                    "run_id": r.data["run_id"],
                    "status": r.data.get("status"),
                }
            ]
        )[-20:]
