"""Operations on readers: subscribe, confirm, change preferences, unsubscribe, suppress.

Every function is keyword-only, works inside the caller's transaction, and returns plain data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from subscriptions.errors import HeaderInjection, InvalidInput, NotFound, TokenUsed
from subscriptions.i18n import N_, SOURCE_LANGUAGE, gettext_for
from subscriptions.models import (
    Consent,
    DigestMark,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from subscriptions.topics import topic_ids_for_slugs

MAX_ADDRESS_LENGTH = 320
#: At most this many confirmation emails to one address in 24 hours.
CONFIRMATIONS_PER_DAY = 3


@dataclass(frozen=True, slots=True)
class SignUp:
    """What `subscribe` decided. `consent_id` is set when a confirmation email is to be sent."""

    subscriber_id: int | None
    consent_id: int | None


@dataclass(frozen=True, slots=True)
class Confirmation:
    subscriber_id: int
    email: str
    topics: list[str]


#: What a reader page in another language than English says instead of email-validator's English detail.
ADDRESS_NOT_VALID = N_("that email address is not valid; please check it for typos")


class InvalidAddress(InvalidInput):
    """An address email-validator refused; `reason` is its explanation (in English only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"that email address is not valid: {reason}", field="email")
        self.reason = reason


def reader_error(exc: InvalidInput, language: str) -> str:
    """The message of `exc` as a reader page in `language` shows it: email-validator's English
    detail only on English pages, a translated sentence elsewhere; other messages as they were
    marked (the page translates them)."""
    if isinstance(exc, InvalidAddress) and language != SOURCE_LANGUAGE:
        return gettext_for(language)(ADDRESS_NOT_VALID)
    return str(exc)


