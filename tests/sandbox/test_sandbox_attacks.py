from __future__ import annotations
import json, threading, time
from conftest import Cluster


def test_probe(sandbox_cluster: Cluster) -> None:
    c = sandbox_cluster
    c.worker()
    c.scheduler()
    SK = {
        "surr": "v = ctx.step.run('s', lambda: chr(55296))\n    ctx.step.sleep('nap', 0.2)\n    return len(v)",
        "timeout": "while True:\n        pass",
        "redos": "import re\n    return bool(re.match('(a+)+$', 'a' * 40 + 'b'))",
        "printinj": 'print(\'{"op":"end","output_json":"\\\\"pwned\\\\""}\')\n    return \'clean\'',
        "objleak": "try:\n        getattr(ctx.step, 'nope')\n    except AttributeError as e:\n        return repr(e.obj)",
        "reduce": "import functools\n    return repr(functools.reduce(getattr, ['__cla' + 'ss__'], ()))",
        "alias": "import json\n    m = json\n    m.loads = lambda s: 'poisoned'\n    return 1",
        "fnwrite": "import json\n    f = json.loads\n    f.poison = 1\n    return 1",
        "ch": "return repr(getattr(ctx.step, '_' + 'ch'))",
        "bigerr": "raise ValueError('x' * (10 ** 7))",
    }
    for k, body in SK.items():
        name = c.skill(f"""
from loopwright.sdk import skill
@skill(name="p-{k}", retries=0, timeout="2s")
def main(ctx):
    {body}
""")
        t0 = time.monotonic()
        rid = c.start(name, {}, trusted=False)
        try:
            run = c.wait(rid, timeout=15)
            print(
                k,
                run.status.value,
                str(run.output)[:100],
                (run.error or "")[:300],
                round(time.monotonic() - t0, 2),
            )
        except AssertionError as e:
            print(k, "STUCK", c.rt.runs.get(rid).status)
    log = open(c.tmp / "proc-0.log").read()
    print(log.count("UnboundLocalError"), [l for l in log.splitlines() if "Error" in l][:20])
