"""Transactional email to one reader: confirmation, welcome, preferences link.

Each is claim → send → record: a row's timestamp is set before sending, so a task that runs twice finds
nothing to do, and a temporary failure releases the claim for a retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from mail.links import list_headers, reader_links
from mail.providers import EmailMessage, Outcome
from subscriptions import metrics
from subscriptions.i18n import N_, gettext_for, reader_language
from subscriptions.models import Consent, Subscriber, SubscriberStatus, Topic, utcnow
from subscriptions.tokens import Purpose
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

FREQUENCY_WORDS = {"immediate": N_("immediately"), "daily": N_("daily"), "weekly": N_("weekly")}


@dataclass(frozen=True, slots=True)
class MailResult:
    sent: bool
    outcome: str
    retry: bool = False


def send_confirmation(runtime: WorkerRuntime, consent_id: int) -> MailResult:
    """Send the confirmation email of sign-up `consent_id`, at most once."""
    with runtime.sessions() as session, session.begin():
        found = _consent(session, consent_id)
        if isinstance(found, MailResult):
            return found
        consent, reader = found
        if not consent.send_email or consent.confirmed_at is not None:
            return MailResult(False, "not wanted")
        if not _claim(session, Consent.email_sent_at, Consent.id == consent_id):
            return MailResult(False, "already sent")
        token = runtime.signer.make(
            Purpose.CONFIRM,
            subscriber_id=reader.id,
            version=reader.token_version,
            consent_id=consent.id,
        )
        language = _language(runtime, reader)
        _ = gettext_for(language)
        context: dict[str, Any] = {
            "topics": _topic_names(session, consent.topics, language),
            "frequency": _(FREQUENCY_WORDS[consent.frequency.value]),
        }
        to = reader.email
    settings = runtime.settings
    context.update(
        confirm_url=f"{settings.base_url}/confirm/{token}", confirm_days=settings.confirm_token_days
    )
    subject = _("Confirm your subscription to %(site)s") % {"site": settings.site_name}
    result = _send(runtime, "confirm", to, subject, context, {}, language)
    if result.retry:
        _release(runtime, Consent.email_sent_at, Consent.id == consent_id)
    return result


def send_welcome(runtime: WorkerRuntime, consent_id: int) -> MailResult:
    """After confirmation: what the reader chose, with their manage and unsubscribe links."""
    with runtime.sessions() as session, session.begin():
        found = _consent(session, consent_id)
        if isinstance(found, MailResult):
            return found
        consent, reader = found
        if consent.confirmed_at is None or reader.status is not SubscriberStatus.ACTIVE:
            return MailResult(False, "not wanted")
        if not _claim(session, Consent.welcome_sent_at, Consent.id == consent_id):
            return MailResult(False, "already sent")
        links = reader_links(
            runtime.settings, runtime.signer, subscriber_id=reader.id, version=reader.token_version
        )
        language = _language(runtime, reader)
        _ = gettext_for(language)
        context: dict[str, Any] = {
            "topics": _topic_names(session, consent.topics, language),
            "frequency": _(FREQUENCY_WORDS[consent.frequency.value]),
            "manage_url": links.manage,
            "unsubscribe_url": links.unsubscribe,
        }
        to = reader.email
    subject = _("Welcome to %(site)s") % {"site": runtime.settings.site_name}
    headers = list_headers(runtime.settings, links)
    result = _send(runtime, "welcome", to, subject, context, headers, language)
    if result.retry:
        _release(runtime, Consent.welcome_sent_at, Consent.id == consent_id)
    return result


def send_manage_link(runtime: WorkerRuntime, subscriber_id: int) -> MailResult:
    """A link to the reader's preferences, asked for on /manage or after revoking old links."""
    with runtime.sessions() as session:
        reader = session.get(Subscriber, subscriber_id)
        if reader is None or reader.status is not SubscriberStatus.ACTIVE:
            return MailResult(False, "not wanted")
        links = reader_links(
            runtime.settings, runtime.signer, subscriber_id=reader.id, version=reader.token_version
        )
        to = reader.email
        language = _language(runtime, reader)
    context = {"manage_url": links.manage, "unsubscribe_url": links.unsubscribe}
    subject = gettext_for(language)("Your %(site)s preferences") % {
        "site": runtime.settings.site_name
    }
    headers = list_headers(runtime.settings, links)
    return _send(runtime, "manage_link", to, subject, context, headers, language)


def send_manage_link_to(runtime: WorkerRuntime, address: str) -> MailResult:
    """The preferences link asked for on /manage, when `address` is an active reader's; any other
    address is dropped here, so that the web's answer takes as long for it."""
    with runtime.sessions() as session:
        reader_id = session.scalar(
            select(Subscriber.id).where(
                Subscriber.email == address, Subscriber.status == SubscriberStatus.ACTIVE
            )
        )
    if reader_id is None:
        return MailResult(False, "not wanted")
    return send_manage_link(runtime, reader_id)


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


def _consent(session: Session, consent_id: int) -> tuple[Consent, Subscriber] | MailResult:
    row = session.execute(
        select(Consent, Subscriber)
        .join(Subscriber, Subscriber.id == Consent.subscriber_id)
        .where(Consent.id == consent_id)
    ).first()
    if row is None:
        return MailResult(False, "missing")
    consent, reader = row
    if reader.status is SubscriberStatus.SUPPRESSED:
        return MailResult(False, "suppressed")
    return consent, reader


def _claim(
    session: Session, column: InstrumentedAttribute[Any], where: ColumnElement[bool]
) -> bool:
    claimed = session.execute(
        update(Consent).where(where, column.is_(None)).values({column.key: utcnow()})
    )
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def _release(
    runtime: WorkerRuntime, column: InstrumentedAttribute[Any], where: ColumnElement[bool]
) -> None:
    with runtime.sessions() as session, session.begin():
        session.execute(update(Consent).where(where).values({column.key: None}))


def _send(
    runtime: WorkerRuntime,
    template: str,
    to: str,
    subject: str,
    context: dict[str, Any],
    headers: dict[str, str],
    language: str,
) -> MailResult:
    body = runtime.renderer.render(template, language=language, subject=subject, **context)
    message = EmailMessage(
        to=to,
        sender=runtime.settings.from_address,
        subject=subject,
        text=body.text,
        html=body.html,
        headers=headers,
        metadata={"kind": template},
    )
    result = runtime.provider.send([message])[0]
    metrics.count_outcomes(runtime.provider.name, [result.outcome.value])
    # Logs carry the domain only: addresses are personal data.
    log.info(
        "%s email to @%s: %s", template, parseaddr(to)[1].rpartition("@")[2], result.outcome.value
    )
    if result.outcome is Outcome.SENT:
        return MailResult(True, result.outcome.value)
    return MailResult(False, result.outcome.value, retry=result.outcome is Outcome.TEMPORARY)


def _language(runtime: WorkerRuntime, reader: Subscriber) -> str:
    """The reader's language if it is still offered, else the fallback (the first offered)."""
    return reader_language(runtime.settings.language_list, reader.language)


def _topic_names(session: Session, slugs: list[str], language: str) -> list[str]:
    """The topics' names in `language` (the default language's where none is given)."""
    names = [
        (given or {}).get(language, {}).get("name") or name
        for name, given in session.execute(
            select(Topic.name, Topic.translations).where(Topic.slug.in_(slugs))
        )
    ]
    return sorted(names)
