"""Runtime guards that restricted skill code calls while it runs.

RestrictedPython rewrites a skill so that every attribute read, subscript,
iteration, item/attribute write, augmented assignment, ``*args`` call,
sequence unpacking and ``print`` goes through a function looked up in the
skill's globals (``_getattr_``, ``_getitem_`` ...). This module provides
Loopwright's versions of those functions, the curated builtins and the
guarded ``__import__``.

The guards are the *enforcement* half of layer 1: the static policy in
:mod:`loopwright.sandbox.policy` gives the LLM author early, precise
findings, but anything that can be computed at run time (an attribute name
built from strings, an object returned by a library) is only stopped here.
The guards also run inside the isolated guest process, so they must be
correct on their own and never rely on the static pass having run.
"""

from __future__ import annotations

import bisect
import builtins
import collections
import datetime
import decimal
import fractions
import functools
import heapq
import importlib
import itertools
import json
import math
import operator
import random
import re
import statistics
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Final

from RestrictedPython.Eval import default_guarded_getiter
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from loopwright.sandbox.pins import Pins, pinned_datetime
from loopwright.sdk.errors import RunInterrupt

__all__ = [
    "ALLOWED_MODULES",
    "DENIED_ATTRIBUTES",
    "FORBIDDEN_NAMES",
    "FUTURE_FEATURES",
    "MAX_PRINT_BYTES",
    "MODULE_EXPORTS",
    "GuardViolation",
    "PrintSink",
    "SkillModule",
    "guard_globals",
    "guarded_apply",
    "guarded_getattr",
    "guarded_getitem",
    "guarded_hasattr",
    "guarded_inplacevar",
    "guarded_write",
    "make_builtins",
    "make_importer",
    "module_exports",
]


