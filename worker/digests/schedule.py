"""Periods in a reader's own time zone: pure functions, no database.

A daily period ends at the send hour of a local date; a weekly one at the send hour of the configured
weekday. The window of a period runs from the previous period's end to this one's, both computed in
local time and converted to UTC, so a daylight-saving change makes one window 23 or 25 hours long but
never skips or doubles a digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Period:
    """One digest period for one time zone: its run key and its window of posts, in UTC."""

    key: str
    start: datetime
    end: datetime


def _at(local_day: date, hour: int, zone: ZoneInfo) -> datetime:
    """The instant of `hour` o'clock on `local_day` in `zone`, in UTC.

    A repeated hour (autumn) is taken the first time (fold=0). A skipped one (spring) resolves to the
    first instant after the gap, however long the gap: zoneinfo reads a missing local time with the
    offset in force before the change, which lands exactly there.
    """
    return datetime.combine(local_day, time(hour), tzinfo=zone).astimezone(UTC)


def latest_daily(now: datetime, zone_name: str, *, hour: int) -> Period:
    """The most recent daily period that has ended by `now` in zone `zone_name`."""
    zone = ZoneInfo(zone_name)
    local_day = now.astimezone(zone).date()
    end = _at(local_day, hour, zone)
    if end > now:
        local_day -= timedelta(days=1)
        end = _at(local_day, hour, zone)
    start = _at(local_day - timedelta(days=1), hour, zone)
    return Period(f"daily:{local_day.isoformat()}", start, end)


def latest_weekly(now: datetime, zone_name: str, *, hour: int, weekday: str) -> Period:
    """The most recent weekly period that has ended by `now`: it ends on `weekday` at `hour`."""
    zone = ZoneInfo(zone_name)
    target = WEEKDAYS.index(weekday)
    local_day = now.astimezone(zone).date()
    local_day -= timedelta(days=(local_day.weekday() - target) % 7)
    end = _at(local_day, hour, zone)
    if end > now:
        local_day -= timedelta(days=7)
        end = _at(local_day, hour, zone)
    start = _at(local_day - timedelta(days=7), hour, zone)
    return Period(f"weekly:{local_day.isoformat()}", start, end)
