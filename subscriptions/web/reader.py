"""Reader pages: the subscribe form, the publisher's box and its framed form, and confirmation."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from subscriptions import intake, readers
from subscriptions.errors import InvalidInput, NotFound, TokenExpired, TokenInvalid, TokenUsed
from subscriptions.i18n import (
    N_,
    choose_language,
    current_language,
    gettext_for,
    reader_language,
)
from subscriptions.models import Frequency, Subscriber, utcnow
from subscriptions.queue import APPLY_SIGNUPS, SEND_CONFIRMATION, SEND_WELCOME
from subscriptions.tokens import Purpose, TokenClaims
from subscriptions.topics import list_topics
from subscriptions.web import embed
from subscriptions.web.forms import (
    FORM_MAX_AGE_SECONDS,
    HONEYPOT,
    NONCE_SCOPE,
    REPLAYED,
    FormCheck,
    FormRejected,
    read_form,
    refuse_line_breaks,
)
from subscriptions.web.receipts import receipts_for
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime, client_ip

log = logging.getLogger(__name__)
router = APIRouter()

CONSENT_WORDING = N_(
    "I agree to receive email about the topics I chose, as often as I chose. "
    "Every email has a link to change this or to unsubscribe."
)
FREQUENCY_LABELS = {
    "immediate": N_("Immediately, one email per post"),
    "daily": N_("Daily digest"),
    "weekly": N_("Weekly digest"),
}


#: What each rate limit is, in the reader's words, for the 429 page.
LIMITS = {
    "subscribe-ip": N_("Too many sign-ups were sent from your network in the last hour."),
    "subscribe-address": N_("This address was signed up too many times in the last hour."),
    "renew": N_("Too many new links were asked for this sign-up in the last hour."),
    "manage-ip": N_("Too many links were asked for from your network in the last hour."),
    "manage-address": N_("Too many links were asked for this address in the last hour."),
}


def retry_words(retry_after: int, now: datetime | None = None, language: str = "en") -> str:
    """ "Please try again in about 12 minutes (after 14:05 UTC)." for a Retry-After in seconds."""
    _ = gettext_for(language)
    seconds = max(1, retry_after)
    at = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
    if seconds < 90:
        text = _("Please try again in %(seconds)d seconds (after %(time)s UTC).")
    else:
        text = _("Please try again in about %(minutes)d minutes (after %(time)s UTC).")
    return text % {"seconds": seconds, "minutes": (seconds + 59) // 60, "time": f"{at:%H:%M}"}


def too_many(
    runtime: WebRuntime, retry_after: int, which: str | None = None, *, limit: int | None = None
) -> HTMLResponse:
    """The 429 page, with Retry-After: which limit was reached and when to try again."""
    language = current_language.get()
    _ = gettext_for(language)
    reason = _(LIMITS.get(which or "", N_("Too many requests from here.")))
    if limit is not None:
        reason = _("%(reason)s (the limit is %(limit)d an hour).") % {
            "reason": reason[:-1],
            "limit": limit,
        }
    message = f"{reason} {retry_words(retry_after, language=language)}"
    response = runtime.page("error.html", status=429, code=429, message=message)
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
    timed: bool = True,
) -> HTMLResponse:
    return runtime.form_page(
        request,
        "subscribe.html",
        status=status,
        timed=timed,
        topics=list_topics(session=session, language=current_language.get()),
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
    """The older "subscribe here" box: the full form, filled in, changing nothing.

    The reader already typed their address on the publisher's page and may well press Subscribe at
    once: this form is not held to the minimum fill time.
    """
    email = form.get("email", "")
    topic = form.get("topic", "")
    return _form(
        runtime,
        request,
        session,
        selected=[topic[:64]] if isinstance(topic, str) else [],
        email=email[:320].replace("\r", "").replace("\n", "") if isinstance(email, str) else "",
        timed=False,
    )


@router.get("/embed/form", response_class=HTMLResponse)
def framed_form(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    topic: str = "",
    frequency: str = Frequency.DAILY.value,
) -> Response:
    """The subscribe box as a page for an `<iframe>` on an allowed site: address and one button."""
    live = {t.slug: t.name for t in list_topics(session=session, language=current_language.get())}
    chosen = [slug for slug in dict.fromkeys(topic.split(",")) if slug in live][:20]
    if not chosen:
        return runtime.page(
            "error.html", status=404, code=404, message=N_("This box names no published topic.")
        )
    return _framed(runtime, chosen, frequency, live)


def _framed(
    runtime: WebRuntime,
    topics: list[str],
    frequency: str,
    names: dict[str, str],
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> Response:
    # Untimed, as the box on the publisher's page is: a one-field box is filled in a second, and
    # the honeypot, the limits and the double opt-in stand guard.
    response = runtime.page(
        "embed_form.html",
        status=status,
        csrf_token=runtime.forms.issue_framed(timed=False),
        topics=[(slug, names.get(slug, slug)) for slug in topics],
        frequency=frequency if frequency in FREQUENCY_LABELS else Frequency.DAILY.value,
        label=embed.BOX_LABEL,
        consent_wording=CONSENT_WORDING,
        default_timezone=runtime.settings.default_timezone,
        error=error,
        email=email,
        framed=True,
    )
    return embed.allow_framing(response, runtime.settings)


@dataclass(frozen=True, slots=True)
class Reply:
    """How to answer one sign-up: as our page, inside the publisher's frame, or as JSON for the
    embed script on the publisher's page (`origin`: the allowed site it came from)."""

    runtime: WebRuntime
    request: Request
    topics: list[str]
    raw_email: str
    frequency: str
    origin: str | None = None
    as_json: bool = False
    framed: bool = False
    back: str | None = None

    def _json(self, status: int, *, ok: bool, title: str, message: str) -> Response:
        assert self.origin is not None
        return embed.json_answer(self.origin, status, ok=ok, title=title, message=message)

    def check_email(self, entry: intake.Entry | None, *, notice: str | None = None) -> Response:
        """ "Check your email": the same page for every address, a bot's included."""
        typed = _printable(self.raw_email).strip()
        if self.as_json:
            _ = gettext_for(current_language.get())
            return self._json(
                200,
                ok=True,
                title=_("Check your email"),
                message=_("We sent a link to %(email)s. Open it to confirm your subscription.")
                % {"email": typed},
            )
        receipt = receipts_for(self.runtime.settings.secret_key).resend(entry, email_as_typed=typed)
        context: dict[str, Any] = {
            "back": self.back,
            "back_host": urlsplit(self.back).netloc if self.back else None,
            "framed": self.framed,
            "notice": notice,
        }
        if typed:  # the template prints both values (and tests only that they are not empty)
            response = self.runtime.page_with(
                "check_email.html", {"email": typed, "receipt": receipt}, **context
            )
        else:
            response = self.runtime.page("check_email.html", email="", receipt=receipt, **context)
        return self._frame(response)

    def refused(self, error: str) -> Response:
        """The form again, filled in as sent, with what was wrong; nothing was stored."""
        if self.as_json:
            _ = gettext_for(current_language.get())
            return self._json(400, ok=False, title=_("Please check the form"), message=_(error))
        if self.framed:
            with self.runtime.sessions() as session:
                names = {
                    t.slug: t.name
                    for t in list_topics(session=session, language=current_language.get())
                }
            return _framed(
                self.runtime,
                [t for t in self.topics if t in names] or self.topics,
                self.frequency,
                names,
                error=error,
                email=_printable(self.raw_email),
                status=400,
            )
        return _refused(
            self.runtime, self.request, self.topics, self.raw_email, self.frequency, error
        )

    def limited(self, retry_after: int, which: str, limit: int) -> Response:
        if self.as_json:
            language = current_language.get()
            _ = gettext_for(language)
            response = self._json(
                429,
                ok=False,
                title=_("Too many requests"),
                message=f"{_(LIMITS[which])} {retry_words(retry_after, language=language)}",
            )
            response.headers["Retry-After"] = str(max(1, retry_after))
            return response
        return self._frame(too_many(self.runtime, retry_after, which, limit=limit))

    def blocked(self) -> Response:
        """An address on the suppression list (it complained, bounced, or an editor stopped it)."""
        contact = parseaddr(self.runtime.settings.from_address)[1]
        if self.as_json:
            _ = gettext_for(current_language.get())
            return self._json(
                403,
                ok=False,
                title=_("We cannot sign up this address"),
                message=_("We cannot sign up this address. Please write to %(contact)s.")
                % {"contact": contact},
            )
        response = self.runtime.page(
            "signup_blocked.html",
            status=403,
            email=_printable(self.raw_email),
            contact=contact,
            framed=self.framed,
        )
        return self._frame(response)

    def _frame(self, response: Response) -> Response:
        return embed.allow_framing(response, self.runtime.settings) if self.framed else response


