"""``loopwright eval builder``: the held-out builder eval against any configured model.

Each case runs in its own key prefix on the configured Redis (deleted afterwards), so real
skills are never touched; skills are tested by the sidecar in the sandbox as usual. With no
API key it runs the offline model (docs/agent.md, "The builder eval").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, err_console, literal, open_runtime
from loopwright.errors import UserError

if TYPE_CHECKING:
    from loopwright.agent.evaluation import CaseRun

eval_app = typer.Typer(help="Measure the builder on held-out requests.", no_args_is_help=True)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


@eval_app.command("builder")
def builder(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model spec (default: LOOPWRIGHT_MODEL, else by key)."),
    ] = None,
    repeat: Annotated[
        int, typer.Option("--repeat", "-k", min=1, max=20, help="Runs per case (pass^k).")
    ] = 1,
    cases: Annotated[
        Path | None, typer.Option("--cases", help="A cases file (default: the shipped set).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Repeatable: run only these case ids.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the builder on every held-out request and report per case and overall."""
    from loopwright.agent.evaluation import Evaluator, load_cases
    from loopwright.llm.factory import default_model_spec

    rt = open_runtime()
    chosen = load_cases(cases)
    if only:
        unknown = sorted(set(only) - {c.id for c in chosen})
        if unknown:
            raise UserError(f"unknown case id(s) {unknown}; see the cases file")
        chosen = [c for c in chosen if c.id in set(only)]
    spec = model or default_model_spec(rt.settings)

    def progress(run: CaseRun) -> None:
        if not as_json:
            err_console.print(
                f"{run.verdict:8} {literal(run.case)} ({run.seconds:.1f}s)", highlight=False
            )

    report = Evaluator(rt.settings, spec).run(chosen, repeat, progress)
    if as_json:
        emit_json(report)
        return
    _print(report)


def _print(r: dict[str, Any]) -> None:
    k = r["repeat"]
    console.print(f"builder eval: {literal(r['model'])}, {r['cases']} cases x {k}", highlight=False)
    for c in r["per_case"]:
        why = "; ".join(c["reasons"])[:160]
        console.print(
            f"  {c['case']:28} {c['expect']:9} {c['correct']}/{c['trials']}  "
            f"{'/'.join(c['verdicts']):24} {literal(why)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"correct {_pct(r['correct'])}, honestly refused/clarified {_pct(r['honest'])}, wrong "
        f"{_pct(r['wrong'])} (overwrites {r['overwrites']}, placeholders registered "
        f"{r['placeholders_registered']})",
        highlight=False,
        soft_wrap=True,
    )
    icir = "stable (no spread)" if r["icir"] is None else f"{r['icir']:.2f}"
    console.print(
        f"success {_pct(r['success'])}, pass^{k} {_pct(r[f'pass^{k}'])}, ICIR {icir}; "
        f"tool calls {r['tool_calls']} ({_pct(r['tool_error_rate'])} errors), sidecar "
        f"rejections {r['sidecar_rejections']}, Reflexion attempts {r['reflexion_attempts']}; "
        f"tokens {r['input_tokens']} in / {r['output_tokens']} out, ${r['cost_usd']:.4f}; "
        f"latency {r['latency_s_mean']:.1f}s mean, {r['latency_s_max']:.1f}s max",
        highlight=False,
        soft_wrap=True,
    )
