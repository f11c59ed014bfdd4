"""The dashboard chart's geometry (subscriptions/web/admin/chart.py): own scales, axes, labels."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from subscriptions.web.admin.chart import PANEL_HEIGHT, WIDTH, activity_chart, nice_ceiling

DAYS = [date(2026, 11, 5) + timedelta(days=n) for n in range(30)]


def test_nice_ceilings() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 11, 3018)] == [1, 1, 2, 5, 10, 20, 5000]


def test_one_unsubscribe_is_visible_beside_three_thousand_sign_ups() -> None:
    signups = [0] * 30
    signups[3] = 3018
    unsubscribes = [0] * 30
    unsubscribes[20] = 1
    chart = activity_chart(DAYS, signups, unsubscribes)
    ups, downs = chart.panels
    assert [t.label for t in ups.ticks] == ["0", "2,500", "5,000"]
    assert [t.label for t in downs.ticks] == ["0", "1"]  # its own scale
    assert downs.bars[20].height == PANEL_HEIGHT  # the one unsubscribe fills its panel
    assert ups.bars[3].height > PANEL_HEIGHT / 2
    assert all(b.height == 0 for n, b in enumerate(downs.bars) if n != 20)
    assert downs.top > ups.bottom  # stacked, not overlapping


def test_date_labels_stay_inside_the_chart_and_the_last_day_is_labelled() -> None:
    chart = activity_chart(DAYS, [1] * 30, [0] * 30)
    labels = chart.panels[0].dates
    assert labels[0].label == "05 Nov" and labels[0].anchor == "start"
    assert labels[-1].label == "04 Dec" and labels[-1].anchor == "end"
    assert labels[-1].x <= WIDTH - chart.right
    assert all(chart.left <= d.x <= WIDTH for d in labels)
    assert len(labels) >= 4
    xs = [d.x for d in labels]
    assert all(b - a >= 40 for a, b in itertools.pairwise(xs))  # no overlapping labels
