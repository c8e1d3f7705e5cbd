"""Hostile skills: every escape route must be stopped, statically or by a guard.

Each test names one attack. Static refusals assert the finding's rule (the
preferred outcome: the author learns before anything runs). Routes the AST
cannot see, such as attribute names built from strings, compile cleanly and
must then be stopped by a guard at run time without the skill obtaining
the dangerous object.
"""

from __future__ import annotations

import json
import sys
import types
from textwrap import dedent

import pytest

from loopwright.sandbox.guards import (
    GuardViolation,
    SkillModule,
    guarded_getattr,
    guarded_write,
    make_importer,
)
from loopwright.sandbox.policy import (
    MAX_SOURCE_BYTES,
    Finding,
    PolicyViolation,
    check_source,
    compile_skill,
    make_globals,
)


def refused_statically(source: str, rule: str) -> list[Finding]:
    """Assert the policy reports ``rule`` and that the skill cannot be compiled."""
    source = dedent(source)
    findings = check_source(source)
    assert rule in {f.rule for f in findings}, findings
    with pytest.raises(PolicyViolation):
        compile_skill(source)
    return findings


def refused_at_runtime(
    source: str, rule: str, sdk: types.ModuleType | None = None
) -> dict[str, object]:
    """Assert the source passes the static policy but a guard stops it running.

    Returns the globals so the caller can check nothing dangerous was bound.
    """
    source = dedent(source)
    assert check_source(source) == []
    skill_globals = make_globals("attack", sdk)
    with pytest.raises(GuardViolation) as info:
        exec(compile_skill(source).code, skill_globals)
    assert info.value.rule == rule, info.value
    return skill_globals


# ------------------------------------------------------------ dunder walks


def test_dunder_walk_to_subclasses() -> None:
    findings = refused_statically(
        "classes = ().__class__.__bases__[0].__subclasses__()", "underscore-name"
    )
    assert {"__class__", "__bases__", "__subclasses__"} <= {
        word.strip('"') for f in findings for word in f.message.split() if word.startswith('"')
    }


def test_dunder_name_built_from_strings_is_refused_by_getattr_guard() -> None:
    g = refused_at_runtime("cls = getattr((), '__cla' + 'ss__')", "underscore-name")
    assert "cls" not in g


def test_literal_dunder_in_getattr_is_refused_statically() -> None:
    refused_statically("cls = getattr((), '__class__')", "underscore-name")


def test_getattr_default_does_not_hide_a_refusal() -> None:
    g = refused_at_runtime("cls = getattr(1, '__cl' + 'ass__', None)", "underscore-name")
    assert "cls" not in g


def test_hasattr_probe_of_private_name_is_refused() -> None:
    g = refused_at_runtime("probe = hasattr(1, '_' + '_class__')", "underscore-name")
    assert "probe" not in g


def test_mro_walk_to_object() -> None:
    refused_statically("base = int.mro()[-1]", "forbidden-attribute")


def test_mro_by_built_name_is_refused_at_runtime() -> None:
    g = refused_at_runtime("base = getattr(int, 'm' + 'ro')", "forbidden-attribute")
    assert "base" not in g


def test_single_underscore_attribute() -> None:
    refused_statically("x = (1)._", "underscore-name")


# ------------------------------------------------------------ format strings


def test_str_format_attribute_walk() -> None:
    refused_statically('leak = "{0.__class__.__mro__}".format(1)', "forbidden-attribute")


def test_str_format_map() -> None:
    refused_statically('leak = "{x.__class__}".format_map({"x": 1})', "forbidden-attribute")


def test_str_format_fetched_by_built_name() -> None:
    g = refused_at_runtime("fmt = getattr('{0.__class__}', 'for' + 'mat')", "forbidden-attribute")
    assert "fmt" not in g


def test_unbound_str_format_by_built_name() -> None:
    g = refused_at_runtime("fmt = getattr(str, 'format' + '_map')", "forbidden-attribute")
    assert "fmt" not in g


def test_format_builtin() -> None:
    refused_statically("x = format(1, '>4')", "forbidden-builtin")


