"""The capability check: what the code uses must be what the manifest declares.

Read from the syntax tree (nothing runs):

* every host tool the code reaches (``ctx.tools.http``, ``ctx.tools.notify``, ``ctx.step.llm``
  needs ``llm``, ``ctx.step.send_event`` needs ``events``) is in ``tools``;
* every event name given literally to ``send_event``/``wait_for_event`` is declared in
  ``events`` (an ``event(...)`` trigger's name counts as received);
* every URL passed to the http tool whose host can be read statically is in ``http_allow``;
* no secret values in the source (API keys, tokens, private keys, webhook URLs, credentials in
  URLs or in password/token-like fields): secrets are referenced by name only, as
  ``{{secret:NAME}}`` in a header or ``channel="slack:NAME"``, and each NAME is declared.

Static reading cannot see every alias (``t = ctx.tools; t.http``); the host enforces the same
rules at run time (and the sandboxed test cases exercise them), so this stage is the early,
precise report, not the only guard.
"""

from __future__ import annotations

import ast
import re

from loopwright.runner.netguard import host_allowed
from loopwright.sdk.capabilities import (
    STEP_DIRECTION,
    STEP_TOOLS,
    Direction,
    allowed_events,
    undeclared_event,
)
from loopwright.sdk.manifest import Manifest
from loopwright.sdk.spec import KNOWN_TOOLS
from loopwright.sidecar.verdict import Finding

HTTP_METHODS = frozenset({"get_json", "post_json"})
SECRET_REF = re.compile(r"\{\{secret:([^}]*)\}\}")
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), what)
    for p, what in (
        (r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}", "an API key (sk-...)"),
        (r"\bgh[pousr]_[A-Za-z0-9]{30,}", "a GitHub token"),
        (r"\bgithub_pat_[A-Za-z0-9_]{20,}", "a GitHub token"),
        (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "a Slack token"),
        (r"hooks\.slack\.com/services/[A-Za-z0-9/_-]+", "a Slack webhook URL"),
        (r"\bAKIA[0-9A-Z]{16}\b", "an AWS access key id"),
        (r"\bAIza[0-9A-Za-z_-]{35}", "a Google API key"),
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
        (r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+", "a JWT"),
        (r"://[^/\s:@{}]+:[^/\s@{}]+@", "credentials in a URL"),
        (r"^(?:Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}$", "an Authorization value"),
    )
)
SECRET_KEY = re.compile(
    r"(?i)(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|credential)"
)
SECRET_HINT = (
    "never put secret values in a skill: store the value as a platform secret "
    "(LOOPWRIGHT_SECRETS), declare its name in @skill(secrets=[...]) and reference it as "
    "'{{secret:NAME}}' in an http header or channel='slack:NAME' for notify"
)


def _tool_hint(tool: str, manifest: Manifest) -> str:
    tools = sorted({*manifest.tools, tool})
    return f"declare it: @skill(..., tools={tools})"