def normalize_email(address: str, *, check_deliverability: bool = False) -> str:
    """The canonical form of an address, or InvalidInput with a reason fit to show."""
    if "\r" in address or "\n" in address:
        raise HeaderInjection("an email address cannot contain line breaks", field="email")
    address = address.strip()
    if not address:
        raise InvalidInput(N_("enter your email address"), field="email")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidInput(N_("that email address is too long"), field="email")
    try:
        valid = validate_email(address, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    # Local parts are case-sensitive on paper and never in practice; one reader, one row.
    return valid.normalized.lower()


def email_hash(normalized: str) -> str:
    """The key of an address in the suppression list and in provider events."""
    return hashlib.sha256(normalized.encode()).hexdigest()


def check_timezone(name: str | None, *, default: str) -> str:
    """A valid IANA zone name, falling back to `default` for an empty or unknown one."""
    if not name or len(name) > 64:
        return default
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default
    return name


#: A suppression with this reason only records an erasure: the person is forgotten, the address is
#: not blacklisted, and signing up again (with its double opt-in) lifts it.
ERASED = "erased"


def blocking_suppression(*, session: Session, email: str) -> str | None:
    """The reason a normalized address may not sign up (a complaint, a hard bounce, an editor's
    decision...), or None; an erasure does not block."""
    reason = session.scalar(
        select(Suppression.reason).where(Suppression.email_hash == email_hash(email))
    )
    return None if reason in (None, ERASED) else str(reason)


def is_suppressed(*, session: Session, email: str) -> bool:
    """Whether a normalized address is on the suppression list."""
    found = session.scalar(
        select(Suppression.id).where(Suppression.email_hash == email_hash(email))
    )
    return found is not None


@dataclass(frozen=True, slots=True)
class SignUpRequest:
    """One sign-up as `subscribe_many` takes it: address normalized, topics known to be live."""

    email: str
    topics: list[str]
    frequency: Frequency
    timezone: str
    ip: str | None = None
    source: str = ""
    user_agent: str = ""
    wording: str = ""
    #: When the reader asked (the consent's time, and the end of the one-day confirmation window).
    at: datetime | None = None
    #: The sign-up's entry id in `subscriptions.intake`'s stream (unique per consent), if any.
    intake_key: str | None = None
    #: The language of the page the reader signed up on; a new reader's emails use it.
    language: str | None = None


def subscribe(
    *,
    session: Session,
    email: str,
    topics: list[str],
    frequency: Frequency,
    timezone: str,
    ip: str | None = None,
    source: str = "",
    user_agent: str = "",
    wording: str = "",
    now: datetime | None = None,
    intake_key: str | None = None,
    language: str | None = None,
) -> SignUp:
    """Record a sign-up and its consent. The caller sends the confirmation when `consent_id` is set.

    A suppressed address changes nothing and gets no email (the web tells the person before it
    gets here); an erased one is signed up afresh; a known one gets a fresh confirmation.
    """
    if not topics:
        raise InvalidInput(N_("choose at least one topic"), field="topics")
    topic_ids_for_slugs(session=session, slugs=topics)
    request = SignUpRequest(
        email,
        topics,
        frequency,
        timezone,
        ip,
        source,
        user_agent,
        wording,
        now,
        intake_key,
        language,
    )
    return subscribe_many(session=session, requests=[request])[0]


def subscribe_many(*, session: Session, requests: Sequence[SignUpRequest]) -> list[SignUp]:
    """`subscribe` for many sign-ups at once, in a fixed number of statements; one result each.

    Topics are not checked here (the caller has). Sign-ups are taken in order, so of several for
    one address in the same call, the later ones count the earlier ones against the daily cap.
    """
    if not requests:
        return []
    now = utcnow()
    hashes = {r.email: email_hash(r.email) for r in requests}
    reasons = dict(
        session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                Suppression.email_hash.in_(set(hashes.values()))
            )
        ).all()
    )
    suppressed = {key for key, reason in reasons.items() if reason != ERASED}
    erased = [key for key, reason in reasons.items() if reason == ERASED]
    if erased:
        # The person asked to be forgotten, not to be refused: a new sign-up (confirmed by email
        # like any other) starts over.
        session.execute(delete(Suppression).where(Suppression.email_hash.in_(erased)))
    wanted = [r for r in requests if hashes[r.email] not in suppressed]
    emails = sorted({r.email for r in wanted})
    found = session.execute(
        select(Subscriber.email, Subscriber.id).where(Subscriber.email.in_(emails))
    )
    ids = {email: subscriber_id for email, subscriber_id in found}
    new: dict[str, tuple[str, str | None]] = {}
    for r in wanted:
        if r.email not in ids:
            new.setdefault(r.email, (r.timezone, r.language))
    if new:
        # A known reader keeps their language (they change it in the preference centre).
        created = session.execute(
            insert(Subscriber).returning(Subscriber.email, Subscriber.id),
            [
                {"email": e, "timezone": tz, "language": lang, "status": SubscriberStatus.PENDING}
                for e, (tz, lang) in new.items()
            ],
        )
        ids.update({email: subscriber_id for email, subscriber_id in created})
    times = {id(r): r.at or now for r in wanted}
    since = min(times.values(), default=now) - timedelta(days=1)
    recent: dict[int, list[datetime]] = {}
    if wanted:
        for subscriber_id, created_at in session.execute(
            select(Consent.subscriber_id, Consent.created_at).where(
                Consent.subscriber_id.in_(set(ids.values())), Consent.created_at > since
            )
        ):
            recent.setdefault(subscriber_id, []).append(_aware(created_at))
    rows: list[dict[str, object]] = []
    decided: list[tuple[int, bool]] = []  # (subscriber, confirmation due) per row
    for r in wanted:
        at, subscriber_id = times[id(r)], ids[r.email]
        earlier = recent.setdefault(subscriber_id, [])
        due = sum(t > at - timedelta(days=1) for t in earlier) < CONFIRMATIONS_PER_DAY
        decided.append((subscriber_id, due))
        rows.append(
            {
                "subscriber_id": subscriber_id,
                "created_at": at,
                "ip": r.ip,
                "source": r.source[:200],
                "user_agent": r.user_agent[:400],
                "topics": sorted(set(r.topics)),
                "wording": r.wording,
                "frequency": r.frequency,
                "timezone": r.timezone,
                "send_email": due,
                "intake_key": r.intake_key,
            }
        )
        earlier.append(at)
    consent_ids = (
        list(
            session.scalars(
                insert(Consent).returning(Consent.id, sort_by_parameter_order=True), rows
            )
        )
        if rows
        else []
    )
    made = iter(zip(decided, consent_ids, strict=True))
    results = []
    for r in requests:
        if hashes[r.email] in suppressed:
            results.append(SignUp(None, None))
            continue
        (subscriber_id, due), consent_id = next(made)
        results.append(SignUp(subscriber_id, consent_id if due else None))
    return results


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive UTC times.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def confirm(
    *, session: Session, consent_id: int, subscriber_id: int, token_version: int
) -> Confirmation:
    """Apply a confirmed sign-up: its topics at its frequency, the reader active. Works once."""
    consent = session.get(Consent, consent_id)
    if consent is None or consent.subscriber_id != subscriber_id:
        raise NotFound("no such sign-up")
    if consent.confirmed_at is not None:
        raise TokenUsed("this link was already used")
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.token_version != token_version:
        raise NotFound("no such reader")
    if subscriber.status is SubscriberStatus.SUPPRESSED:
        raise NotFound("no such reader")
    now = utcnow()
    ids = topic_ids_for_slugs(session=session, slugs=[s for s in consent.topics])
    existing = {s.topic_id: s for s in subscriber.subscriptions}
    for topic_id in ids.values():
        if topic_id in existing:
            existing[topic_id].frequency = consent.frequency
        else:
            session.add(
                Subscription(
                    subscriber_id=subscriber.id, topic_id=topic_id, frequency=consent.frequency
                )
            )
    consent.confirmed_at = now
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    subscriber.left_subscriptions = None  # a new opt-in: nothing left to undo
    subscriber.timezone = consent.timezone
    session.flush()
    return Confirmation(subscriber.id, subscriber.email, sorted(ids))


