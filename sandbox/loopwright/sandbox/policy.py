"""Layer 1 of the skill sandbox: restricted compilation and runtime guards.

A skill is Python source written by an LLM. Before it runs it goes through
three stages, each of which reports :class:`Finding` objects written for the
author to act on:

1. size: sources over :data:`MAX_SOURCE_BYTES` are refused unparsed;
2. syntax: the source must compile as ordinary Python;
3. policy: Loopwright's AST pass (imports, private names, forbidden
   builtins and attributes, classes, unsupported statements) plus
   RestrictedPython's own transformer, whose errors become findings too.

Code that passes is compiled by RestrictedPython, which routes attribute
access, subscripts, writes and so on through the guards in
:mod:`loopwright.sandbox.guards`; :func:`make_globals` supplies them.

Decisions worth knowing when writing skills:

* Classes are not allowed. Skills exchange JSON-shaped data; dicts, lists
  and ``collections.namedtuple`` cover it. Classes would bring metaclass
  machinery, dunder methods the host may call implicitly (``__repr__``,
  ``__eq__``, ``__del__`` when the runner handles a result), ``__class__``
  spoofing of the guards' ``isinstance`` checks, and the need to decide
  which objects are "skill-owned" for writes.
* ``print`` is captured, never written to the host's stdout: all output of
  one run is collected (bounded) and available via :func:`printed_output`.
* ``random`` is allowed, backed by a private generator per run. ``time`` is
  not: waiting and clocks are the SDK's durable primitives. ``datetime``
  (including ``now()``) is allowed; replay determinism is the runner's
  business (wrap nondeterministic work in a durable step), and a replay of a
  recorded run pins both (``sandbox/pins.py``).
* ``getattr`` and ``hasattr`` exist but are the guarded versions;
  ``setattr``/``delattr`` do not exist.

This layer does not bound CPU, memory, recursion depth or wall time, and it
cannot protect against interpreter bugs; the OS layer (separate process,
rlimits, namespaces) is responsible for those.
"""

from __future__ import annotations

import ast
import re
import types
from dataclasses import dataclass
from typing import Final

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, RestrictingNodeTransformer

from loopwright.sandbox.guards import (
    ALLOWED_MODULES,
    DENIED_ATTRIBUTES,
    FORBIDDEN_NAMES,
    FUTURE_FEATURES,
    MODULE_EXPORTS,
    SDK_MODULE,
    GuardViolation,
    PrintSink,
    guard_globals,
)
from loopwright.sandbox.pins import Pins
from loopwright.sdk.errors import SkillAuthorError
from loopwright.sdk.findings import Finding

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

MAX_SOURCE_BYTES: Final = 256 * 1024