async def subscribe(request: Request) -> Response:
    """Take a sign-up; the answer never says whether the address is known (only whether it may
    sign up at all, when it is suppressed).

    With Redis, a valid sign-up costs one Redis round trip on the event loop
    (`subscriptions.intake`) and a worker applies it moments later; without Redis, or when Redis
    fails, it is applied here and now (in the thread pool, as is everything that touches the
    database). It is `POST /subscribe` as a plain Starlette route that `create_app` puts first
    (no FastAPI dependencies, no walk through the included routers: they cost more than this
    path's own work). From our own pages the form carries a cookie-bound token; from an allowed publisher's
    page (`subscriptions.web.embed`) it carries none.
    """
    runtime: WebRuntime = request.app.state.runtime
    settings = runtime.settings
    form = await read_form(request)
    # The page the form was on names its language (a switch, the box's `lang`, Accept-Language).
    page_language = choose_language(_str(form.get("lang")), settings.language_list)
    if page_language is not None:
        current_language.set(page_language)
    # Where the browser says the form comes from: a page of another site is let in only from an
    # allowed origin (then without a token: it cannot carry our cookie), whatever token it carries.
    other = embed.cross_site(request, settings)
    reply = Reply(
        runtime,
        request,
        _strings(form.get("topics")),
        _str(form.get("email")),
        _str(form.get("frequency")),
        origin=other.origin if other is not None and other.allowed else None,
        as_json=other is not None and other.allowed and embed.wants_json(request),
        framed=form.get("embed") == "frame",
        back=embed.back_link(form.get("return_to") or request.headers.get("referer"), settings)
        if other is not None
        else None,
    )
    if other is not None and not other.allowed:
        return runtime.page(
            "embed_refused.html", status=403, origin=other.origin, site_name=settings.site_name
        )
    try:
        refuse_line_breaks(form)
        if other is not None:
            # An allowed publisher's box: no cookie can come along; honeypot and limits still hold.
            check = FormCheck(is_bot=bool(form.get(HONEYPOT)), nonce=secrets.token_hex(16))
        else:
            check = runtime.forms.inspect(request, form)
    except InvalidInput as exc:
        return await run_in_threadpool(reply.refused, str(exc))
    if check.is_bot:
        await run_in_threadpool(
            runtime.limiter.first_use, NONCE_SCOPE, check.nonce, ttl_seconds=FORM_MAX_AGE_SECONDS
        )
        return reply.check_email(None)
    live = runtime.cached_topics()
    if live is None:
        live = await run_in_threadpool(runtime.live_topics)
    try:
        try:
            entry = _entry(runtime, request, form, reply, live)
        except UnknownTopic:
            # A topic added in the last few seconds, or truly unknown: ask the database.
            live = await run_in_threadpool(partial(runtime.live_topics, fresh=True))
            entry = _entry(runtime, request, form, reply, live)
    except InvalidInput as exc:
        return await run_in_threadpool(_bad_input, runtime, request, check.nonce, reply, exc)
    if check.too_fast:
        # Sooner than a person fills the form in: maybe a bot, maybe a person who found it filled
        # in (the publisher's box). Never pretend it worked: ask for one more press.
        return await run_in_threadpool(_one_more_step, runtime, request, form, reply)
    if runtime.suppressed.stale():
        await run_in_threadpool(runtime.suppressed.refresh, runtime.sessions)
    if runtime.suppressed.may_be_blocked(entry.email) and await run_in_threadpool(
        _blocked, runtime, entry.email
    ):
        return reply.blocked()
    return await _take(runtime, reply, check.nonce, entry)


