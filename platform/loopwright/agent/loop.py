"""The builder's turn: a ReAct loop whose every model call and tool call is a durable step.

``Agent.turn`` is deterministic given its step outputs: on a replay after a crash the model
calls and tool calls that finished come back from their checkpoints, the code between them
recomputes the same conversation, and execution continues at the first unfinished step.
Around the loop sits the engineering that makes it dependable:

- **budgets** (:mod:`loopwright.agent.budgets`): steps per turn, tokens and money per session;
  hitting one ends the turn with a summary of what was done;
- **re-anchoring** (:mod:`loopwright.agent.reanchor`): past a step or prompt-size threshold the
  conversation is compacted into a summary plus the most recent exchanges; the system prompt
  and the tool definitions are never touched, so the provider's prefix cache keeps hitting;
- **loop detection** (:mod:`loopwright.agent.detect`): a first detection adds a corrective
  note, a second ends the turn with a report;
- **Reflexion** (:mod:`loopwright.agent.notes`): a rejected submission comes back with its
  findings and a request for a short self-critique; after ``agent_max_submissions`` rejections
  of one skill the turn ends with an honest report;
- an optional **verifier-critic** (:mod:`loopwright.agent.critic`, a different model) scores
  each submission first; a score under the threshold counts as a rejection.

The session's state and ledger live in :mod:`loopwright.agent.state`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from loopwright.agent.budgets import account, budget_stop
from loopwright.agent.critic import Critic
from loopwright.agent.detect import LoopDetector, announces_action
from loopwright.agent.notes import (
    changes_report,
    corrective,
    loop_report,
    reflexion,
    reflexion_report,
    stop_report,
)
from loopwright.agent.prompts import BUILDER_SYSTEM, NOTE
from loopwright.agent.reanchor import due as reanchor_due
from loopwright.agent.reanchor import reanchor
from loopwright.agent.state import (
    TurnResult,
    activity_item,
    record,
    session_skills,
    skill_name,
)
from loopwright.agent.tools import ToolBox, ToolResult
from loopwright.errors import InfrastructureError
from loopwright.llm.errors import ModelError
from loopwright.llm.types import Completion, Message, Model, ToolSpec, Usage
from loopwright.sdk.errors import NonRetriableError, StepFailedError
from loopwright.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
EMPTY_ANSWER = "(the model gave an empty answer)"


class Steps(Protocol):
    """Where the loop's steps run: ``ctx.step`` (durable) or :class:`InlineSteps`."""

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


class InlineSteps:
    """Steps that just call the function (benchmarks, one-off use without durability)."""

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


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
            # What changed, from tool results (diffs of edits, placeholder hosts, lifecycle
            # changes): the person sees it whatever the model chose to write.
            facts = changes_report(activity)
            if facts:
                reply = f"{reply}\n\n{facts}"
                if not add_message:
                    messages[-1].content = reply
            if add_message:
                messages.append(Message("assistant", reply))
            state["messages"] = [x.to_dict() for x in messages]
            return TurnResult(reply, stopped, state, activity)

        while True:
            stop = budget_stop(s, m, turn_steps)
            if stop is not None:
                return done(stop_report(stop, activity), stop.split(":")[0], True)
            if reanchor_due(s, state, messages):
                messages = reanchor(s, state, messages, request)
            i += 1
            try:
                raw = steps.run(f"model-{i}", self._complete, [x.to_dict() for x in messages])
            except (StepFailedError, NonRetriableError, ModelError) as exc:
                # Durable steps turn a failed call into StepFailedError; inline steps raise.
                return done(f"The model call failed, so I stopped: {exc}", "model-error", True)
            comp = Completion.from_dict(raw)
            account(m, comp.usage, self.model.name, s)
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
                    return done(loop_report(det, activity), "loop", True)
                messages.append(Message("user", corrective(det)))
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
                        stop_report(budget_stop(s, m, turn_steps) or "steps: budget", activity),
                        "steps",
                    )
                    continue
                self.toolbox.session_skills |= session_skills(ledger)
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
                activity.append(activity_item(call.name, call.arguments, result))
                record(ledger, call.name, call.arguments, result)
                verdict = result.data if isinstance(result.data, dict) else None
                if call.name == "write_skill" and verdict is not None and "accepted" in verdict:
                    if verdict["accepted"]:
                        m["accepted"] += 1
                    else:
                        m["rejections"] += 1
                        name = verdict.get("name") or skill_name(call.arguments) or "(unnamed)"
                        submissions[name] = submissions.get(name, 0) + 1
                        if submissions[name] >= s.agent_max_submissions:
                            final = (
                                reflexion_report(name, submissions[name], verdict, activity),
                                "rejected",
                            )
                        else:
                            notes.append(
                                reflexion(name, submissions[name], s.agent_max_submissions, verdict)
                            )
                det = detector.on_tool(call.name, call.arguments, result.ok, result.content)
                if det is not None and final is None:
                    m["loops_detected"] += 1
                    detections += 1
                    if detections >= 2:
                        final = (loop_report(det, activity), "loop")
                    else:
                        notes.append(corrective(det))
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
            usage = Usage.from_dict(review.get("usage") or {})
            account(m, usage, str(review["model"]), self.settings)
            if not review["passed"]:
                view = {
                    "accepted": False,
                    "name": skill_name(arguments),
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
