"""Digest periods in each reader's time zone (worker/digests/schedule.py): pure functions, no database.

Every period is checked against an independent oracle: the send instant of a local date is the first
instant, scanning forward in 15-minute UTC steps, at which the zone's wall clock reads that date at the
send hour or later. (Every offset and transition of the zones used here falls on a 15-minute grid.) A
daily or weekly period then ends at the send instant of its date and starts at the previous one's.
The walks cross both daylight-saving transitions of zones that change at 01:00, 02:00, 03:00 and
midnight, by an hour or by thirty minutes, with the send hour inside the skipped and the repeated hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from worker.digests.schedule import WEEKDAYS, Period, latest_daily, latest_weekly

H = timedelta(hours=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@cache
def send_instant(zone: str, day: date, hour: int) -> datetime:
    """The first instant at which the wall clock in `zone` shows `day` at `hour` or later."""
    target = datetime.combine(day, time(hour))
    tz = ZoneInfo(zone)
    t = datetime.combine(day, time(0), tzinfo=UTC) - timedelta(hours=15)
    while t.astimezone(tz).replace(tzinfo=None) < target:
        t += timedelta(minutes=15)
    return t


def expected_daily(now: datetime, zone: str, hour: int) -> Period:
    day = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
    while send_instant(zone, day, hour) > now:
        day -= timedelta(days=1)
    return Period(
        f"daily:{day.isoformat()}",
        send_instant(zone, day - timedelta(days=1), hour),
        send_instant(zone, day, hour),
    )


def expected_weekly(now: datetime, zone: str, hour: int, weekday: str) -> Period:
    day = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
    while day.weekday() != WEEKDAYS.index(weekday) or send_instant(zone, day, hour) > now:
        day -= timedelta(days=1)
    return Period(
        f"weekly:{day.isoformat()}",
        send_instant(zone, day - timedelta(days=7), hour),
        send_instant(zone, day, hour),
    )


# (zone, a daylight-saving transition in it, in UTC): both directions of each.
TRANSITIONS = [
    ("America/New_York", utc(2024, 3, 10, 7)),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", utc(2024, 11, 3, 6)),  # 02:00 EDT -> 01:00 EST
    ("Europe/London", utc(2024, 3, 31, 1)),  # 01:00 GMT -> 02:00 BST
    ("Europe/London", utc(2024, 10, 27, 1)),  # 02:00 BST -> 01:00 GMT
    ("Pacific/Auckland", utc(2024, 4, 6, 14)),  # 03:00 NZDT -> 02:00 NZST
    ("Pacific/Auckland", utc(2024, 9, 28, 14)),  # 02:00 NZST -> 03:00 NZDT
    ("America/Havana", utc(2024, 3, 10, 5)),  # midnight -> 01:00
    ("America/Havana", utc(2024, 11, 3, 5)),  # 01:00 -> midnight
    ("America/Santiago", utc(2024, 4, 7, 3)),  # midnight -> 23:00 the day before
    ("America/Santiago", utc(2024, 9, 8, 4)),  # midnight -> 01:00
    ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),  # 02:00 -> 01:30 (half an hour)
    ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),  # 02:00 -> 02:30
    ("America/Mexico_City", utc(2022, 4, 3, 8)),  # its last spring forward
    ("America/Mexico_City", utc(2022, 10, 30, 7)),  # and its last fall back
    ("America/Mexico_City", utc(2024, 4, 7, 8)),  # no DST since 2022: a control
    ("Asia/Kolkata", utc(2024, 3, 10, 7)),  # never had DST: a control
    ("UTC", utc(2024, 3, 10, 7)),
]


def _walk(center: datetime, days: int, step: timedelta) -> list[datetime]:
    t = center - timedelta(days=days)
    out = []
    while t <= center + timedelta(days=days):
        out.append(t)
        t += step
    return out


def _check_sequence(periods: list[Period], steps: list[datetime], kind: str) -> None:
    """Each local date once, in order, no gap; windows contiguous; each period ended by then."""
    days = [date.fromisoformat(p.key.split(":", 1)[1]) for p in periods]
    seen = list(dict.fromkeys(days))
    spacing = timedelta(days=1 if kind == "daily" else 7)
    assert all(b - a == spacing for a, b in pairwise(seen)), seen
    distinct = list(dict.fromkeys(periods))
    assert [p.key for p in distinct] == [f"{kind}:{d.isoformat()}" for d in seen]
    for before, after in pairwise(distinct):
        assert after.start == before.end, (before, after)
    for period, now in zip(periods, steps, strict=True):
        assert period.start < period.end <= now


def _daily_cases() -> list[object]:
    return [
        pytest.param(zone, center, hour, id=f"{zone}-{center:%Y-%m-%d}-{hour:02d}h")
        for zone, center in TRANSITIONS
        for hour in (0, 1, 2, 3, 7, 23)
    ]


@pytest.mark.parametrize(("zone", "center", "hour"), _daily_cases())
def test_daily_periods_across_dst_match_the_wall_clock(
    zone: str, center: datetime, hour: int
) -> None:
    """Every 15 minutes for four days around a transition, at send hours in and out of the
    skipped or repeated hour: the period is the oracle's, no date is skipped or doubled."""
    steps = _walk(center, 2, timedelta(minutes=15))
    periods = [latest_daily(now, zone, hour=hour) for now in steps]
    for now, period in zip(steps, periods, strict=True):
        assert period == expected_daily(now, zone, hour), now
    _check_sequence(periods, steps, "daily")


