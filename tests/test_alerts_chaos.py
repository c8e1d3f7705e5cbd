"""Failure alerts under chaos: a scheduler SIGKILLed again and again while it consumes ended
runs loses no alert and doubles none (cursor, state and notice commit in one script)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable

from conftest import Cluster, wait_until
from test_alerts import FLAKY, _notices


def test_a_scheduler_killed_while_consuming_loses_and_doubles_no_alert(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(scheduler_leader_ttl=0.3)
    scheduler = c.scheduler()
    wait_until(lambda: c.rt.redis.exists(c.rt.keys.alerts_cursor))
    name = c.skill(FLAKY)
    words = [f"kind{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(40)]  # 40 signatures
    runs = [c.start(name, {"word": w}) for w in words + words[:10]]  # 10 fail twice
    c.worker()
    rng = random.Random(15)

    def ended() -> bool:
        return all(c.rt.runs.get(r).status.terminal for r in runs)

    def cursor() -> str:
        return str(c.rt.redis.get(c.rt.keys.alerts_cursor) or "")

    kills = 0
    while kills < 4 or not ended():
        seen = cursor()
        wait_until(lambda seen=seen: cursor() != seen)  # type: ignore[misc]  # consuming now
        time.sleep(rng.uniform(0, 0.05))  # chaos, not a wait: kill at a random point of it
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(timeout=10)
        kills += 1
        scheduler = c.scheduler()
    last_end = max(int(c.rt.redis.zscore(c.rt.keys.ended, r) or 0) for r in runs)

    def consumed() -> bool:
        return int((cursor() or "0 ").split(" ", maxsplit=1)[0]) > last_end

    wait_until(consumed, timeout=60)
    notices = _notices(c, name)
    # one notice per signature, none lost, none doubled ...
    assert len(notices) == 40 and all(n.title == "flaky failed" for n in notices)
    assert sorted(n.body.split("RuntimeError: ")[1].split(" ")[0] for n in notices) == words
    assert len({n.run_id for n in notices}) == 40 and {n.run_id for n in notices} <= set(runs)
    # ... and every failure counted exactly once (the repeats wait for their summary)
    state = c.rt.redis.hvals(c.rt.keys.alert_state(name))
    assert sorted(json.loads(v)["n"] for v in state) == [1] * 30 + [2] * 10
