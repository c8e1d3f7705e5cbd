"""One problem found in a skill's source or test cases, for every reader that reports one.

The sandbox policy, the manifest reader, the sidecar's capability check and its test cases all
answer with this one type: a rule id, a 1-based position (0 when unknown), a message saying
what is wrong and a hint saying what to write instead. It lives in the SDK because the guest
image holds only ``loopwright.sdk`` and ``loopwright.sandbox``, and the policy (guest side)
and the sidecar (host side) must share it. Plain dataclass: no third-party import in the guest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: rule id, 1-based line and column (0 when unknown), message, hint.

    ``file`` is ``"source"`` or ``"tests"`` (the test cases' JSON).
    """

    rule: str
    line: int = 0
    col: int = 0
    message: str = ""
    hint: str = ""
    file: Literal["source", "tests"] = "source"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, e.g. to hand back to the authoring LLM (``file`` only for tests)."""
        out = asdict(self)
        if self.file == "source":
            del out["file"]
        return out

    def one_line(self) -> str:
        """``line 3:5: message [rule]``."""
        where = ["tests"] if self.file == "tests" else []
        if self.line:
            where.append(f"line {self.line}" + (f":{self.col}" if self.col else ""))
        prefix = " ".join(where)
        return f"{prefix + ': ' if prefix else ''}{self.message} [{self.rule}]"
