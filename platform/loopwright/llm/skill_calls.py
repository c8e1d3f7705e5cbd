"""``ctx.step.llm`` on the host: one model call for a skill, with an optional JSON schema.

The model is ``skill_model`` (else the builder's model). The offline template model only builds
skills, so a skill that calls the LLM without a real model configured fails its step with a
message saying what to set. The model object is built on first use and reused:
:class:`SkillCalls` is the runner's ``SkillModel`` (``loopwright.runner.ports``), one per runtime.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from loopwright.llm.errors import ModelConfigError, ModelError
from loopwright.llm.factory import default_model_spec, make_model
from loopwright.llm.pricing import cost_usd
from loopwright.llm.types import Message, Model
from loopwright.runner.usage import add_usage
from loopwright.sdk.errors import NonRetriableError
from loopwright.settings import Settings

MAX_PROMPT_CHARS = 200_000
SYSTEM = (
    "You are called from an automated workflow step. Answer the prompt directly and briefly, "
    "without preamble."
)


def _parse(text: str, schema: dict[str, Any]) -> Any:
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body.strip())
    except ValueError:
        match = re.search(r"[\[{].*[\]}]", body, re.DOTALL)
        if match is None:
            raise ValueError(f"the model's answer is not JSON: {text[:200]!r}") from None
        try:
            value = json.loads(match.group(0))
        except ValueError:
            raise ValueError(f"the model's answer is not JSON: {text[:200]!r}") from None
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind in types and not isinstance(value, types[kind]):
        raise ValueError(f"the model answered {type(value).__name__}, the schema asks for {kind}")
    if kind in ("number", "integer") and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ValueError(f"the model answered {type(value).__name__}, the schema asks for {kind}")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required") or [] if k not in value]
        if missing:
            raise ValueError(f"the model's answer lacks required keys {missing}")
    return value


class SkillCalls:
    """``ctx.step.llm`` for one runtime: the model, made from settings when first called."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._spec = ""

    def model(self) -> Model:
        """The configured skill model; ``NonRetriableError`` when none can be made."""
        with self._lock:
            if self._model is not None:
                return self._model
            s = self._settings
            spec = s.skill_model or default_model_spec(s)
            if spec == "offline":
                raise NonRetriableError(
                    "ctx.step.llm needs a real model: set LOOPWRIGHT_SKILL_MODEL (or "
                    "LOOPWRIGHT_MODEL) and its API key; the offline template model only builds "
                    "skills"
                )
            try:
                self._model = make_model(spec, s)
                self._spec = spec
            except ModelConfigError as exc:
                raise NonRetriableError(f"ctx.step.llm: {exc}") from None
            return self._model

    def __call__(self, prompt: str, schema: dict[str, Any] | None) -> Any:
        """One call for ``ctx.step.llm`` (see the module doc)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise NonRetriableError("ctx.step.llm: the prompt must be a non-empty string")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise NonRetriableError(
                f"ctx.step.llm: the prompt is {len(prompt)} characters (limit {MAX_PROMPT_CHARS})"
            )
        if schema is not None and not isinstance(schema, dict):
            raise NonRetriableError("ctx.step.llm: schema must be a JSON schema object")
        model = self.model()
        text = prompt
        if schema is not None:
            text += (
                "\n\nAnswer with one JSON value only, no prose, matching this JSON schema:\n"
                + json.dumps(schema)
            )
        try:
            comp = model.complete(SYSTEM, [Message("user", text)], [])
        except ModelError as exc:
            if exc.retryable:
                raise
            raise NonRetriableError(f"ctx.step.llm: {exc}") from None
        cost = cost_usd(self._spec, comp.usage, self._settings)  # for the run's rollup
        add_usage(comp.usage.input_tokens, comp.usage.output_tokens, round(cost * 1_000_000))
        return comp.text if schema is None else _parse(comp.text, schema)
