"""Console: the dashboard (readers by topic and frequency, sign-ups over time, recent digests,
feed health)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from subscriptions import dashboard, feeds, notices
from subscriptions.web.admin.auth import EditorDep, page
from subscriptions.web.admin.chart import activity_chart
from subscriptions.web.runtime import RuntimeDep, SessionDep

router = APIRouter()


@router.get("", response_class=HTMLResponse)
def dashboard_page(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: EditorDep
) -> HTMLResponse:
    """What an editor looks at first."""
    days = dashboard.daily_activity(session=session, days=30)
    return page(
        runtime,
        request,
        editor,
        "admin/dashboard.html",
        totals=dashboard.reader_totals(session=session),
        topics=dashboard.readers_by_topic(session=session),
        days=days,
        chart=activity_chart(
            [d.day for d in days], [d.signups for d in days], [d.unsubscribes for d in days]
        ),
        digests=dashboard.recent_digests(session=session),
        feeds=feeds.list_feeds(session=session),
        notices=notices.open_notices(session=session),
    )