class PolicyViolation(SkillAuthorError):  # noqa: N818 - the name is the public API
    """Raised by :func:`compile_skill` when the source has findings."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = list(findings)
        lines = [f"line {f.line}: [{f.rule}] {f.message}" for f in self.findings]
        super().__init__(f"{len(self.findings)} policy finding(s):\n" + "\n".join(lines))


@dataclass
class CompiledSkill:
    """Restricted bytecode for a skill that passed the policy."""

    code: types.CodeType
    filename: str


# RestrictedPython rejects these names in every context, bound or not.
_ALWAYS_FORBIDDEN: Final = frozenset({"builtins", "breakpoint"})
# RestrictedPython rewrites these two for print capture; they cannot be bound.
_RESERVED: Final = frozenset({"print", "printed"})

_HINTS: Final[dict[str, str]] = {
    "underscore-name": "Rename it without the leading underscore; private and dunder names "
    "are reserved for the sandbox.",
    "forbidden-attribute": "Do not walk frames, tracebacks, code objects or type "
    "hierarchies; work with the values themselves.",
    "forbidden-builtin": "Remove the call; it is not available in a skill.",
    "reserved-name": "Choose another name; 'print' and 'printed' are reserved.",
    "import-not-allowed": "Allowed modules: " + ", ".join(sorted(ALLOWED_MODULES)) + ".",
    "module-attribute-not-allowed": "Use one of the names this module offers in the sandbox.",
    "module-write": "Modules and imported objects are read-only; keep your own values in "
    "variables or dicts.",
    "class-not-allowed": "Use functions and dicts (or collections.namedtuple for records).",
    "statement-not-allowed": "Rewrite it with plain statements.",
    "restricted-compile": "Rewrite the construct with plain functions, dicts and lists.",
    "syntax-error": "Fix the syntax at the reported position; skills are Python 3.11 code.",
    "too-complex": "Split deeply nested expressions into smaller statements.",
}

_STATEMENT_HINTS: Final[dict[type[ast.AST], tuple[str, str]]] = {
    ast.AsyncFunctionDef: ("Async functions are not allowed.", "Use a plain def."),
    ast.AsyncFor: ("async for is not allowed.", "Use a plain for loop."),
    ast.AsyncWith: ("async with is not allowed.", "Use plain statements."),
    ast.Await: ("await is not allowed.", "Call the function directly."),
    ast.TryStar: (
        "except* (exception groups) is not allowed.",
        "Use try/except with ordinary exception classes.",
    ),
    ast.Match: (
        "match statements are not supported by the restricted compiler.",
        "Use if/elif chains.",
    ),
    ast.Nonlocal: (
        "nonlocal is not allowed.",
        "Keep mutable state in a dict or list: state = {'n': 0}; state['n'] = state['n'] + 1.",
    ),
    ast.AnnAssign: (
        "Annotated assignments (x: T = v) are not supported by the restricted compiler.",
        "Drop the annotation: x = v. Function parameter annotations are fine.",
    ),
}


def _split_lines(source: str) -> list[str]:
    # The tokenizer's notion of a line, not str.splitlines (which also
    # splits on form feeds and Unicode separators and would skew numbers).
    return re.split(r"\r\n|\r|\n", source)


class _PolicyVisitor(ast.NodeVisitor):
    """Loopwright's AST policy: precise, actionable findings with columns."""

    def __init__(self, tree: ast.Module, lines: list[str]) -> None:
        self.lines = lines
        self.findings: list[Finding] = []
        self.covered: set[tuple[str, int]] = set()
        self.bound: set[str] = set()
        self.import_bound: set[str] = set()
        self.module_aliases: dict[str, str] = {}
        self._scan_bindings(tree)

    def _scan_bindings(self, tree: ast.Module) -> None:
        other: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                other.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                other.add(node.name)
            elif isinstance(node, ast.arg):
                other.add(node.arg)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                other.add(node.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.partition(".")[0]
                    self.import_bound.add(bound)
                    if alias.asname or "." not in alias.name:
                        self.module_aliases[bound] = alias.name
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    self.import_bound.add(alias.asname or alias.name)
        self.bound = other | self.import_bound
        for name in other:
            # A rebound alias is no longer known to be the module.
            self.module_aliases.pop(name, None)

    def report(
        self,
        node: ast.AST,
        rule: str,
        message: str,
        hint: str | None = None,
        at: tuple[int, int] | None = None,
    ) -> None:
        """Record a finding at ``node`` (or at ``at``: line, UTF-8 byte offset)."""
        line, offset = at or (getattr(node, "lineno", 1), getattr(node, "col_offset", 0))
        col = offset + 1
        if 1 <= line <= len(self.lines):
            prefix = self.lines[line - 1].encode("utf-8", "surrogatepass")[:offset]
            col = len(prefix.decode("utf-8", "replace")) + 1
        self.findings.append(Finding(rule, line, col, message, hint or _HINTS[rule]))
        # RestrictedPython reports a node's first line; remember it for merging.
        self.covered.update({(rule, line), (rule, getattr(node, "lineno", line))})

    # Names ------------------------------------------------------------

    def check_binding(self, node: ast.AST, name: str, what: str) -> None:
        """A name the skill defines: variable, function, parameter, alias."""
        if name.startswith("_") and name != "_":
            self.report(
                node,
                "underscore-name",
                f'{what} "{name}" starts with "_"; such names are reserved for the sandbox.',
            )
        elif name in _RESERVED:
            self.report(node, "reserved-name", f'"{name}" cannot be used as a {what.lower()}.')
        elif name in _ALWAYS_FORBIDDEN:
            self.report(
                node, "forbidden-builtin", f'"{name}" is not available.', FORBIDDEN_NAMES[name]
            )

    def check_attribute_name(
        self, node: ast.AST, name: str, at: tuple[int, int] | None = None
    ) -> None:
        if name.startswith("_"):
            self.report(
                node,
                "underscore-name",
                f'Attribute "{name}" starts with "_"; private and dunder attributes '
                "are not accessible.",
                at=at,
            )
        elif name in ("format", "format_map"):
            self.report(
                node,
                "forbidden-attribute",
                f'".{name}" is not allowed: format strings can read attributes of their arguments.',
                "Use an f-string, e.g. f'{name}: {value:.2f}'.",
                at=at,
            )
        elif name in DENIED_ATTRIBUTES:
            self.report(
                node,
                "forbidden-attribute",
                f'Attribute "{name}" is not accessible: it reaches interpreter internals.',
                at=at,
            )

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id.startswith("_") and node.id != "_":
                self.report(
                    node,
                    "underscore-name",
                    f'Name "{node.id}" starts with "_"; such names are reserved for the sandbox.',
                )
            elif node.id in _ALWAYS_FORBIDDEN or (
                node.id in FORBIDDEN_NAMES and node.id not in self.bound
            ):
                self.report(
                    node,
                    "forbidden-builtin",
                    f'"{node.id}" is not available in a skill.',
                    FORBIDDEN_NAMES[node.id],
                )
        else:
            self.check_binding(node, node.id, "Name")

    def visit_arg(self, node: ast.arg) -> None:
        self.check_binding(node, node.arg, "Parameter")
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and node.arg.startswith("_"):
            self.report(node, "underscore-name", f'Keyword argument "{node.arg}" starts with "_".')
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.check_binding(node, node.name, "Function")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.check_binding(node, node.name, "Name")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self.check_binding(node, name, "Global")

    # Attributes and calls ---------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # Point at the attribute name itself, not the start of the chain.
        at = None
        if node.end_lineno is not None and node.end_col_offset is not None:
            at = (node.end_lineno, node.end_col_offset - len(node.attr.encode()))
        self.check_attribute_name(node, node.attr, at)
        target = node.value.id if isinstance(node.value, ast.Name) else None
        if target is not None and not isinstance(node.ctx, ast.Load):
            if target in self.import_bound:
                self.report(
                    node,
                    "module-write",
                    f'Cannot assign or delete "{target}.{node.attr}": imported modules '
                    "and objects are read-only.",
                )
        elif target in self.module_aliases and not node.attr.startswith("_"):
            module = self.module_aliases[target]
            exports = MODULE_EXPORTS.get(module)
            if module != SDK_MODULE and exports is not None and node.attr not in exports:
                self.report(
                    node,
                    "module-attribute-not-allowed",
                    f'"{module}.{node.attr}" is not available in the sandbox.',
                    f"Available from {module}: {', '.join(sorted(exports))}.",
                )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(x, "literal") is the same access as x.literal; report it
        # now rather than as a GuardViolation at run time.
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self.check_attribute_name(node.args[1], node.args[1].value)
        self.generic_visit(node)

    # Imports -----------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                hint = None
                if alias.name == "loopwright":
                    hint = 'Use "from loopwright.sdk import ..." or "import loopwright.sdk".'
                self.report(
                    node,
                    "import-not-allowed",
                    f'Module "{alias.name}" cannot be imported in a skill.',
                    hint,
                )
            if alias.asname:
                self.check_binding(node, alias.asname, "Import alias")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        names = [alias.name for alias in node.names]
        if node.level:
            self.report(node, "import-not-allowed", "Relative imports are not allowed.")
        elif module == "__future__":
            if not set(names) <= FUTURE_FEATURES:
                self.report(
                    node,
                    "import-not-allowed",
                    "Only 'from __future__ import annotations' is allowed.",
                )
        elif module == "loopwright":
            if set(names) != {"sdk"}:
                self.report(
                    node,
                    "import-not-allowed",
                    'Only "sdk" can be imported from the loopwright package.',
                )
        elif module not in ALLOWED_MODULES:
            self.report(
                node, "import-not-allowed", f'Module "{module}" cannot be imported in a skill.'
            )
        else:
            exports = MODULE_EXPORTS[module]
            for name in names:
                if name == "*":
                    self.report(
                        node,
                        "import-not-allowed",
                        "Star imports are not allowed.",
                        f'Import the names you use: "from {module} import a, b".',
                    )
                elif module != SDK_MODULE and name not in exports:
                    self.report(
                        node,
                        "import-not-allowed",
                        f'"{module}.{name}" is not available in the sandbox.',
                        f"Available from {module}: {', '.join(sorted(exports))}.",
                    )
        for alias in node.names:
            if alias.name != "*":
                self.check_binding(node, alias.asname or alias.name, "Imported name")

    # Statements ----------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.report(
            node, "class-not-allowed", f'Class "{node.name}": class definitions are not allowed.'
        )
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Attribute | ast.Subscript):
            self.report(
                node,
                "statement-not-allowed",
                "Augmented assignment to an item or attribute (x[k] += v) is not supported.",
                "Write it out: x[k] = x[k] + v.",
            )
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        entry = _STATEMENT_HINTS.get(type(node))
        if entry is not None:
            message, hint = entry
            self.report(node, "statement-not-allowed", message, hint)
        if isinstance(node, ast.Nonlocal):
            for name in node.names:
                self.check_binding(node, name, "Nonlocal")
        super().generic_visit(node)


