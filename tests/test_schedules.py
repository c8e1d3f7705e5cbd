"""Schedules (issue 13): every timed skill in words with its next fires, and the occurrence
ledger the cron leader writes with its cursor: each decided tick with its run, or skipped or
missed and why. Real Redis, the real cron firer, a real `loopwright serve` over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from conftest import Cluster, wait_until
from loopwright.scheduler.catalog import Catalog
from loopwright.scheduler.cron import CronFirer, next_fires
from loopwright.sdk import cron, every
from loopwright.sdk.schedule_words import describe_cron, describe_interval
from loopwright.service.schedules import Occurrence, get_schedule
from test_api import Api, api  # noqa: F401  (the served-API fixture)

MIN = 60_000
T0 = 1_800_000_000_000

EVERY_10M = """
from loopwright.sdk import skill, every

@skill(name="tenmin", trigger=every("10m"))
def main(ctx):
    return ctx.step.run("tick", lambda: ctx.event["data"]["tick_ms"])
"""
LIMITED = """
from loopwright.sdk import skill, every

@skill(name="limited", trigger=every("10m"), rate_limit={"limit": 1, "period": "1h"})
def main(ctx):
    return 1
"""
WEEKDAYS_PARIS = """
from loopwright.sdk import skill, cron

@skill(name="standup", trigger=cron("0 9 * * 1-5", tz="Europe/Paris"))
def main(ctx):
    return 1
"""
ON_EVENT = """
from loopwright.sdk import skill, event

@skill(name="on-push", trigger=event("github.push"))
def main(ctx):
    return 1