async def _take(runtime: WebRuntime, reply: Reply, nonce: str, entry: intake.Entry) -> Response:
    """Admit a valid sign-up (the intake, else here and now) and answer it."""
    if runtime.intake is not None:
        try:
            return await _admit(runtime, reply, nonce, entry)
        except redis.RedisError as exc:
            log.warning("sign-up intake unavailable (%s); applying here", type(exc).__name__)
    return await run_in_threadpool(_subscribe_now, runtime, reply, nonce, entry)


def _blocked(runtime: WebRuntime, email: str) -> bool:
    with runtime.sessions() as session:
        return readers.blocking_suppression(session=session, email=email) is not None


def _one_more_step(
    runtime: WebRuntime, request: Request, form: dict[str, Any], reply: Reply
) -> Response:
    """The form as sent, in hidden fields, with one button and a token that is not too fast."""
    keep = ("email", "frequency", "timezone", "source", "return_to", "embed", "lang")
    fields = [(name, _str(form.get(name))) for name in keep if _str(form.get(name))]
    fields += [("topics", slug) for slug in reply.topics]
    context: dict[str, Any] = {
        "fields": fields,
        "email": _printable(reply.raw_email),
        "framed": reply.framed,
    }
    if reply.framed:
        response = runtime.page(
            "one_more_step.html", csrf_token=runtime.forms.issue_framed(timed=False), **context
        )
        return embed.allow_framing(response, runtime.settings)
    return runtime.form_page(request, "one_more_step.html", timed=False, **context)


