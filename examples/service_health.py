"""The seed article's scenario, rule-based: classify service latency and alert the inbox.

The cron trigger fires every 30 minutes once the scheduler's cron support is on; run it by hand
with metrics as input meanwhile:

    loopwright run examples/service_health.py --data '{"p95_ms": 1450, "error_rate": 0.01}' --wait
"""

from loopwright.sdk import Context, cron, skill


def classify(metrics: dict, params: dict) -> str:
    if metrics.get("error_rate", 0) > params["max_error_rate"]:
        return "failing"
    if metrics.get("p95_ms", 0) > params["p95_ms"]:
        return "degraded"
    return "normal"


@skill(name="service-health", description="Classify service health every 30 min",
       trigger=cron("*/30 * * * *"), retries=3, timeout="2m", concurrency=1,
       tools=["notify"], params={"p95_ms": 800, "max_error_rate": 0.05})
def main(ctx: Context):
    metrics = ctx.step.run("read-metrics", lambda: dict(ctx.event["data"]))
    verdict = ctx.step.run("classify", classify, metrics, ctx.params)
    if verdict != "normal":
        ctx.step.run("alert", lambda: ctx.tools.notify(
            f"service is {verdict}: p95 {metrics.get('p95_ms')} ms, "
            f"errors {metrics.get('error_rate')}", title="latency watch", level="warning"))
    return verdict
