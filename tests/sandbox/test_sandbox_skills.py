"""Legitimate skills keep working in the sandbox: no over-blocking.

Each skill is an ordinary one an LLM would write: the allowed standard modules, durable steps
with retries and fallbacks, durable sleep, host tools, logs, params, event data, large and
unicode outputs. Each runs untrusted (policy-checked at submit, then in a guest process) on a
real worker and asserts its exact output.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import Cluster
from loopwright.inbox import Inbox
from loopwright.runner.records import Run
from loopwright.sandbox.policy import check_source


@dataclass
class Sandboxed:
    """A sandbox cluster with one worker; every run is untrusted."""

    cluster: Cluster

    def run(self, source: str, data: Any = None, timeout: float = 30.0, **kw: Any) -> Run:
        """Check the source passes the policy (as ``loopwright run`` does), then run it."""
        assert check_source(source) == [], check_source(source)
        name = self.cluster.skill(source)
        run_id = self.cluster.start(name, {} if data is None else data, trusted=False, **kw)
        return self.cluster.wait(run_id, timeout=timeout)

    def completed(self, source: str, data: Any = None, **kw: Any) -> Run:
        run = self.run(source, data, **kw)
        assert run.status.value == "completed", run.error
        return run


@pytest.fixture
def sandboxed(sandbox_cluster: Cluster) -> Sandboxed:
    sandbox_cluster.worker()
    return Sandboxed(sandbox_cluster)


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1: scripted answers per path, every request recorded."""

    answers: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()

    class Handler(BaseHTTPRequestHandler):
        def serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            up.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "key": self.headers.get("Idempotency-Key"),
                    "body": json.loads(body) if body else None,
                }
            )
            script = up.answers.get(self.path.split("?")[0], [])
            status, payload = script.pop(0) if script else (200, {"ok": True})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = serve  # noqa: N815 - http.server's naming
        do_POST = serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    up.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield up
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------ allowed modules


def test_json_and_re_work_in_the_sandbox(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill
import json
import re

@skill(name="parse-log")
def main(ctx):
    lines = ["GET /a 200 12ms", "POST /b 500 340ms", "get /c 404 7ms"]
    pattern = re.compile(r"^(\\w+) (\\S+) (\\d{3}) (\\d+)ms$")
    rows = [pattern.match(line).groups() for line in lines]
    slow = [path for method, path, status, ms in rows if int(ms) > 100]
    gets = len(re.findall(r"^get ", "\\n".join(lines), re.IGNORECASE | re.MULTILINE))
    text = json.dumps({"slow": slow, "gets": gets}, sort_keys=True)
    return {"encoded": text, "decoded": json.loads(text),
            "masked": re.sub(r"\\d+ms", "<t>", lines[0]),
            "split": re.split(r"\\s+", "a  b\\tc")}
""")
    assert run.output == {
        "encoded": '{"gets": 2, "slow": ["/b"]}',
        "decoded": {"gets": 2, "slow": ["/b"]},
        "masked": "GET /a 200 <t>",
        "split": ["a", "b", "c"],
    }


def test_math_statistics_decimal_and_fractions(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill
import math
import statistics
from decimal import Decimal, Context, ROUND_HALF_UP
from fractions import Fraction

@skill(name="numbers")
def main(ctx):
    samples = [2, 4, 4, 4, 5, 5, 7, 9]
    money = Decimal("1.10") + Decimal("2.205")
    return {
        "isqrt": math.isqrt(10 ** 12 + 1),
        "gcd": math.gcd(84, 36),
        "comb": math.comb(10, 3),
        "fsum": math.fsum([0.1] * 10),
        "mean": statistics.mean(samples),
        "median": statistics.median(samples),
        "pstdev": statistics.pstdev(samples),
        "money": str(money.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)),
        "seventh": str(Context(prec=5).divide(Decimal(1), Decimal(7))),
        "fraction": str(Fraction(1, 3) + Fraction(1, 6)),
    }
""")
    assert run.output == {
        "isqrt": 1000000,
        "gcd": 12,
        "comb": 120,
        "fsum": 1.0,
        "mean": 5,
        "median": 4.5,
        "pstdev": 2.0,
        "money": "3.31",
        "seventh": "0.14286",
        "fraction": "1/2",
    }