class GuardViolation(RunInterrupt):
    """A skill tried, at run time, something the sandbox guards refuse.

    It derives from ``BaseException`` on purpose: skills routinely wrap work
    in ``except Exception``, and a refused access should end the run and
    reach the runner (which reports ``rule`` and the message back to the
    author) rather than be swallowed and retried with the next probe.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def _words(text: str) -> frozenset[str]:
    """A frozenset from whitespace-separated names (long lists stay compact)."""
    return frozenset(text.split())


# Attribute names refused statically and at run time even though most do not
# start with "_". They are the frame/code/traceback walks that lead from any
# generator, coroutine or exception back to host globals and builtins, the
# Python 2 spellings of function internals, ``mro`` (reaches ``object`` and
# from there every class in the process), and ``format``/``format_map``
# whose replacement fields ("{0.__class__}") read attributes without going
# through ``_getattr_``.
DENIED_ATTRIBUTES: Final[frozenset[str]] = INSPECT_ATTRIBUTES | _words(
    """tb_frame tb_next f_back f_builtins f_code f_generator f_globals f_locals f_trace
    gi_code gi_frame gi_yieldfrom cr_await cr_code cr_frame cr_origin ag_await ag_code
    ag_frame co_code mro func_globals func_code func_closure func_defaults func_dict
    im_func im_self im_class format format_map with_traceback"""
)

# AttributeError/NameError carry the object and name involved in the failed
# lookup; when the failure happened inside host code that object is one the
# skill was never handed.
_EXCEPTION_LEAK_ATTRIBUTES: Final = frozenset({"obj", "name"})

# ``from __future__ import annotations`` is common in LLM-written code and
# harmless (it only turns annotations into strings), so it is admitted.
FUTURE_FEATURES: Final[frozenset[str]] = frozenset({"annotations"})

SDK_MODULE: Final = "loopwright.sdk"


def _public_names(module: types.ModuleType) -> frozenset[str]:
    """Public, non-module attributes of a C module whose whole surface is pure."""
    return frozenset(
        name
        for name in dir(module)
        if not name.startswith("_") and not isinstance(getattr(module, name), types.ModuleType)
    )


_RANDOM_FUNCTIONS: Final = _words(
    """betavariate choice choices expovariate gammavariate gauss getrandbits
    lognormvariate normalvariate paretovariate randbytes randint random randrange
    sample seed shuffle triangular uniform vonmisesvariate weibullvariate"""
)

# What each allowed module exposes. Skills never receive the real module
# object, only a SkillModule holding exactly these names, so a public
# attribute that happens to be another module (``re.enum`` -> ``enum.sys``),
# a string evaluator (``typing.get_type_hints``), a getattr-by-name helper
# (``functools.update_wrapper``/``wraps``) or shared mutable host state
# (``decimal.setcontext``, ``random.seed`` on the global generator) is simply
# not there. Deliberately absent modules: ``string`` (``Formatter`` reads
# attributes from format strings), ``operator`` (``attrgetter``/
# ``methodcaller`` are getattr by string), ``time`` (``sleep`` blocks a worker
# and clocks are for the SDK's durable steps), ``dataclasses``/``enum``
# (class machinery, and classes are not allowed), ``copy`` (the reduce
# protocol), and everything doing I/O or introspection.
MODULE_EXPORTS: Final[Mapping[str, frozenset[str]]] = types.MappingProxyType(
    {
        "json": frozenset({"dumps", "loads", "JSONDecodeError"}),
        "re": frozenset(re.__all__) - {"purge", "template", "TEMPLATE", "T", "RegexFlag"},
        "math": _public_names(math),
        "statistics": frozenset(statistics.__all__),
        "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"})
        | frozenset({"MINYEAR", "MAXYEAR", "UTC"} & set(dir(datetime))),
        "collections": frozenset(
            {"ChainMap", "Counter", "OrderedDict", "defaultdict", "deque", "namedtuple"}
        ),
        "itertools": _public_names(itertools),
        "functools": frozenset({"cache", "cmp_to_key", "lru_cache", "partial", "reduce"}),
        "decimal": _words(
            """Decimal Context DecimalException InvalidOperation DivisionByZero Inexact
            Rounded Subnormal Overflow Underflow Clamped FloatOperation"""
        )
        | frozenset(name for name in dir(decimal) if name.startswith("ROUND_")),
        "fractions": frozenset({"Fraction"}),
        "random": _RANDOM_FUNCTIONS | {"Random"},
        "typing": _words(
            """Any Callable Dict FrozenSet Generator Iterable Iterator List Literal Mapping
            MutableMapping MutableSequence Optional Sequence Set Tuple TypeVar Union
            cast"""
        ),
        "heapq": _words(
            "heapify heappop heappush heappushpop heapreplace merge nlargest nsmallest"
        ),
        "bisect": frozenset(
            {"bisect", "bisect_left", "bisect_right", "insort", "insort_left", "insort_right"}
        ),
        # The SDK's surface is its own __all__, resolved when a skill imports it.
        SDK_MODULE: frozenset(),
    }
)

ALLOWED_MODULES: Final[frozenset[str]] = frozenset(MODULE_EXPORTS)

_REAL_MODULES: Final[Mapping[str, types.ModuleType]] = types.MappingProxyType(
    {
        "json": json,
        "re": re,
        "math": math,
        "statistics": statistics,
        "datetime": datetime,
        "collections": collections,
        "itertools": itertools,
        "functools": functools,
        "decimal": decimal,
        "fractions": fractions,
        "typing": typing,
        "heapq": heapq,
        "bisect": bisect,
    }
)


class SkillModule(types.ModuleType):
    """A curated, read-only stand-in for an allowed module.

    It holds only the exported names, so neither ``from m import x`` (which
    the interpreter resolves with a plain ``getattr``, not ``_getattr_``) nor
    ``m.x`` can reach anything else, and writes raise instead of poisoning a
    module that the host or other skills share.
    """

    def __init__(self, name: str, members: Mapping[str, object]) -> None:
        super().__init__(name)
        # Straight into the module dict: our __setattr__ refuses everything.
        # The export set lives under a dunder key, out of any skill's reach.
        vars(self).update(members)
        vars(self)["__exports__"] = frozenset(members)

    def __setattr__(self, name: str, value: object) -> None:
        raise GuardViolation("module-write", f"modules are read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise GuardViolation("module-write", f"modules are read-only: cannot delete {name!r}")


def module_exports(module: SkillModule) -> frozenset[str]:
    """The public names a curated module offers to skills."""
    exports: frozenset[str] = vars(module)["__exports__"]
    return exports


def _sdk_members(sdk_module: types.ModuleType) -> dict[str, object]:
    """The SDK's public surface (its ``__all__``), minus anything unsafe.

    ``from loopwright.sdk import x`` resolves ``x`` with a plain getattr on
    the SkillModule, never through ``_getattr_``, so the value check has to
    happen here, when the module is built.
    """
    declared = getattr(sdk_module, "__all__", None)
    names = list(declared) if declared is not None else dir(sdk_module)
    members: dict[str, object] = {}
    for name in names:
        if isinstance(name, str) and not name.startswith("_") and hasattr(sdk_module, name):
            value = getattr(sdk_module, name)
            try:
                members[name] = _check_value(value, name)
            except GuardViolation:
                continue
    return members


def _build_module(
    name: str, sdk_module: types.ModuleType | None, pins: Pins | None = None
) -> SkillModule:
    if name == SDK_MODULE:
        if sdk_module is None:
            raise ImportError("loopwright.sdk is not available in this context")
        return SkillModule(SDK_MODULE, _sdk_members(sdk_module))
    if name == "random":
        # A private generator per skill run: seeding it is reproducible for
        # the skill and cannot perturb the host's global random state. A replay
        # seeds it from the run id (``sandbox/pins.py``).
        rng = random.Random(pins.seed) if pins is not None else random.Random()
        members: dict[str, object] = {fn: getattr(rng, fn) for fn in _RANDOM_FUNCTIONS}
        members["Random"] = random.Random
        return SkillModule("random", members)
    real = _REAL_MODULES[name]
    members = {attr: getattr(real, attr) for attr in MODULE_EXPORTS[name]}
    if name == "datetime" and pins is not None:  # a replay: now()/today() on its clock
        members["datetime"], members["date"] = pinned_datetime(pins.clock)
    return SkillModule(name, members)


# C functions import helpers lazily through PyImport_Import, which calls the
# *current frame's* ``__import__`` (ours, while a skill runs) with an empty
# list as fromlist and then takes the module from sys.modules, discarding
# what ``__import__`` returned. Skill code cannot produce that call shape
# (``import`` statements pass None or a tuple, and ``__import__`` cannot be
# named), and the names come from C source, not the skill. Modules already
# loaded are fine (no code runs); new loads are limited to known helpers.
_INTERNAL_IMPORTS: Final = frozenset({"time", "_strptime", "encodings", "unicodedata"})


def _internal_import(name: str) -> SkillModule:
    if name not in sys.modules:
        if name not in _INTERNAL_IMPORTS:
            raise GuardViolation("import-not-allowed", f"module {name!r} cannot be imported")
        importlib.import_module(name)
    # The caller ignores this; the skill never sees it.
    return SkillModule(name, {})


def make_importer(
    sdk_module: types.ModuleType | None = None, pins: Pins | None = None
) -> Callable[..., SkillModule]:
    """Build the guarded ``__import__`` for one set of skill globals.

    Only :data:`ALLOWED_MODULES` (plus ``__future__.annotations``) import;
    the result is always a :class:`SkillModule`, cached so that importing a
    module twice yields the same object within one run.
    """
    cache: dict[str, SkillModule] = {}

    def load(name: str) -> SkillModule:
        if name not in cache:
            cache[name] = _build_module(name, sdk_module, pins)
        return cache[name]

    def guarded_import(
        name: str,
        globals: object = None,
        locals: object = None,
        fromlist: tuple[str, ...] | list[str] | None = (),
        level: int = 0,
    ) -> SkillModule:
        del globals, locals  # Interpreter-supplied; never consulted.
        if not isinstance(name, str):
            raise GuardViolation("import-not-allowed", "module names must be strings")
        if isinstance(fromlist, list) and not fromlist and level == 0:
            return _internal_import(name)
        wanted = tuple(fromlist or ())
        if level != 0:
            raise GuardViolation("import-not-allowed", "relative imports are not allowed")
        if name == "__future__":
            if not wanted or not set(wanted) <= FUTURE_FEATURES:
                raise GuardViolation(
                    "import-not-allowed", "only 'from __future__ import annotations' is allowed"
                )
            return SkillModule("__future__", {"annotations": True})
        if name == "loopwright" and wanted and set(wanted) <= {"sdk"}:
            return SkillModule("loopwright", {"sdk": load(SDK_MODULE)})
        if name not in ALLOWED_MODULES:
            raise GuardViolation(
                "import-not-allowed",
                f"module {name!r} cannot be imported in a skill; allowed modules: "
                + ", ".join(sorted(ALLOWED_MODULES)),
            )
        module = load(name)
        if name == SDK_MODULE and not wanted:
            # `import loopwright.sdk` binds the top-level package.
            return SkillModule("loopwright", {"sdk": module})
        for attr in wanted:
            if attr not in module_exports(module):
                raise GuardViolation(
                    "import-not-allowed", f"{name}.{attr} is not available in the sandbox"
                )
        return module

    return guarded_import


def _check_attribute_name(obj: object, name: str) -> None:
    if name.startswith("_"):
        raise GuardViolation(
            "underscore-name", f"attribute {name!r} is refused: names starting with '_' are private"
        )
    if name in DENIED_ATTRIBUTES:
        raise GuardViolation("forbidden-attribute", f"attribute {name!r} is refused")
    if name in _EXCEPTION_LEAK_ATTRIBUTES and isinstance(obj, AttributeError | NameError):
        raise GuardViolation(
            "forbidden-attribute", f"{type(obj).__name__}.{name} is refused (it can leak objects)"
        )


# Builtins that must never reach a skill even as a value returned by some
# library attribute: they either run code, open I/O, or introspect
# namespaces and types. Identity checks, because these objects live forever.
_FORBIDDEN_OBJECT_IDS: Final = frozenset(
    id(obj)
    for obj in (
        builtins.eval,
        builtins.exec,
        builtins.compile,
        builtins.open,
        builtins.globals,
        builtins.locals,
        builtins.vars,
        builtins.dir,
        builtins.getattr,
        builtins.setattr,
        builtins.delattr,
        builtins.__import__,
        builtins.breakpoint,
        builtins.input,
        builtins.type,
        builtins.super,
        builtins.object,
        builtins.memoryview,
    )
)


def _check_value(value: object, what: str) -> object:
    """Refuse handing a skill an object that reaches outside the sandbox."""
    if isinstance(value, types.FrameType | types.TracebackType | types.CodeType):
        raise GuardViolation("forbidden-attribute", f"{what} is a frame/code object and is refused")
    if isinstance(value, types.ModuleType) and not isinstance(value, SkillModule):
        raise GuardViolation("forbidden-attribute", f"{what} is a module and is refused")
    if id(value) in _FORBIDDEN_OBJECT_IDS:
        raise GuardViolation("forbidden-builtin", f"{what} is a forbidden builtin and is refused")
    return value


class _Missing:
    pass


_MISSING: Final = _Missing()


def guarded_getattr(obj: object, name: str, default: object = _MISSING) -> object:
    """``_getattr_`` and the skill-visible ``getattr``.

    Refuses private (``_``-prefixed) and denylisted names, attribute access
    on any module that is not a curated :class:`SkillModule`, names a
    SkillModule does not export, and results that are frames, code objects,
    real modules or forbidden builtins. A refusal raises
    :class:`GuardViolation` even when a default was given, so probing cannot
    be disguised as an ordinary missing attribute.
    """
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    _check_attribute_name(obj, name)
    if isinstance(obj, types.ModuleType):
        if not isinstance(obj, SkillModule):
            raise GuardViolation("forbidden-attribute", "attribute access on modules is refused")
        if name not in module_exports(obj):
            raise GuardViolation(
                "module-attribute-not-allowed",
                f"{obj.__name__}.{name} is not available in the sandbox; available: "
                + ", ".join(sorted(module_exports(obj))),
            )
    try:
        value = getattr(obj, name)
    except AttributeError:
        if default is _MISSING:
            raise
        return default
    return _check_value(value, f"attribute {name!r}")


def guarded_hasattr(obj: object, name: str) -> bool:
    """The skill-visible ``hasattr``: ``guarded_getattr`` that answers a bool."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


