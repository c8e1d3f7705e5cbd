"""Schedules in words, for the offline template model: from "every weekday at 9am New York
time" to a trigger, without rounding.

``read_schedule(text)`` returns a :class:`Schedule`: a five-field cron with an optional IANA
timezone, or a fixed interval (``every("90m")``) when no single cron line says it ("every 90
minutes", "every 7 minutes", "every 5 hours"). What it understands: every N minutes/hours
(numbers in words, "an hour and a half", "2.5 hours"), every minute/hour/half hour, hourly,
daily/nightly/every morning/evening, at HH[:MM][am|pm] (or HH.MM), noon/midnight,
weekdays/weekends/named days and day ranges ("Monday to Friday"), twice or three times a day,
weekly, windows ("every 10 minutes overnight", "between 8am and 6pm"), "keep an eye on" (a
frequent check), timezones as IANA names, common abbreviations and city names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loopwright.sdk.schedule_words import WEEKDAYS, describe_cron

_DAY = r"(sun|mon|tue|tues|wed|thu|thur|thurs|fri|sat)(?:day|nesday|rsday|urday|sday)?"
DAY_RANGE_RE = re.compile(rf"\b{_DAY}\s*(?:-|to|through|thru|until)\s*{_DAY}\b")
ZONES = {
    "new york": "America/New_York", "nyc": "America/New_York", "boston": "America/New_York",
    "eastern": "America/New_York", "et": "America/New_York", "est": "America/New_York",
    "edt": "America/New_York", "toronto": "America/Toronto", "chicago": "America/Chicago",
    "central": "America/Chicago", "ct": "America/Chicago", "cst": "America/Chicago",
    "denver": "America/Denver", "mountain": "America/Denver", "mst": "America/Denver",
    "los angeles": "America/Los_Angeles", "la": "America/Los_Angeles",
    "san francisco": "America/Los_Angeles", "sf": "America/Los_Angeles",
    "seattle": "America/Los_Angeles", "pacific": "America/Los_Angeles",
    "pt": "America/Los_Angeles", "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles",
    "sao paulo": "America/Sao_Paulo", "london": "Europe/London", "uk": "Europe/London",
    "dublin": "Europe/Dublin", "lisbon": "Europe/Lisbon", "paris": "Europe/Paris",
    "berlin": "Europe/Berlin", "amsterdam": "Europe/Amsterdam", "madrid": "Europe/Madrid",
    "rome": "Europe/Rome", "zurich": "Europe/Zurich", "stockholm": "Europe/Stockholm",
    "warsaw": "Europe/Warsaw", "cet": "Europe/Paris", "cest": "Europe/Paris",
    "athens": "Europe/Athens", "istanbul": "Europe/Istanbul", "moscow": "Europe/Moscow",
    "dubai": "Asia/Dubai", "mumbai": "Asia/Kolkata", "bangalore": "Asia/Kolkata",
    "india": "Asia/Kolkata", "ist": "Asia/Kolkata", "singapore": "Asia/Singapore",
    "hong kong": "Asia/Hong_Kong", "shanghai": "Asia/Shanghai", "beijing": "Asia/Shanghai",
    "tokyo": "Asia/Tokyo", "jst": "Asia/Tokyo", "seoul": "Asia/Seoul",
    "sydney": "Australia/Sydney", "melbourne": "Australia/Melbourne",
    "auckland": "Pacific/Auckland", "utc": "UTC", "gmt": "UTC", "zulu": "UTC",
}  # fmt: skip
# Abbreviations count only in capitals ("ET", "PST"); names in any case ("new york time").
_LONG = "|".join(sorted((re.escape(z) for z in ZONES if len(z) > 3), key=len, reverse=True))
_SHORT = "|".join(sorted((z.upper() for z in ZONES if len(z) <= 3), key=len, reverse=True))
ZONE_RE = re.compile(
    rf"(?i:\b({_LONG})\b)|\b({_SHORT})\b|\b((?:Africa|America|Asia|Atlantic|Australia|Europe|"
    r"Indian|Pacific|Etc)/[A-Za-z_]+(?:/[A-Za-z_]+)?)\b"
)
URL_RE = re.compile(r"https?://\S+", re.I)
TIME_RE = re.compile(r"\b(?:at|by|around)\s+(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm|h|o'?clock)?\b")
BARE_TIME_RE = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm)\b|\b(\d{1,2}):(\d{2})\b")
PM_WORDS = re.compile(r"\b(?:evenings?|tonight|afternoons?)\b")
OVERNIGHT_HOURS = "22-23,0-5"
DAYTIME_HOURS = "8-17"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron (``expr``, ``tz``) or an interval (``every``, e.g. ``"90m"``)."""

    expr: str | None = None
    tz: str | None = None
    every: str | None = None
    frequent: bool = False  # chosen for "keep an eye on": say so in the answer
    dropped: tuple[str, ...] = ()  # parts of the stated schedule this trigger cannot keep

    def trigger(self) -> str:
        """The trigger as Python source (values through ``repr``)."""
        if self.every is not None:
            return f"every({self.every!r})"
        tz = f", tz={self.tz!r}" if self.tz else ""
        return f"cron({self.expr!r}{tz})"

    def describe(self) -> str:
        """A readable schedule."""
        if self.every is not None:
            return f"every {_words(self.every)}"
        return describe_cron(str(self.expr), self.tz)


