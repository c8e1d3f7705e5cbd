"""Durable sleep: gather, park the run without holding a worker, then publish a digest.

    loopwright run examples/nightly_digest.py --data '{"wait": "3s"}' --wait
"""

from loopwright.sdk import Context, skill


def gather(items: list[str]) -> list[str]:
    return sorted(set(items))


@skill(name="nightly-digest", description="Collect, wait for the quiet hour, publish a digest",
       tools=["notify"], params={"wait": "2s"})
def main(ctx: Context):
    items = ctx.step.run("gather", gather, ctx.event["data"].get("items", ["deploy", "alert"]))
    ctx.step.sleep("quiet-hour", ctx.event["data"].get("wait", ctx.params["wait"]))
    ctx.step.run("publish", lambda: ctx.tools.notify(
        f"{len(items)} items: {', '.join(items)}", title="nightly digest"))
    return {"published": len(items)}
