"""Layer 1 of the Loopwright skill sandbox: restricted compile and runtime guards.

See :mod:`loopwright.sandbox.policy` for the policy and its decisions and
:mod:`loopwright.sandbox.guards` for the functions restricted code calls.
"""

from loopwright.sandbox.policy import (
    ALLOWED_MODULES,
    FORBIDDEN_NAMES,
    MAX_SOURCE_BYTES,
    MODULE_EXPORTS,
    CompiledSkill,
    Finding,
    GuardViolation,
    PolicyViolation,
    check_source,
    compile_skill,
    make_globals,
    printed_output,
)

__all__ = [
    "ALLOWED_MODULES",
    "FORBIDDEN_NAMES",
    "MAX_SOURCE_BYTES",
    "MODULE_EXPORTS",
    "CompiledSkill",
    "Finding",
    "GuardViolation",
    "PolicyViolation",
    "check_source",
    "compile_skill",
    "make_globals",
    "printed_output",
]
