"""Console page: the "subscribe here" box for the publisher's own pages, as copy-paste snippets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from subscriptions.models import Frequency
from subscriptions.topics import list_topics
from subscriptions.web.admin.auth import EditorDep, page
from subscriptions.web.embed import snippets
from subscriptions.web.reader import CONSENT_WORDING, FREQUENCY_LABELS
from subscriptions.web.runtime import RuntimeDep, SessionDep

router = APIRouter()


@router.get("/embed", response_class=HTMLResponse)
def embed_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    topic: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI reads the default, never mutates it)
    frequency: str = Frequency.DAILY.value,
) -> HTMLResponse:
    """Pick topics and a frequency; get the HTML form, the optional script and the framed variant."""
    topics = list_topics(session=session)
    live = {t.slug for t in topics}
    chosen = [slug for slug in dict.fromkeys(topic) if slug in live][:20]
    if frequency not in FREQUENCY_LABELS:
        frequency = Frequency.DAILY.value
    settings = runtime.settings
    return page(
        runtime,
        request,
        editor,
        "admin/embed.html",
        topics=topics,
        chosen=chosen,
        frequency=frequency,
        frequencies=FREQUENCY_LABELS,
        snippets=snippets(settings.base_url, chosen, frequency, CONSENT_WORDING)
        if chosen
        else None,
        origins=sorted(settings.allowed_embed_origins),
    )
