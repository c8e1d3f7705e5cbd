"""What a model call costs, from list prices in USD per million tokens.

The built-in table covers a handful of common models; ``settings.llm_pricing`` overrides and
extends it (keys are full model strings). Local servers and the offline model cost nothing.

Prompt caching: cache reads are billed at the ``cached`` rate (Anthropic 0.1x input, OpenAI
0.25x-0.5x), cache writes at the ``cache_write`` rate — Anthropic's 1.25x input for its
default 5-minute lifetime; OpenAI does not charge for writes, so its rate is the input rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loopwright.llm.types import Usage
from loopwright.settings import Settings


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens: uncached input, output, cached input (cache reads) and input
    written to the cache (``None``: the input rate)."""

    input: float
    output: float
    cached: float
    cache_write: float | None = None

    @property
    def write(self) -> float:
        """The rate of a cache write."""
        return self.input if self.cache_write is None else self.cache_write


BUILTIN_PRICES: dict[str, Price] = {
    "openai:gpt-4.1": Price(2.0, 8.0, 0.5),
    "openai:gpt-4.1-mini": Price(0.4, 1.6, 0.1),
    "openai:gpt-4.1-nano": Price(0.1, 0.4, 0.025),
    "openai:gpt-4o": Price(2.5, 10.0, 1.25),
    "openai:gpt-4o-mini": Price(0.15, 0.6, 0.075),
    "anthropic:claude-sonnet-4-5": Price(3.0, 15.0, 0.3, 3.75),
    "anthropic:claude-sonnet-4-0": Price(3.0, 15.0, 0.3, 3.75),
    "anthropic:claude-opus-4-1": Price(15.0, 75.0, 1.5, 18.75),
    "anthropic:claude-haiku-4-5": Price(1.0, 5.0, 0.1, 1.25),
}

FREE_PROVIDERS = frozenset({"ollama", "vllm", "llamacpp", "lmstudio", "offline", "scripted"})

# Dated snapshots (gpt-4.1-2025-04-14, claude-sonnet-4-5-20250929) cost what their alias costs.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")


def price_of(model: str, settings: Settings) -> Price | None:
    """The price of ``model`` (a full model string), or ``None`` when it is not known."""
    if model.split(":", 1)[0] in FREE_PROVIDERS:
        return Price(0.0, 0.0, 0.0)
    for key in (model, _DATE_SUFFIX.sub("", model)):
        override = settings.llm_pricing.get(key)
        if override is not None:
            rate_in = float(override.get("input", 0.0))
            return Price(
                rate_in,
                float(override.get("output", 0.0)),
                float(override.get("cached", rate_in)),
                float(override.get("cache_write", rate_in)),
            )
        if key in BUILTIN_PRICES:
            return BUILTIN_PRICES[key]
    return None


def known_price(model: str, settings: Settings) -> bool:
    """Whether :func:`cost_usd` knows what ``model`` costs (else it reports 0.0)."""
    return price_of(model, settings) is not None


def cost_usd(model: str, usage: Usage, settings: Settings) -> float:
    """USD for ``usage`` on ``model``: cache reads at the cached rate, cache writes at the
    cache-write rate, the rest of the input at the input rate, output at the output rate.
    0.0 for a model without a known price."""
    price = price_of(model, settings)
    if price is None:
        return 0.0
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    uncached = usage.input_tokens - cached - written
    return (
        uncached * price.input
        + cached * price.cached
        + written * price.write
        + usage.output_tokens * price.output
    ) / 1_000_000
