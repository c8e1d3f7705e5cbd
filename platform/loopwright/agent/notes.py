"""What the loop tells the model (corrective notes, the Reflexion request) and the person
(the honest report when a turn stops early).

Every report ends with what was done so far (skills registered, runs started), so a turn
that stops on a budget, a loop or repeated rejections still says where things stand.
"""

from __future__ import annotations

from typing import Any

from loopwright.agent.detect import Detection
from loopwright.agent.prompts import NOTE


def reflexion(name: str, n: int, limit: int, verdict: dict[str, Any]) -> str:
    """Bounded Reflexion: submission ``n`` of ``limit`` was rejected; ask for a self-critique."""
    return (
        f"{NOTE} Submission {n} of {limit} for skill {name!r} "
        f"was rejected at stage {verdict.get('stage')}. Before you resubmit, critique your "
        "last attempt in one or two sentences: what caused each finding and what you will "
        "change. Then call write_skill with the fix."
    )


def reflexion_report(
    name: str, n: int, verdict: dict[str, Any], activity: list[dict[str, Any]]
) -> str:
    """The turn's end after the last allowed rejection: what the sidecar said, what to do."""
    findings = verdict.get("findings") or []
    shown = "\n".join(
        f"- {f.get('message', '')} [{f.get('rule', '')}]" for f in findings[:5]
    ) or "- " + str(verdict.get("summary", ""))
    return (
        f"I could not get skill {name!r} accepted: {n} submissions were rejected, the "
        f"limit for one request. Nothing was registered for it. The last rejection (stage "
        f"{verdict.get('stage')}) said:\n{shown}\n"
        "You can rephrase the request, relax a requirement, or write the skill yourself "
        "with `loopwright skills submit`." + done_line(activity)
    )


def corrective(det: Detection) -> str:
    """The note after a first loop detection."""
    return (
        f"{NOTE} Loop detected ({det.pattern}): {det.message}. Stop repeating it. Change "
        "your approach (re-read the findings, use a different tool or different "
        "arguments) or give the person your final answer now."
    )


def loop_report(det: Detection, activity: list[dict[str, Any]]) -> str:
    """The turn's end after a second loop detection."""
    return (
        f"I stopped because I was going in circles ({det.pattern}: {det.message}), even "
        "after correcting course once." + done_line(activity)
    )


def stop_report(stop: str, activity: list[dict[str, Any]]) -> str:
    """The turn's end on a budget (``stop`` as :func:`loopwright.agent.budgets.budget_stop`)."""
    kind, _, detail = stop.partition(": ")
    return f"I stopped: the {kind} budget is used up ({detail})." + done_line(activity)


def done_line(activity: list[dict[str, Any]]) -> str:
    accepted = [
        f"{a['verdict']['name']}@{str(a['verdict']['version'])[:12]}"
        for a in activity
        if a["tool"] == "write_skill" and (a.get("verdict") or {}).get("accepted")
    ]
    runs = [f"{a['run']['run_id']} ({a['run']['status']})" for a in activity if a.get("run")]
    parts = [f"{len(activity)} tool calls this turn"]
    if accepted:
        parts.append("registered: " + ", ".join(accepted))
    else:
        parts.append("nothing was registered")
    if runs:
        parts.append("runs: " + ", ".join(runs))
    return "\nDone so far: " + "; ".join(parts) + "."


LIFECYCLE = {
    "pause_skill": "paused",
    "resume_skill": "resumed",
    "delete_skill": "deleted (versions and triggers purged; run history kept)",
    "rollback_skill": "rolled back",
}
DIFF_LINES = 60


def changes_report(activity: list[dict[str, Any]]) -> str:
    """What this turn changed in existing skills, from tool results: each edit's diff (code
    and manifest), lifecycle changes, and loudly, any placeholder host registered."""
    lines: list[str] = []
    for a in activity:
        if not a["ok"]:
            continue
        if a["tool"] in LIFECYCLE:
            lines.append(f"- {a.get('name')}: {LIFECYCLE[a['tool']]}")
        diff = a.get("diff")
        if isinstance(diff, dict):
            verdict = a.get("verdict") or {}
            state = ""
            if a.get("registration") == "pending":
                state = (
                    f" (waits for approval: loopwright skills approve {verdict.get('name')} "
                    f"{str(diff.get('to'))[:12]})"
                )
            lines.append(
                f"- {verdict.get('name')}: changed {str(diff.get('from'))[:12]} -> "
                f"{str(diff.get('to'))[:12]}{state}: {diff.get('summary')}"
            )
            for field, change in (diff.get("manifest") or {}).items():
                lines.append(f"  manifest {field}: {change.get('from')!r} -> {change.get('to')!r}")
            source = str(diff.get("source") or "").splitlines()
            if source:
                shown = source[:DIFF_LINES]
                more = len(source) - len(shown)
                lines += ["  ```diff", *("  " + ln for ln in shown), "  ```"]
                if more > 0:
                    lines.append(f"  ({more} more diff lines: loopwright skills diff)")
        if a.get("placeholder_hosts"):
            verdict = a.get("verdict") or {}
            lines.append(
                f"- WARNING: {verdict.get('name')} points at placeholder host(s) "
                f"{', '.join(a['placeholder_hosts'])}; it will fail until given a real URL"
            )
    if not lines:
        return ""
    return "What changed (from the platform's records):\n" + "\n".join(lines)
