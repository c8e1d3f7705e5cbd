"""The scripted server's prompt cache: the providers' published rules, on a virtual clock.

A cache that serves any byte-identical prefix forever makes every placement of breakpoints
look free, so the benchmark could not show what re-anchoring or breakpoint placement saves.
This one follows the rules the providers document:

- **Lifetime** (both): an entry lives ``ttl`` seconds (5 minutes by default) after it was
  last written or read; a read refreshes it. Time is the server's virtual clock, which only
  moves when a test calls ``ScriptedServer.advance`` — no test waits.
- **OpenAI**: automatic; the longest prefix shared with a live earlier prompt counts when it
  is at least 1024 tokens, rounded down to a multiple of 128.
- **Anthropic**: entries are written only at ``cache_control`` breakpoints (at most 4, which
  ``scripted_checks`` enforces with a 400), and only for a prefix of at least the model's
  minimum (1024 tokens for Sonnet- and Opus-class models, 2048 for Haiku 3.x, 4096 for Haiku
  4.5 and Opus 4.5). A read looks for a live entry at each block boundary from a breakpoint
  back over the 20 blocks before it; an entry further back is not found, so a turn that adds
  more than 20 blocks after the only earlier breakpoint misses. The hit is
  ``cache_read_input_tokens``, the rest up to the last breakpoint
  ``cache_creation_input_tokens`` (billed at 1.25x input), and what follows it
  ``input_tokens``.

Entries are per model (Anthropic's keyed by a hash of the prefix bytes); the canonical prompt
and its block boundaries come from ``scripted.py``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

DEFAULT_TTL_SECONDS = 300.0
ANTHROPIC_MAX_BREAKPOINTS = 4
ANTHROPIC_LOOKBACK_BLOCKS = 20
OPENAI_MIN_CACHED_TOKENS = 1024
OPENAI_CACHE_GRANULARITY = 128
BYTES_PER_TOKEN = 4


def anthropic_min_cacheable_tokens(model: str) -> int:
    """The smallest prefix Anthropic caches for ``model`` (its published minimums)."""
    name = model.lower()
    if "haiku-4" in name or "opus-4-5" in name:
        return 4096
    if "haiku" in name:
        return 2048
    return 1024


@dataclass(frozen=True, slots=True)
class Block:
    """One content block of the canonical prompt: where it ends and whether it carries a
    ``cache_control`` breakpoint."""

    end: int
    breakpoint: bool


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """The cache's share of one prompt, in tokens: ``read`` from the cache, ``written`` to
    it (Anthropic only), the rest uncached."""

    read: int = 0
    written: int = 0


@dataclass(slots=True)
class PromptCache:
    """Live cache entries per protocol; thread-safe. ``now`` is the virtual clock."""

    ttl: float = DEFAULT_TTL_SECONDS
    now: float = 0.0
    _anthropic: dict[tuple[str, bytes], float] = field(default_factory=dict)
    _openai: dict[tuple[str, bytes], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, seconds: float) -> None:
        """Move the virtual clock forward (entries past their lifetime expire)."""
        if seconds < 0:
            raise ValueError("the virtual clock only moves forward")
        with self._lock:
            self.now += seconds

    def openai(self, model: str, prompt: bytes) -> int:
        """Cached tokens for an OpenAI prompt; remembers the prompt for later requests."""
        with self._lock:
            live = {k: t for k, t in self._openai.items() if t > self.now}
            best, shared = b"", 0
            for other, earlier in live:
                n = _common_prefix(prompt, earlier) if other == model else 0
                if n > shared:
                    best, shared = earlier, n
            if shared:
                live[(model, best)] = self.now + self.ttl  # a hit refreshes the entry
            live[(model, prompt)] = self.now + self.ttl
            self._openai = live
        tokens = shared // BYTES_PER_TOKEN
        if tokens < OPENAI_MIN_CACHED_TOKENS:
            return 0
        return tokens // OPENAI_CACHE_GRANULARITY * OPENAI_CACHE_GRANULARITY

    def anthropic(self, model: str, prompt: bytes, blocks: list[Block]) -> CacheUsage:
        """Cache reads and writes for an Anthropic prompt; writes its breakpoints' entries."""
        marks = [i for i, b in enumerate(blocks) if b.breakpoint]
        if not marks:
            return CacheUsage()
        minimum = anthropic_min_cacheable_tokens(model) * BYTES_PER_TOKEN
        with self._lock:
            self._anthropic = {k: t for k, t in self._anthropic.items() if t > self.now}
            hit = 0
            for mark in marks:
                for i in range(max(0, mark - ANTHROPIC_LOOKBACK_BLOCKS), mark + 1):
                    end = blocks[i].end
                    if end <= hit or end < minimum:
                        continue
                    if (model, _key(prompt, end)) in self._anthropic:
                        hit = end
            if hit:
                self._anthropic[(model, _key(prompt, hit))] = self.now + self.ttl
            last = blocks[marks[-1]].end
            if last < minimum:
                return CacheUsage()
            for mark in marks:
                end = blocks[mark].end
                if end >= minimum:
                    self._anthropic[(model, _key(prompt, end))] = self.now + self.ttl
        read = hit // BYTES_PER_TOKEN
        return CacheUsage(read=read, written=last // BYTES_PER_TOKEN - read)


def _key(prompt: bytes, end: int) -> bytes:
    return hashlib.sha256(prompt[:end]).digest()


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (binary search over slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
