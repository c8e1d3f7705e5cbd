"""Layer 1 sandbox policy: ordinary skills compile and run; findings are actionable."""

from __future__ import annotations

import random
import types
from textwrap import dedent

import pytest

from loopwright.sandbox.guards import FORBIDDEN_NAMES, GuardViolation
from loopwright.sandbox.policy import (
    ALLOWED_MODULES,
    MAX_SOURCE_BYTES,
    Finding,
    PolicyViolation,
    check_source,
    compile_skill,
    make_globals,
    printed_output,
)


def run(source: str, sdk: types.ModuleType | None = None) -> dict[str, object]:
    """Compile a skill under the policy, execute it, and return its globals."""
    source = dedent(source)
    assert check_source(source) == []
    compiled = compile_skill(source, "skill.py")
    skill_globals = make_globals("skill_under_test", sdk)
    exec(compiled.code, skill_globals)
    return skill_globals


def fake_sdk() -> types.ModuleType:
    """A stand-in for loopwright.sdk with the same decorator shape."""
    module = types.ModuleType("loopwright.sdk")

    def skill(**options: object) -> object:
        def register(function: object) -> object:
            registered.append((options, function))
            return function

        return register

    def cron(expression: str) -> dict[str, str]:
        return {"cron": expression}

    registered: list[tuple[dict[str, object], object]] = []
    module.skill = skill  # type: ignore[attr-defined]
    module.cron = cron  # type: ignore[attr-defined]
    module.registered = registered  # type: ignore[attr-defined]
    module._internal = object()  # type: ignore[attr-defined]
    module.__all__ = ["skill", "cron", "registered"]  # type: ignore[attr-defined]
    return module


# ---------------------------------------------------------------- execution


def test_comprehensions_of_every_kind() -> None:
    g = run(
        """
        words = ["alpha", "beta", "gamma", "beta"]
        lengths = [len(w) for w in words if w != "gamma"]
        index = {w: i for i, w in enumerate(words)}
        unique = {w.upper() for w in words}
        pairs = [(a, b) for a in range(3) for b in range(a)]
        """
    )
    assert g["lengths"] == [5, 4, 4]
    assert g["index"] == {"alpha": 0, "beta": 3, "gamma": 2}
    assert g["unique"] == {"ALPHA", "BETA", "GAMMA"}
    assert g["pairs"] == [(1, 0), (2, 0), (2, 1)]


def test_json_round_trip() -> None:
    g = run(
        """
        import json
        payload = {"name": "probe", "values": [1, 2.5, None, True], "nested": {"k": "v"}}
        text = json.dumps(payload, sort_keys=True)
        back = json.loads(text)
        try:
            json.loads("{broken")
            error = None
        except json.JSONDecodeError as exc:
            error = exc.msg
        """
    )
    assert g["back"] == {"name": "probe", "values": [1, 2.5, None, True], "nested": {"k": "v"}}
    assert isinstance(g["text"], str) and g["text"].startswith('{"name"')
    assert g["error"] == "Expecting property name enclosed in double quotes"


def test_regular_expressions() -> None:
    g = run(
        r"""
        import re
        pattern = re.compile(r"(?P<key>\w+)=(?P<value>\d+)")
        found = {m.group("key"): int(m.group("value")) for m in pattern.finditer("a=1, b=22")}
        first = re.match(r"(\d+)-(\d+)", "12-34")
        parts = [first[1], first.group(2)]
        cleaned = re.sub(r"\s+", " ", "a   b \n c", flags=re.MULTILINE)
        words = re.findall(r"[a-z]+", "Hello big World", re.IGNORECASE)
        """
    )
    assert g["found"] == {"a": 1, "b": 22}
    assert g["parts"] == ["12", "34"]
    assert g["cleaned"] == "a b c"
    assert g["words"] == ["Hello", "big", "World"]


def test_statistics() -> None:
    g = run(
        """
        from statistics import mean, median, pstdev
        import statistics
        data = [2, 4, 4, 4, 5, 5, 7, 9]
        summary = (mean(data), median(data), pstdev(data), statistics.mode(data))
        """
    )
    assert g["summary"] == (5, 4.5, 2.0, 4)


