"""Send the confirmation email of a sign-up: claim, send, record; safe to run twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from subscriptions.models import Consent, Subscriber, SubscriberStatus, Topic, utcnow
from subscriptions.tokens import Purpose
from worker.providers import EmailMessage, Outcome
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

FREQUENCY_WORDS = {"immediate": "immediately", "daily": "daily", "weekly": "weekly"}


@dataclass(frozen=True, slots=True)
class ConfirmationResult:
    sent: bool
    outcome: str
    retry: bool = False


def send_confirmation(runtime: WorkerRuntime, consent_id: int) -> ConfirmationResult:
    """Send the confirmation email of sign-up `consent_id`, at most once.

    The row is claimed (email_sent_at set) before sending, so a second run finds nothing to do; a
    temporary failure releases the claim for a retry.
    """
    with runtime.sessions() as session, session.begin():
        row = session.execute(
            select(Consent, Subscriber)
            .join(Subscriber, Subscriber.id == Consent.subscriber_id)
            .where(Consent.id == consent_id)
        ).first()
        if row is None:
            return ConfirmationResult(False, "missing")
        consent, subscriber = row
        if not consent.send_email or consent.confirmed_at is not None:
            return ConfirmationResult(False, "not wanted")
        if subscriber.status is SubscriberStatus.SUPPRESSED:
            return ConfirmationResult(False, "suppressed")
        claimed = session.execute(
            update(Consent)
            .where(Consent.id == consent_id, Consent.email_sent_at.is_(None))
            .values(email_sent_at=utcnow())
        )
        if claimed.rowcount == 0:  # type: ignore[attr-defined]
            return ConfirmationResult(False, "already sent")
        token = runtime.signer.make(
            Purpose.CONFIRM,
            subscriber_id=subscriber.id,
            version=subscriber.token_version,
            consent_id=consent.id,
        )
        topics = _topic_names(session, consent.topics)
        email, frequency = subscriber.email, FREQUENCY_WORDS[consent.frequency.value]

    settings = runtime.settings
    body = runtime.renderer.render(
        "confirm",
        subject="Confirm your subscription",
        topics=topics,
        frequency=frequency,
        confirm_url=f"{settings.base_url}/confirm/{token}",
        confirm_days=settings.confirm_token_days,
    )
    message = EmailMessage(
        to=email,
        sender=settings.from_address,
        subject=f"Confirm your subscription to {settings.site_name}",
        text=body.text,
        html=body.html,
        metadata={"consent_id": str(consent_id)},
        headers={"Auto-Submitted": "auto-generated"},
    )
    result = runtime.provider.send([message])[0]
    log.info("confirmation %s to reader %s: %s", consent_id, _domain(email), result.outcome.value)
    if result.outcome is Outcome.SENT:
        return ConfirmationResult(True, result.outcome.value)
    if result.outcome is Outcome.TEMPORARY:
        _release(runtime, consent_id)
        return ConfirmationResult(False, result.outcome.value, retry=True)
    return ConfirmationResult(False, result.outcome.value)


def _release(runtime: WorkerRuntime, consent_id: int) -> None:
    with runtime.sessions() as session, session.begin():
        session.execute(update(Consent).where(Consent.id == consent_id).values(email_sent_at=None))


def _topic_names(session: Session, slugs: list[str]) -> list[str]:
    rows = session.scalars(select(Topic.name).where(Topic.slug.in_(slugs)).order_by(Topic.name))
    return list(rows)


def unsent_confirmations(runtime: WorkerRuntime, *, older_than_seconds: int = 30) -> list[int]:
    """Sign-ups from the last day whose confirmation was never handed over (a lost enqueue)."""
    now = utcnow()
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Consent.id)
                .where(
                    Consent.send_email.is_(True),
                    Consent.email_sent_at.is_(None),
                    Consent.confirmed_at.is_(None),
                    Consent.created_at < now - timedelta(seconds=older_than_seconds),
                    Consent.created_at > now - timedelta(days=1),
                )
                .order_by(Consent.id)
                .limit(500)
            )
        )


def _domain(address: str) -> str:
    # Logs carry the domain only: addresses are personal data.
    return "@" + parseaddr(address)[1].rpartition("@")[2]
