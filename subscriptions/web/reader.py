"""Reader pages: the subscribe form, its embeddable entry point, and confirmation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from subscriptions import intake, readers
from subscriptions.errors import InvalidInput, NotFound, TokenExpired, TokenInvalid
from subscriptions.models import Frequency, utcnow
from subscriptions.queue import APPLY_SIGNUPS, SEND_CONFIRMATION, SEND_WELCOME
from subscriptions.tokens import Purpose, TokenClaims
from subscriptions.topics import list_topics
from subscriptions.web.forms import (
    FORM_MAX_AGE_SECONDS,
    NONCE_SCOPE,
    REPLAYED,
    FormRejected,
    read_form,
    refuse_line_breaks,
)
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime, client_ip

log = logging.getLogger(__name__)
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
async def subscribe(request: Request) -> HTMLResponse:
    """Take a sign-up; the answer never says whether the address is known.

    With Redis, a valid sign-up costs one Redis round trip on the event loop
    (`subscriptions.intake`) and a worker applies it moments later; without Redis, or when Redis
    fails, it is applied here and now (in the thread pool, as is everything that touches the
    database). It takes no FastAPI dependencies: solving them costs more than this path's own
    work.
    """
    runtime: WebRuntime = request.app.state.runtime
    form = await read_form(request)
    topics = _strings(form.get("topics"))
    raw_email = _str(form.get("email"))
    frequency = _str(form.get("frequency"))
    refuse = partial(_refused, runtime, request, topics, raw_email, frequency)
    try:
        refuse_line_breaks(form)
        check = runtime.forms.inspect(request, form)
    except InvalidInput as exc:
        return await run_in_threadpool(refuse, str(exc))
    if check.is_bot:
        await run_in_threadpool(
            runtime.limiter.first_use, NONCE_SCOPE, check.nonce, ttl_seconds=FORM_MAX_AGE_SECONDS
        )
        return runtime.static_page("check_email.html")
    live = runtime.cached_topics()
    if live is None:
        live = await run_in_threadpool(runtime.live_topics)
    try:
        try:
            entry = _entry(runtime, request, form, raw_email, topics, frequency, live)
        except UnknownTopic:
            # A topic added in the last few seconds, or truly unknown: ask the database.
            live = await run_in_threadpool(partial(runtime.live_topics, fresh=True))
            entry = _entry(runtime, request, form, raw_email, topics, frequency, live)
    except InvalidInput as exc:
        return await run_in_threadpool(_bad_input, runtime, request, check.nonce, refuse, exc)
    if runtime.intake is not None:
        try:
            return await _admit(runtime, request, refuse, check.nonce, entry)
        except redis.RedisError as exc:
            log.warning("sign-up intake unavailable (%s); applying here", type(exc).__name__)
    return await run_in_threadpool(_subscribe_now, runtime, request, refuse, check.nonce, entry)


class UnknownTopic(InvalidInput):
    """A chosen topic is not among the live ones."""


def _entry(
    runtime: WebRuntime,
    request: Request,
    form: dict[str, Any],
    raw_email: str,
    topics: list[str],
    frequency: str,
    live: frozenset[str],
) -> intake.Entry:
    """The validated sign-up, or InvalidInput saying what is wrong with it."""
    settings = runtime.settings
    address = readers.normalize_email(raw_email, check_deliverability=settings.check_deliverability)
    try:
        chosen = Frequency(frequency)
    except ValueError:
        raise InvalidInput("Choose how often you want email.", field="frequency") from None
    if not topics:
        raise InvalidInput("choose at least one topic", field="topics")
    missing = sorted(set(topics) - live)
    if missing:
        raise UnknownTopic(f"unknown topic: {', '.join(missing)}", field="topics")
    return intake.Entry(
        email=address,
        topics=sorted(set(topics)),
        frequency=chosen.value,
        timezone=readers.check_timezone(
            _str(form.get("timezone")), default=settings.default_timezone
        ),
        ip=client_ip(request),
        source=_str(form.get("source"))[:200] or "subscribe form",
        user_agent=request.headers.get("user-agent", "")[:400],
        wording=CONSENT_WORDING,
        at=utcnow().isoformat(),
    )


def _bad_input(
    runtime: WebRuntime,
    request: Request,
    nonce: str,
    refuse: Callable[[str], HTMLResponse],
    exc: InvalidInput,
) -> HTMLResponse:
    """Spend the form and count the hit as for a good sign-up, then say what is wrong."""
    if not runtime.limiter.first_use(NONCE_SCOPE, nonce, ttl_seconds=FORM_MAX_AGE_SECONDS):
        return refuse(REPLAYED)
    retry = runtime.limiter.hit(
        "subscribe-ip", client_ip(request), limit=runtime.settings.rate_limit_per_ip
    )
    if retry is not None:
        return too_many(runtime, retry)
    return refuse(_sentence(str(exc)))


async def _admit(
    runtime: WebRuntime,
    request: Request,
    refuse: Callable[[str], HTMLResponse],
    nonce: str,
    entry: intake.Entry,
) -> HTMLResponse:
    """The door: form single use, both rate limits and the queueing, in one Redis round trip."""
    assert runtime.intake is not None
    limiter, settings = runtime.limiter, runtime.settings
    ip_key, ip_retry = limiter.counter_key("subscribe-ip", entry.ip or "unknown")
    address_key, address_retry = limiter.counter_key("subscribe-address", entry.email)
    admission = await runtime.intake.admit_async(
        entry,
        nonce_key=limiter.once_key(NONCE_SCOPE, nonce),
        nonce_ttl=FORM_MAX_AGE_SECONDS,
        ip_key=ip_key,
        ip_limit=settings.rate_limit_per_ip,
        address_key=address_key,
        address_limit=settings.rate_limit_per_address,
        window_seconds=3600,
    )
    if admission.door is intake.Door.REPLAYED:
        return await run_in_threadpool(refuse, REPLAYED)
    if admission.door is intake.Door.IP_LIMITED:
        return too_many(runtime, ip_retry)
    if admission.door is intake.Door.ADDRESS_LIMITED:
        return too_many(runtime, address_retry)
    if admission.kick:
        await run_in_threadpool(runtime.queue.send, APPLY_SIGNUPS)
    return runtime.static_page("check_email.html")


def _subscribe_now(
    runtime: WebRuntime,
    request: Request,
    refuse: Callable[[str], HTMLResponse],
    nonce: str,
    entry: intake.Entry,
) -> HTMLResponse:
    """Without the intake: the same checks one by one, and the sign-up applied in this request."""
    limiter, settings = runtime.limiter, runtime.settings
    if not limiter.first_use(NONCE_SCOPE, nonce, ttl_seconds=FORM_MAX_AGE_SECONDS):
        return refuse(REPLAYED)
    retry = limiter.hit("subscribe-ip", client_ip(request), limit=settings.rate_limit_per_ip)
    if retry is None:
        retry = limiter.hit("subscribe-address", entry.email, limit=settings.rate_limit_per_address)
    if retry is not None:
        return too_many(runtime, retry)
    try:
        with runtime.sessions() as session, session.begin():
            signup = readers.subscribe(
                session=session,
                email=entry.email,
                topics=entry.topics,
                frequency=Frequency(entry.frequency),
                timezone=entry.timezone,
                ip=entry.ip,
                source=entry.source,
                user_agent=entry.user_agent,
                wording=entry.wording,
            )
    except InvalidInput as exc:  # a topic archived a moment ago
        return refuse(_sentence(str(exc)))
    if signup.consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, signup.consent_id)
    return runtime.static_page("check_email.html")


def _refused(
    runtime: WebRuntime,
    request: Request,
    topics: list[str],
    raw_email: str,
    frequency: str,
    error: str,
) -> HTMLResponse:
    """The form again, filled in as sent, with what was wrong; nothing was stored."""
    with runtime.sessions() as session:
        return _form(
            runtime,
            request,
            session,
            selected=topics,
            error=error,
            email=_printable(raw_email),
            frequency=frequency,
            status=400,
        )


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