def test_datetime_arithmetic() -> None:
    g = run(
        """
        from datetime import date, datetime, timedelta, timezone
        start = datetime(2024, 2, 28, 12, 0, tzinfo=timezone.utc)
        later = start + timedelta(days=2, hours=3)
        label = later.strftime("%Y-%m-%d %H:%M")
        parsed = datetime.fromisoformat("2024-03-01T15:00:00+00:00")
        days = (date(2024, 12, 25) - date(2024, 1, 1)).days
        same = parsed == later
        """
    )
    assert g["label"] == "2024-03-01 15:00"
    assert g["days"] == 359
    assert g["same"] is True


def test_collections() -> None:
    g = run(
        """
        from collections import Counter, defaultdict, deque, namedtuple
        counts = Counter("mississippi").most_common(2)
        groups = defaultdict(list)
        for word in ["apple", "avocado", "banana"]:
            groups[word[0]].append(word)
        window = deque([1, 2, 3], maxlen=3)
        window.append(4)
        Point = namedtuple("Point", ["x", "y"])
        p = Point(3, 4)
        distance = (p.x ** 2 + p.y ** 2) ** 0.5
        """
    )
    assert g["counts"] == [("i", 4), ("s", 4)]
    assert dict(g["groups"]) == {"a": ["apple", "avocado"], "b": ["banana"]}  # type: ignore[call-overload]
    assert list(g["window"]) == [2, 3, 4]  # type: ignore[call-overload]
    assert g["distance"] == 5.0


def test_itertools_and_functools() -> None:
    g = run(
        """
        import itertools
        from functools import lru_cache, partial, reduce
        grouped = {k: len(list(v)) for k, v in itertools.groupby("aaabcc")}
        flat = list(itertools.chain([1, 2], (3, 4)))
        firsts = list(itertools.islice(itertools.count(10, 5), 3))
        combos = len(list(itertools.combinations(range(5), 2)))
        product = reduce(lambda a, b: a * b, range(1, 6))
        def power(base, exponent):
            return base ** exponent
        square = partial(power, exponent=2)

        @lru_cache(maxsize=None)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        results = (square(7), fib(30))
        """
    )
    assert g["grouped"] == {"a": 3, "b": 1, "c": 2}
    assert g["flat"] == [1, 2, 3, 4]
    assert g["firsts"] == [10, 15, 20]
    assert g["combos"] == 10
    assert g["product"] == 120
    assert g["results"] == (49, 832040)


def test_nested_functions_and_closures() -> None:
    g = run(
        """
        def make_counter(start):
            state = {"n": start}
            def bump(step=1):
                state["n"] = state["n"] + step
                return state["n"]
            return bump

        def compose(*functions):
            def composed(value):
                for function in reversed(functions):
                    value = function(value)
                return value
            return composed

        counter = make_counter(10)
        counter()
        counter(5)
        pipeline = compose(str, lambda x: x * 2, abs)
        results = (counter(), pipeline(-21))
        """
    )
    assert g["results"] == (17, "42")


def test_try_except_finally_and_raise() -> None:
    g = run(
        """
        log = []
        def divide(a, b):
            try:
                return a / b
            except ZeroDivisionError as exc:
                log.append("zero: " + str(exc))
                raise ValueError("cannot divide " + str(a) + " by zero") from exc
            finally:
                log.append("done")

        try:
            divide(1, 0)
        except ValueError as exc:
            message = str(exc)
        ok = divide(9, 3)
        """
    )
    assert g["message"] == "cannot divide 1 by zero"
    assert g["ok"] == 3.0
    assert g["log"] == ["zero: division by zero", "done", "done"]


def test_string_methods_and_f_strings() -> None:
    g = run(
        """
        line = "  name, value ,extra  "
        fields = [part.strip() for part in line.split(",")]
        joined = "-".join(fields).upper()
        price = 3.14159
        label = f"{fields[0]!r} costs {price:.2f} ({len(fields)} fields, {price * 2:>8.3f})"
        title = "hello world".title().replace("World", "There")
        checks = ("abc".startswith("a"), "a1".isalnum(), "x".center(3, "*"))
        old_style = "%s=%d" % ("n", 5)
        """
    )
    assert g["fields"] == ["name", "value", "extra"]
    assert g["joined"] == "NAME-VALUE-EXTRA"
    assert g["label"] == "'name' costs 3.14 (3 fields,    6.283)"
    assert g["title"] == "Hello There"
    assert g["checks"] == (True, True, "*x*")
    assert g["old_style"] == "n=5"