def _words(every: str) -> str:
    n, unit = int(every[:-1]), every[-1]
    name = {"m": "minute", "h": "hour", "d": "day"}[unit]
    return f"{n} {name}{'s' if n != 1 else ''}"


def timezone_of(text: str) -> str | None:
    """The timezone the text names (IANA, abbreviation or city), validated."""
    for m in ZONE_RE.finditer(URL_RE.sub(" ", text)):
        word = m.group(1) or m.group(2)
        name = ZONES.get(word.lower()) if word else m.group(3)
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return None


def _times(t: str) -> list[tuple[int, int]]:
    """Clock times named in the (lower-case) text, in order."""
    out: list[tuple[int, int]] = []
    if re.search(r"\bnoon\b|\bmidday\b", t):
        out.append((12, 0))
    if re.search(r"\bmidnight\b", t):
        out.append((0, 0))
    for m in BARE_TIME_RE.finditer(t):
        if m.group(4):
            hour, minute = int(m.group(4)), int(m.group(5))
        else:
            hour, minute = int(m.group(1)), int(m.group(2) or 0)
            hour = hour + 12 if m.group(3) == "pm" and hour < 12 else hour
            hour = 0 if m.group(3) == "am" and hour == 12 else hour
        if hour <= 23 and minute <= 59:
            out.append((hour, minute))
    at = TIME_RE.search(t)
    if not out and at is not None:
        hour, minute = int(at.group(1)), int(at.group(2) or 0)
        if at.group(3) in (None, "o'clock", "oclock") and hour < 12 and PM_WORDS.search(t):
            hour += 12  # "every evening at 8" is 20:00
        if hour <= 23 and minute <= 59:
            out.append((hour, minute))
    return out


def _day_index(word: str) -> int:
    return next(i for i, d in enumerate(WEEKDAYS) if d.startswith(word[:3]))


def _days(t: str) -> str:
    """The day-of-week field: weekdays, weekends, a range or named days."""
    if re.search(r"\bweek\s*days?\b|\bbusiness\s+days?\b|\bworking\s+days?\b", t):
        return "1-5"
    if re.search(r"\bweekends?\b", t):
        return "0,6"
    if m := DAY_RANGE_RE.search(t):
        a, b = _day_index(m.group(1)), _day_index(m.group(2))
        return f"{a}-{b}" if a < b else "*"
    named = [
        i for i, d in enumerate(WEEKDAYS) if re.search(rf"\b(?:every|on|each)\s+{d}s?\b", t)
    ] or [i for i, d in enumerate(WEEKDAYS) if re.search(rf"\b{d}s\b", t)]
    if named:
        return ",".join(str(i) for i in sorted(named))
    if re.search(r"\bweekly\b|\bevery\s+week\b|\bonce\s+a\s+week\b", t):
        return "1"
    return "*"


def _hours_window(t: str) -> str | None:
    """An hour range for "overnight", "during business hours", "between 9am and 5pm"."""
    if re.search(r"\bovernight\b|\bat\s+night\b|\bduring\s+the\s+night\b|\bnightly\s+window", t):
        return OVERNIGHT_HOURS
    if re.search(r"\b(?:during\s+)?(?:business|office|working)\s+hours\b", t):
        return DAYTIME_HOURS
    m = re.search(
        r"\bbetween\s+(\d{1,2})(?::\d{2})?\s*(am|pm)?\s+and\s+(\d{1,2})(?::\d{2})?\s*(am|pm)?", t
    )
    if m:
        a, b = int(m.group(1)), int(m.group(3))
        a = a + 12 if m.group(2) == "pm" and a < 12 else a
        b = b + 12 if m.group(4) == "pm" and b < 12 else b
        if a <= 23 and b <= 24 and a != b:
            end = (b - 1) % 24
            return f"{a}-{end}" if a <= end else f"{a}-23,0-{end}"
    return None


def _interval(n: int, unit: str, hours: str, dow: str, tz: str | None) -> Schedule:
    """Every ``n`` minutes/hours: cron when it divides the hour/day evenly, else every()."""
    minutes = n if unit == "m" else n * 60
    minutes = min(max(minutes, 1), 366 * 24 * 60)
    windowed = hours != "*" or dow != "*"
    if minutes < 60 and 60 % minutes == 0:
        field = "*" if minutes == 1 else f"*/{minutes}"
        return Schedule(f"{field} {hours} * * {dow}", tz)
    if minutes % 60 == 0 and 24 % (minutes // 60) == 0 and not windowed:
        h = minutes // 60
        return Schedule("0 * * * *" if h == 1 else f"0 */{h} * * *", tz)
    if minutes % 60 == 0 and windowed and minutes == 60:
        return Schedule(f"0 {hours} * * {dow}", tz)
    lost = ("the hours/days window: an interval runs around the clock",) if windowed else ()
    if minutes % (24 * 60) == 0:
        return Schedule(every=f"{minutes // (24 * 60)}d", dropped=lost)
    every = f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
    return Schedule(every=every, dropped=lost)


_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty-five": 45, "forty five": 45, "sixty": 60, "ninety": 90,
}  # fmt: skip
_UNIT = r"(?:minutes?|mins?|hours?|hrs?|days?)\b"
_WORD_NUMBER_RE = re.compile(
    rf"\b({'|'.join(sorted(_WORD_NUMBERS, key=len, reverse=True))})\b"
    rf"(?=\s+(?:and\s+a\s+half\s+)?{_UNIT})"
)