def test_datetime_arithmetic_and_parsing(sandboxed: Sandboxed) -> None:
    # strptime imports the _strptime helper lazily, through the guarded __import__
    run = sandboxed.completed("""
from loopwright.sdk import skill
from datetime import date, datetime, timedelta, timezone

@skill(name="calendar")
def main(ctx):
    leap = date(2024, 2, 28) + timedelta(days=1)
    parsed = datetime.strptime("2024-03-05 14:30", "%Y-%m-%d %H:%M")
    aware = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
    shifted = aware.astimezone(timezone(timedelta(hours=2)))
    return {
        "leap": leap.isoformat(),
        "weekday": leap.strftime("%A"),
        "parsed": parsed.strftime("%d/%m/%Y %H:%M"),
        "shifted": shifted.isoformat(),
        "span_days": (date(2024, 12, 25) - date(2024, 1, 1)).days,
    }
""")
    assert run.output == {
        "leap": "2024-02-29",
        "weekday": "Thursday",
        "parsed": "05/03/2024 14:30",
        "shifted": "2024-01-01T14:00:00+02:00",
        "span_days": 359,
    }


def test_collections_itertools_and_functools(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill
from collections import ChainMap, Counter, OrderedDict, defaultdict, deque, namedtuple
import itertools
import functools

Point = namedtuple("Point", ["x", "y"])

@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@skill(name="containers")
def main(ctx):
    words = "the cat and the hat and the bat".split()
    groups = defaultdict(list)
    for word in words:
        groups[word[0]].append(word)
    recent = deque(maxlen=3)
    for n in range(6):
        recent.append(n)
    p = Point(3, 4)
    runs = [(k, len(list(g))) for k, g in itertools.groupby("aaabccdd")]
    by_len = sorted(words, key=functools.cmp_to_key(lambda a, b: len(a) - len(b)))
    return {
        "top": Counter(words).most_common(2),
        "groups": dict(groups),
        "recent": list(recent),
        "point": [p.x, p.y, p.x + p.y],
        "ordered": list(OrderedDict([("b", 1), ("a", 2)])),
        "chain": ChainMap({"a": 1}, {"a": 2, "b": 3})["b"],
        "runs": runs,
        "pairs": list(itertools.combinations("abc", 2)),
        "totals": list(itertools.accumulate([1, 2, 3, 4])),
        "product": functools.reduce(lambda a, b: a * b, range(1, 6)),
        "fib": fib(60),
        "partial": functools.partial(int, base=2)("1011"),
        "first_len": len(by_len[0]),
    }
""")
    assert run.output == {
        "top": [["the", 3], ["and", 2]],
        "groups": {"t": ["the", "the", "the"], "c": ["cat"], "a": ["and", "and"],
                   "h": ["hat"], "b": ["bat"]},
        "recent": [3, 4, 5],
        "point": [3, 4, 7],
        "ordered": ["b", "a"],
        "chain": 3,
        "runs": [["a", 3], ["b", 1], ["c", 2], ["d", 2]],
        "pairs": [["a", "b"], ["a", "c"], ["b", "c"]],
        "totals": [1, 3, 6, 10],
        "product": 120,
        "fib": 1548008755920,
        "partial": 11,
        "first_len": 3,
    }  # fmt: skip


def test_heapq_bisect_and_typing_annotations(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from __future__ import annotations
from loopwright.sdk import skill
import heapq
import bisect
from typing import Dict, List, Optional, cast

def cheapest(prices: Dict[str, float], n: int) -> List[str]:
    return [name for price, name in heapq.nsmallest(n, [(p, k) for k, p in prices.items()])]

def grade(score: int, cutoffs: Optional[List[int]] = None) -> str:
    cutoffs = cutoffs or [60, 70, 80, 90]
    return "FDCBA"[bisect.bisect(cutoffs, score)]

@skill(name="ranking")
def main(ctx):
    heap = []
    for n in [5, 1, 4, 2, 3]:
        heapq.heappush(heap, n)
    ordered = [heapq.heappop(heap) for i in range(len(heap))]
    slots = [10, 20, 30]
    bisect.insort(slots, 25)
    return {
        "ordered": ordered,
        "cheapest": cheapest({"a": 3.5, "b": 1.25, "c": 2.0}, 2),
        "grades": [grade(s) for s in [55, 60, 85, 99]],
        "slots": slots,
        "cast": cast(int, "not checked at run time"),
    }
""")
    assert run.output == {
        "ordered": [1, 2, 3, 4, 5],
        "cheapest": ["b", "c"],
        "grades": ["F", "D", "B", "A"],
        "slots": [10, 20, 25, 30],
        "cast": "not checked at run time",
    }


