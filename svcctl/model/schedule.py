"""Backup schedules: the systemd OnCalendar expressions svcctl accepts, checked by a small grammar.

A schedule ends up as the `OnCalendar=` line of a timer unit, so the rule is a whitelist rather than a
blacklist: a shorthand word (`daily`), or up to three space-separated parts, `[WEEKDAYS] [DATE] [TIME]`,
each made only of digits, `*`, `,`, `..`, `/` (and `-` in the date, `:` in the time). No newline, no `%`
(systemd's specifier), no `=`, no timezone, nothing else can reach the unit file.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

SHORTHANDS = ("hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly", "annually")
"""systemd.time(7)'s shorthand expressions, except `minutely` (a dump a minute is a mistake)."""

_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_WEEKDAYS = re.compile(rf"{_DAY}(?:\.\.{_DAY})?(?:,{_DAY}(?:\.\.{_DAY})?)*")
_FIELD = r"(?:\*|[0-9]{1,4})(?:\.\.[0-9]{1,4})?(?:/[0-9]{1,4})?"
_LIST = rf"{_FIELD}(?:,{_FIELD})*"
_DATE = re.compile(rf"(?:{_LIST}-)?{_LIST}-{_LIST}")  # [YYYY-]MM-DD
_TIME = re.compile(rf"{_LIST}:{_LIST}(?::{_LIST})?")  # HH:MM[:SS]
MAX_LENGTH = 64


def schedule_problem(value: str) -> str | None:
    """What is wrong with `value` as a backup schedule, or None when svcctl accepts it."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_LENGTH:
        return f"is longer than {MAX_LENGTH} characters"
    if value in SHORTHANDS:
        return None
    parts = value.split(" ")
    problem = (
        f"{value!r} is not a schedule svcctl accepts: write one of {', '.join(SHORTHANDS)}, or "
        "[WEEKDAYS] [DATE] [TIME] as systemd's OnCalendar does, such as 'Mon..Fri 02:30', '*-*-* 03:00:00' or "
        "'Sun *-*-* 04:00' (digits, *, ',', '..', '/'; no timezone)"
    )
    if not 1 <= len(parts) <= 3 or "" in parts:
        return problem
    rest = parts[1:] if _WEEKDAYS.fullmatch(parts[0]) else parts
    if not rest and len(parts) == 1:
        return None  # weekdays alone: every such day at midnight
    date = rest[0] if rest and _DATE.fullmatch(rest[0]) else None
    rest = rest[1:] if date is not None else rest
    time = rest[0] if rest and _TIME.fullmatch(rest[0]) else None
    rest = rest[1:] if time is not None else rest
    if rest or (date is None and time is None):
        return problem
    return None


def check_schedule(value: str) -> str:
    """A schedule as accepted (the value itself), or ValueError saying which forms are."""
    problem = schedule_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Schedule = Annotated[str, AfterValidator(check_schedule)]