def _weekly_cases() -> list[object]:
    return [
        pytest.param(
            zone, center, weekday, hour, id=f"{zone}-{center:%Y-%m-%d}-{weekday}-{hour:02d}h"
        )
        for zone, center in TRANSITIONS[:8] + TRANSITIONS[10:12]
        for weekday in WEEKDAYS
        for hour in (2, 7)
    ]


@pytest.mark.parametrize(("zone", "center", "weekday", "hour"), _weekly_cases())
def test_weekly_periods_across_dst_match_the_wall_clock(
    zone: str, center: datetime, weekday: str, hour: int
) -> None:
    """Hourly for three weeks around a transition, for every weekday: one period per week."""
    steps = _walk(center, 10, H)
    periods = [latest_weekly(now, zone, hour=hour, weekday=weekday) for now in steps]
    for now, period in zip(steps, periods, strict=True):
        assert period == expected_weekly(now, zone, hour, weekday), now
        assert date.fromisoformat(period.key.split(":")[1]).weekday() == WEEKDAYS.index(weekday)
    _check_sequence(periods, steps, "weekly")


@pytest.mark.parametrize(
    ("zone", "now", "key", "start", "end"),
    [
        # UTC: 07:00 is 07:00.
        ("UTC", utc(2024, 6, 11, 7), "daily:2024-06-11", utc(2024, 6, 10, 7), utc(2024, 6, 11, 7)),
        # One microsecond before the send hour, the period is still yesterday's.
        (
            "UTC",
            utc(2024, 6, 11, 7) - timedelta(microseconds=1),
            "daily:2024-06-10",
            utc(2024, 6, 9, 7),
            utc(2024, 6, 10, 7),
        ),
        # Kolkata is UTC+05:30: 07:00 IST is 01:30 UTC.
        (
            "Asia/Kolkata",
            utc(2024, 6, 11, 1, 30),
            "daily:2024-06-11",
            utc(2024, 6, 10, 1, 30),
            utc(2024, 6, 11, 1, 30),
        ),
        # Mexico City has been UTC-6 all year since 2022.
        (
            "America/Mexico_City",
            utc(2024, 6, 11, 12, 59),
            "daily:2024-06-10",
            utc(2024, 6, 9, 13),
            utc(2024, 6, 10, 13),
        ),
        # Auckland in June is UTC+12: the 11th's digest goes out on the 10th in UTC.
        (
            "Pacific/Auckland",
            utc(2024, 6, 10, 19),
            "daily:2024-06-11",
            utc(2024, 6, 9, 19),
            utc(2024, 6, 10, 19),
        ),
        # New York springs forward on 2024-03-10: that day's window is 23 hours long.
        (
            "America/New_York",
            utc(2024, 3, 10, 11),
            "daily:2024-03-10",
            utc(2024, 3, 9, 12),
            utc(2024, 3, 10, 11),
        ),
        # ... and falls back on 2024-11-03: 25 hours.
        (
            "America/New_York",
            utc(2024, 11, 3, 12),
            "daily:2024-11-03",
            utc(2024, 11, 2, 11),
            utc(2024, 11, 3, 12),
        ),
        # Auckland leaves DST on 2024-04-07 (25 hours) and enters it on 2024-09-29 (23 hours).
        (
            "Pacific/Auckland",
            utc(2024, 4, 6, 19),
            "daily:2024-04-07",
            utc(2024, 4, 5, 18),
            utc(2024, 4, 6, 19),
        ),
        (
            "Pacific/Auckland",
            utc(2024, 9, 28, 18),
            "daily:2024-09-29",
            utc(2024, 9, 27, 19),
            utc(2024, 9, 28, 18),
        ),
        # Across the end of a year.
        (
            "UTC",
            utc(2025, 1, 1, 8),
            "daily:2025-01-01",
            utc(2024, 12, 31, 7),
            utc(2025, 1, 1, 7),
        ),
    ],
)
def test_daily_period_examples(
    zone: str, now: datetime, key: str, start: datetime, end: datetime
) -> None:
    """Worked examples a person can check by hand."""
    assert latest_daily(now, zone, hour=7) == Period(key, start, end)


