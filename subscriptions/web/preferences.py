"""The preference centre, one-click unsubscribe, and a reader's privacy rights."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from subscriptions import privacy, readers
from subscriptions.errors import InvalidInput, NotFound, TokenInvalid
from subscriptions.i18n import N_, current_language, format_date, reader_language
from subscriptions.models import (
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    utcnow,
)
from subscriptions.queue import SEND_MANAGE_LINK, SEND_MANAGE_LINK_TO
from subscriptions.settings import Settings
from subscriptions.tokens import Purpose
from subscriptions.topics import list_topics
from subscriptions.web.forms import FormRejected, refuse_line_breaks
from subscriptions.web.reader import FREQUENCY_LABELS, too_many
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime, client_ip

router = APIRouter()

PAUSE_WEEKS = (1, 2, 4)


@lru_cache(maxsize=1)
def timezones() -> list[str]:
    """Every IANA zone a reader can pick, sorted."""
    return sorted(
        z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
    )


def _reader(runtime: WebRuntime, session: Session, purpose: Purpose, token: str) -> Subscriber:
    """The reader a manage or unsubscribe link names, if the link is genuine and not revoked."""
    claims = runtime.signer.verify(purpose, token, max_age_seconds=None)
    reader = session.get(Subscriber, claims.subscriber_id)
    if reader is None or reader.token_version != claims.version:
        raise TokenInvalid("this link is not valid")
    # A page reached from an email speaks the reader's language, whatever the browser prefers.
    current_language.set(reader_language(runtime.settings.language_list, reader.language))
    return reader


def _centre(
    runtime: WebRuntime,
    request: Request,
    session: Session,
    reader: Subscriber,
    token: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    current = dict(
        session.execute(
            select(Topic.slug, Subscription.frequency)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == reader.id)
        ).all()
    )
    paused = reader.paused_until is not None and reader.paused_until > utcnow()
    return runtime.form_page(
        request,
        "manage.html",
        status=status,
        token=token,
        unsubscribe_token=runtime.signer.make(
            Purpose.UNSUBSCRIBE, subscriber_id=reader.id, version=reader.token_version
        ),
        reader=reader,
        reader_language=reader_language(runtime.settings.language_list, reader.language),
        active=reader.status is SubscriberStatus.ACTIVE,
        topics=list_topics(session=session, language=current_language.get()),
        current={slug: f.value for slug, f in current.items()},
        frequencies=FREQUENCY_LABELS,
        paused_until=format_date(reader.paused_until, current_language.get(), reader.timezone)
        if paused and reader.paused_until
        else None,
        pause_weeks=PAUSE_WEEKS,
        timezones=timezones(),
        notice=notice,
        error=error,
    )


@router.get("/manage", response_class=HTMLResponse)
def request_link_form(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """Ask for an address to email a preferences link to."""
    return runtime.form_page(request, "manage_request.html")


@router.post("/manage", response_class=HTMLResponse)
def request_link(
    request: Request, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Email a preferences link to a known, active address; the answer is the same for any address."""
    settings = runtime.settings
    try:
        refuse_line_breaks(form)
        check = runtime.forms.verify(request, form)
        retry = runtime.limiter.hit(
            "manage-ip", client_ip(request), limit=settings.rate_limit_per_ip
        )
        if retry is not None:
            return too_many(runtime, retry, "manage-ip", limit=settings.rate_limit_per_ip)
        address = readers.normalize_email(str(form.get("email", "")))
    except InvalidInput as exc:
        error = readers.reader_error(exc, current_language.get())
        return runtime.form_page(request, "manage_request.html", status=400, error=error)
    if check.is_bot or check.too_fast:
        return runtime.page("manage_sent.html")
    retry = runtime.limiter.hit("manage-address", address, limit=settings.rate_limit_per_address)
    if retry is not None:
        return too_many(runtime, retry, "manage-address", limit=settings.rate_limit_per_address)
    # The same work for every address (the worker drops unknown ones), so that the time of the
    # answer does not tell whether an address is subscribed.
    runtime.queue.send(SEND_MANAGE_LINK_TO, address)
    return runtime.page("manage_sent.html")