# Types whose subscription is plain data access. Classes and typing forms
# are subscriptable so annotations such as ``list[int]`` or
# ``Optional[str]`` (evaluated when a function is defined) keep working.
_SUBSCRIPTABLE: Final = (
    dict,
    list,
    tuple,
    str,
    bytes,
    bytearray,
    range,
    collections.deque,
    collections.ChainMap,
    types.MappingProxyType,
    re.Match,
    types.GenericAlias,
    type,
)


def guarded_getitem(obj: object, index: object) -> object:
    """``_getitem_``: subscripting of standard containers and type forms only."""
    if isinstance(obj, _SUBSCRIPTABLE) or type(obj).__module__ == "typing":
        value = obj[index]  # type: ignore[index]
        return _check_value(value, "item")
    raise GuardViolation("forbidden-subscript", f"{type(obj).__name__} objects cannot be indexed")


# Item and attribute writes are allowed on mutable containers the skill
# builds itself; with classes forbidden, there is nothing else a skill
# legitimately mutates. Functions (host ones are shared) and modules are out.
_WRITABLE: Final = (dict, list, set, bytearray, collections.deque, collections.ChainMap)


def guarded_write(obj: object) -> object:
    """``_write_``: the target of ``x[k] = v``, ``x.a = v`` and ``del`` forms."""
    if isinstance(obj, types.ModuleType):
        raise GuardViolation("module-write", "modules are read-only")
    if isinstance(obj, _WRITABLE):
        return obj
    raise GuardViolation(
        "forbidden-write",
        f"cannot assign to or delete from {type(obj).__name__} objects; "
        "only dicts, lists, sets and deques are writable",
    )