def test_send_hour_in_the_skipped_hour_moves_forward() -> None:
    """02:00 does not exist in New York on 2024-03-10: the digest goes at 03:00 EDT (07:00 UTC)."""
    period = latest_daily(utc(2024, 3, 10, 7), "America/New_York", hour=2)
    assert period == Period("daily:2024-03-10", utc(2024, 3, 9, 7), utc(2024, 3, 10, 7))
    assert latest_daily(utc(2024, 3, 10, 6, 59), "America/New_York", hour=2).key == (
        "daily:2024-03-09"
    )


def test_send_hour_in_a_half_hour_gap_is_the_end_of_the_gap() -> None:
    """Lord Howe Island skips 02:00-02:30 on 2024-10-06: the 02:00 digest goes at 02:30 local."""
    period = latest_daily(utc(2024, 10, 5, 16), "Australia/Lord_Howe", hour=2)
    assert period.key == "daily:2024-10-06"
    assert period.end == utc(2024, 10, 5, 15, 30)  # 02:30 +11:00


def test_send_hour_in_the_repeated_hour_is_its_first_occurrence() -> None:
    """01:00 happens twice in New York on 2024-11-03: the digest goes at the first (05:00 UTC)."""
    first = utc(2024, 11, 3, 5)
    assert latest_daily(first, "America/New_York", hour=1).end == first
    # The second 01:00 (06:00 UTC) is inside the same period, not a new one.
    assert latest_daily(first + H, "America/New_York", hour=1) == latest_daily(
        first, "America/New_York", hour=1
    )


@pytest.mark.parametrize(
    ("zone", "now", "key", "start", "end"),
    [
        # Monday 2024-06-10 07:00 UTC.
        (
            "UTC",
            utc(2024, 6, 10, 7),
            "weekly:2024-06-10",
            utc(2024, 6, 3, 7),
            utc(2024, 6, 10, 7),
        ),
        # Sunday evening in UTC is already Monday morning in Auckland.
        (
            "Pacific/Auckland",
            utc(2024, 6, 9, 19),
            "weekly:2024-06-10",
            utc(2024, 6, 2, 19),
            utc(2024, 6, 9, 19),
        ),
        # Mexico City's Monday 07:00 is 13:00 UTC: at noon UTC it is last week's period.
        (
            "America/Mexico_City",
            utc(2024, 6, 10, 12),
            "weekly:2024-06-03",
            utc(2024, 5, 27, 13),
            utc(2024, 6, 3, 13),
        ),
        # The New York week holding the spring change is 167 hours long.
        (
            "America/New_York",
            utc(2024, 3, 11, 11),
            "weekly:2024-03-11",
            utc(2024, 3, 4, 12),
            utc(2024, 3, 11, 11),
        ),
        # A week across the new year.
        (
            "Asia/Kolkata",
            utc(2024, 12, 30, 1, 30),
            "weekly:2024-12-30",
            utc(2024, 12, 23, 1, 30),
            utc(2024, 12, 30, 1, 30),
        ),
    ],
)
def test_weekly_period_examples(
    zone: str, now: datetime, key: str, start: datetime, end: datetime
) -> None:
    """Worked examples of the default weekly period (Monday, 07:00 local)."""
    assert latest_weekly(now, zone, hour=7, weekday="monday") == Period(key, start, end)


def test_weekly_on_another_weekday() -> None:
    """The configured weekday decides the key and the window."""
    period = latest_weekly(utc(2024, 6, 12, 9), "UTC", hour=9, weekday="wednesday")
    assert period == Period("weekly:2024-06-12", utc(2024, 6, 5, 9), utc(2024, 6, 12, 9))
    period = latest_weekly(utc(2024, 6, 12, 8), "UTC", hour=9, weekday="wednesday")
    assert period.key == "weekly:2024-06-05"


def test_unknown_weekday_is_refused() -> None:
    """A weekday that is not one of WEEKDAYS is an error, not a silent default."""
    with pytest.raises(ValueError):
        latest_weekly(utc(2024, 6, 12), "UTC", hour=7, weekday="funday")