def _plain_numbers(t: str) -> str:
    """Intervals in words as minutes or whole numbers: "an hour and a half" and "1.5 hours" are
    90 minutes, "every two hours" is every 2 hours (so nothing is rounded to the hour)."""
    t = _WORD_NUMBER_RE.sub(lambda m: str(_WORD_NUMBERS[m.group(1)]), t)
    t = re.sub(r"\b(?:an?\s+|1\s+)?hour\s+and\s+a\s+half\b", "90 minutes", t)
    t = re.sub(
        r"\b(\d{1,3})\s+and\s+a\s+half\s+hours?\b",
        lambda m: f"{int(m.group(1)) * 60 + 30} minutes",
        t,
    )
    return re.sub(
        r"\b(\d{1,3}\.\d{1,2})\s*(?:hours?|hrs?|h)\b",
        lambda m: f"{round(float(m.group(1)) * 60)} minutes",
        t,
    )


def read_schedule(text: str) -> Schedule | None:
    """The first schedule ``text`` states, or None when it states none."""
    t = _plain_numbers(URL_RE.sub(" ", text).lower())
    tz = timezone_of(text)
    hours = _hours_window(t) or "*"
    dow = _days(t)
    if m := re.search(r"\bevery\s+(\d+)\s*(minutes?|mins?|m|hours?|hrs?|h|days?|d)\b", t):
        n, unit = int(m.group(1)), m.group(2)[0]
        if unit == "d":
            return _interval(n * 24, "h", "*", "*", tz) if n > 1 else _daily(t, dow, tz)
        return _interval(n, unit, hours, dow, tz)
    if re.search(r"\bevery\s+(?:\d+\s*)?(?:seconds?|secs?)\b|\bevery\s+minute\b", t):
        return Schedule(f"* {hours} * * {dow}", tz)
    if re.search(r"\bevery\s+(?:half[\s-]+(?:an\s+)?hour|30\s+min)|\bhalf[\s-]hourly\b", t):
        return Schedule(f"*/30 {hours} * * {dow}", tz)
    if re.search(r"\bevery\s+quarter[\s-]+(?:of\s+an\s+)?hour\b", t):
        return Schedule(f"*/15 {hours} * * {dow}", tz)
    if re.search(r"\bhourly\b|\bevery\s+hour\b|\bonce\s+an\s+hour\b", t):
        return Schedule(f"0 {hours} * * {dow}", tz)
    if re.search(r"\bkeep\s+(?:an\s+)?eyes?\s+on\b|\bkeep\s+watch\b|\bclosely\b", t):
        return Schedule(f"*/5 {hours} * * {dow}", tz, frequent=True)
    if m := re.search(r"\b(twice|two\s+times|three\s+times|3\s+times|four\s+times)\s+a\s+day\b", t):
        times = _times(t)
        if len(times) >= 2:
            return _at(times, dow, tz)
        count = (
            2
            if m.group(1) in ("twice", "two times")
            else 3
            if "3" in m.group(1) or ("three" in m.group(1))
            else 4
        )
        default = {2: "9,21", 3: "0,8,16", 4: "0,6,12,18"}[count]
        return Schedule(f"0 {default} * * {dow}", tz)
    return _daily(t, dow, tz)


def _at(times: list[tuple[int, int]], dow: str, tz: str | None) -> Schedule:
    minutes = {m for _, m in times}
    if len(minutes) == 1:
        hours = ",".join(str(h) for h in sorted({h for h, _ in times}))
        return Schedule(f"{minutes.pop()} {hours} * * {dow}", tz)
    h, m = times[0]
    return Schedule(f"{m} {h} * * {dow}", tz)


def _daily(t: str, dow: str, tz: str | None) -> Schedule | None:
    times = _times(t)
    if times:
        return _at(times, dow, tz)
    for words, hour in (
        (r"\bevery\s+morning\b|\beach\s+morning\b|\bmornings\b", 8),
        (r"\bevery\s+evening\b|\beach\s+evening\b|\bevenings\b", 18),
        (r"\bnightly\b|\bevery\s+night\b|\beach\s+night\b", 2),
        (r"\bdaily\b|\bevery\s+day\b|\beach\s+day\b|\bonce\s+a\s+day\b", 9),
    ):
        if re.search(words, t):
            return Schedule(f"0 {hour} * * {dow}", tz)
    if dow != "*":
        return Schedule(f"0 9 * * {dow}", tz)
    return None
