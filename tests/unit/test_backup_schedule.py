"""Backup schedules: the OnCalendar forms svcctl accepts, and everything that could add a directive refused."""

from __future__ import annotations

import pytest

from svcctl.model.schedule import check_schedule, schedule_problem

ACCEPTED = [
    "daily",
    "hourly",
    "weekly",
    "yearly",
    "Mon..Fri 02:30",
    "*-*-* 03:00:00",
    "Sun *-*-* 04:00",
    "Mon,Wed,Fri",
    "2026-12-01 00:00",
    "*-*-1,15 01:30",
    "*-*-* 00/6:00",
    "12-24 18:00",
    "Sat..Sun 10:00:30",
]

REFUSED = [
    "",
    "minutely",
    "daily\nExecStart=/bin/sh",
    "daily\n",
    "%H 03:00",
    "*-*-* 03:00 UTC",
    "daily; rm -rf /",
    "Persistent=true",
    "Mon..Fri  02:30",
    " daily",
    "Monday 02:30",
    "*-*-* 03:00:00:00",
    "02:30 Mon",
    "a" * 65,
    "*-*-* 3:00\tx",
    "now",
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted_schedules(value: str) -> None:
    assert schedule_problem(value) is None
    assert check_schedule(value) == value


@pytest.mark.parametrize("value", REFUSED)
def test_refused_schedules(value: str) -> None:
    assert schedule_problem(value) is not None
    with pytest.raises(ValueError, match=r"schedule|string|longer"):
        check_schedule(value)


def test_no_accepted_schedule_holds_a_character_that_means_something_in_a_unit_file() -> None:
    for value in ACCEPTED:
        assert not set(value) & set("%=\n\r\\;$`'\"#")
