"""A typed settings model read from the environment, validated by pydantic-core alone.

Every CLI command reads the settings, so their import is on every command's start-up path.
pydantic-settings with a pydantic model costs ~0.3 s to import and build (more than a whole
``rq info``, the CLI benchmark's reference, docs/benchmarks.md); pydantic-core, the compiled
validator under pydantic, loads in ~50 ms. This module keeps pydantic's way of declaring a
field (``name: type = Field(default=..., ge=..., description=...)``) and checks values in two
tiers: a plain-Python check accepts the values whose result is certain (the right type within
its bounds, a string of ASCII digits for an ``int``, a duration the parser reads), and anything
else (a bad value, or one whose coercion is subtle) goes to pydantic-core, which then coerces or
rejects exactly as pydantic would, with pydantic's own messages (``Input should be greater than
0.2``, ``Value error, ...``). So a valid configuration never imports pydantic-core, and an
invalid one fails the same way it always did.

What it reads, as pydantic-settings did: ``PREFIX<FIELD>`` from the environment, names
case-insensitive; list and dict fields as JSON; keyword arguments win over the environment;
unknown names are ignored. Field types: ``str``, ``int``, ``float``, ``bool``, ``Path``,
``SecretStr``, ``Literal[...]``, ``X | None``, ``list[X]``, ``dict[str, X]`` and
``Annotated[X, BeforeValidator(f)]`` (or ``AfterValidator``); anything else is refused when the
class is defined, naming the field. Defaults are not validated (as pydantic). The validator is
built on the first instance, so importing the settings for their types costs nothing more.
"""

from __future__ import annotations

import copy
import json
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

__all__ = ["AfterValidator", "BeforeValidator", "EnvModel", "Field", "FieldSpec", "SecretStr"]

_MISSING: Any = object()
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOOLS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLS |= {"false": False, "0": False, "no": False, "off": False}
_BOUNDS = ("gt", "ge", "lt", "le")
_LENGTHS = ("min_length", "max_length")


@dataclass(frozen=True, slots=True)
class BeforeValidator:
    """Run ``func`` on the raw value before the type's own check (pydantic's meaning)."""

    func: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class AfterValidator:
    """Run ``func`` on the value after the type's own check (pydantic's meaning)."""

    func: Callable[[Any], Any]


class SecretStr:
    """A string that prints as ``**********``; ``get_secret_value()`` reads it (as pydantic's)."""

    __slots__ = ("_secret_value",)

    def __init__(self, value: str) -> None:
        self._secret_value = value

    def get_secret_value(self) -> str:
        """The secret itself: use it, never print it."""
        return self._secret_value

    def __str__(self) -> str:
        return "**********" if self._secret_value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._secret_value == self._secret_value

    def __hash__(self) -> int:
        return hash(self._secret_value)

    def __len__(self) -> int:
        return len(self._secret_value)


@dataclass(slots=True)
class FieldSpec:
    """One declared field: its default, its description and its constraints."""

    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    description: str | None = None
    constraints: dict[str, Any] | None = None
    annotation: Any = None  # the resolved type, set when the class is defined
    from_json: bool = False  # read from the environment as JSON (list and dict fields)
    check: Check | None = None  # the plain-Python check, set when the class is defined

    def make_default(self) -> Any:
        """The default value (a fresh one from the factory each time)."""
        if self.default_factory is not None:
            return self.default_factory()
        return self.default

    @property
    def required(self) -> bool:
        """Whether the field has no default."""
        return self.default is _MISSING and self.default_factory is None


def Field(  # noqa: N802 - pydantic's spelling, so declarations read the same
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    description: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    pattern: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    title: str | None = None,
    examples: list[Any] | None = None,
) -> Any:
    """Declare a field's default and constraints (the subset of pydantic's ``Field`` used).

    ``title`` and ``examples`` are documentation and accepted as is; any other pydantic
    argument (``alias``, ``strict``...) is a ``TypeError`` where the field is declared, never
    silently ignored."""
    del title, examples
    given = {"gt": gt, "ge": ge, "lt": lt, "le": le, "pattern": pattern}
    given |= {"min_length": min_length, "max_length": max_length}
    constraints = {k: v for k, v in given.items() if v is not None}
    return FieldSpec(default, default_factory, description, constraints or None)


def _path(value: Any) -> Path:
    if isinstance(value, PurePath | str) or hasattr(value, "__fspath__"):
        return Path(value)
    from pydantic_core import PydanticCustomError

    raise PydanticCustomError("path_type", "Input is not a valid path")


def _secret(value: Any) -> SecretStr:
    if isinstance(value, str):
        return SecretStr(value)
    if callable(getattr(value, "get_secret_value", None)):  # ours or pydantic's
        return SecretStr(str(value.get_secret_value()))
    from pydantic_core import PydanticKnownError

    raise PydanticKnownError("string_type")


def _plain(func: Callable[[Any], Any]) -> dict[str, Any]:
    return {"type": "function-plain", "function": {"type": "no-info", "function": func}}


