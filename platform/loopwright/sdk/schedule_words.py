"""Schedules in words: a cron line or an interval as a person would say it.

One home for the describer, because two layers need it: the offline model (``llm``) says the
schedule it wrote, and the schedules page (``service``/``api``) says the schedule a skill has.
Pure string work on the five fields, so it is safe where skills can import it.
"""

from __future__ import annotations

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def describe_cron(expr: str, tz: str | None = None) -> str:
    """A readable schedule for common five-field cron lines; others are quoted as they are."""
    fields = expr.split()
    if len(fields) != 5:
        return f"on cron '{expr}'" + (f" ({tz})" if tz else "")
    m, h, dom, mon, dow = fields
    zone = tz or "UTC"
    days = {"*": "", "1-5": " on weekdays", "0,6": " on weekends"}.get(dow)
    if days is None and dow.isdigit() and int(dow) < 7:
        days = f" every {WEEKDAYS[int(dow)].capitalize()}"
    if days is None:
        days = f" on days {dow}"
    if (dom, mon) != ("*", "*"):
        return f"on cron '{expr}'" + (f" ({zone})" if tz else "")
    if h == "*" or not h.replace(",", "").isdigit():
        window = "" if h == "*" else f" during hours {h} {zone}"
        if m == "*":
            return f"every minute{window}{days}"
        if m.startswith("*/"):
            return f"every {m[2:]} minutes{window}{days}"
        if m == "0":
            return (
                f"every hour{window}{days}"
                if not h.startswith("*/")
                else (f"every {h[2:]} hours{days}")
            )
        return f"on cron '{expr}'" + (f" ({zone})" if tz else "")
    if m.isdigit():
        times = ", ".join(f"{int(x):02d}:{int(m):02d}" for x in h.split(","))
        lead = "daily" if not days else ""
        return f"{lead}{days.strip() if not lead else days} at {times} {zone}".strip()
    return f"on cron '{expr}'" + (f" ({zone})" if tz else "")


def describe_interval(seconds: float) -> str:
    """``every 90 minutes``, ``every 6 hours``, ``every 45 seconds``: the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"every {n} {unit}{'s' if n != 1 else ''}" if n != 1 else f"every {unit}"
    return f"every {seconds:g} seconds"