@router.post("/subscribe/resend", response_class=HTMLResponse)
async def resend(request: Request) -> Response:
    """ "Send it again" on the check-your-email page: the same sign-up, through the same door (its
    limits and the daily cap on confirmations), once per receipt; the same page for every address."""
    runtime: WebRuntime = request.app.state.runtime
    form = await read_form(request)
    try:
        receipt = receipts_for(runtime.settings.secret_key).read_resend(_str(form.get("receipt")))
    except TokenInvalid:
        return runtime.page(
            "error.html",
            status=400,
            code=400,
            message=N_("This page is too old to send the email again. Please subscribe again."),
        )
    entry = receipt.entry
    reply = Reply(
        runtime,
        request,
        entry.topics if entry else [],
        receipt.email_as_typed,
        entry.frequency if entry else "",
        framed=form.get("embed") == "frame",
        back=embed.back_link(form.get("return_to"), runtime.settings),
    )
    sent_again = N_(
        "We sent the email again. It can take a few minutes; check your spam folder too."
    )
    if entry is None or form.get(HONEYPOT):
        first = await run_in_threadpool(
            runtime.limiter.first_use, "resend", receipt.nonce, ttl_seconds=86400
        )
        if not first:
            return await run_in_threadpool(reply.refused, REPLAYED)
        return await run_in_threadpool(partial(reply.check_email, None, notice=sent_again))
    answer = await _take(runtime, reply, "resend:" + receipt.nonce, entry)
    if answer.status_code != 200:
        return answer
    return await run_in_threadpool(partial(reply.check_email, entry, notice=sent_again))


#: Forms spent on an admitted sign-up, bound to its fingerprint (the path without the intake).
ADMITTED = "form-admitted"


class UnknownTopic(InvalidInput):
    """A chosen topic is not among the live ones."""


