"""The inbox model against real Redis: ids, dedupe, filters, acknowledgement, the cap, entries
written by the inbox before issue 15, and the ``loopwright inbox`` CLI."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from conftest import Cluster
from loopwright.errors import UserError
from loopwright.inbox import Inbox


def _inbox(c: Cluster) -> Inbox:
    return Inbox(c.rt.redis, c.rt.keys, c.settings)


def test_post_returns_increasing_ids_and_a_repeated_dedupe_key_posts_nothing(
    cluster: Cluster,
) -> None:
    box = _inbox(cluster)
    a = box.post(level="info", title="first", body="one")
    b = box.post(level="error", title="second", source="alert", skill="s1", run_id="r1",
                 dedupe_key="k")  # fmt: skip
    again = box.post(level="error", title="other text", dedupe_key="k")
    assert int(b) > int(a) and again == b
    n = box.get(b)
    assert n is not None
    assert (n.level, n.source, n.title, n.skill, n.run_id, n.dedupe_key) == (
        "error", "alert", "second", "s1", "r1", "k",
    )  # fmt: skip
    assert not n.acknowledged and n.ts > 0
    assert [x.id for x in box.list()] == [b, a]  # newest first
    assert box.get("999999") is None and box.get("nope") is None


def test_bad_level_or_source_is_a_clear_error_and_stores_nothing(cluster: Cluster) -> None:
    box = _inbox(cluster)
    with pytest.raises(UserError, match="level 'fatal!' is not one of info, warning, error"):
        box.post(level="fatal!", title="x")
    with pytest.raises(UserError, match="source 'bot'"):
        box.post(level="info", title="x", source="bot")
    assert box.list() == []


def test_filters_by_skill_level_and_unacknowledged_and_ack_is_a_field_update(
    cluster: Cluster,
) -> None:
    box = _inbox(cluster)
    ids = {}
    for skill in ("a", "b"):
        for level in ("info", "warning", "error"):
            ids[skill, level] = box.post(level=level, title=f"{skill}-{level}", skill=skill)
    assert [n.title for n in box.list(skill="a")] == ["a-error", "a-warning", "a-info"]
    assert [n.title for n in box.list(level="error")] == ["b-error", "a-error"]
    assert [n.title for n in box.list(skill="b", level="warning")] == ["b-warning"]
    assert box.ack([ids["a", "error"], ids["b", "info"], "424242"], "ops") == 2
    assert box.ack([ids["a", "error"]], "someone-else") == 0  # already acknowledged
    acked = box.get(ids["a", "error"])
    assert acked is not None and acked.acked_by == "ops" and acked.acked_at
    assert acked.title == "a-error"  # the rest of the notice is untouched
    assert {n.title for n in box.list(unacknowledged=True)} == {
        "a-info", "a-warning", "b-warning", "b-error",
    }  # fmt: skip
    assert [n.title for n in box.list(skill="a", unacknowledged=True, limit=1)] == ["a-warning"]
    assert box.unacknowledged_ids("b") == [ids["b", "warning"], ids["b", "error"]]


def test_the_cap_drops_the_oldest_with_their_indexes_and_dedupe_markers(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(inbox_max=10)
    box, k, r = _inbox(c), c.rt.keys, c.rt.redis
    first = box.post(level="error", title="old", skill="s", dedupe_key="old-key")
    for i in range(12):
        box.post(level="info", title=f"n{i}", skill="s")
    assert r.zcard(k.inbox_all) == 10 and len(box.list(limit=100)) == 10
    assert box.get(first) is None
    assert not r.exists(k.inbox_notice(first), k.inbox_dedupe("old-key"))
    assert r.zscore(k.inbox_by_level("error"), first) is None
    assert r.zscore(k.inbox_unacked, first) is None
    assert r.zcard(k.inbox_by_skill("s")) == 10
    # the dropped notice's dedupe key may post again
    assert box.post(level="info", title="again", dedupe_key="old-key") != first


def test_entries_of_the_old_list_inbox_are_read_and_keep_their_dedupe(cluster: Cluster) -> None:
    r, k = cluster.rt.redis, cluster.rt.keys
    old = [  # exactly what runner/tools.py and runner/lineage.py wrote before issue 15
        {"ts": 1_700_000_000_000, "run_id": "r1", "skill": "health", "level": "warning",
         "title": "latency", "message": "p95 is 1450 ms", "idempotency_key": "r1:2"},
        {"ts": 1_700_000_001_000, "run_id": "r2", "skill": "", "level": "error",
         "title": "chain of runs stopped (hops)", "message": "refused",
         "idempotency_key": "limit:e1:hops"},
        {"ts": 1_700_000_002_000, "run_id": "r3", "skill": "digest", "level": "CRITICAL",
         "title": None, "message": "no title", "idempotency_key": "r3:1"},
    ]  # fmt: skip
    r.rpush(k.inbox, *[json.dumps(e) for e in old], "not json at all")
    box = _inbox(cluster)
    got = list(reversed(box.list()))
    assert [(n.skill, n.level, n.source, n.title, n.body, n.run_id, n.ts) for n in got[:3]] == [
        ("health", "warning", "skill", "latency", "p95 is 1450 ms", "r1", 1_700_000_000_000),
        (None, "error", "platform", "chain of runs stopped (hops)", "refused", "r2",
         1_700_000_001_000),
        ("digest", "error", "skill", "", "no title", "r3", 1_700_000_002_000),
    ]  # fmt: skip
    # what is not an old entry is kept as text, timed when it was moved
    assert (got[3].source, got[3].body, got[3].level) == ("platform", "not json at all", "info")
    assert not r.exists(k.inbox)  # moved, not copied
    # an old notify step re-run after the upgrade posts nothing twice
    assert box.post(level="info", title="x", dedupe_key="r1:2") == got[0].id
    assert [n.title for n in box.list(skill="health")] == ["latency"]
    # an old worker still writing the list during an upgrade: read on the next call
    r.rpush(k.inbox, json.dumps({**old[0], "idempotency_key": "r9:1", "message": "late"}))
    assert box.list(limit=1)[0].body == "late"


def test_cli_lists_filters_and_acknowledges(cluster: Cluster) -> None:
    box = _inbox(cluster)
    a = box.post(level="error", title="db down", body="\x1b[31mred[/]", skill="a", source="alert")
    b = box.post(level="info", title="fine", skill="b", source="skill")
    c = box.post(level="warning", title="slow", skill="a", source="alert")

    out = json.loads(cluster.cli("inbox", "--json").stdout)
    assert [n["id"] for n in out] == [a, b, c]  # oldest first, as before
    assert out[0]["message"] == out[0]["body"] == "\x1b[31mred[/]"
    only = json.loads(cluster.cli("inbox", "--skill", "a", "--level", "error", "--json").stdout)
    assert [n["id"] for n in only] == [a]
    table = cluster.cli("inbox").stdout
    assert "db down" in table and "\\x1b" in table and "\x1b" not in table  # shown, not run

    acked = cluster.cli("inbox", "ack", a, "--as", "ops")
    assert acked.returncode == 0 and "acknowledged 1 notice" in acked.stdout
    unacked = json.loads(cluster.cli("inbox", "--unacked", "--json").stdout)
    assert [n["id"] for n in unacked] == [b, c]
    res = json.loads(cluster.cli("inbox", "ack", "--all", "--skill", "a", "--json").stdout)
    assert res == {"acknowledged": 1, "asked": 1}
    assert [n["id"] for n in json.loads(cluster.cli("inbox", "--unacked", "--json").stdout)] == [b]

    bad = cluster.cli("inbox", "--level", "loud")
    assert bad.returncode == 2 and "'loud' is not one of info, warning, error" in bad.stderr
    neither = cluster.cli("inbox", "ack")
    assert neither.returncode == 2 and "give notice ids or --all" in neither.stderr
    assert cluster.cli("inbox", "ack", "x1").returncode == 2


def test_piped_inbox_keeps_full_ids_and_text(cluster: Cluster) -> None:
    box = _inbox(cluster)
    long_title = "a fairly long title for a notice " * 4
    box.post(level="error", title=long_title, body="body " * 40, skill="some-long-skill-name",
             run_id="01a2370123456789abcdef", source="alert")  # fmt: skip
    lines = cluster.cli("inbox").stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["id", "time (UTC)", "level"]
    row = lines[1].split("\t")
    assert row[4] == "some-long-skill-name" and row[6] == "01a2370123456789abcdef"
    assert row[5].startswith(long_title.strip()) and row[5].endswith("body")
