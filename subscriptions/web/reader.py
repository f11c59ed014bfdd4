"""Reader pages: subscribe, confirm."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from subscriptions import readers
from subscriptions.errors import InvalidInput, NotFound, TokenExpired, TokenInvalid
from subscriptions.models import Frequency
from subscriptions.queue import SEND_CONFIRMATION
from subscriptions.tokens import Purpose, TokenClaims
from subscriptions.topics import list_topics
from subscriptions.web.runtime import RuntimeDep, SessionDep, WebRuntime

router = APIRouter()

CONSENT_WORDING = (
    "I agree to receive email about the topics I chose, as often as I chose. "
    "Every email has a link to change this or to unsubscribe."
)


def _page(runtime: WebRuntime, name: str, status: int = 200, **context: object) -> HTMLResponse:
    html = runtime.pages.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status)


@router.get("/", response_class=HTMLResponse)
def subscribe_form(runtime: RuntimeDep, session: SessionDep, topic: str = "") -> HTMLResponse:
    """The subscribe form: email, topics, frequency, the browser's time zone."""
    return _form(runtime, session, selected=[topic] if topic else [], error=None, email="")


def _form(
    runtime: WebRuntime,
    session: SessionDep,
    *,
    selected: list[str],
    error: str | None,
    email: str,
    frequency: str = Frequency.DAILY.value,
    status: int = 200,
) -> HTMLResponse:
    return _page(
        runtime,
        "subscribe.html",
        status=status,
        topics=list_topics(session=session),
        selected=selected,
        error=error,
        email=email,
        frequency=frequency,
        frequencies=[f.value for f in Frequency],
        default_timezone=runtime.settings.default_timezone,
        consent_wording=CONSENT_WORDING,
    )


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=10_000)] = "",
    topics: Annotated[list[str] | None, Form()] = None,
    frequency: Annotated[str, Form(max_length=20)] = Frequency.DAILY.value,
    timezone: Annotated[str, Form(max_length=200)] = "",
    source: Annotated[str, Form(max_length=400)] = "",
) -> HTMLResponse:
    """Store a pending reader and enqueue the confirmation; the answer never says if the address is known."""
    chosen = [t for t in (topics or []) if t]
    try:
        address = readers.normalize_email(email)
        try:
            chosen_frequency = Frequency(frequency)
        except ValueError:
            raise InvalidInput("choose how often you want email", field="frequency") from None
        signup = readers.subscribe(
            session=session,
            email=address,
            topics=chosen,
            frequency=chosen_frequency,
            timezone=readers.check_timezone(timezone, default=runtime.settings.default_timezone),
            ip=request.client.host if request.client else None,
            source=source or request.headers.get("referer", "")[:200] or "subscribe form",
            user_agent=request.headers.get("user-agent", ""),
            wording=CONSENT_WORDING,
        )
    except InvalidInput as exc:
        session.rollback()
        return _form(
            runtime,
            session,
            selected=chosen,
            error=str(exc),
            email=email[:320],
            frequency=frequency,
            status=400,
        )
    session.commit()
    if signup.consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, signup.consent_id)
    return _page(runtime, "check_email.html")


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """One button: link scanners fetch this page, but only a person's POST confirms."""
    try:
        _confirm_claims(runtime, token)
    except TokenExpired:
        return _page(runtime, "link_expired.html", status=410)
    except TokenInvalid:
        return _page(runtime, "link_invalid.html", status=400)
    return _page(runtime, "confirm.html", token=token)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(token: str, runtime: RuntimeDep, session: SessionDep) -> HTMLResponse:
    """Confirm the sign-up the token names; a used, expired or forged token changes nothing."""
    try:
        claims = _confirm_claims(runtime, token)
        if claims.consent_id is None:
            raise TokenInvalid("this link is not valid")
        result = readers.confirm(
            session=session,
            consent_id=claims.consent_id,
            subscriber_id=claims.subscriber_id,
            token_version=claims.version,
        )
    except TokenExpired:
        return _page(runtime, "link_expired.html", status=410)
    except (TokenInvalid, NotFound):
        return _page(runtime, "link_invalid.html", status=400)
    return _page(runtime, "confirmed.html", topics=result.topics)


def _confirm_claims(runtime: WebRuntime, token: str) -> TokenClaims:
    return runtime.signer.verify(
        Purpose.CONFIRM,
        token,
        max_age_seconds=runtime.settings.confirm_token_days * 86400,
    )