def _entry(
    runtime: WebRuntime,
    request: Request,
    form: dict[str, Any],
    reply: Reply,
    live: frozenset[str],
) -> intake.Entry:
    """The validated sign-up, or InvalidInput saying what is wrong with it."""
    settings = runtime.settings
    topics, frequency = reply.topics, reply.frequency
    address = readers.normalize_email(
        reply.raw_email, check_deliverability=settings.check_deliverability
    )
    try:
        chosen = Frequency(frequency)
    except ValueError:
        raise InvalidInput(N_("Choose how often you want email."), field="frequency") from None
    if not topics:
        raise InvalidInput(N_("choose at least one topic"), field="topics")
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
        source=_source(form, reply.origin),
        user_agent=request.headers.get("user-agent", "")[:400],
        wording=CONSENT_WORDING,
        at=utcnow().isoformat(),
        language=current_language.get(),
    )


def _source(form: dict[str, Any], origin: str | None) -> str:
    """Where the sign-up came from, for the consent record: the form's `source`, and the
    publisher's site for a box on another site."""
    source = _str(form.get("source"))[:200] or "subscribe form"
    return f"{source} on {origin}"[:200] if origin else source


def _bad_input(
    runtime: WebRuntime,
    request: Request,
    nonce: str,
    reply: Reply,
    exc: InvalidInput,
) -> Response:
    """Spend the form and count the hit as for a good sign-up, then say what is wrong."""
    if not runtime.limiter.first_use(NONCE_SCOPE, nonce, ttl_seconds=FORM_MAX_AGE_SECONDS):
        return reply.refused(REPLAYED)
    limit = runtime.settings.rate_limit_per_ip
    retry = runtime.limiter.hit("subscribe-ip", client_ip(request), limit=limit)
    if retry is not None:
        return reply.limited(retry, "subscribe-ip", limit)
    return reply.refused(_sentence(readers.reader_error(exc, current_language.get())))


async def _admit(
    runtime: WebRuntime,
    reply: Reply,
    nonce: str,
    entry: intake.Entry,
) -> Response:
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
    if admission.door is intake.Door.ADMITTED_BEFORE:
        # A double click, or Back and send: the first one went through; say so again.
        return reply.check_email(entry)
    if admission.door is intake.Door.REPLAYED:
        return await run_in_threadpool(reply.refused, REPLAYED)
    if admission.door is intake.Door.IP_LIMITED:
        return reply.limited(ip_retry, "subscribe-ip", settings.rate_limit_per_ip)
    if admission.door is intake.Door.ADDRESS_LIMITED:
        return reply.limited(address_retry, "subscribe-address", settings.rate_limit_per_address)
    if admission.kick:
        await run_in_threadpool(runtime.queue.send, APPLY_SIGNUPS)
    # On the event loop: a template and a signature, no I/O (a thread hop would cost more).
    return reply.check_email(entry)


def _subscribe_now(
    runtime: WebRuntime,
    reply: Reply,
    nonce: str,
    entry: intake.Entry,
) -> Response:
    """Without the intake: the same checks one by one, and the sign-up applied in this request."""
    limiter, settings = runtime.limiter, runtime.settings
    if not limiter.first_use(NONCE_SCOPE, nonce, ttl_seconds=FORM_MAX_AGE_SECONDS):
        if limiter.is_bound(ADMITTED, nonce, entry.fingerprint()):
            return reply.check_email(entry)  # the same sign-up sent twice: answer as the first time
        return reply.refused(REPLAYED)
    ip_limit, address_limit = settings.rate_limit_per_ip, settings.rate_limit_per_address
    retry = limiter.hit("subscribe-ip", entry.ip or "unknown", limit=ip_limit)
    if retry is not None:
        return reply.limited(retry, "subscribe-ip", ip_limit)
    retry = limiter.hit("subscribe-address", entry.email, limit=address_limit)
    if retry is not None:
        return reply.limited(retry, "subscribe-address", address_limit)
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
                language=entry.language,
            )
    except InvalidInput as exc:  # a topic archived a moment ago
        return reply.refused(_sentence(readers.reader_error(exc, current_language.get())))
    limiter.bind_once(ADMITTED, nonce, entry.fingerprint(), ttl_seconds=FORM_MAX_AGE_SECONDS)
    if signup.consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, signup.consent_id)
    return reply.check_email(entry)


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
def confirm_page(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep
) -> HTMLResponse:
    """One button: link scanners fetch this page, but only a person's POST confirms."""
    try:
        claims = _confirm_claims(runtime, token, session)
    except TokenExpired as exc:
        if isinstance(exc.claims, TokenClaims) and _is_confirmed(session, exc.claims):
            return _already_confirmed(runtime, exc.claims)
        return runtime.form_page(request, "link_expired.html", status=410, token=token)
    except TokenInvalid:
        return runtime.page("link_invalid.html", status=400)
    if _is_confirmed(session, claims):
        return _already_confirmed(runtime, claims)
    return runtime.form_page(request, "confirm.html", token=token)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """Confirm the sign-up the token names; a used, expired or forged token changes nothing."""
    claims: TokenClaims | None = None
    try:
        claims = _confirm_claims(runtime, token, session)
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
    except TokenUsed:
        if claims is not None and _is_confirmed(session, claims):
            return _already_confirmed(runtime, claims)
        return runtime.page("link_invalid.html", status=400)
    except (TokenInvalid, NotFound):
        return runtime.page("link_invalid.html", status=400)
    session.commit()
    runtime.queue.send(SEND_WELCOME, claims.consent_id)
    return runtime.page(
        "confirmed.html",
        topics=result.topics,
        manage_url=_manage_url(runtime, claims.subscriber_id, claims.version),
    )


