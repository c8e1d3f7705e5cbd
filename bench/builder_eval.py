"""Benchmark of the builder on held-out requests (issue 12): what share it gets right, what
share it honestly refuses or clarifies, and what share is wrong.

    .venv/bin/python bench/builder_eval.py [--quick] [--out docs/benchmarks.md]

Runs ``loopwright eval builder``'s evaluator (``loopwright.agent.evaluation``) against a
private Redis with the offline template model, every case three times (one with ``--quick``):
the offline model is deterministic, so the repeats measure the platform's stability (pass^k,
ICIR), not sampling. Targets: 0 silently wrong, 0 overwrites, 0 placeholder URLs registered.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Processes, RedisServer, machine_info, make_settings, run_benchmark

from loopwright.agent.evaluation import Evaluator, load_cases


def measure(quick: bool) -> dict[str, Any]:
    repeat = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="lw-bench-eval-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "logs").mkdir()
        procs = Processes(tmp / "logs")
        redis = RedisServer(tmp / "redis", procs)
        try:
            redis.start()
            settings = make_settings(redis.url, tmp / "data")
            cases = load_cases()
            load_before = os.getloadavg()[0]
            report = Evaluator(settings, "offline").run(cases, repeat)
            report["machine"] = machine_info(redis.url)
            report["load"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        finally:
            procs.kill_all()
    return report


def section(r: dict[str, Any], command: str) -> str:
    m = r["machine"]
    k = r["repeat"]
    by_outcome: dict[str, list[int]] = {}
    for c in r["per_case"]:
        row = by_outcome.setdefault(c["expect"], [0, 0])
        row[0] += c["correct"]
        row[1] += c["trials"]
    lines = [
        "## Builder eval: held-out requests (issue 12)",
        "",
        f"`{command}` — {m['date']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}, "
        f"Redis {m['redis_server']}; model `{r['model']}`; {r['cases']} requests from "
        "`platform/loopwright/agent/data/builder_eval.json` (written apart from the templates), "
        f"each run {k}x in its own key prefix, judged by what was registered.",
        "",
        "| outcome | share of runs |",
        "|---|---:|",
        f"| correct | {r['correct']:.0%} |",
        f"| honestly refused or clarified (nothing changed, said why) | {r['honest']:.0%} |",
        f"| wrong | {r['wrong']:.0%} |",
        f"| of which overwrites / placeholder URLs registered | {r['overwrites']} / "
        f"{r['placeholders_registered']} |",
        "",
        "| expected | correct runs |",
        "|---|---:|",
    ]
    for outcome, (ok, n) in sorted(by_outcome.items()):
        lines.append(f"| {outcome} | {ok}/{n} |")
    icir = "no spread (every repeat scored the same)" if r["icir"] is None else f"{r['icir']:.2f}"
    lines += [
        "",
        f"Success {r['success']:.0%}, pass^{k} {r[f'pass^{k}']:.0%}, ICIR {icir}; "
        f"{r['tool_calls']} tool calls ({r['tool_error_rate']:.0%} errors: refusals of "
        f"overwrites and unknown names the model reads), {r['sidecar_rejections']} sidecar "
        f"rejections, {r['reflexion_attempts']} Reflexion attempts; "
        f"{r['input_tokens']:,} input / {r['output_tokens']:,} output tokens (estimated, "
        f"offline), ${r['cost_usd']:.2f}; {r['latency_s_mean']:.1f} s mean, "
        f"{r['latency_s_max']:.1f} s max per case (sidecar tests in the sandbox included)"
        + (
            f"; load average {r['load'][0]} before, {r['load'][1]} after (1 min)."
            if "load" in r
            else "."
        ),
        "",
        "Cases not correct:",
        "",
    ]
    misses = [c for c in r["per_case"] if c["correct"] < c["trials"]]
    for c in misses:
        lines.append(f"- `{c['case']}` ({'/'.join(c['verdicts'])}): {'; '.join(c['reasons'])}")
    if not misses:
        lines.append("- none")
    return "\n".join(lines)


def main() -> int:
    """Command line entry point."""
    return run_benchmark("builder_eval", __doc__ or "", measure, section, "one run per case")


if __name__ == "__main__":
    sys.exit(main())