def test_string_formatter_module() -> None:
    refused_statically("import string\nf = string.Formatter()", "import-not-allowed")
    refused_statically("from string import Formatter", "import-not-allowed")


# ------------------------------------------------------------ frame walks


def test_generator_frame_walk() -> None:
    refused_statically(
        """
        gen = (x for x in [1])
        host = gen.gi_frame.f_back.f_globals
        """,
        "forbidden-attribute",
    )


def test_generator_frame_by_built_name() -> None:
    g = refused_at_runtime(
        """
        def gen():
            yield 1
        g = gen()
        frame = getattr(g, 'gi_' + 'frame')
        """,
        "forbidden-attribute",
    )
    assert "frame" not in g


def test_generator_code_object() -> None:
    refused_statically("code = (x for x in []).gi_code", "forbidden-attribute")


def test_frame_locals_and_builtins() -> None:
    refused_statically("f = None\nb = f.f_builtins\nl = f.f_locals", "forbidden-attribute")


def test_coroutine_frame() -> None:
    findings = refused_statically(
        """
        async def work():
            pass
        frame = work().cr_frame
        """,
        "forbidden-attribute",
    )
    assert "statement-not-allowed" in {f.rule for f in findings}


def test_async_generator_frame() -> None:
    findings = refused_statically(
        """
        async def agen():
            yield 1
        frame = agen().ag_frame
        """,
        "forbidden-attribute",
    )
    assert "statement-not-allowed" in {f.rule for f in findings}


def test_traceback_frame_from_caught_exception() -> None:
    refused_statically(
        """
        try:
            1 / 0
        except Exception as e:
            frame = e.__traceback__.tb_frame
        """,
        "underscore-name",
    )


def test_traceback_by_built_name() -> None:
    g = refused_at_runtime(
        """
        try:
            1 / 0
        except Exception as e:
            tb = getattr(e, '__trace' + 'back__')
        """,
        "underscore-name",
    )
    assert "tb" not in g


def test_traceback_chain_walk() -> None:
    refused_statically(
        "tb = None\nnext_tb = tb.tb_next\nframe = tb.tb_frame", "forbidden-attribute"
    )


def test_with_traceback_is_refused() -> None:
    refused_statically("e = ValueError()\ne2 = e.with_traceback(None)", "forbidden-attribute")


# ------------------------------------------------------------ builtins


def test_builtins_dunder_name() -> None:
    refused_statically("b = __builtins__", "underscore-name")


def test_builtins_module_import() -> None:
    refused_statically("import builtins", "import-not-allowed")


def test_open() -> None:
    refused_statically("data = open('/etc/passwd').read()", "forbidden-builtin")


def test_eval() -> None:
    refused_statically("x = eval('1 + 1')", "forbidden-builtin")


def test_exec() -> None:
    refused_statically("exec('x = 1')", "forbidden-builtin")


def test_compile() -> None:
    refused_statically("code = compile('1', 'f', 'eval')", "forbidden-builtin")


def test_globals_vars_locals() -> None:
    findings = refused_statically("g = globals()\nv = vars()\nl = locals()", "forbidden-builtin")
    assert [f.line for f in findings] == [1, 2, 3]


def test_type_introspection() -> None:
    refused_statically("cls = type(1)", "forbidden-builtin")


def test_three_argument_type_creates_no_class() -> None:
    refused_statically("Evil = type('Evil', (), {})", "forbidden-builtin")


def test_type_obtained_through_a_value_is_refused() -> None:
    # Even with a lookalike name, no route hands out the real `type`.
    g = refused_at_runtime(
        "t = getattr(getattr(1, 'real'), '__cl' + 'ass__')",
        "underscore-name",
    )
    assert "t" not in g


def test_breakpoint_and_input() -> None:
    refused_statically("breakpoint()", "forbidden-builtin")
    refused_statically("x = input()", "forbidden-builtin")


def test_setattr_on_module() -> None:
    refused_statically("import json\nsetattr(json, 'loads', print)", "forbidden-builtin")