_INPLACE_OPERATORS: Final[Mapping[str, Callable[[object, object], object]]] = (
    types.MappingProxyType(
        {
            "+=": operator.iadd,
            "-=": operator.isub,
            "*=": operator.imul,
            "/=": operator.itruediv,
            "//=": operator.ifloordiv,
            "%=": operator.imod,
            "**=": operator.ipow,
            "<<=": operator.ilshift,
            ">>=": operator.irshift,
            "&=": operator.iand,
            "|=": operator.ior,
            "^=": operator.ixor,
            "@=": operator.imatmul,
        }
    )
)


def guarded_inplacevar(op: str, target: object, value: object) -> object:
    """``_inplacevar_``: ``name op= value`` for plain names."""
    function = _INPLACE_OPERATORS.get(op)
    if function is None:
        raise GuardViolation("restricted-compile", f"unsupported augmented assignment {op!r}")
    return function(target, value)


def guarded_apply(func: Callable[..., object], *args: object, **kwargs: object) -> object:
    """``_apply_``: calls using ``*args``/``**kwargs``.

    Keyword names from a ``**mapping`` are refused when private, so a skill
    cannot reach a host function's underscore parameters dynamically.
    """
    for key in kwargs:
        if key.startswith("_"):
            raise GuardViolation("underscore-name", f"keyword argument {key!r} is refused")
    return func(*args, **kwargs)


