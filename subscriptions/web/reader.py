"""Reader pages: the subscribe form, its embeddable entry point, and confirmation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from subscriptions import readers
from subscriptions.errors import InvalidInput, NotFound, TokenExpired, TokenInvalid
from subscriptions.models import Frequency
from subscriptions.queue import SEND_CONFIRMATION, SEND_WELCOME
from subscriptions.tokens import Purpose, TokenClaims
from subscriptions.topics import list_topics
from subscriptions.web.forms import FormRejected, refuse_line_breaks
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime, client_ip

router = APIRouter()

CONSENT_WORDING = (
    "I agree to receive email about the topics I chose, as often as I chose. "
    "Every email has a link to change this or to unsubscribe."
)
FREQUENCY_LABELS = {
    "immediate": "Immediately, one email per post",
    "daily": "Daily digest",
    "weekly": "Weekly digest",
}


def too_many(runtime: WebRuntime, retry_after: int) -> HTMLResponse:
    """The 429 page, with Retry-After."""
    response = runtime.page(
        "error.html",
        status=429,
        code=429,
        message="Too many requests from here. Please try again later.",
    )
    response.headers["Retry-After"] = str(max(1, retry_after))
    return response


def _form(
    runtime: WebRuntime,
    request: Request,
    session: SessionDep,
    *,
    selected: list[str],
    error: str | None = None,
    email: str = "",
    frequency: str = Frequency.DAILY.value,
    status: int = 200,
) -> HTMLResponse:
    return runtime.form_page(
        request,
        "subscribe.html",
        status=status,
        topics=list_topics(session=session),
        selected=selected,
        error=error,
        email=email,
        frequency=frequency if frequency in FREQUENCY_LABELS else Frequency.DAILY.value,
        frequencies=FREQUENCY_LABELS,
        default_timezone=runtime.settings.default_timezone,
        consent_wording=CONSENT_WORDING,
    )


@router.get("/", response_class=HTMLResponse)
def subscribe_form(
    request: Request, runtime: RuntimeDep, session: SessionDep, topic: str = "", email: str = ""
) -> HTMLResponse:
    """The subscribe form: email, topics, frequency, the browser's time zone."""
    return _form(runtime, request, session, selected=[topic[:64]], email=email[:320].strip())


@router.post("/embed", response_class=HTMLResponse)
def embedded_start(
    request: Request, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Where the publisher's "subscribe here" box posts: the full form, filled in, changing nothing."""
    email = form.get("email", "")
    topic = form.get("topic", "")
    return _form(
        runtime,
        request,
        session,
        selected=[topic[:64]] if isinstance(topic, str) else [],
        email=email[:320].replace("\r", "").replace("\n", "") if isinstance(email, str) else "",
    )


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Store a pending reader and queue the confirmation; the answer never says if the address is known."""
    settings = runtime.settings
    topics = _strings(form.get("topics"))
    raw_email = _str(form.get("email"))
    frequency = _str(form.get("frequency"))
    try:
        refuse_line_breaks(form)
        check = runtime.forms.verify(request, form)
    except InvalidInput as exc:
        return _form(
            runtime,
            request,
            session,
            selected=topics,
            error=str(exc),
            email=_printable(raw_email),
            frequency=frequency,
            status=400,
        )
    if check.is_bot:
        return runtime.page("check_email.html")
    retry = runtime.limiter.hit(
        "subscribe-ip", client_ip(request), limit=settings.rate_limit_per_ip
    )
    if retry is not None:
        return too_many(runtime, retry)
    try:
        address = readers.normalize_email(
            raw_email, check_deliverability=settings.check_deliverability
        )
        try:
            chosen = Frequency(frequency)
        except ValueError:
            raise InvalidInput("Choose how often you want email.", field="frequency") from None
        retry = runtime.limiter.hit(
            "subscribe-address", address, limit=settings.rate_limit_per_address
        )
        if retry is not None:
            return too_many(runtime, retry)
        signup = readers.subscribe(
            session=session,
            email=address,
            topics=topics,
            frequency=chosen,
            timezone=readers.check_timezone(
                _str(form.get("timezone")), default=settings.default_timezone
            ),
            ip=client_ip(request),
            source=_str(form.get("source"))[:200] or "subscribe form",
            user_agent=request.headers.get("user-agent", ""),
            wording=CONSENT_WORDING,
        )
    except InvalidInput as exc:
        session.rollback()
        return _form(
            runtime,
            request,
            session,
            selected=topics,
            error=_sentence(str(exc)),
            email=raw_email[:320],
            frequency=frequency,
            status=400,
        )
    session.commit()
    if signup.consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, signup.consent_id)
    return runtime.page("check_email.html")


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, token: str, runtime: RuntimeDep) -> HTMLResponse:
    """One button: link scanners fetch this page, but only a person's POST confirms."""
    try:
        _confirm_claims(runtime, token)
    except TokenExpired:
        return runtime.form_page(request, "link_expired.html", status=410, token=token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    return runtime.form_page(request, "confirm.html", token=token)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Confirm the sign-up the token names; a used, expired or forged token changes nothing."""
    try:
        claims = _confirm_claims(runtime, token)
        runtime.forms.verify(request, form)
        if claims.consent_id is None:
            raise TokenInvalid("this link is not valid")
        result = readers.confirm(
            session=session,
            consent_id=claims.consent_id,
            subscriber_id=claims.subscriber_id,
            token_version=claims.version,
        )
    except TokenExpired:
        return runtime.form_page(request, "link_expired.html", status=410, token=token)
    except FormRejected as exc:
        return runtime.form_page(request, "confirm.html", status=400, token=token, error=str(exc))
    except (TokenInvalid, NotFound):
        return runtime.page("link_invalid.html", status=400)
    session.commit()
    runtime.queue.send(SEND_WELCOME, claims.consent_id)
    return runtime.page("confirmed.html", topics=result.topics)


@router.post("/confirm/{token}/renew", response_class=HTMLResponse)
def renew_confirmation(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """An expired confirmation link asks for a fresh one, sent to the same address."""
    try:
        runtime.forms.verify(request, form)
        _confirm_claims(runtime, token)
        return runtime.page("link_invalid.html", status=400)  # not expired: nothing to renew
    except FormRejected as exc:
        return runtime.form_page(
            request, "link_expired.html", status=400, token=token, error=str(exc)
        )
    except TokenExpired as exc:
        claims = exc.claims
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    if not isinstance(claims, TokenClaims) or claims.consent_id is None:
        return runtime.page("link_invalid.html", status=400)
    retry = runtime.limiter.hit(
        "renew", str(claims.subscriber_id), limit=runtime.settings.rate_limit_per_address
    )
    if retry is not None:
        return too_many(runtime, retry)
    consent_id = readers.renew_sign_up(session=session, consent_id=claims.consent_id)
    session.commit()
    if consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, consent_id)
    return runtime.page("check_email.html")


def _confirm_claims(runtime: WebRuntime, token: str) -> TokenClaims:
    return runtime.signer.verify(
        Purpose.CONFIRM, token, max_age_seconds=runtime.settings.confirm_token_days * 86400
    )


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value] if value else []
    return [v[:64] for v in values if isinstance(v, str) and v][:50]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _printable(value: str) -> str:
    return value[:320].replace("\r", " ").replace("\n", " ")


def _sentence(message: str) -> str:
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else message + "."