def test_seeded_random_is_reproducible_and_private_to_the_run(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill
import random

@skill(name="dice")
def main(ctx):
    random.seed(7)
    rolls = [random.randint(1, 6) for i in range(5)]
    own = random.Random(11)
    deck = list(range(10))
    own.shuffle(deck)
    return {"rolls": rolls, "deck": deck, "pick": own.choice("abcdef")}
""")
    expected_rng = random.Random(7)
    rolls = [expected_rng.randint(1, 6) for _ in range(5)]
    own = random.Random(11)
    deck = list(range(10))
    own.shuffle(deck)
    assert run.output == {"rolls": rolls, "deck": deck, "pick": own.choice("abcdef")}


def test_everyday_python_constructs(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill

def make_counter():
    state = {"n": 0}
    def bump(by=1):
        state["n"] = state["n"] + by
        return state["n"]
    return bump

def stats(*values, **options):
    scale = options.get("scale", 1)
    return [v * scale for v in values]

def evens(limit):
    n = 0
    while n < limit:
        yield n
        n += 2

@skill(name="plain-python")
def main(ctx):
    bump = make_counter()
    bump()
    bump(5)
    first, *middle, last = [1, 2, 3, 4, 5]
    squares = {n: n * n for n in range(4)}
    found = None
    for n in range(10):
        if n * n > 20:
            found = n
            break
    else:
        found = -1
    try:
        int("x")
    except ValueError as exc:
        error = str(exc)
    finally:
        cleaned = True
    printed_value = 3.14159
    print(f"pi is about {printed_value:.2f}")
    return {
        "counter": bump(0),
        "unpacked": [first, middle, last],
        "squares": squares,
        "found": found,
        "error": error,
        "cleaned": cleaned,
        "stats": stats(1, 2, 3, scale=10),
        "evens": list(evens(7)),
        "formatted": f"{1234.5678:>12,.2f}|{42:05d}|{'x'!r}|{0.25:.0%}",
        "sorted": sorted([("b", 2), ("a", 2), ("c", 1)], key=lambda kv: (kv[1], kv[0])),
        "any_all": [any(n > 3 for n in [1, 5]), all(n > 3 for n in [1, 5])],
        "sets": sorted({1, 2, 3} & {2, 3, 4}),
        "text": " ".join(w.capitalize() for w in "hello sandbox world".split()),
    }
""")
    assert run.output == {
        "counter": 6,
        "unpacked": [1, [2, 3, 4], 5],
        "squares": {"0": 0, "1": 1, "2": 4, "3": 9},
        "found": 5,
        "error": "invalid literal for int() with base 10: 'x'",
        "cleaned": True,
        "stats": [10, 20, 30],
        "evens": [0, 2, 4, 6],
        "formatted": "    1,234.57|00042|'x'|25%",
        "sorted": [["c", 1], ["a", 2], ["b", 2]],
        "any_all": [True, False],
        "sets": [2, 3],
        "text": "Hello Sandbox World",
    }