def test_dangerous_builtins_are_absent_at_runtime() -> None:
    builtins_dict = make_globals("attack")["__builtins__"]
    assert isinstance(builtins_dict, dict)
    for name in ("eval", "exec", "compile", "open", "globals", "vars", "type", "setattr"):
        assert name not in builtins_dict
    assert builtins_dict["getattr"] is guarded_getattr


# ------------------------------------------------------------ imports


def refused_import(module: str) -> None:
    """Both import forms of ``module`` are refused."""
    refused_statically(f"import {module}", "import-not-allowed")
    refused_statically(f"from {module} import path", "import-not-allowed")


def test_import_os() -> None:
    refused_import("os")


def test_import_sys() -> None:
    refused_import("sys")


def test_import_subprocess() -> None:
    refused_import("subprocess")


def test_import_ctypes() -> None:
    refused_import("ctypes")


def test_import_importlib() -> None:
    refused_import("importlib")


def test_import_pickle() -> None:
    refused_import("pickle")


def test_import_socket() -> None:
    refused_import("socket")


def test_import_time_is_left_to_the_sdk() -> None:
    refused_import("time")


def test_import_importlib_submodule() -> None:
    refused_statically("import importlib.util", "import-not-allowed")


def test_import_of_allowed_package_submodule() -> None:
    refused_statically("import json.decoder", "import-not-allowed")
    refused_statically("from json.decoder import scanstring", "import-not-allowed")


def test_relative_import() -> None:
    refused_statically("from . import secrets", "import-not-allowed")


def test_star_import() -> None:
    refused_statically("from math import *", "import-not-allowed")


def test_dunder_import_call() -> None:
    refused_statically("os = __import__('os')", "underscore-name")


def test_guarded_import_refuses_disallowed_modules_at_runtime() -> None:
    importer = make_importer()
    with pytest.raises(GuardViolation) as info:
        importer("os", None, None, None, 0)
    assert info.value.rule == "import-not-allowed"
    with pytest.raises(GuardViolation):
        importer("json", None, None, ("decoder",), 0)
    with pytest.raises(GuardViolation):
        importer("json", None, None, ("loads",), 1)


def test_from_import_cannot_fall_back_to_sys_modules() -> None:
    # When `from json import decoder` finds no attribute, the interpreter
    # looks up sys.modules["json.decoder"], the real module. The importer
    # must refuse the name before that fallback can happen.
    g = make_globals("attack")
    code = compile("from json import decoder", "<attack>", "exec")  # bypasses the policy
    with pytest.raises(GuardViolation):
        exec(code, g)
    assert "decoder" not in g


def test_guarded_import_returns_curated_modules_only() -> None:
    json_module = make_importer()("json", None, None, None, 0)
    assert isinstance(json_module, SkillModule)
    assert json_module is not json
    assert not hasattr(json_module, "decoder")


def test_non_exported_name_from_allowed_module() -> None:
    refused_statically("from functools import update_wrapper", "import-not-allowed")


def test_typing_string_evaluator_is_unavailable() -> None:
    # get_type_hints() eval()s string annotations without restrictions.
    refused_statically("from typing import get_type_hints", "import-not-allowed")


def test_module_attribute_not_exported() -> None:
    refused_statically("import functools\nw = functools.wraps", "module-attribute-not-allowed")


def test_module_attribute_not_exported_by_built_name() -> None:
    g = refused_at_runtime(
        "import functools\nw = getattr(functools, 'wra' + 'ps')", "module-attribute-not-allowed"
    )
    assert "w" not in g


def test_real_module_behind_a_module_attribute() -> None:
    # re.enum.sys would reach sys.modules; the curated module has no "enum".
    g = refused_at_runtime(
        "import re\nm = getattr(re, 'en' + 'um')", "module-attribute-not-allowed"
    )
    assert "m" not in g


def test_operator_attrgetter() -> None:
    refused_statically(
        "import operator\nf = operator.attrgetter('__class__')", "import-not-allowed"
    )
    refused_statically("from operator import attrgetter", "import-not-allowed")