class LoopwrightTransformer(RestrictingNodeTransformer):
    """RestrictedPython's policy, tightened where Loopwright is stricter.

    The AST pass already reports all of this with better messages; the
    duplicates here make the compiler refuse on its own, so a gap in the
    AST pass cannot produce runnable code.
    """

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:  # noqa: N802
        self.error(node, "Class definitions are not allowed.")
        return self.node_contents_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:  # noqa: N802
        for name in node.names:
            self.check_name(node, name)
        return self.node_contents_visit(node)

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None and node.arg.startswith("_"):
            self.error(node.value, f'"{node.arg}" is an invalid keyword because it starts with "_"')
        return self.node_contents_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:  # noqa: N802
        if node.attr == "_":
            self.error(node, '"_" is an invalid attribute name because it starts with "_".')
        if node.attr in DENIED_ATTRIBUTES - INSPECT_ATTRIBUTES:
            self.error(node, f'"{node.attr}" is a denied attribute name.')
        result: ast.AST = super().visit_Attribute(node)  # type: ignore[assignment]
        return result

    def visit_Import(self, node: ast.Import) -> ast.AST:  # noqa: N802
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.error(node, f'Import of "{alias.name}" is not allowed.')
        return self.check_import_names(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:  # noqa: N802
        allowed = node.level == 0 and (
            node.module in ALLOWED_MODULES or node.module in ("__future__", "loopwright")
        )
        if not allowed:
            self.error(node, f'Import of "{node.module}" is not allowed.')
        return self.check_import_names(node)


# RestrictedPython reports plain strings; these patterns map them onto our
# rule ids so they can be merged with the AST findings.
_RESTRICTED_RULES: Final = (
    (re.compile(r'starts with "_"'), "underscore-name"),
    (re.compile(r"is a restricted name|is a denied attribute"), "forbidden-attribute"),
    (re.compile(r"^(Exec|Eval) calls"), "forbidden-builtin"),
    (re.compile(r'^"(print|printed)" is a reserved name'), "reserved-name"),
    (re.compile(r"is a reserved name"), "forbidden-builtin"),
    (re.compile(r'^"\*" imports|^Lazy import|^Import of'), "import-not-allowed"),
    (re.compile(r"metaclass|^Class definitions"), "class-not-allowed"),
    (
        re.compile(
            r"statements are not allowed|^Augmented assignment|^Assignment expressions"
            r"|^Unpacking in comprehensions"
        ),
        "statement-not-allowed",
    ),
)
_RESTRICTED_LINE: Final = re.compile(r"^Line (\d+|None): (.*)$", re.DOTALL)


def _restricted_findings(errors: list[str], covered: set[tuple[str, int]]) -> list[Finding]:
    """Findings for RestrictedPython errors the AST pass did not already cover."""
    seen = set(covered)
    result: list[Finding] = []
    for error in errors:
        match = _RESTRICTED_LINE.match(error)
        line = int(match.group(1)) if match and match.group(1).isdigit() else 0
        message = match.group(2) if match else error
        rule = next((r for pattern, r in _RESTRICTED_RULES if pattern.search(message)), None)
        rule = rule or "restricted-compile"
        if (rule, line) in seen:
            continue
        seen.add((rule, line))
        result.append(Finding(rule, line, 0, message, _HINTS[rule]))
    return result


def _analyse(source: str, filename: str) -> tuple[list[Finding], types.CodeType | None]:
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        message = f"The source is {size} bytes; the limit is {MAX_SOURCE_BYTES} bytes."
        hint = "Split the skill or move data out of the source."
        return [Finding("source-too-large", 1, 0, message, hint)], None
    try:
        # A full (never executed) compile also catches what ast.parse
        # accepts but the compiler rejects, e.g. `return` outside a function.
        compile(source, filename, "exec", dont_inherit=True)
        tree = ast.parse(source, filename, "exec")
    except SyntaxError as exc:
        message = f"Syntax error: {exc.msg}."
        line, col = exc.lineno or 1, exc.offset or 0
        return [Finding("syntax-error", line, col, message, _HINTS["syntax-error"])], None
    except ValueError as exc:  # e.g. NUL bytes in the source
        message = f"Syntax error: {exc}."
        return [Finding("syntax-error", 1, 0, message, _HINTS["syntax-error"])], None
    except (RecursionError, MemoryError):
        message = "The source is nested too deeply to compile."
        return [Finding("too-complex", 1, 0, message, _HINTS["too-complex"])], None
    try:
        visitor = _PolicyVisitor(tree, _split_lines(source))
        visitor.visit(tree)
        findings = visitor.findings
        result = compile_restricted_exec(source, filename, policy=LoopwrightTransformer)
    except RecursionError:
        message = "The source is nested too deeply to check."
        return [Finding("too-complex", 1, 0, message, _HINTS["too-complex"])], None
    findings += _restricted_findings(list(result.errors), visitor.covered)
    findings.sort(key=lambda f: (f.line, f.col, f.rule))
    if findings or result.code is None:
        return findings, None
    return findings, result.code


def check_source(source: str, filename: str = "<skill>") -> list[Finding]:
    """All policy findings for the source, without running it.

    Stages stop early: an oversized source is not parsed, and a syntax
    error is reported alone. Otherwise every AST-policy and RestrictedPython
    finding is returned, sorted by position. An empty list means
    :func:`compile_skill` will succeed.
    """
    findings, _ = _analyse(source, filename)
    return findings


def compile_skill(source: str, filename: str = "<skill>") -> CompiledSkill:
    """Compile with RestrictedPython under Loopwright's policy.

    Raises :class:`PolicyViolation` carrying the findings of
    :func:`check_source` when there are any.
    """
    findings, code = _analyse(source, filename)
    if findings or code is None:
        raise PolicyViolation(findings)
    return CompiledSkill(code=code, filename=filename)


def make_globals(
    module_name: str, sdk_module: types.ModuleType | None = None, pins: Pins | None = None
) -> dict[str, object]:
    """Fresh globals for executing a :class:`CompiledSkill`.

    They hold the curated builtins (with a guarded ``__import__`` admitting
    only :data:`ALLOWED_MODULES`, ``loopwright.sdk`` resolving to
    ``sdk_module`` when given) and every guard the restricted bytecode calls.
    Use one dict per run: imports, the private random generator and the
    print buffer live in it. ``pins`` (a replay) puts ``datetime``'s clock and
    ``random``'s seed on the recorded run's (``sandbox/pins.py``).
    """
    skill_globals = guard_globals(sdk_module, pins)
    skill_globals["__name__"] = module_name
    return skill_globals


def printed_output(skill_globals: dict[str, object]) -> str:
    """Everything the skill printed while running in ``skill_globals``."""
    sink = skill_globals.get("_print_")
    if not isinstance(sink, PrintSink):
        raise ValueError("these globals were not made by make_globals")
    return sink.text()
