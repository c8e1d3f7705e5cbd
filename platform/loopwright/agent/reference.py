"""The SDK reference the builder reads through the ``sdk_reference`` tool.

It is a constant: the text is part of what the model sees, and a stable text keeps the
provider's prompt cache warm. Tests check that every name it mentions exists.
"""

from __future__ import annotations

from loopwright.sandbox.policy import ALLOWED_MODULES
from loopwright.sidecar.cases import FORMAT_HINT

SDK_REFERENCE = f"""\
# Loopwright skill SDK

One skill per module: a function decorated with @skill; decorator arguments are literals.

```python
from loopwright.sdk import skill, cron, every, event, NonRetriableError, RetryAfterError

@skill(name="health-check", description="what it does",
       trigger=cron("*/30 * * * *"),          # or event("incident.detected"), or None (manual)
       retries=3, timeout="2m", concurrency=1,
       tools=["http", "notify"], http_allow=["metrics.example.com"],
       events={{"send": ["health.degraded"], "receive": ["approval.*"]}},
       params={{"p95_ms": 800}})
def main(ctx):
    m = ctx.step.run("fetch", ctx.tools.http.get_json, ctx.params["url"])
    ...
    return result   # JSON-serialisable
```

Steps (each is checkpointed; a crash resumes at the failed step, finished steps never rerun):
- ctx.step.run(name, fn, *args, **kwargs) -> fn's JSON result; retried per `retries` with backoff.
- ctx.step.sleep(name, "10m") / ctx.step.sleep_until(name, datetime_or_iso)
- ctx.step.wait_for_event(name, "event.name", match={{"data.id": 1}}, timeout="1h") -> event
  or None on timeout
- ctx.step.invoke(name, "other-skill", data) -> the child run's output
- ctx.step.send_event(name, "event.name", data)   # needs tools=["events"]
- ctx.step.llm(name, prompt, schema=None)          # needs tools=["llm"]
Events: declare every event name the skill sends or waits for in
events={{"send": [...], "receive": [...]}}; "*" stands for one dot-separated segment
("order.*" matches "order.created"). An event(...) trigger's name needs no receive entry.
Undeclared names are rejected before registration and refused at run time.
Context: ctx.event ({{"name","data","id","ts"}}), ctx.params, ctx.run_id, ctx.log.info(msg).
State between runs (no declaration; only inside ctx.step.run): ctx.state.get(key, default),
ctx.state.set(key, json_value), ctx.state.update(key, fn, default), ctx.state.delete(key);
written with the step's checkpoint; a key read then written is compare-and-set.

Host tools (declare each in tools=[...]; call them only inside ctx.step.run):
- ctx.tools.http.get_json(url, params=None, headers=None); ctx.tools.http.post_json(url, body,
  headers=None). Hosts must be listed in http_allow. 429/5xx raise retryable errors.
- ctx.tools.notify(message, title=None, level="info"|"warning"|"error") -> the platform inbox.

Errors: raise NonRetriableError("why") to fail a step for good; RetryAfterError(seconds) to
retry later. Code between steps must be deterministic (same step names on every replay).

Sandbox rules: imports only from {", ".join(sorted(ALLOWED_MODULES))}; no classes, no names or
attributes starting with "_", no eval/exec/open/globals/vars/setattr; no network, files or
environment except through host tools. Side effects belong inside steps.

Test cases (write_skill `tests`): {FORMAT_HINT}

Triggers: cron(expr, tz=None) with 5 or 6 fields; every("90m") for a fixed interval (10s to
366d) that one cron line cannot say; event(name, match=None). Names are lowercase
words joined by "-". Submit with write_skill(source, tests); a rejection lists findings with
rule, line and a hint: fix exactly those and resubmit.
"""