def _looks_like_credential(value: str) -> bool:
    return (
        len(value) >= 8
        and not any(c.isspace() for c in value)
        and "{{secret:" not in value
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


class _Scanner(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, manifest: Manifest) -> None:
        self.manifest = manifest
        self.findings: list[Finding] = []
        self.warnings: list[Finding] = []
        self.used_tools: set[str] = set()
        self.strings: dict[str, str] = _string_constants(tree)
        self.first_use: dict[str, ast.AST] = {}

    def add(self, node: ast.AST, rule: str, message: str, hint: str, warn: bool = False) -> None:
        f = Finding(
            rule=rule,
            line=getattr(node, "lineno", 0),
            col=getattr(node, "col_offset", -1) + 1,
            message=message,
            hint=hint,
        )
        (self.warnings if warn else self.findings).append(f)

    # Tools ---------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parent = node.value
        if isinstance(parent, ast.Attribute) and parent.attr == "tools":
            self._use(node, node.attr, f"ctx.tools.{node.attr}")
        elif isinstance(parent, ast.Attribute) and parent.attr == "step":
            tool = STEP_TOOLS.get(node.attr)
            if tool is not None:
                self._use(node, tool, f"ctx.step.{node.attr}")
        self.generic_visit(node)

    def _use(self, node: ast.AST, tool: str, what: str) -> None:
        if tool not in KNOWN_TOOLS:
            self.add(
                node,
                "unknown-tool",
                f"{what}: there is no host tool {tool!r}",
                f"available tools: {sorted(KNOWN_TOOLS)}",
            )
            return
        self.used_tools.add(tool)
        self.first_use.setdefault(tool, node)
        if tool not in self.manifest.tools:
            self.add(
                node,
                "undeclared-tool",
                f"{what} uses the {tool!r} tool, which the skill does not declare",
                _tool_hint(tool, self.manifest),
            )

    # Hosts ---------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in HTTP_METHODS:
            url = node.args[0] if node.args else _kw(node, "url")
            if url is not None:
                self._url(url)
        elif isinstance(func, ast.Attribute) and func.attr == "run" and len(node.args) >= 3:
            target = node.args[1]
            if isinstance(target, ast.Attribute) and target.attr in HTTP_METHODS:
                self._url(node.args[2])
        if isinstance(func, ast.Attribute) and func.attr in STEP_DIRECTION:
            name = node.args[1] if len(node.args) >= 2 else _kw(node, "event")
            if name is not None:
                self._event(name, STEP_DIRECTION[func.attr])
        channel = _kw(node, "channel")
        if channel is not None and isinstance(func, ast.Attribute) and func.attr == "notify":
            text = self._static(channel)
            if text is not None and text.startswith("slack:"):
                self._secret_name(channel, text.partition(":")[2])
        self.generic_visit(node)

    def _static(self, node: ast.expr) -> str | None:
        """The string value of ``node`` when it is known without running (a prefix for
        f-strings and concatenations)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.strings.get(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._static(node.left)
        if isinstance(node, ast.JoinedStr):
            prefix = ""
            for part in node.values:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    prefix += part.value
                elif isinstance(part, ast.FormattedValue) and not prefix:
                    known = self._static(part.value)
                    if known is None:
                        return None
                    prefix += known
                else:
                    return prefix + "\x00"  # the rest is dynamic
            return prefix
        return None

    def _url(self, node: ast.expr) -> None:
        text = self._static(node)
        host = _host_of(text) if text is not None else None
        if host is None:
            self.add(
                node,
                "dynamic-url",
                "the host of this http call is only known at run time",
                "it must be in http_allow or the call fails at run time; a literal URL is "
                "checked before registration",
                warn=True,
            )
            return
        if not host_allowed(host, tuple(self.manifest.http_allow)):
            allow = sorted({*self.manifest.http_allow, host})
            self.add(
                node,
                "undeclared-host",
                f"http request to {host!r}, which is not in http_allow {self.manifest.http_allow}",
                f"declare it: @skill(..., http_allow={allow})",
            )

    # Events --------------------------------------------------------------

    def _event(self, node: ast.expr, direction: Direction) -> None:
        exact = isinstance(node, ast.Constant | ast.Name)
        text = self._static(node) if exact else None  # a prefix is not the name
        if text is None:
            self.add(
                node,
                "dynamic-event",
                "the name of this event is only known at run time",
                "it must match @skill(events=...) or the step fails at run time; a literal "
                "event name is checked before registration",
                warn=True,
            )
            return
        declared = self.manifest.events.model_dump() if self.manifest.events else None
        why = undeclared_event(direction, text, allowed_events(declared, self.manifest.trigger))
        if why is not None:
            message, _, hint = why.partition(": declare it: ")
            self.add(node, "undeclared-event", message, f"declare it: {hint}" if hint else "")

    # Secrets -------------------------------------------------------------

    def _secret_name(self, node: ast.AST, name: str) -> None:
        if name not in self.manifest.secrets:
            secrets = sorted({*self.manifest.secrets, name})
            self.add(
                node,
                "undeclared-secret",
                f"secret {name!r} is used but not declared",
                f"declare it by name: @skill(..., secrets={secrets})",
            )

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._scan_text(node, node.value)

    def _scan_text(self, node: ast.AST, text: str) -> None:
        for ref in SECRET_REF.findall(text):
            self._secret_name(node, ref)
        for pattern, what in SECRET_PATTERNS:
            if pattern.search(text):
                self.add(node, "secret-literal", f"this string contains {what}", SECRET_HINT)
                return

    def _keyed(self, key: str, value: ast.expr) -> None:
        if (
            SECRET_KEY.search(key)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
            and _looks_like_credential(value.value)
        ):
            self.add(
                value,
                "secret-literal",
                f"{key!r} is set to a literal that looks like a credential",
                SECRET_HINT,
            )

    def visit_Dict(self, node: ast.Dict) -> None:
        for k, v in zip(node.keys, node.values, strict=True):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                self._keyed(k.value, v)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self._keyed(target.id, node.value)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg:
            self._keyed(node.arg, node.value)
        self.generic_visit(node)


def _host_of(text: str) -> str | None:
    """The host of a URL string; None when it is not a URL or the host is not all literal
    (a trailing NUL marks where the dynamic part of an f-string begins)."""
    dynamic = text.endswith("\x00")
    text = text.rstrip("\x00")
    if "://" not in text:
        return None
    m = re.match(r"([^/?#:]*)([/?#:]|$)", text.split("://", 1)[1])
    if m is None or not m.group(1) or (dynamic and not m.group(2)):
        return None
    return m.group(1).lower()


def _kw(node: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Names assigned exactly once, to a string literal (e.g. ``BASE = "https://..."``)."""
    counts: dict[str, int] = {}
    values: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            counts[node.id] = counts.get(node.id, 0) + 1
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            values[node.targets[0].id] = node.value.value
    return {k: v for k, v in values.items() if counts.get(k) == 1}


def check_capabilities(source: str, manifest: Manifest) -> tuple[list[Finding], list[Finding]]:
    """Findings (reject) and warnings (reported with an acceptance) for ``source``."""
    tree = ast.parse(source)
    scanner = _Scanner(tree, manifest)
    scanner.visit(tree)
    if "http" in scanner.used_tools and "http" in manifest.tools and not manifest.http_allow:
        scanner.add(
            scanner.first_use["http"],
            "undeclared-host",
            "the skill uses the http tool but declares no hosts in http_allow",
            'declare the hosts it calls: @skill(..., http_allow=["api.example.com"])',
        )
    for tool in sorted(set(manifest.tools) - scanner.used_tools):
        scanner.warnings.append(
            Finding(
                rule="unused-tool",
                message=f"tool {tool!r} is declared but the code never uses it",
                hint="drop it from tools=[...] (least privilege) unless an alias uses it",
            )
        )
    findings = sorted(scanner.findings, key=lambda f: (f.line, f.col, f.rule))
    return findings, scanner.warnings