"""


def test_schedules_read_in_words() -> None:
    assert describe_cron("0 9 * * 1-5", "Europe/Paris") == "on weekdays at 09:00 Europe/Paris"
    assert describe_cron("*/15 * * * *") == "every 15 minutes"
    assert describe_cron("5 4 1 * *") == "on cron '5 4 1 * *'"  # quoted, never guessed
    assert describe_interval(every("90m").seconds) == "every 90 minutes"
    assert describe_interval(every("6h").seconds) == "every 6 hours"
    assert describe_interval(every("1d").seconds) == "every day"
    assert describe_interval(every(45).seconds) == "every 45 seconds"
    # the next fires keep the interval's grid from the cursor, and cron's timezone
    assert next_fires(every("10m"), T0, T0 + 25 * MIN, 3) == [T0 + m * MIN for m in (30, 40, 50)]
    fires = next_fires(cron("0 9 * * 1-5", tz="Europe/Paris"), None, T0, 5)
    paris = [datetime.fromtimestamp(t / 1000, ZoneInfo("Europe/Paris")) for t in fires]
    assert all((d.hour, d.minute) == (9, 0) and d.weekday() < 5 for d in paris)
    assert fires == sorted(set(fires)) and fires[0] > T0


def test_the_ledger_records_each_tick_started_missed_or_skipped_and_why(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(cron_catchup=60.0)
    c.skill(EVERY_10M)
    c.skill(LIMITED)
    firer = CronFirer(c.rt, Catalog(c.rt))
    assert firer.tick(T0) == 0  # first seen: the grid starts here
    assert firer.tick(T0 + 10 * MIN + 1000) == 2
    # The scheduler was down for 50 minutes: 20..50 are past the catch-up window (missed),
    # 60 is within it and fires.
    firer.tick(T0 + 60 * MIN + 1000)
    s = get_schedule(c.rt, "tenmin")
    got = [(o.tick_ms - T0) // MIN for o in s.ledger]
    assert got == [60, 50, 40, 30, 20, 10]  # newest first, every tick exactly once
    assert [o.outcome for o in s.ledger] == ["started", "missed", "missed", "missed", "missed",
                                             "started"]  # fmt: skip
    runs = {int(r.trigger["tick_ms"]): r.id for r in c.rt.runs.find(skill="tenmin")}
    assert s.ledger[0].run_id == runs[T0 + 60 * MIN] and s.ledger[-1].run_id == runs[T0 + 10 * MIN]
    assert s.ledger[0].run_status == "queued"
    assert all("catch-up window" in (o.reason or "") for o in s.ledger[1:5])
    assert s.counts == {"started": 2, "missed": 4}
    # Down again past the window, policy "latest": one run for the latest tick, the rest
    # coalesced into it.
    firer.tick(T0 + 125 * MIN)
    s = get_schedule(c.rt, "tenmin")
    assert [o.outcome for o in s.ledger[:6]] == ["started"] + ["missed"] * 5
    assert s.ledger[0].tick_ms == T0 + 120 * MIN
    assert all("coalesced" in (o.reason or "") for o in s.ledger[1:6])
    # The rate-limited skill: its first tick started, the next ones were skipped with a
    # recorded (skipped) run and the reason.
    lim = get_schedule(c.rt, "limited")
    assert lim.ledger[-1].outcome == "started"
    skipped = [o for o in lim.ledger if o.outcome == "skipped"]
    assert skipped and all("rate limited" in (o.reason or "") for o in skipped)
    assert all(o.run_status == "skipped" and o.run_id for o in skipped)
    # A deposed leader's pass writes neither cursor nor ledger.
    before = c.rt.redis.llen(c.rt.keys.cron_ledger("tenmin"))
    c.rt.redis.set(c.rt.keys.scheduler_leader, "someone-else")
    assert firer.tick(T0 + 200 * MIN) == 0
    assert c.rt.redis.llen(c.rt.keys.cron_ledger("tenmin")) == before


def test_the_ledger_is_capped(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(cron_catchup=60.0)
    c.skill(EVERY_10M)
    firer = CronFirer(c.rt, Catalog(c.rt))
    firer.tick(T0)
    firer.tick(T0 + 5000 * MIN)  # 500 ticks: one started, the rest missed, the last 200 kept
    assert c.rt.redis.llen(c.rt.keys.cron_ledger("tenmin")) == 200
    s = get_schedule(c.rt, "tenmin")
    assert s.ledger[0].outcome == "started" and s.ledger[0].tick_ms == T0 + 5000 * MIN
    assert [o.tick_ms for o in s.ledger] == sorted((o.tick_ms for o in s.ledger), reverse=True)


def test_schedules_api_and_page_show_words_next_fires_and_ledger(api: Api) -> None:  # noqa: F811
    c = api.cluster
    c.skill(WEEKDAYS_PARIS)
    c.skill(EVERY_10M)
    c.skill(ON_EVENT)
    CronFirer(c.rt, Catalog(c.rt)).tick(T0)
    c.rt.redis.set(c.rt.keys.cron_last("tenmin"), T0)
    CronFirer(c.rt, Catalog(c.rt)).tick(T0 + 10 * MIN + 1)
    read = api.token("read")
    assert api.call("GET", "/api/v1/schedules").status_code == 401
    assert api.call("GET", "/api/v1/schedules", "not-a-token").status_code == 401
    listed = api.call("GET", "/api/v1/schedules", read)
    assert listed.status_code == 200, listed.text
    rows = {r["skill"]: r for r in listed.json()}
    assert set(rows) == {"standup", "tenmin"}  # the event-triggered skill has no schedule
    standup = rows["standup"]
    assert standup["words"] == "on weekdays at 09:00 Europe/Paris"
    assert standup["timezone"] == "Europe/Paris" and len(standup["next_fires_ms"]) == 5
    assert "ledger" not in standup and rows["tenmin"]["counts"] == {"started": 1}
    one = api.call("GET", "/api/v1/schedules/tenmin", read, params={"limit": 10}).json()
    assert one["ledger"][0]["outcome"] == "started" and one["ledger"][0]["run_id"]
    assert one["words"] == "every 10 minutes"
    missing = api.call("GET", "/api/v1/schedules/on-push", read)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert api.call("GET", "/api/v1/schedules/tenmin", read, params={"limit": 0}).status_code == 422
    page = api.call("GET", "/schedules", read)
    assert page.status_code == 200 and "on weekdays at 09:00 Europe/Paris" in page.text
    assert 'href="/schedules/tenmin"' in page.text
    detail = api.call("GET", "/schedules/tenmin", read)
    assert detail.status_code == 200
    assert f'href="/runs/{one["ledger"][0]["run_id"]}"' in detail.text
    assert api.call("GET", "/schedules/nope", read).status_code == 404
    # Ten days later, the scheduler having been down: "needs attention" names the skill.
    CronFirer(c.rt, Catalog(c.rt)).tick(T0 + 10 * 1440 * MIN)
    home = api.call("GET", "/", read).text
    assert 'href="/schedules/tenmin"' in home and "missed, 0 skipped in the last day" in home
    assert api.call("GET", "/schedules").status_code == 401  # sign in first


def test_a_running_scheduler_writes_the_ledger_with_each_run(cluster: Cluster) -> None:
    cluster.skill(EVERY_10M.replace('"10m"', '"10s"').replace("tenmin", "tensec"))
    cluster.scheduler()
    cluster.worker()

    def started() -> list[Occurrence]:
        return [o for o in get_schedule(cluster.rt, "tensec").ledger if o.outcome == "started"]

    wait_until(lambda: len(started()) >= 1, timeout=40)
    occ = started()[0]
    assert occ.run_id is not None
    done = cluster.wait(occ.run_id)
    assert done.status.value == "completed" and done.output == occ.tick_ms
    wait_until(lambda: get_schedule(cluster.rt, "tensec").ledger[0].run_status == "completed")
    s = get_schedule(cluster.rt, "tensec")
    assert s.timezone is None and s.words == "every 10 seconds"
    assert s.next_fires_ms[0] > occ.tick_ms and s.next_fires_ms[1] - s.next_fires_ms[0] == 10_000


def test_a_tick_started_by_a_scheduler_killed_before_its_cursor_moved_is_in_the_ledger_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(cron_catchup=600.0)
    c.skill(EVERY_10M)
    firer = CronFirer(c.rt, Catalog(c.rt))
    firer.tick(T0)
    entry = next(e for e in Catalog(c.rt).entries() if e.name == "tenmin")
    # A scheduler that started the 10-minute tick's run and died before its script ran:
    # no cursor move, no ledger entry.
    assert firer._fire(entry, every("10m"), T0 + 10 * MIN, T0 + 10 * MIN) == "started"
    assert c.rt.redis.llen(c.rt.keys.cron_ledger("tenmin")) == 0
    # The next pass decides the tick again: the same run, one ledger entry.
    assert firer.tick(T0 + 10 * MIN + 500) == 0
    (occ,) = get_schedule(c.rt, "tenmin").ledger
    (run,) = c.rt.runs.find(skill="tenmin")
    assert (occ.outcome, occ.run_id, occ.tick_ms) == ("started", run.id, T0 + 10 * MIN)