def _is_confirmed(session: SessionDep, claims: TokenClaims) -> bool:
    return claims.consent_id is not None and readers.already_confirmed(
        session=session,
        consent_id=claims.consent_id,
        subscriber_id=claims.subscriber_id,
        token_version=claims.version,
    )


def _already_confirmed(runtime: WebRuntime, claims: TokenClaims) -> HTMLResponse:
    return runtime.page(
        "already_confirmed.html",
        manage_url=_manage_url(runtime, claims.subscriber_id, claims.version),
    )


def _manage_url(runtime: WebRuntime, subscriber_id: int, version: int) -> str:
    token = runtime.signer.make(Purpose.MANAGE, subscriber_id=subscriber_id, version=version)
    return f"/manage/{token}"


@router.post("/confirm/{token}/renew", response_class=HTMLResponse)
def renew_confirmation(
    request: Request, token: str, runtime: RuntimeDep, session: SessionDep, form: FormDep
) -> HTMLResponse:
    """An expired confirmation link asks for a fresh one, sent to the same address."""
    try:
        runtime.forms.verify(request, form)
        _confirm_claims(runtime, token, session)
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
        return too_many(runtime, retry, "renew", limit=runtime.settings.rate_limit_per_address)
    consent_id = readers.renew_sign_up(session=session, consent_id=claims.consent_id)
    session.commit()
    if consent_id is not None:
        runtime.queue.send(SEND_CONFIRMATION, consent_id)
    return runtime.page("check_email.html", renewed=True)


def _confirm_claims(runtime: WebRuntime, token: str, session: Session) -> TokenClaims:
    """The claims of a confirmation link; a genuine link (expired too) makes the page speak the
    reader's language, as every page reached from an email does."""
    try:
        claims = runtime.signer.verify(
            Purpose.CONFIRM, token, max_age_seconds=runtime.settings.confirm_token_days * 86400
        )
    except TokenExpired as exc:
        if isinstance(exc.claims, TokenClaims):
            _speak_readers_language(runtime, session, exc.claims.subscriber_id)
        raise
    _speak_readers_language(runtime, session, claims.subscriber_id)
    return claims


def _speak_readers_language(runtime: WebRuntime, session: Session, subscriber_id: int) -> None:
    language = session.scalar(select(Subscriber.language).where(Subscriber.id == subscriber_id))
    if language is not None:
        current_language.set(reader_language(runtime.settings.language_list, language))


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value] if value else []
    return [v[:64] for v in values if isinstance(v, str) and v][:50]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _printable(value: str) -> str:
    return value[:320].replace("\r", " ").replace("\n", " ")


def _sentence(message: str) -> str:
    # Translated before it is made a sentence: the catalog holds the message as it was marked.
    message = gettext_for(current_language.get())(message)
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else message + "."