MAX_PRINT_BYTES: Final = 256 * 1024


class PrintSink:
    """Where ``print`` goes: a bounded buffer per set of skill globals.

    RestrictedPython rewrites ``print(...)`` into a call on a collector made
    by ``_print_(_getattr_)`` in each scope; every collector made by one sink
    appends to the same buffer so the runner reads the whole run's output
    with :meth:`text`. Nothing is written to the host's stdout, and output
    beyond :data:`MAX_PRINT_BYTES` is dropped (``truncated`` is set).
    """

    def __init__(self, limit: int = MAX_PRINT_BYTES) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit
        self.truncated = False

    def __call__(self, getattr_guard: object = None) -> _PrintCollector:
        del getattr_guard
        return _PrintCollector(self)

    def write(self, text: str) -> None:
        """Append text, keeping the buffer within the limit."""
        room = self._limit - self._size
        if len(text) > room:
            text = text[: max(room, 0)]
            self.truncated = True
        self._parts.append(text)
        self._size += len(text)

    def text(self) -> str:
        """Everything printed so far."""
        return "".join(self._parts)


class _PrintCollector:
    """The object bound to ``_print`` in restricted code."""

    def __init__(self, sink: PrintSink) -> None:
        self._sink = sink

    def __call__(self) -> str:
        # Reading ``printed`` in a skill calls this.
        return self._sink.text()

    def _call_print(
        self,
        *objects: object,
        sep: str | None = " ",
        end: str | None = "\n",
        file: object = None,
        flush: bool = False,
    ) -> None:
        del flush
        if file is not None:
            raise GuardViolation("forbidden-builtin", "print(file=...) is not allowed")
        if not isinstance(sep, str | None) or not isinstance(end, str | None):
            raise TypeError("sep and end must be strings or None")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        self._sink.write(sep.join(str(obj) for obj in objects) + end)


