"""The model's candidate: a rewrite of the skill from its diagnosis and its failing runs.

The model (``LOOPWRIGHT_REVIEW_MODEL``, else the builder's) gets the diagnosis, the current
source, and for a few failing runs of the *search* split their input and the answers their
tool calls recorded (bounded). It answers with the whole new source in one ```python block.
The answer goes through the sidecar's full pipeline as a dry run (syntax, policy, manifest,
capabilities, the old version's test cases in the sandbox: what the builder's ``test_skill``
tool does) and through the overfitting check; nothing is registered here — promotion submits
the version for real once the gate has passed it. A rejected answer or a failed gate gets one
more attempt, with the findings in the prompt.

The model call and the checking are separate functions so the weekly review makes each a
durable step: a worker killed after the call never sends it again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from loopwright.history.replay import Candidate
from loopwright.llm.errors import ModelError
from loopwright.llm.factory import OFFLINE, default_model_spec, make_model
from loopwright.llm.pricing import cost_usd
from loopwright.llm.types import Message
from loopwright.review.candidates import Outcome, Proposal, copied_literals, failing
from loopwright.runner.recording import Recording
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.store import Registry

SYSTEM = """\
You repair Loopwright skills. A skill is a Python module with one @skill(...) function whose
side effects run inside ctx.step.run(...) steps. You are given why the skill was flagged, its
current source, and failing runs with the answers their tool calls got. Write the complete
corrected module in one ```python block and, when the old test cases no longer fit (say, a
field was renamed), the new test cases as a JSON list in one ```json block. Keep the skill's
name, tools, hosts and params unless the diagnosis says they are wrong. Fix the cause, in
general: never copy values from the failing runs (ids, timestamps, measured numbers) into the
code."""
MAX_RUNS = 3
MAX_CHARS = 2000
CODE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
TESTS = re.compile(r"```json[ \t]*\n(.*?)```", re.DOTALL)


def model_spec(rt: Runtime) -> str:
    """The model the review writes with."""
    return rt.settings.review_model or default_model_spec(rt.settings)


def needs_model(rt: Runtime) -> bool:
    """True when only the offline template model is available (it cannot repair skills)."""
    return model_spec(rt) == OFFLINE


def _bounded(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "…(truncated)"


def prompt(
    diagnosis: str, old: Candidate, runs: list[Recording], findings: str | None = None
) -> str:
    """The user message: diagnosis, source, failing runs (input, error, recorded answers)."""
    parts = [f"Skill {old.manifest.name!r} was flagged by the weekly review.", "", "Diagnosis:"]
    parts += [diagnosis.strip() or "(none)", "", "Current source:", "```python", old.source]
    parts += ["```", ""]
    for rec in failing(runs)[:MAX_RUNS]:
        parts.append(
            f"Run {rec.run_id}: {rec.status}"
            + (f" (labelled {rec.feedback})" if rec.feedback else "")
            + (f", error: {rec.error[:500]}" if rec.error else "")
        )
        parts.append(f"  input: {_bounded(rec.event.get('data'))}")
        for call in rec.tool_calls[:10]:
            req = call.get("req") or {}
            what = f"{req.get('method', '')} {req.get('url', '')}".strip() or call.get("tool")
            got = call.get("error") or _bounded(call.get("res"))
            parts.append(f"  {call.get('tool')} {what} -> {got}")
    if findings:
        parts += ["", "Your previous attempt was rejected:", findings.strip()]
    parts += ["", "Answer with the complete new module in one ```python block."]
    return "\n".join(parts)


def ask(rt: Runtime, text: str) -> dict[str, Any]:
    """One model call (a step body): the answer text, tokens and cost; ``error`` when the
    model failed for good."""
    spec = model_spec(rt)
    try:
        model = make_model(spec, rt.settings)
        comp = model.complete(SYSTEM, [Message("user", text)], [], max_tokens=8192)
    except ModelError as exc:
        return {"model": spec, "text": "", "error": f"{type(exc).__name__}: {exc}"[:500],
                "usage": {}, "cost_usd": 0.0}  # fmt: skip
    return {
        "model": spec,
        "text": comp.text,
        "error": None,
        "usage": comp.usage.to_dict(),
        "cost_usd": round(cost_usd(spec, comp.usage, rt.settings), 6),
    }


def extract(text: str) -> str | None:
    """The first ```python block of an answer (or None)."""
    found = CODE.search(text)
    return found.group(1) if found else None


def extract_tests(text: str) -> list[Any] | None:
    """The test cases of an answer's ```json block (None when there is none or it is not a
    JSON list: the old version's cases are used)."""
    found = TESTS.search(text)
    try:
        cases = json.loads(found.group(1)) if found else None
    except ValueError:
        return None
    return cases if isinstance(cases, list) else None


def check(rt: Runtime, old: Candidate, answer: dict[str, Any], runs: list[Recording]) -> Outcome:
    """The answer as a proposal, or why it is not one: no code, overfitted to the failing runs,
    rejected by the sidecar (a dry run with its own test cases, else the old version's), or
    another skill."""
    if answer.get("error"):
        return Outcome(None, f"the model call failed: {answer['error']}")
    source = extract(str(answer.get("text") or ""))
    if source is None:
        return Outcome(None, "the model's answer had no ```python block")
    try:  # first, and cheap: no guest is started for an overfitted answer
        copied = copied_literals(old.source, source, failing(runs))
    except (SyntaxError, ValueError):
        copied = []  # the sidecar names the syntax error below
    if copied:
        return Outcome(
            None,
            "overfitted: the rewrite copies values from the failing runs: " + ", ".join(copied[:5]),
        )
    tests = extract_tests(str(answer.get("text") or "")) or old_tests(rt, old)
    verdict = Sidecar(rt).submit(source, tests, author="review", dry_run=True)
    if not verdict.accepted:
        return Outcome(None, f"the sidecar rejected the rewrite: {verdict.first_line()}")
    if verdict.name != old.manifest.name:
        return Outcome(None, f"the rewrite declares skill {verdict.name!r}, not the flagged one")
    note = f"rewritten by {answer.get('model')}"
    return Outcome(Proposal("model", note, source=source, tests=tests), note)


def old_tests(rt: Runtime, old: Candidate) -> list[Any]:
    """The test cases registered with the old version."""
    if not old.version:
        return []
    return list(Registry(rt.redis, rt.keys).version(old.manifest.name, old.version).tests or [])