def already_confirmed(
    *, session: Session, consent_id: int, subscriber_id: int, token_version: int
) -> bool:
    """Whether this sign-up was confirmed and its reader is subscribed now (a confirm link used
    a second time: the reader is told so, not that the link is broken)."""
    row = session.execute(
        select(Consent.confirmed_at, Subscriber.status, Subscriber.token_version)
        .join(Subscriber, Subscriber.id == Consent.subscriber_id)
        .where(Consent.id == consent_id, Consent.subscriber_id == subscriber_id)
    ).first()
    return (
        row is not None
        and row.confirmed_at is not None
        and row.status is SubscriberStatus.ACTIVE
        and row.token_version == token_version
    )


def renew_sign_up(*, session: Session, consent_id: int) -> int | None:
    """A fresh copy of an unconfirmed sign-up whose link expired; None when nothing is due."""
    old = session.get(Consent, consent_id)
    if old is None or old.confirmed_at is not None:
        return None
    subscriber = session.get(Subscriber, old.subscriber_id)
    if subscriber is None or subscriber.status is SubscriberStatus.SUPPRESSED:
        return None
    signup = subscribe(
        session=session,
        email=subscriber.email,
        topics=list(old.topics),
        frequency=old.frequency,
        timezone=old.timezone,
        ip=old.ip,
        source=old.source,
        user_agent=old.user_agent,
        wording=old.wording,
    )
    return signup.consent_id