# Builtins available to skills. An allowlist, so a RestrictedPython upgrade
# adding a name to safe_builtins cannot widen the sandbox. Versus
# safe_builtins we drop ``__build_class__`` (classes are not allowed), ``id``
# (leaks memory addresses), ``setattr``/``delattr`` (nothing writable has
# attributes), and ``SystemExit``/``KeyboardInterrupt`` (a skill should not
# impersonate a host shutdown). RestrictedPython's limited_builtins
# (``range`` capped at 1000, ``list("abc")`` refused) and utility_builtins
# (modules as implicit globals) are not used: resource limits belong to
# the OS layer and modules come through imports.
_SAFE_BUILTIN_NAMES: Final = _words(
    """None False True Ellipsis NotImplemented abs all any ascii bin bool bytes callable
    chr complex dict divmod enumerate filter float frozenset hash hex int isinstance
    issubclass iter len list map max min next oct ord pow range repr reversed round set
    slice sorted str sum tuple zip"""
)

# Builtins a skill may not use, with the fix the static policy suggests.
# None of them is in the skill's builtins; listing them gives the author an
# early, clear finding instead of a NameError at run time.
FORBIDDEN_NAMES: Final[Mapping[str, str]] = types.MappingProxyType(
    {
        "eval": "Write the logic directly; dynamic code execution is not available.",
        "exec": "Write the logic directly; dynamic code execution is not available.",
        "compile": "Write the logic directly; dynamic code execution is not available.",
        "open": "Skills have no direct I/O; use the tools on the loopwright.sdk Context.",
        "input": "Skills have no direct I/O; take values from the trigger or Context.",
        "globals": "Keep shared state in an explicit dict instead of the namespace.",
        "locals": "Keep shared state in an explicit dict instead of the namespace.",
        "vars": "Keep shared state in an explicit dict instead of the namespace.",
        "dir": "Use documented attributes; introspection is not available.",
        "setattr": "Store values in a dict: d[key] = value.",
        "delattr": "Store values in a dict and use `del d[key]`.",
        "type": "Use isinstance(x, int) (or a tuple of types) to test types.",
        "super": "Classes are not supported; use functions and dicts.",
        "object": "Classes are not supported; use functions and dicts.",
        "classmethod": "Classes are not supported; use functions and dicts.",
        "staticmethod": "Classes are not supported; use functions and dicts.",
        "property": "Classes are not supported; use functions and dicts.",
        "format": "Use an f-string with a format spec, e.g. f'{value:.2f}'.",
        "id": "Object addresses are not exposed; compare identity with `is`.",
        "memoryview": "Use bytes and slicing instead.",
        "breakpoint": "Debuggers are not available in a skill; remove the call.",
        "help": "Not available in a skill; remove the call.",
        "exit": "Return from the function (or raise an exception) to stop.",
        "quit": "Return from the function (or raise an exception) to stop.",
        "builtins": "The builtins module is not available; use the builtin names directly.",
    }
)

_SAFE_EXCEPTION_NAMES: Final = frozenset(
    name
    for name in safe_builtins
    if isinstance(safe_builtins[name], type)
    and issubclass(safe_builtins[name], BaseException)
    and name not in {"SystemExit", "KeyboardInterrupt"}
) | {"RecursionError", "TimeoutError", "ConnectionError", "StopAsyncIteration"}


def make_builtins(importer: Callable[..., SkillModule]) -> dict[str, object]:
    """A fresh ``__builtins__`` dict for one set of skill globals."""
    result: dict[str, object] = {}
    for name in _SAFE_BUILTIN_NAMES | _SAFE_EXCEPTION_NAMES:
        result[name] = safe_builtins.get(name, getattr(builtins, name))
    result["getattr"] = guarded_getattr
    result["hasattr"] = guarded_hasattr
    result["__import__"] = importer
    return result


def guard_globals(
    sdk_module: types.ModuleType | None, pins: Pins | None = None
) -> dict[str, object]:
    """The builtins and every guard RestrictedPython-compiled code expects (``pins``: a
    replay's clock and seed for ``datetime`` and ``random``)."""
    return {
        "__builtins__": make_builtins(make_importer(sdk_module, pins)),
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_write_": guarded_write,
        "_inplacevar_": guarded_inplacevar,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_apply_": guarded_apply,
        "_print_": PrintSink(),
    }
