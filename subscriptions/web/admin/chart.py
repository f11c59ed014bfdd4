"""The dashboard's chart as geometry: two bar panels (sign-ups, unsubscribes), each on its own
scale with a y-axis and date labels, laid out in SVG user units for the template to draw.

Each series has its own scale so that 1 unsubscribe stays visible beside 3,000 sign-ups; text
sizes are in the same units as a viewBox about as wide as a phone, so labels stay legible."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

#: The viewBox's width; the panels' plotting area starts after room for the y labels.
WIDTH = 360
LEFT = 40
RIGHT = 8
PANEL_HEIGHT = 96
#: Room above a panel (its title) and below it (the date labels).
TOP = 22
BOTTOM = 22


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    value: int


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class DateLabel:
    x: float
    label: str
    anchor: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    css: str
    top: float
    bottom: float
    bars: list[Bar]
    ticks: list[Tick]
    dates: list[DateLabel]
    total: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    panels: list[Panel]


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at or above `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _panel(title: str, css: str, top: float, days: Sequence[date], values: Sequence[int]) -> Panel:
    plot = WIDTH - LEFT - RIGHT
    slot = plot / max(1, len(values))
    peak = nice_ceiling(max([1, *values]))
    bottom = top + PANEL_HEIGHT
    bars = []
    for n, (day, value) in enumerate(zip(days, values, strict=True)):
        height = value / peak * PANEL_HEIGHT
        if value and height < 1.5:
            height = 1.5  # one event is still a visible bar
        bars.append(
            Bar(LEFT + n * slot + 1, bottom - height, max(1.0, slot - 2), height, day, value)
        )
    ticks = [Tick(bottom - f * PANEL_HEIGHT, f"{round(peak * f):,}") for f in (0, 0.5, 1)]
    if peak == 1:
        ticks = [ticks[0], ticks[2]]  # no "0.5 people"
    dates = []
    last = len(days) - 1
    for n in sorted({*range(0, len(days), 7), last}) if days else []:
        if 0 < last - n < 4 and n != last:
            continue  # too close to the last label
        anchor = "start" if n == 0 else "end" if n == last else "middle"
        x = LEFT + n * slot + (0 if n == 0 else slot if n == last else slot / 2)
        dates.append(DateLabel(x, days[n].strftime("%d %b"), anchor))
    return Panel(title, css, top, bottom, bars, ticks, dates, sum(values))


def activity_chart(
    days: Sequence[date], signups: Sequence[int], unsubscribes: Sequence[int]
) -> Chart:
    """Sign-ups above unsubscribes, one bar per day, each panel on its own scale."""
    first = _panel("Sign-ups per day", "signups", TOP, days, signups)
    second_top = first.bottom + BOTTOM + TOP
    second = _panel("Unsubscribes per day", "unsubscribes", second_top, days, unsubscribes)
    return Chart(WIDTH, int(second.bottom + BOTTOM), LEFT, RIGHT, [first, second])