def test_sorting_with_key_functions() -> None:
    g = run(
        """
        rows = [{"name": "b", "score": 2}, {"name": "a", "score": 3}, {"name": "c", "score": 1}]
        by_score = [r["name"] for r in sorted(rows, key=lambda r: r["score"], reverse=True)]
        best = max(rows, key=lambda r: r["score"])["name"]
        names = sorted(r["name"] for r in rows)
        rows.sort(key=lambda r: r["name"])
        in_place = [r["name"] for r in rows]
        """
    )
    assert g["by_score"] == ["a", "b", "c"]
    assert g["best"] == "a"
    assert g["names"] == ["a", "b", "c"]
    assert g["in_place"] == ["a", "b", "c"]


def test_generators_consumed_by_builtins() -> None:
    g = run(
        """
        def evens(limit):
            n = 0
            while n < limit:
                if n % 2 == 0:
                    yield n
                n += 1

        total = sum(x * x for x in range(10))
        even_total = sum(evens(10))
        any_big = any(x > 50 for x in evens(100))
        gen = evens(5)
        first = next(gen)
        rest = list(gen)
        """
    )
    assert g["total"] == 285
    assert g["even_total"] == 20
    assert g["any_big"] is True
    assert (g["first"], g["rest"]) == (0, [2, 4])


def test_math_functions() -> None:
    g = run(
        """
        import math
        from math import isclose, sqrt
        values = (math.floor(2.7), math.ceil(2.1), sqrt(16), math.gcd(12, 18))
        close = isclose(math.sin(math.pi / 2), 1.0)
        hyp = math.hypot(3, 4)
        """
    )
    assert g["values"] == (2, 3, 4.0, 6)
    assert g["close"] is True
    assert g["hyp"] == 5.0


def test_dict_iteration_and_unpacking() -> None:
    g = run(
        """
        config = {"retries": 3, "timeout": 10}
        pairs = []
        for key, value in sorted(config.items()):
            pairs.append(key + "=" + str(value))
        first, *middle, last = [1, 2, 3, 4, 5]
        (a, b), c = (1, 2), 3
        a, b = b, a
        merged = {**config, "timeout": 30}
        args = [2, 10]
        power = pow(*args)
        keys = list(config)
        """
    )
    assert g["pairs"] == ["retries=3", "timeout=10"]
    assert (g["first"], g["middle"], g["last"]) == (1, [2, 3, 4], 5)
    assert (g["a"], g["b"], g["c"]) == (2, 1, 3)
    assert g["merged"] == {"retries": 3, "timeout": 30}
    assert g["power"] == 1024
    assert g["keys"] == ["retries", "timeout"]


def test_augmented_assignment_on_names() -> None:
    g = run(
        """
        total = 0
        for n in range(5):
            total += n
        items = [1]
        items += [2, 3]
        text = "a"
        text *= 3
        bits = 0b1100
        bits &= 0b1010
        """
    )
    assert (g["total"], g["items"], g["text"], g["bits"]) == (10, [1, 2, 3], "aaa", 0b1000)


def test_print_is_captured_not_written_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    g = run(
        """
        def report(name, value):
            print(name, value, sep=": ")
        report("alpha", 1)
        print("done", end="!")
        seen = printed
        """
    )
    assert printed_output(g) == "alpha: 1\ndone!"
    assert g["seen"] == "alpha: 1\ndone!"
    assert capsys.readouterr().out == ""


def test_random_is_private_and_seedable() -> None:
    host_state = random.getstate()
    g = run(
        """
        import random
        random.seed(42)
        first = [random.randint(1, 100) for _ in range(5)]
        random.seed(42)
        second = [random.randint(1, 100) for _ in range(5)]
        deck = list(range(10))
        random.shuffle(deck)
        """
    )
    assert g["first"] == g["second"]
    assert sorted(g["deck"]) == list(range(10))  # type: ignore[call-overload]
    # The skill's seeding never touched the host's global generator.
    assert random.getstate() == host_state


def test_decimal_fractions_heapq_and_bisect() -> None:
    g = run(
        """
        from decimal import Decimal, ROUND_HALF_UP
        from fractions import Fraction
        import heapq
        import bisect
        money = (Decimal("1.10") + Decimal("2.205")).quantize(Decimal("0.01"), ROUND_HALF_UP)
        ratio = Fraction(1, 3) + Fraction(1, 6)
        smallest = heapq.nsmallest(2, [5, 1, 4, 2])
        scores = [10, 20, 30]
        bisect.insort(scores, 25)
        """
    )
    assert str(g["money"]) == "3.31"
    assert str(g["ratio"]) == "1/2"
    assert g["smallest"] == [1, 2]
    assert g["scores"] == [10, 20, 25, 30]