@router.get("/manage/{token}", response_class=HTMLResponse)
def manage(request: Request, token: str, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    """The preference centre: each topic's frequency, pause, time zone, unsubscribe, privacy."""
    try:
        reader = _reader(runtime, session, Purpose.MANAGE, token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    return _centre(runtime, request, session, reader, token)


@router.post("/manage/{token}", response_class=HTMLResponse)
def save_preferences(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Save topics, frequencies, pause and time zone; they apply from the next send."""
    try:
        reader = _reader(runtime, session, Purpose.MANAGE, token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    try:
        refuse_line_breaks(form)
        runtime.forms.verify(request, form)
        if reader.status is not SubscriberStatus.ACTIVE:
            raise InvalidInput(N_("You are unsubscribed. Subscribe again from the subscribe page."))
        frequencies = _frequencies(form, [t.slug for t in list_topics(session=session)])
        if not any(frequencies.values()):
            raise InvalidInput(
                N_("Choose at least one topic, or unsubscribe from everything below.")
            )
        zone = str(form.get("timezone", reader.timezone))
        if zone not in timezones() and zone != "UTC":
            raise InvalidInput(N_("Choose a time zone from the list."))
        language = _language(form, runtime.settings)
        readers.update_preferences(
            session=session,
            subscriber_id=reader.id,
            frequencies=frequencies,
            timezone=zone,
            paused_until=_pause(form, reader),
            language=language,
        )
        if language is not None:
            current_language.set(language)
    except InvalidInput as exc:
        session.rollback()
        return _centre(runtime, request, session, reader, token, error=str(exc), status=400)
    session.commit()
    return _centre(
        runtime, request, session, reader, token, notice=N_("Your preferences are saved.")
    )


def _language(form: dict[str, Any], settings: Settings) -> str | None:
    """The language chosen in the form (None: the field was not there, nothing changes)."""
    value = form.get("language")
    if value is None:
        return None
    if not isinstance(value, str) or value not in settings.language_list:
        raise InvalidInput(N_("Choose a language from the list."))
    return value


def _frequencies(form: dict[str, Any], slugs: list[str]) -> dict[str, Frequency | None]:
    result: dict[str, Frequency | None] = {}
    for slug in slugs:
        value = form.get(f"frequency-{slug}", "off")
        if value == "off":
            result[slug] = None
        elif isinstance(value, str) and value in FREQUENCY_LABELS:
            result[slug] = Frequency(value)
        else:
            raise InvalidInput(N_("Choose how often for each topic."))
    return result


def _pause(form: dict[str, Any], reader: Subscriber) -> Any:
    choice = form.get("pause", "keep")
    if choice == "keep":
        return reader.paused_until
    if choice == "none":
        return None
    if isinstance(choice, str) and choice.isdigit() and int(choice) in PAUSE_WEEKS:
        return utcnow() + timedelta(weeks=int(choice))
    raise InvalidInput(N_("Choose how long to pause."))


@router.post("/manage/{token}/revoke", response_class=HTMLResponse)
def revoke(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Invalidate every link sent so far; a fresh preferences link is emailed."""
    try:
        reader = _reader(runtime, session, Purpose.MANAGE, token)
        runtime.forms.verify(request, form)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    except FormRejected as exc:
        return _centre(runtime, request, session, reader, token, error=str(exc), status=400)
    readers.revoke_links(session=session, subscriber_id=reader.id)
    session.commit()
    runtime.queue.send(SEND_MANAGE_LINK, reader.id)
    return runtime.page("links_revoked.html")


@router.post("/manage/{token}/export")
def export(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> Response:
    """Download everything held about the reader, as JSON."""
    try:
        reader = _reader(runtime, session, Purpose.MANAGE, token)
        runtime.forms.verify(request, form)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    except FormRejected as exc:
        return _centre(runtime, request, session, reader, token, error=str(exc), status=400)
    data = privacy.export_reader(session=session, subscriber_id=reader.id)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-newsletter-data.json"'},
    )


@router.post("/manage/{token}/erase", response_class=HTMLResponse)
def erase(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Delete the reader; only a hashed suppression entry stays so they are not mailed again."""
    try:
        reader = _reader(runtime, session, Purpose.MANAGE, token)
        runtime.forms.verify(request, form)
        if form.get("confirm") != "yes":
            raise InvalidInput(N_("Tick the box to confirm that you want everything erased."))
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    except InvalidInput as exc:
        return _centre(runtime, request, session, reader, token, error=str(exc), status=400)
    privacy.erase_reader(session=session, subscriber_id=reader.id)
    session.commit()
    return runtime.page("erased.html")


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep
) -> HTMLResponse:
    """Leave, or rather pause or keep fewer topics; a GET (a person's click or a link scanner)
    never unsubscribes by itself."""
    try:
        reader = _reader(runtime, session, Purpose.UNSUBSCRIBE, token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    return _leaving(runtime, request, reader, token)


def _leaving(
    runtime: WebRuntime,
    request: Request,
    reader: Subscriber,
    token: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    manage_token = runtime.signer.make(
        Purpose.MANAGE, subscriber_id=reader.id, version=reader.token_version
    )
    return runtime.form_page(
        request,
        "unsubscribe.html",
        status=status,
        token=token,
        done=reader.status is not SubscriberStatus.ACTIVE,
        undo=readers.can_undo_unsubscribe(reader),
        undo_days=readers.UNDO_DAYS,
        manage_url=f"/manage/{manage_token}",
        pause_weeks=PAUSE_WEEKS,
        error=error,
    )


@router.post("/unsubscribe/{token}/pause", response_class=HTMLResponse)
def pause_instead(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Rather than leaving: no email for 1, 2 or 4 weeks, every topic kept."""
    try:
        reader = _reader(runtime, session, Purpose.UNSUBSCRIBE, token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    try:
        runtime.forms.verify(request, form)
        if reader.status is not SubscriberStatus.ACTIVE:
            raise InvalidInput(N_("You are unsubscribed, so there is nothing to pause."))
        weeks = form.get("weeks")
        if not (isinstance(weeks, str) and weeks.isdigit() and int(weeks) in PAUSE_WEEKS):
            raise InvalidInput(N_("Choose how long to pause."))
        until = utcnow() + timedelta(weeks=int(weeks))
        readers.update_preferences(
            session=session, subscriber_id=reader.id, frequencies={}, paused_until=until
        )
    except InvalidInput as exc:
        return _leaving(runtime, request, reader, token, error=str(exc), status=400)
    session.commit()
    manage_token = runtime.signer.make(
        Purpose.MANAGE, subscriber_id=reader.id, version=reader.token_version
    )
    return runtime.page(
        "paused.html",
        until=format_date(until, current_language.get(), reader.timezone),
        manage_url=f"/manage/{manage_token}",
    )


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """RFC 8058 one-click: any body (urlencoded or multipart `List-Unsubscribe=One-Click`), no cookie,
    no CSRF token; answers 200 at once, never a redirect. The page offers an undo for 30 days."""
    await request.body()  # accept and ignore the body, whatever its encoding

    def apply() -> tuple[bool, str]:
        with runtime.sessions() as session, session.begin():
            reader = _reader(runtime, session, Purpose.UNSUBSCRIBE, token)
            readers.unsubscribe(session=session, subscriber_id=reader.id)
            # The thread pool runs in a copy of this context: hand the reader's language back.
            return readers.can_undo_unsubscribe(reader), current_language.get()

    try:
        undo, language = await run_in_threadpool(apply)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    current_language.set(language)
    return runtime.page("unsubscribed.html", token=token, undo=undo, undo_days=readers.UNDO_DAYS)


@router.post("/unsubscribe/{token}/undo", response_class=HTMLResponse)
def undo_unsubscribe(token: str, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    """Put back the subscriptions the last unsubscribe removed, within 30 days, without a new
    opt-in. No cookie (the page that offers it may answer a cookie-less one-click POST): the
    unsubscribe link is the proof, as it is for leaving."""
    try:
        reader = _reader(runtime, session, Purpose.UNSUBSCRIBE, token)
        restored = readers.undo_unsubscribe(session=session, subscriber_id=reader.id)
    except (TokenInvalid, NotFound):
        session.rollback()
        return runtime.page("undo_expired.html", status=400)
    session.commit()
    names = {
        t.slug: t.name
        for t in list_topics(
            session=session, include_archived=True, language=current_language.get()
        )
    }
    manage_token = runtime.signer.make(
        Purpose.MANAGE, subscriber_id=reader.id, version=reader.token_version
    )
    return runtime.page(
        "resubscribed.html",
        topics=[names.get(slug, slug) for slug in restored],
        manage_url=f"/manage/{manage_token}",
    )