def update_preferences(
    *,
    session: Session,
    subscriber_id: int,
    frequencies: dict[str, Frequency | None],
    timezone: str | None = None,
    paused_until: datetime | None = None,
    language: str | None = None,
) -> None:
    """Set each topic's frequency (None removes it), the time zone, the language (None keeps it),
    and an optional pause."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound("no such reader")
    ids = topic_ids_for_slugs(session=session, slugs=list(frequencies))
    existing = {s.topic_id: s for s in subscriber.subscriptions}
    for slug, frequency in frequencies.items():
        current = existing.get(ids[slug])
        if frequency is None and current is not None:
            session.delete(current)
        elif frequency is not None and current is None:
            session.add(
                Subscription(subscriber_id=subscriber.id, topic_id=ids[slug], frequency=frequency)
            )
        elif frequency is not None and current is not None:
            current.frequency = frequency
    if timezone is not None:
        subscriber.timezone = timezone
    if language is not None:
        subscriber.language = language
    now = utcnow()
    if (
        paused_until is None
        and subscriber.paused_until is not None
        and subscriber.paused_until > now
    ):
        # Resuming early: keep when the pause ended, so what was released during it stays unsent.
        paused_until = now
    subscriber.paused_until = paused_until
    session.flush()


def set_language(
    *, session: Session, subscriber_id: int, language: str, offered: Sequence[str]
) -> str:
    """Set the language of a reader's emails and pages to one of the `offered` languages
    (NEWSLETTER_LANGUAGES); anything else is InvalidInput and nothing changes. The editor API
    calls this (the preference centre offers only these languages too)."""
    if language not in offered:
        raise InvalidInput(f"language must be one of: {', '.join(offered)}", field="language")
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound("no such reader")
    subscriber.language = language
    session.flush()
    return language


#: How long after leaving a reader may undo it without a new opt-in.
UNDO_DAYS = 30


def unsubscribe(*, session: Session, subscriber_id: int) -> list[tuple[int, str]]:
    """Stop all email to a reader at once; their subscriptions and digest marks are removed.

    What was removed is kept on the reader's row (`left_subscriptions`) for `undo_unsubscribe`, and
    returned as (topic id, frequency) pairs (empty when the reader had left already).
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound("no such reader")
    removed = [
        (topic_id, frequency.value)
        for topic_id, frequency in session.execute(
            select(Subscription.topic_id, Subscription.frequency)
            .where(Subscription.subscriber_id == subscriber_id)
            .order_by(Subscription.topic_id)
        )
    ]
    session.execute(delete(Subscription).where(Subscription.subscriber_id == subscriber_id))
    # Without a mark, a reader who signs up again starts at their zone's latest period: a mark
    # would reopen their window back to their last digest, over what came while they were gone.
    session.execute(delete(DigestMark).where(DigestMark.subscriber_id == subscriber_id))
    if subscriber.status is not SubscriberStatus.UNSUBSCRIBED:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = utcnow()
        subscriber.left_subscriptions = [list(pair) for pair in removed] or None
    else:
        removed = []
    session.flush()
    return removed


def can_undo_unsubscribe(subscriber: Subscriber, *, now: datetime | None = None) -> bool:
    """Whether the reader left less than UNDO_DAYS ago and what they had is still kept."""
    return (
        subscriber.status is SubscriberStatus.UNSUBSCRIBED
        and bool(subscriber.left_subscriptions)
        and subscriber.unsubscribed_at is not None
        and (now or utcnow()) - _aware(subscriber.unsubscribed_at) <= timedelta(days=UNDO_DAYS)
    )


def undo_unsubscribe(
    *, session: Session, subscriber_id: int, now: datetime | None = None
) -> list[str]:
    """Put back what the reader's last unsubscribe removed, within UNDO_DAYS, without a new opt-in.

    Works once, while the reader is still unsubscribed (a new confirmation or a suppression ends
    it). Topics archived since are left out; the subscriptions start again now (new posts only, as
    for a new reader). Returns the topic slugs restored; NotFound when there is nothing to undo.
    """
    now = now or utcnow()
    subscriber = session.get(Subscriber, subscriber_id)
    if (
        subscriber is None
        or not can_undo_unsubscribe(subscriber, now=now)
        or is_suppressed(session=session, email=subscriber.email)
    ):
        raise NotFound("there is nothing to undo")
    wanted = {
        int(topic_id): str(frequency) for topic_id, frequency in subscriber.left_subscriptions or []
    }
    live = dict(
        session.execute(
            select(Topic.id, Topic.slug).where(
                Topic.id.in_(list(wanted)), Topic.archived_at.is_(None)
            )
        ).all()
    )
    if not live:
        raise NotFound("the topics you had are no longer published")
    for topic_id in sorted(live):
        session.add(
            Subscription(
                subscriber_id=subscriber_id,
                topic_id=topic_id,
                frequency=Frequency(wanted[topic_id]),
                created_at=now,
            )
        )
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.unsubscribed_at = None
    subscriber.left_subscriptions = None
    session.flush()
    return sorted(live.values())


def revoke_links(*, session: Session, subscriber_id: int) -> None:
    """Invalidate every link issued to a reader so far."""
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id)
        .values(token_version=Subscriber.token_version + 1)
    )


def suppress(*, session: Session, email: str, reason: str, detail: str = "") -> bool:
    """Put an address on the suppression list; True when it was not there yet."""
    key = email_hash(email)
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == key)) is not None:
        return False
    session.add(Suppression(email_hash=key, reason=reason, detail=detail[:2000]))
    session.execute(
        update(Subscriber)
        .where(Subscriber.email == email)
        .values(status=SubscriberStatus.SUPPRESSED)
    )
    session.flush()
    return True
