"""A slow five-step report used to show crash recovery: each step takes a while and writes a
journal line (step, pid), so you can see which steps ran where after a worker is killed.

It writes a file and reads the pid, which the sandbox forbids, so it is your own code run with
--trusted (in the worker process):

    loopwright run examples/slow_report.py --trusted --data '{"journal": "/tmp/j.txt"}' --wait
"""

import os
import time

from loopwright.sdk import Context, skill


def work(journal: str, step: str, pause: float) -> dict:
    with open(journal, "a") as fh:
        fh.write(f"{step} {os.getpid()}\n")
    time.sleep(pause)
    return {"step": step, "pid": os.getpid()}


@skill(name="slow-report", description="Five slow steps that journal where they ran",
       retries=3, timeout="5m")
def main(ctx: Context):
    data = ctx.event["data"]
    pause = float(data.get("pause", 0.8))
    sections = ["collect", "clean", "analyse", "render", "deliver"]
    return [ctx.step.run(s, work, data["journal"], s, pause) for s in sections]