def test_annotations_and_typing_imports() -> None:
    g = run(
        """
        from __future__ import annotations
        from typing import Any, Optional
        import typing

        def summarize(rows: list[dict[str, Any]], limit: Optional[int] = None) -> typing.List[str]:
            return [str(r["id"]) for r in rows[:limit]]

        out = summarize([{"id": 1}, {"id": 2}], 1)
        """
    )
    assert g["out"] == ["1"]


def test_runtime_annotations_are_evaluated_through_guards() -> None:
    g = run(
        """
        from typing import Dict, Optional
        def f(a: Optional[int], b: Dict[str, list[int]]) -> tuple[int, ...]:
            return (a, len(b))
        out = f(1, {})
        """
    )
    assert g["out"] == (1, 0)


def test_sdk_skill_shape_runs_with_the_sdk_module() -> None:
    sdk = fake_sdk()
    g = run(
        """
        from loopwright.sdk import skill, cron
        import loopwright.sdk as lw
        from loopwright import sdk

        @skill(name="service-health", trigger=cron("*/30 * * * *"), tools=["http"])
        def main(ctx):
            return {"ok": True, "ctx": ctx}

        same = lw.skill is skill and sdk.cron is cron
        result = main("context")
        """,
        sdk=sdk,
    )
    assert g["same"] is True
    assert g["result"] == {"ok": True, "ctx": "context"}
    assert sdk.registered[0][0]["name"] == "service-health"


def test_guarded_getattr_and_hasattr_work_for_public_names() -> None:
    g = run(
        """
        d = {"a": 1}
        getter = getattr(d, "get")
        values = (getter("a"), getattr(d, "missing", "fallback"), hasattr("x", "upper"))
        absent = hasattr(3, "nope")
        """
    )
    assert g["values"] == (1, "fallback", True)
    assert g["absent"] is False


def test_names_shadowing_forbidden_builtins_are_fine_when_bound() -> None:
    g = run(
        """
        rows = [{"id": 7, "type": "a"}]
        for row in rows:
            id = row["id"]
            type = row["type"]
        summary = (id, type)
        """
    )
    assert g["summary"] == (7, "a")


def test_control_flow_and_slicing() -> None:
    g = run(
        """
        collected = []
        n = 0
        while True:
            n = n + 1
            if n % 2:
                continue
            if n > 8:
                break
            collected.append(n)
        text = "abcdef"
        pieces = (text[1:3], text[::-1], text[-2:], collected[::2])
        with_else = None
        for item in collected:
            if item > 100:
                break
        else:
            with_else = "no break"
        del collected[0]
        """
    )
    assert g["pieces"] == ("bc", "fedcba", "ef", [2, 6])
    assert g["with_else"] == "no break"
    assert g["collected"] == [4, 6, 8]


def test_each_make_globals_is_independent() -> None:
    source = "import json\nholder = [json]\nseen = len(holder)"
    compiled = compile_skill(source)
    first, second = make_globals("a"), make_globals("b")
    exec(compiled.code, first)
    exec(compiled.code, second)
    assert first["json"] is not second["json"]
    assert first["__builtins__"] is not second["__builtins__"]


def test_builtins_contain_nothing_forbidden() -> None:
    builtins_dict = make_globals("x")["__builtins__"]
    assert isinstance(builtins_dict, dict)
    assert not set(builtins_dict) & set(FORBIDDEN_NAMES)
    assert "__build_class__" not in builtins_dict
    assert "SystemExit" not in builtins_dict


# ---------------------------------------------------------------- findings


def test_clean_source_has_no_findings() -> None:
    assert check_source("x = 1\n") == []


def test_import_finding_is_actionable() -> None:
    [finding] = check_source("import json\nimport os\n")
    assert finding == Finding(
        rule="import-not-allowed",
        line=2,
        col=1,
        message='Module "os" cannot be imported in a skill.',
        hint=finding.hint,
    )
    assert all(module in finding.hint for module in ("json", "re", "loopwright.sdk"))
    assert finding.to_dict() == {
        "rule": "import-not-allowed",
        "line": 2,
        "col": 1,
        "message": finding.message,
        "hint": finding.hint,
    }


def test_underscore_finding_points_at_the_attribute() -> None:
    [finding] = check_source("value = 1\nname = value.__class__\n")
    assert (finding.rule, finding.line, finding.col) == ("underscore-name", 2, 14)
    assert "__class__" in finding.message
    assert finding.hint