# ------------------------------------------------------------ poisoning


def test_module_attribute_poisoning() -> None:
    refused_statically("import json\ndef evil(s):\n    return 1\njson.loads = evil", "module-write")


def test_module_attribute_poisoning_through_an_alias() -> None:
    g = refused_at_runtime(
        """
        import json
        alias = [json][0]
        alias.loads = len
        """,
        "module-write",
    )
    assert json.loads("[1]") == [1]
    skill_json = g["json"]
    assert isinstance(skill_json, SkillModule)
    assert skill_json.loads is json.loads


def test_deleting_a_module_attribute() -> None:
    refused_statically("import json\ndel json.loads", "module-write")


def test_writing_an_attribute_of_an_imported_function() -> None:
    refused_statically("from json import loads\nloads.cache = {}", "module-write")


def test_writing_an_attribute_of_a_host_function_at_runtime() -> None:
    refused_at_runtime("from json import loads\nf = [loads][0]\nf.cache = {}", "forbidden-write")
    assert not hasattr(json.loads, "cache")


def test_writing_an_attribute_of_a_host_object() -> None:
    refused_at_runtime("import re\np = re.compile('x')\np.flags = 0", "forbidden-write")


def test_skill_module_is_read_only_even_without_the_guard() -> None:
    module = make_importer()("json", None, None, None, 0)
    with pytest.raises(GuardViolation):
        module.loads = len
    with pytest.raises(GuardViolation):
        guarded_write(module)


# ------------------------------------------------------------ guard names


def test_positional_only_parameter_named_like_a_guard() -> None:
    refused_statically("def f(_getattr_, /):\n    return _getattr_", "underscore-name")


def test_lambda_parameter_named_like_a_guard() -> None:
    refused_statically("f = lambda _getitem_=None: 1", "underscore-name")


def test_lambda_default_capturing_getattr_still_goes_through_the_guard() -> None:
    g = refused_at_runtime(
        "f = lambda g=getattr: g(1, '__cl' + 'ass__')\nleak = f()", "underscore-name"
    )
    assert "leak" not in g


def test_assigning_a_guard_name() -> None:
    refused_statically("_getattr_ = lambda obj, name: 1", "underscore-name")


def test_del_of_guard_name() -> None:
    refused_statically("del _write_", "underscore-name")


def test_walrus_into_guard_name() -> None:
    refused_statically("if (_getiter_ := iter):\n    pass", "underscore-name")


def test_global_declaration_of_guard_name() -> None:
    refused_statically("def f():\n    global _getattr_\n    return 1", "underscore-name")


def test_nonlocal() -> None:
    refused_statically(
        "def outer():\n    n = 0\n    def inner():\n        nonlocal n\n    return inner",
        "statement-not-allowed",
    )


def test_nested_function_with_dunder_name() -> None:
    # RestrictedPython alone lets indented defs use names like __init__.
    refused_statically(
        "def f():\n    def __init__():\n        pass\n    return 1", "underscore-name"
    )


def test_keyword_argument_with_private_name() -> None:
    refused_statically("d = dict(_getattr_=1)", "underscore-name")


def test_double_star_kwargs_with_private_key() -> None:
    g = refused_at_runtime("d = dict(**{'_private': 1})", "underscore-name")
    assert "d" not in g


def test_rebinding_print() -> None:
    refused_statically("print = len", "reserved-name")


def test_print_to_a_file_object() -> None:
    refused_at_runtime("print('x', file=[])", "forbidden-builtin")


# ------------------------------------------------------------ classes & statements


def test_class_overriding_getattribute() -> None:
    findings = refused_statically(
        """
        class Sneaky:
            def __getattribute__(self, name):
                return 1
        """,
        "class-not-allowed",
    )
    assert "underscore-name" in {f.rule for f in findings}


def test_class_definitions_are_refused_even_without_dunders() -> None:
    refused_statically("class Plain:\n    x = 1", "class-not-allowed")


def test_class_creation_is_impossible_at_runtime() -> None:
    builtins_dict = make_globals("attack")["__builtins__"]
    assert isinstance(builtins_dict, dict)
    assert "__build_class__" not in builtins_dict


