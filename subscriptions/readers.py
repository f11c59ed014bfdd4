"""Operations on readers: subscribe, confirm, change preferences, unsubscribe, suppress.

Every function is keyword-only, works inside the caller's transaction, and returns plain data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from subscriptions.errors import HeaderInjection, InvalidInput, NotFound, TokenUsed
from subscriptions.models import (
    Consent,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
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


def normalize_email(address: str, *, check_deliverability: bool = False) -> str:
    """The canonical form of an address, or InvalidInput with a reason fit to show."""
    if "\r" in address or "\n" in address:
        raise HeaderInjection("an email address cannot contain line breaks", field="email")
    address = address.strip()
    if not address:
        raise InvalidInput("enter your email address", field="email")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidInput("that email address is too long", field="email")
    try:
        valid = validate_email(address, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidInput(f"that email address is not valid: {exc}", field="email") from None
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


def is_suppressed(*, session: Session, email: str) -> bool:
    """Whether a normalized address is on the suppression list."""
    found = session.scalar(
        select(Suppression.id).where(Suppression.email_hash == email_hash(email))
    )
    return found is not None


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
) -> SignUp:
    """Record a sign-up and its consent. The caller sends the confirmation when `consent_id` is set.

    The outcome looks the same to the caller's caller whatever the address's history: a suppressed
    address changes nothing and gets no email; a known one gets a fresh confirmation. `intake_key`
    is the sign-up's stream entry id when it came through `subscriptions.intake` (unique per consent).
    """
    now = now or utcnow()
    if not topics:
        raise InvalidInput("choose at least one topic", field="topics")
    topic_ids_for_slugs(session=session, slugs=topics)
    if is_suppressed(session=session, email=email):
        return SignUp(None, None)
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if subscriber is None:
        subscriber = Subscriber(email=email, timezone=timezone, status=SubscriberStatus.PENDING)
        session.add(subscriber)
        session.flush()
    recent = session.scalar(
        select(func.count(Consent.id)).where(
            Consent.subscriber_id == subscriber.id,
            Consent.created_at > now - timedelta(days=1),
        )
    )
    consent = Consent(
        subscriber_id=subscriber.id,
        created_at=now,
        ip=ip,
        source=source[:200],
        user_agent=user_agent[:400],
        topics=sorted(set(topics)),
        wording=wording,
        frequency=frequency,
        timezone=timezone,
        intake_key=intake_key,
    )
    if (recent or 0) >= CONFIRMATIONS_PER_DAY:
        consent.send_email = False
    session.add(consent)
    session.flush()
    if not consent.send_email:
        return SignUp(subscriber.id, None)
    return SignUp(subscriber.id, consent.id)


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
    subscriber.timezone = consent.timezone
    session.flush()
    return Confirmation(subscriber.id, subscriber.email, sorted(ids))


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
) -> None:
    """Set each topic's frequency (None removes it), the time zone, and an optional pause."""
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


def unsubscribe(*, session: Session, subscriber_id: int) -> None:
    """Stop all email to a reader at once; their subscriptions are removed."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound("no such reader")
    session.execute(delete(Subscription).where(Subscription.subscriber_id == subscriber_id))
    if subscriber.status is not SubscriberStatus.UNSUBSCRIBED:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = utcnow()
    session.flush()


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