def _unoptional(tp: Any) -> Any:
    """``X`` of ``X | None`` (and ``Annotated[X, ...]``), for deciding how env text is read."""
    if get_origin(tp) is Annotated:
        return _unoptional(get_args(tp)[0])
    if get_origin(tp) in (types.UnionType, typing.Union):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return _unoptional(rest[0]) if len(rest) == 1 else tp
    return tp


def _schema(tp: Any, constraints: dict[str, Any], where: str) -> dict[str, Any]:
    """The pydantic-core schema of type ``tp`` with ``constraints`` on its innermost value."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        schema = _schema(args[0], constraints, where)
        for meta in args[1:]:
            kind = {BeforeValidator: "function-before", AfterValidator: "function-after"}.get(
                type(meta)
            )
            if kind is None:
                raise TypeError(f"{where}: unsupported Annotated metadata {meta!r}")
            fn = {"type": "no-info", "function": meta.func}
            schema = {"type": kind, "function": fn, "schema": schema}
        return schema
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        inner = (
            _schema(rest[0], constraints, where)
            if len(rest) == 1
            else {"type": "union", "choices": [_schema(a, constraints, where) for a in rest]}
        )
        return {"type": "nullable", "schema": inner} if len(rest) < len(args) else inner
    if origin is Literal:
        return {"type": "literal", "expected": list(args)}
    if origin is list:
        _allow(constraints, _LENGTHS, where)
        return {"type": "list", "items_schema": _schema(args[0], {}, where), **constraints}
    if origin is dict:
        _allow(constraints, _LENGTHS, where)
        keys, values = (_schema(a, {}, where) for a in args)
        return {"type": "dict", "keys_schema": keys, "values_schema": values, **constraints}
    simple = {str: "str", int: "int", float: "float", bool: "bool"}
    if tp in simple:
        allowed = {str: (*_LENGTHS, "pattern"), bool: ()}.get(tp, _BOUNDS)
        _allow(constraints, allowed, where)
        return {"type": simple[tp], **constraints}
    _allow(constraints, (), where)
    if tp is Path:
        return _plain(_path)
    if tp is SecretStr:
        return _plain(_secret)
    raise TypeError(f"{where}: type {tp!r} is not supported by loopwright.envmodel")


def _allow(constraints: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    wrong = sorted(set(constraints) - set(allowed))
    if wrong:
        raise TypeError(f"{where}: constraint {', '.join(wrong)} does not apply to this type")


class _Defer(Exception):  # noqa: N818 - control flow, not an error
    """The plain check cannot be sure of this value: pydantic-core decides."""


Check = Callable[[Any], Any]


def _bounded(value: Any, constraints: dict[str, Any]) -> Any:
    c = constraints
    if ("gt" in c and not value > c["gt"]) or ("ge" in c and not value >= c["ge"]):
        raise _Defer
    if ("lt" in c and not value < c["lt"]) or ("le" in c and not value <= c["le"]):
        raise _Defer
    n = len(value) if isinstance(value, str | list | dict) else None
    if n is not None and not c.get("min_length", 0) <= n <= c.get("max_length", n):
        raise _Defer
    if "pattern" in c and not re.search(c["pattern"], value):
        raise _Defer
    return value


def _check_int(value: Any) -> int:
    if type(value) is int or (type(value) is str and _INT.fullmatch(value)):
        return int(value)
    raise _Defer


def _check_float(value: Any) -> float:
    if type(value) in (int, float) or (type(value) is str and _FLOAT.fullmatch(value)):
        return float(value)
    raise _Defer


def _check_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if type(value) is str and value.isascii() and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    raise _Defer


def _check_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise _Defer


def _guarded(func: Check) -> Check:
    def check(value: Any) -> Any:
        try:
            return func(value)
        except Exception:
            raise _Defer from None

    return check


def _checker(tp: Any, constraints: dict[str, Any]) -> Check:
    """The plain-Python check of ``tp``: the value pydantic would give, or ``_Defer``.

    It mirrors :func:`_schema` and accepts only what pydantic-core accepts with the same result.
    """
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        check = _checker(args[0], constraints)
        for meta in args[1:]:
            check = _wrapped(check, _guarded(meta.func), before=isinstance(meta, BeforeValidator))
        return check
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return _defer
        inner = _checker(rest[0], constraints)
        return lambda v: None if v is None else inner(v)
    if origin is Literal:
        return lambda v: v if any(type(v) is type(a) and v == a for a in args) else _defer(v)
    if origin in (list, dict):
        return _container(origin, [_checker(a, {}) for a in args], constraints)
    simple: dict[Any, Check] = {str: _check_str, int: _check_int, float: _check_float}
    if tp in simple:
        scalar = simple[tp]
        return lambda v: _bounded(scalar(v), constraints)
    if tp is bool:
        return _check_bool
    if tp is Path:
        return _guarded(_path)
    if tp is SecretStr:
        return _guarded(_secret)
    return _defer


def _wrapped(inner: Check, fn: Check, *, before: bool) -> Check:
    """A validator function run before or after ``inner``."""

    def check(value: Any) -> Any:
        return inner(fn(value)) if before else fn(inner(value))

    return check


def _container(kind: type, items: list[Check], constraints: dict[str, Any]) -> Check:
    """A list (``items`` = [item]) or dict (``items`` = [key, value]) of checked members."""

    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise _Defer
        if isinstance(value, list):
            return _bounded([items[0](x) for x in value], constraints)
        assert isinstance(value, dict)
        return _bounded({items[0](k): items[1](x) for k, x in value.items()}, constraints)

    return check


def _defer(value: Any) -> Any:
    raise _Defer


class EnvModel:
    """Base of a settings class: ``class S(EnvModel, env_prefix="APP_")`` with annotated fields.

    Instances are plain objects (attributes), with pydantic's ``model_dump()`` and
    ``model_copy(update=...)``; a bad value raises ``pydantic_core.ValidationError`` (which is
    ``pydantic.ValidationError``) naming the field.
    """

    model_fields: ClassVar[dict[str, FieldSpec]]
    _env_prefix: ClassVar[str]
    _validator: ClassVar[Any]

    def __init_subclass__(cls, env_prefix: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: dict[str, FieldSpec] = {}
        for name, tp in hints.items():
            if name.startswith("_") or get_origin(tp) is ClassVar or name == "model_fields":
                continue
            declared = cls.__dict__.get(name, _MISSING)
            spec = declared if isinstance(declared, FieldSpec) else FieldSpec(default=declared)
            spec.annotation = tp
            spec.from_json = get_origin(_unoptional(tp)) in (list, dict)
            _schema(tp, dict(spec.constraints or {}), f"{cls.__name__}.{name}")  # refuse early
            spec.check = _checker(tp, dict(spec.constraints or {}))
            fields[name] = spec
            if isinstance(declared, FieldSpec):
                delattr(cls, name)  # the instance attribute is the value
        cls.model_fields = fields
        cls._env_prefix = env_prefix
        cls._validator = None

    @classmethod
    def _get_validator(cls) -> Any:
        if cls._validator is None:
            from pydantic_core import SchemaValidator

            fields = {
                name: {
                    "type": "typed-dict-field",
                    "schema": _schema(spec.annotation, dict(spec.constraints or {}), name),
                    "required": False,
                }
                for name, spec in cls.model_fields.items()
            }
            schema = {"type": "typed-dict", "fields": fields, "extra_behavior": "ignore"}
            cls._validator = SchemaValidator(schema, {"title": cls.__name__})
        return cls._validator

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        given = {k: v for k, v in values.items() if k in cls.model_fields}
        given = {**self._from_env(given.keys()), **given}
        checked: dict[str, Any]
        try:
            checked = {n: cls._check(n, v) for n, v in given.items()}
        except _Defer:  # not certain: pydantic-core coerces or rejects, with its messages
            checked = cls._get_validator().validate_python(given)
        missing = [n for n, s in cls.model_fields.items() if s.required and n not in checked]
        if missing:
            _raise(
                cls.__name__, [{"type": "missing", "loc": (n,), "input": given} for n in missing]
            )
        for name, spec in cls.model_fields.items():
            self.__dict__[name] = checked[name] if name in checked else spec.make_default()

    @classmethod
    def _check(cls, name: str, value: Any) -> Any:
        check = cls.model_fields[name].check
        assert check is not None  # set in __init_subclass__
        return check(value)

    def _from_env(self, skip: typing.Iterable[str]) -> dict[str, Any]:
        """``PREFIX<FIELD>`` values of the environment (JSON for list and dict fields)."""
        prefix = self._env_prefix.lower()
        if not prefix:
            return {}
        env = {k.lower(): v for k, v in os.environ.items() if k.lower().startswith(prefix)}
        found: dict[str, Any] = {}
        bad: list[dict[str, Any]] = []
        for name, spec in self.model_fields.items():
            raw = env.get(prefix + name)
            if raw is None or name in skip:
                continue
            if not spec.from_json:
                found[name] = raw
                continue
            try:
                found[name] = json.loads(raw)
            except ValueError as exc:
                bad.append({"type": "json_invalid", "loc": (name,), "input": raw})
                bad[-1]["ctx"] = {"error": str(exc)}
        if bad:
            _raise(type(self).__name__, bad)
        return found

    def model_dump(self) -> dict[str, Any]:
        """Every field's value (containers copied, secrets still hidden in ``SecretStr``)."""
        return {name: copy.deepcopy(self.__dict__[name]) for name in self.model_fields}

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with ``update`` applied as is (not validated, as pydantic's ``model_copy``)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(update or {})
        return new

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as pydantic models

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={self.__dict__[n]!r}" for n in self.model_fields)
        return f"{type(self).__name__}({shown})"


def _raise(title: str, errors: list[dict[str, Any]]) -> typing.NoReturn:
    from pydantic_core import ValidationError

    raise ValidationError.from_exception_data(title, errors)  # type: ignore[arg-type]