def test_except_star() -> None:
    refused_statically(
        "try:\n    pass\nexcept* ValueError as group:\n    pass", "statement-not-allowed"
    )


def test_match_capture_into_guard_name() -> None:
    refused_statically("match 1:\n    case _getattr_:\n        pass", "statement-not-allowed")


# ------------------------------------------------------------ exception leaks


def test_attribute_error_obj_leak() -> None:
    g = refused_at_runtime(
        """
        try:
            [].nope
        except AttributeError as e:
            leaked = e.obj
        """,
        "forbidden-attribute",
    )
    assert "leaked" not in g


def test_attribute_error_name_leak() -> None:
    g = refused_at_runtime(
        """
        try:
            [].nope
        except AttributeError as e:
            leaked = e.name
        """,
        "forbidden-attribute",
    )
    assert "leaked" not in g


def test_guard_violation_cannot_be_swallowed_by_except_exception() -> None:
    g = refused_at_runtime(
        """
        try:
            x = getattr(1, '__cla' + 'ss__')
        except Exception:
            x = 'swallowed'
        """,
        "underscore-name",
    )
    assert "x" not in g


# ------------------------------------------------------------ decorators


def test_decorator_reading_function_globals() -> None:
    g = refused_at_runtime(
        """
        def steal(function):
            return getattr(function, '__glob' + 'als__')

        @steal
        def victim():
            pass
        """,
        "underscore-name",
    )
    assert "victim" not in g


def test_decorator_using_functools_wraps() -> None:
    refused_statically(
        """
        import functools
        @functools.wraps(functools)
        def f():
            pass
        """,
        "module-attribute-not-allowed",
    )


# ------------------------------------------------------------ host values


def test_frame_or_module_handed_out_by_the_sdk_is_withheld() -> None:
    sdk = types.ModuleType("loopwright.sdk")
    sdk.frame = sys._getframe()  # type: ignore[attr-defined]
    sdk.system = sys  # type: ignore[attr-defined]
    sdk.evaluate = eval  # type: ignore[attr-defined]
    sdk.fine = 1  # type: ignore[attr-defined]
    sdk.__all__ = ["frame", "system", "evaluate", "fine"]  # type: ignore[attr-defined]
    source = dedent(
        """
        from loopwright.sdk import fine
        import loopwright.sdk as lw
        f = getattr(lw, 'fr' + 'ame')
        """
    )
    g = make_globals("attack", sdk)
    with pytest.raises(GuardViolation):
        exec(compile_skill(source).code, g)
    assert g["fine"] == 1
    assert "f" not in g
    for name in ("frame", "system", "evaluate"):
        with pytest.raises(GuardViolation):
            exec(compile_skill(f"from loopwright.sdk import {name}").code, make_globals("a", sdk))


def test_getattr_guard_refuses_real_modules_and_frames() -> None:
    holder = types.SimpleNamespace(module=sys, frame=sys._getframe())
    with pytest.raises(GuardViolation):
        guarded_getattr(sys, "modules")
    with pytest.raises(GuardViolation):
        guarded_getattr(holder, "module")
    with pytest.raises(GuardViolation):
        guarded_getattr(holder, "frame")


def test_subscript_of_non_container_is_refused() -> None:
    refused_at_runtime("import re\nx = re.compile('a')[0]", "forbidden-subscript")


def test_source_too_large() -> None:
    refused_statically("x = 1\n" + "#" * MAX_SOURCE_BYTES, "source-too-large")


def test_several_attacks_in_one_skill_are_all_reported() -> None:
    source = dedent(
        """\
        import os
        b = __builtins__
        f = "{0.__class__}".format
        g = (x for x in []).gi_frame
        class X:
            pass
        """
    )
    assert [(f.rule, f.line) for f in check_source(source)] == [
        ("import-not-allowed", 1),
        ("underscore-name", 2),
        ("forbidden-attribute", 3),
        ("forbidden-attribute", 4),
        ("class-not-allowed", 5),
    ]
