from __future__ import annotations
import time
from conftest import Cluster

def test_probe(cluster: Cluster) -> None:
    cluster.worker()
    before = cluster.rt.redis.info("memory")["used_memory"]
    name = cluster.skill('''
from loopwright.sdk import skill
@skill(name="hoard")
def main(ctx):
    for i in range(100):
        ctx.step.run("s" + str(i), lambda: "x" * 1000000)
    return "done"
''')
    t0 = time.monotonic()
    run = cluster.wait(cluster.start(name, {}, trusted=False), timeout=120)
    dt = time.monotonic() - t0
    after = cluster.rt.redis.info("memory")["used_memory"]
    print(run.status, round(dt, 2), "s", (after - before) // (1 << 20), "MiB added to Redis")