# ------------------------------------------------------------------ durable steps


def test_step_failing_twice_is_retried_in_the_guest_and_succeeds(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill

@skill(name="flaky-in-guest", retries=3, backoff=0.01)
def main(ctx):
    calls = {"n": 0}
    def flaky():
        calls["n"] = calls["n"] + 1
        if calls["n"] < 3:
            raise ConnectionError("upstream down (attempt " + str(calls["n"]) + ")")
        return "ok after " + str(calls["n"])
    return ctx.step.run("call", flaky)
""")
    assert run.output == "ok after 3"
    (step,) = sandboxed.cluster.rt.runs.steps(run.id)
    assert (step.status, step.attempts) == ("done", 3)


def test_retry_after_error_with_a_small_delay_retries_inline(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill, RetryAfterError

@skill(name="rate-limited-inline", retries=2)
def main(ctx):
    seen = []
    def call():
        seen.append(1)
        if len(seen) == 1:
            raise RetryAfterError("429 from upstream", seconds=0.05)
        return "served on attempt " + str(len(seen))
    return ctx.step.run("call", call)
""")
    assert run.output == "served on attempt 2"
    (step,) = sandboxed.cluster.rt.runs.steps(run.id)
    assert (step.status, step.attempts) == ("done", 2)


def test_retry_past_the_inline_wait_parks_and_resumes_in_a_new_guest(
    sandboxed: Sandboxed, upstream: Upstream
) -> None:
    # Given an upstream that fails once, and a backoff longer than the in-worker wait
    sandboxed.cluster.scheduler()
    upstream.answers["/report"] = [(503, {"error": "busy"}), (200, {"value": 42})]
    run = sandboxed.completed(
        f"""
from loopwright.sdk import skill

@skill(name="parked-retry", tools=["http"], http_allow=["127.0.0.1"], retries=2, backoff=1.2)
def main(ctx):
    report = ctx.step.run("fetch", ctx.tools.http.get_json, "{upstream.url("/report")}")
    return report["value"]
"""
    )
    # Then the run parked, resumed in a fresh guest, and the step's second attempt succeeded
    assert run.output == 42
    assert run.attempts == 2
    (step,) = sandboxed.cluster.rt.runs.steps(run.id)
    assert (step.status, step.attempts) == ("done", 2)
    # And both attempts carried the same idempotency key
    assert [r["key"] for r in upstream.requests] == [f"{run.id}:1", f"{run.id}:1"]


def test_durable_sleep_parks_the_run_and_replays_the_checkpoints(sandboxed: Sandboxed) -> None:
    sandboxed.cluster.scheduler()
    run = sandboxed.completed("""
from loopwright.sdk import skill
import random

@skill(name="nap")
def main(ctx):
    rolled = ctx.step.run("roll", lambda: random.random())
    ctx.step.sleep("nap", "500ms")
    after = ctx.step.run("after", lambda value: "rolled " + str(value), rolled)
    return {"rolled": rolled, "after": after}
""")
    steps = sandboxed.cluster.rt.runs.steps(run.id)
    assert [(s.name, s.kind, s.status) for s in steps] == [
        ("roll", "run", "done"),
        ("nap", "sleep", "done"),
        ("after", "run", "done"),
    ]
    # The second guest replayed "roll" from its checkpoint instead of rolling again
    rolled = steps[0].output
    assert run.output == {"rolled": rolled, "after": f"rolled {rolled}"}
    assert run.attempts == 2


