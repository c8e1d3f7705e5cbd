"""Five durable steps: extract, validate, transform, aggregate, publish.

    loopwright run examples/hello_pipeline.py --data '{"orders": 12}' --wait
"""

from loopwright.sdk import Context, NonRetriableError, skill


def extract(count: int) -> list[dict]:
    return [{"id": i, "amount": (i * 37) % 100 + 1, "region": ["eu", "us", "apac"][i % 3]}
            for i in range(count)]


def validate(rows: list[dict]) -> list[dict]:
    bad = [r["id"] for r in rows if r["amount"] <= 0]
    if bad:
        raise NonRetriableError(f"orders with non-positive amounts: {bad}")
    return rows


def transform(rows: list[dict]) -> list[dict]:
    return [{**r, "amount_eur": round(r["amount"] * 0.92, 2)} for r in rows]


def aggregate(rows: list[dict]) -> dict:
    totals = {}
    for r in rows:
        totals[r["region"]] = round(totals.get(r["region"], 0.0) + r["amount_eur"], 2)
    return totals


@skill(name="hello-pipeline", description="Order totals per region in five durable steps",
       retries=2, timeout="1m", tools=["notify"])
def main(ctx: Context):
    rows = ctx.step.run("extract", extract, ctx.event["data"].get("orders", 9))
    rows = ctx.step.run("validate", validate, rows)
    rows = ctx.step.run("transform", transform, rows)
    totals = ctx.step.run("aggregate", aggregate, rows)
    ctx.log.info(f"{len(rows)} orders aggregated into {len(totals)} regions")
    ctx.step.run("publish", lambda: ctx.tools.notify(
        ", ".join(f"{k}: {v}" for k, v in sorted(totals.items())), title="order totals"))
    return totals