def test_columns_count_characters_not_bytes() -> None:
    [finding] = check_source('s = "ééé"; t = s.__len__\n')
    assert finding.col == 18


def test_forbidden_builtin_finding_has_a_specific_hint() -> None:
    [finding] = check_source("kind = type(3)\n")
    assert (finding.rule, finding.line, finding.col) == ("forbidden-builtin", 1, 8)
    assert "isinstance" in finding.hint


def test_syntax_error_is_reported_alone_with_position() -> None:
    findings = check_source("import os\ndef broken(:\n    pass\n")
    assert [(f.rule, f.line) for f in findings] == [("syntax-error", 2)]
    assert findings[0].col > 0


def test_compiler_level_syntax_errors_are_findings() -> None:
    [finding] = check_source("x = 1\nreturn x\n")
    assert (finding.rule, finding.line) == ("syntax-error", 2)
    assert "outside function" in finding.message


def test_unparseable_sources_are_findings_not_crashes() -> None:
    [nul] = check_source("x = 1\x00")
    assert nul.rule == "syntax-error"
    [deep] = check_source("x = " + "-" * 100_000 + "1")
    assert deep.rule == "too-complex"
    assert "nested too deeply" in deep.message


def test_oversized_source_is_refused_before_parsing() -> None:
    source = "x = 1\n" + "#" * MAX_SOURCE_BYTES + "\ndef broken(:\n"
    [finding] = check_source(source)
    assert finding.rule == "source-too-large"
    assert str(MAX_SOURCE_BYTES) in finding.message


def test_restricted_python_errors_become_findings_with_lines() -> None:
    # Only RestrictedPython refuses names ending in "__roles__" (a Zope
    # convention); its message becomes a generic finding with the line.
    [finding] = check_source("x = 1\nuser__roles__ = 2\n")
    assert (finding.rule, finding.line, finding.col) == ("restricted-compile", 2, 0)
    assert "__roles__" in finding.message


def test_duplicate_restricted_python_errors_are_merged() -> None:
    findings = check_source("x = ().__class__\n")
    assert [(f.rule, f.line) for f in findings] == [("underscore-name", 1)]


def test_all_findings_are_reported_with_correct_lines() -> None:
    source = dedent(
        """\
        import json
        import os
        from subprocess import run

        def handler(event, _secret):
            data = event.__dict__
            return eval(data)

        class Helper:
            pass

        json.loads = handler
        frame = (x for x in []).gi_frame
        text = "{0}".format(1)
        """
    )
    found = [(f.rule, f.line) for f in check_source(source)]
    assert found == [
        ("import-not-allowed", 2),
        ("import-not-allowed", 3),
        ("underscore-name", 5),
        ("underscore-name", 6),
        ("forbidden-builtin", 7),
        ("class-not-allowed", 9),
        ("module-write", 12),
        ("forbidden-attribute", 13),
        ("forbidden-attribute", 14),
    ]


def test_compile_skill_raises_policy_violation_with_findings() -> None:
    with pytest.raises(PolicyViolation) as info:
        compile_skill("import os\nx = open('f')\n")
    assert [f.rule for f in info.value.findings] == ["import-not-allowed", "forbidden-builtin"]
    assert "line 1: [import-not-allowed]" in str(info.value)


def test_allowed_modules_cover_the_documented_set() -> None:
    expected = {"json", "re", "math", "statistics", "datetime", "collections", "itertools"}
    expected |= {"functools", "decimal", "fractions", "random", "typing", "loopwright.sdk"}
    assert expected <= ALLOWED_MODULES
    assert not {"string", "time", "operator", "os", "sys", "dataclasses"} & ALLOWED_MODULES


def test_printed_output_rejects_foreign_globals() -> None:
    with pytest.raises(ValueError, match="make_globals"):
        printed_output({})


def test_print_output_is_bounded() -> None:
    g = run("for i in range(100):\n    print('x' * 10000)\n")
    sink_text = printed_output(g)
    assert len(sink_text) == 256 * 1024


def test_guard_violation_is_not_swallowed_by_except_exception() -> None:
    source = "try:\n    v = getattr(1, '__cla' + 'ss__')\nexcept Exception:\n    v = 'swallowed'\n"
    g = make_globals("t")
    with pytest.raises(GuardViolation):
        exec(compile_skill(source).code, g)
    assert "v" not in g