def test_step_failed_error_can_be_caught_for_a_fallback(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill, StepFailedError

def primary():
    raise RuntimeError("primary down")

@skill(name="fallback", retries=1, backoff=0.01)
def main(ctx):
    try:
        value = ctx.step.run("primary", primary)
        failed = None
    except StepFailedError as exc:
        failed = [exc.step, "primary down" in exc.reason]
        value = ctx.step.run("secondary", lambda: "from-secondary")
    return {"value": value, "failed": failed}
""")
    assert run.output == {"value": "from-secondary", "failed": ["primary", True]}
    steps = sandboxed.cluster.rt.runs.steps(run.id)
    assert [(s.name, s.status, s.attempts) for s in steps] == [
        ("primary", "failed", 2),
        ("secondary", "done", 1),
    ]


def test_non_retriable_error_fails_the_step_at_once(sandboxed: Sandboxed) -> None:
    run = sandboxed.run("""
from loopwright.sdk import skill, NonRetriableError

def refuse():
    raise NonRetriableError("credentials revoked")

@skill(name="no-retry", retries=5, backoff=0.01)
def main(ctx):
    return ctx.step.run("refuse", refuse)
""")
    assert run.status.value == "failed"
    assert run.error == (
        "step 'refuse' failed: NonRetriableError: credentials revoked (skill line 5)"
    )
    (step,) = sandboxed.cluster.rt.runs.steps(run.id)
    assert (step.status, step.attempts) == ("failed", 1)


# ------------------------------------------------------------------ host tools, logs, inputs


def test_notify_posts_to_the_inbox_with_the_step_idempotency_key(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill

@skill(name="disk-alert", tools=["notify"])
def main(ctx):
    usage = ctx.step.run("measure", lambda: 91)
    def alert():
        ctx.tools.notify("disk at " + str(usage) + "%", title="disk", level="warning")
        return "sent"
    return ctx.step.run("alert", alert)
""")
    assert run.output == "sent"
    rt = sandboxed.cluster.rt
    (notice,) = Inbox(rt.redis, rt.keys, rt.settings).list()
    entry = {k: v for k, v in notice.to_json().items() if v is not None and k != "ts"}
    assert entry == {
        "run_id": run.id,
        "skill": "disk-alert",
        "level": "warning",
        "title": "disk",
        "message": "disk at 91%",
        "body": "disk at 91%",
        "dedupe_key": f"{run.id}:2",
        "id": notice.id,
        "source": "skill",
        "acknowledged": False,
    }


def test_http_get_and_post_carry_idempotency_keys(sandboxed: Sandboxed, upstream: Upstream) -> None:
    upstream.answers["/items"] = [(200, {"items": [1, 2, 3]})]
    upstream.answers["/orders"] = [(200, {"order": "A-1"}), (200, {"order": "A-2"})]
    run = sandboxed.completed(
        f"""
from loopwright.sdk import skill

@skill(name="orders", tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    items = ctx.step.run("list", ctx.tools.http.get_json, "{upstream.url("/items")}",
                         {{"page": 2}})
    def place():
        url = "{upstream.url("/orders")}"
        first = ctx.tools.http.post_json(url, {{"item": items["items"][0]}})
        second = ctx.tools.http.post_json(url, {{"item": items["items"][1]}})
        return [first["order"], second["order"]]
    return {{"items": items["items"], "orders": ctx.step.run("place", place)}}
"""
    )
    assert run.output == {"items": [1, 2, 3], "orders": ["A-1", "A-2"]}
    assert upstream.requests == [
        {"method": "GET", "path": "/items?page=2", "key": f"{run.id}:1", "body": None},
        {"method": "POST", "path": "/orders", "key": f"{run.id}:2", "body": {"item": 1}},
        {"method": "POST", "path": "/orders", "key": f"{run.id}:2:2", "body": {"item": 2}},
    ]


def test_log_lines_are_recorded_with_their_step(sandboxed: Sandboxed) -> None:
    run = sandboxed.completed("""
from loopwright.sdk import skill

@skill(name="chatty")
def main(ctx):
    ctx.log.info("starting")
    n = ctx.step.run("count", lambda: 3)
    ctx.log.warning("count is " + str(n))
    ctx.log.error("nothing is wrong, just testing")
    return n
""")
    assert run.output == 3
    logs = [(x["level"], x["step"], x["message"]) for x in sandboxed.cluster.rt.runs.logs(run.id)]
    assert logs == [
        ("info", 0, "starting"),
        ("warning", 1, "count is 3"),
        ("error", 1, "nothing is wrong, just testing"),
    ]


def test_params_have_defaults_and_run_overrides(sandboxed: Sandboxed) -> None:
    source = """
from loopwright.sdk import skill

@skill(name="thresholds", params={"threshold": 10, "unit": "ms", "tags": ["a"]})
def main(ctx):
    return {"threshold": ctx.params["threshold"], "unit": ctx.params["unit"],
            "tags": ctx.params["tags"]}
"""
    assert sandboxed.completed(source).output == {"threshold": 10, "unit": "ms", "tags": ["a"]}
    overridden = sandboxed.completed(source, params={"threshold": 3, "tags": ["b", "c"]})
    assert overridden.output == {"threshold": 3, "unit": "ms", "tags": ["b", "c"]}


def test_event_data_and_run_id_reach_the_skill(sandboxed: Sandboxed) -> None:
    data = {"orders": [{"id": 1, "qty": 2}, {"id": 2, "qty": 5}], "note": None, "ok": True}
    run = sandboxed.completed(
        """
from loopwright.sdk import skill

@skill(name="echo-event")
def main(ctx):
    data = ctx.event["data"]
    total = ctx.step.run("total", lambda: sum(o["qty"] for o in data["orders"]))
    return {"name": ctx.event["name"], "run_id": ctx.run_id, "total": total,
            "note": data["note"], "ok": data["ok"], "same_id": ctx.event["id"] == ctx.run_id}
""",
        data,
    )
    assert run.output == {
        "name": "loopwright/manual",
        "run_id": run.id,
        "total": 7,
        "note": None,
        "ok": True,
        "same_id": True,
    }


def test_large_but_allowed_outputs_round_trip(sandboxed: Sandboxed) -> None:
    # ~900 KB: under the 1 MiB cap, over the 16 KiB inline limit (stored in its own key)
    run = sandboxed.completed("""
from loopwright.sdk import skill

@skill(name="bulk")
def main(ctx):
    text = ctx.step.run("text", lambda: "0123456789" * 90000)
    numbers = ctx.step.run("numbers", lambda: list(range(50000)))
    return {"text": text, "count": len(numbers), "last": numbers[-1]}
""")
    text = "0123456789" * 90000
    assert run.output == {"text": text, "count": 50000, "last": 49999}
    steps = sandboxed.cluster.rt.runs.steps(run.id)
    assert steps[0].output == text
    assert steps[1].output == list(range(50000))


def test_unicode_round_trips_through_steps_logs_and_output(sandboxed: Sandboxed) -> None:
    greeting = "héllo wörld — 你好 — 🚀 — עברית — ﷽ — \U0001d518\U0001d52b \u0000"
    run = sandboxed.completed(
        """
from loopwright.sdk import skill
import json

@skill(name="unicode")
def main(ctx):
    text = ctx.event["data"]["text"]
    upper = ctx.step.run("upper", lambda: text.upper())
    ctx.log.info("got " + text)
    keyed = ctx.step.run("keyed", lambda: {"ключ": text, "🔑": len(text)})
    return {"upper": upper, "keyed": keyed, "ascii": json.dumps(text),
            "raw": json.dumps(text, ensure_ascii=False), "reversed": text[::-1]}
""",
        {"text": greeting},
    )
    assert run.output == {
        "upper": greeting.upper(),
        "keyed": {"ключ": greeting, "🔑": len(greeting)},
        "ascii": json.dumps(greeting),
        "raw": json.dumps(greeting, ensure_ascii=False),
        "reversed": greeting[::-1],
    }
    assert sandboxed.cluster.rt.runs.logs(run.id)[0]["message"] == "got " + greeting
