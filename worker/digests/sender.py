"""The ledger's sending side: claim a batch, send it through the provider, record each outcome.

claim → hand over → send → record. The hand-over time is committed before the provider is called, so
a worker that dies mid-call leaves a delivery the reaper can recognise: resent under the same
idempotency key where the provider honours one, otherwise recorded as unknown, never sent twice.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.models import Delivery, DeliveryStatus, utcnow
from subscriptions.notices import REQUEST_WRONG, SENDING_PAUSED, raise_notice, sending_paused
from subscriptions.readers import suppress
from subscriptions.settings import Settings
from subscriptions.tokens import TokenSigner
from worker.digests.jobs import DigestInfo, Job, load_jobs
from worker.digests.planner import refresh_digest_status
from worker.digests.render import Body, DigestRenderer, ReaderParts, reasons_line
from worker.links import list_headers, reader_links
from worker.providers import EmailMessage, Outcome, Provider, SendResult
from worker.ratelimit import GlobalRateLimiter

log = logging.getLogger(__name__)

#: A claim older than this, still unrecorded, was abandoned by a worker that died (the default of
#: NEWSLETTER_CLAIM_TIMEOUT_SECONDS; far longer than one batch takes).
CLAIM_TIMEOUT = timedelta(minutes=10)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class BatchReport:
    digest_id: int
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


def claim(session: Session, digest_id: int, limit: int, *, now: datetime) -> tuple[list[int], bool]:
    """Claim due pending deliveries of a digest for this worker; returns (ids, is_retry_of_a_batch).

    A batch whose outcome was unknown is claimed again whole, under its old key, so that an
    idempotent provider recognises it. Otherwise up to `limit` fresh deliveries get a new key. On
    PostgreSQL, FOR UPDATE SKIP LOCKED lets many workers claim from one digest at once; SQLite
    serializes writers (BEGIN IMMEDIATE), which gives the same guarantee.
    """
    due = and_(
        Delivery.digest_id == digest_id,
        Delivery.status == DeliveryStatus.PENDING,
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
    )
    retry_key = session.scalar(
        select(Delivery.batch_key)
        .where(due, Delivery.batch_key.is_not(None))
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if retry_key is not None:
        # The whole group, even rows whose jittered retry time is a moment later.
        query = select(Delivery.id).where(
            Delivery.digest_id == digest_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.batch_key == retry_key,
        )
        key = retry_key
    else:
        # Bounded below by the first pending id (answered from the partial index): without it,
        # PostgreSQL may walk past every row already sent while its statistics are stale.
        first = (
            select(func.min(Delivery.id))
            .where(Delivery.digest_id == digest_id, Delivery.status == DeliveryStatus.PENDING)
            .scalar_subquery()
        )
        query = (
            select(Delivery.id)
            .where(due, Delivery.batch_key.is_(None), Delivery.id >= first)
            .order_by(Delivery.id)
            .limit(limit)
        )
        key = uuid.uuid4().hex
    ids = list(session.scalars(query.with_for_update(skip_locked=True)))
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                status=DeliveryStatus.CLAIMED,
                claimed_at=now,
                claimed_by=WORKER_ID,
                handed_at=None,
                batch_key=key,
                attempts=Delivery.attempts + 1,
            )
        )
    return ids, retry_key is not None


class Sender:
    """Sends the deliveries of digests through one provider, rendering each shared body once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        provider: Provider,
        renderer: DigestRenderer,
        settings: Settings,
        signer: TokenSigner,
        limiter: GlobalRateLimiter | None = None,
    ) -> None:
        self._limiter = limiter
        self._sessions = sessions
        self._provider = provider
        self._renderer = renderer
        self._settings = settings
        self._signer = signer
        self._bodies: dict[tuple[int, tuple[object, ...]], Body] = {}
        self._domain = urlsplit(settings.base_url).hostname or "localhost"

    @property
    def batch_size(self) -> int:
        """The provider's batch limit, or less when the global rate limit is lower."""
        limit = self._provider.batch_limit
        return min(limit, self._limiter.max_batch) if self._limiter is not None else limit

    def send_batch(self, digest_id: int, *, now: datetime | None = None) -> BatchReport:
        """Claim, send and record one provider-sized batch of a digest."""
        now = now or utcnow()
        report = BatchReport(digest_id)
        with self._sessions() as session, session.begin():
            report.paused = sending_paused(session=session)
            if report.paused:
                return report
            ids, retry = claim(session, digest_id, self.batch_size, now=now)
        report.claimed = len(ids)
        if not ids:
            return report
        with self._sessions() as session:
            info, jobs = load_jobs(session, ids)
        if info is None:
            return report
        # A batch resent under its old idempotency key must be the same batch: nobody is dropped.
        unmailable = [] if retry else [j for j in jobs if not j.mailable or not j.groups]
        jobs = jobs if retry else [j for j in jobs if j.mailable and j.groups]
        messages = [self._message(info, job) for job in jobs]
        with self._sessions() as session, session.begin():
            if unmailable:
                session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_([j.delivery_id for j in unmailable]))
                    .values(
                        status=DeliveryStatus.SUPPRESSED,
                        last_error="reader not mailable at send time",
                    )
                )
                for _ in unmailable:
                    report.add(DeliveryStatus.SUPPRESSED.value)
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([j.delivery_id for j in jobs]))
                .values(handed_at=utcnow())
            )
        if messages and self._limiter is not None:
            self._limiter.acquire(
                len(messages), requests=self._provider.requests_for(len(messages))
            )
        results = self._provider.send(messages) if messages else []
        with self._sessions() as session, session.begin():
            # The common case, sent, is written for the whole batch in one executemany; the rest
            # (rare) one by one with their own rules.
            sent_at = utcnow()
            sent = [
                {"id": job.delivery_id, "status": DeliveryStatus.SENT, "sent_at": sent_at,
                 "provider_message_id": result.provider_message_id, "last_error": "",
                 "claimed_by": None, "batch_key": None}
                for job, result in zip(jobs, results, strict=True)
                if result.outcome is Outcome.SENT
            ]  # fmt: skip
            if sent:
                session.execute(update(Delivery), sent)
                for _ in sent:
                    report.add(DeliveryStatus.SENT.value)
            others = [
                (j, r) for j, r in zip(jobs, results, strict=True) if r.outcome is not Outcome.SENT
            ]
            if others:
                attempts = dict(
                    session.execute(
                        select(Delivery.id, Delivery.attempts).where(
                            Delivery.id.in_([j.delivery_id for j, _ in others])
                        )
                    ).all()
                )
                for job, result in others:
                    report.add(
                        self._record(session, job, result, now, attempts.get(job.delivery_id, 1))
                    )
            self._tell_editors(session, results)
            refresh_digest_status(session, digest_id)
        return report

    def _tell_editors(self, session: Session, results: list[SendResult]) -> None:
        """Account problems pause all sending; a refused request is a notice. Both are logged."""
        name = self._provider.name
        blocked = next((r for r in results if r.outcome is Outcome.ACCOUNT_BLOCKED), None)
        if blocked is not None:
            message = f"{name} refused the account: {blocked.detail}. All sending is paused; fix the account, then run `newsletter sending resume`."
            raise_notice(session=session, kind=SENDING_PAUSED, message=message)
            log.error("%s", message)
        wrong = next((r for r in results if r.outcome is Outcome.REQUEST_WRONG), None)
        if wrong is not None:
            message = f"{name} refused a request as malformed: {wrong.detail}"
            raise_notice(session=session, kind=REQUEST_WRONG, message=message)
            log.error("%s", message)

    def _message(self, info: DigestInfo, job: Job) -> EmailMessage:
        key = (info.id, job.variant)
        body = self._bodies.get(key)
        if body is None:
            if len(self._bodies) > 256:
                self._bodies.clear()
            body = self._renderer.body(
                info.kind,
                job.groups,
                intro_markdown=info.intro_markdown,
                editorial_subject=info.subject,
            )
            self._bodies[key] = body
        links = reader_links(
            self._settings, self._signer, subscriber_id=job.subscriber_id, version=job.token_version
        )
        email = self._renderer.personalize(
            body, ReaderParts(links.manage, links.unsubscribe, reasons_line(job.subscriptions))
        )
        headers = list_headers(self._settings, links)
        if self._settings.list_unsubscribe_mailto:
            mailto = f"mailto:{self._settings.list_unsubscribe_mailto}?subject=unsubscribe-{job.subscriber_id}"
            headers["List-Unsubscribe"] += f", <{mailto}>"
        return EmailMessage(
            to=job.email,
            sender=self._settings.from_address,
            subject=body.subject,
            text=email.text,
            html=email.html,
            headers=headers,
            # Derived from the delivery: unique per email, and the same on every retry of it.
            message_id=f"<nl.{info.id}.{job.delivery_id}@{self._domain}>",
            metadata={"delivery_id": str(job.delivery_id)},
            idempotency_key=f"delivery-{job.delivery_id}",
        )

    def _record(
        self, session: Session, job: Job, result: SendResult, now: datetime, attempts: int
    ) -> str:
        # Only an unknown outcome keeps the batch key; anything else may be regrouped freely.
        values: dict[str, object] = {
            "last_error": result.detail[:2000],
            "claimed_by": None,
            "batch_key": None,
        }
        attempts = attempts or 1
        outcome = result.outcome
        if outcome is Outcome.SENT:
            values.update(
                status=DeliveryStatus.SENT,
                sent_at=utcnow(),
                provider_message_id=result.provider_message_id,
            )
        elif outcome is Outcome.ACCOUNT_BLOCKED:
            # Neither the reader's fault nor this email's: it waits, untried, for sending to resume.
            values.update(status=DeliveryStatus.PENDING, attempts=max(0, attempts - 1))
        elif outcome is Outcome.TEMPORARY and attempts < self._settings.max_delivery_attempts:
            values.update(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now + retry_delay(attempts, result.retry_after),
            )
        elif outcome is Outcome.TEMPORARY:
            values.update(
                status=DeliveryStatus.FAILED,
                last_error=f"gave up after {attempts} tries: {result.detail}"[:2000],
            )
        elif outcome is Outcome.RECIPIENT_PERMANENT:
            values.update(status=DeliveryStatus.FAILED)
            suppress(session=session, email=job.email, reason="hard_bounce", detail=result.detail)
        elif outcome is Outcome.UNKNOWN and self._provider.supports_idempotency:
            # Resent later as the very same batch, under the same idempotency key.
            values.update(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now + retry_delay(attempts, None),
                batch_key=session.scalar(
                    select(Delivery.batch_key).where(Delivery.id == job.delivery_id)
                ),
            )
        elif outcome is Outcome.UNKNOWN:
            values.update(status=DeliveryStatus.UNKNOWN)
        else:
            values.update(status=DeliveryStatus.FAILED)
        session.execute(update(Delivery).where(Delivery.id == job.delivery_id).values(**values))
        return str(getattr(values["status"], "value", values["status"]))


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """Exponential back-off with jitter, never sooner than the provider asked."""
    base = min(3600.0, 30.0 * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
    return timedelta(seconds=max(base, retry_after or 0.0))


def reap(
    session: Session,
    *,
    supports_idempotency: bool,
    now: datetime | None = None,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> int:
    """Release deliveries claimed and abandoned: never handed over → pending; handed over →
    pending only under an idempotency key, otherwise unknown (never silently resent)."""
    now = now or utcnow()
    stale = (Delivery.status == DeliveryStatus.CLAIMED) & (
        Delivery.claimed_at < now - claim_timeout
    )
    touched = session.scalars(select(Delivery.digest_id).where(stale).distinct()).all()
    released = _rowcount(
        session.execute(
            update(Delivery)
            .where(stale, Delivery.handed_at.is_(None))
            .values(status=DeliveryStatus.PENDING, claimed_by=None, batch_key=None)
        )
    )
    handed = update(Delivery).where(stale, Delivery.handed_at.is_not(None))
    if supports_idempotency:
        released += _rowcount(
            session.execute(handed.values(status=DeliveryStatus.PENDING, claimed_by=None))
        )
    else:
        session.execute(
            handed.values(
                status=DeliveryStatus.UNKNOWN,
                last_error="worker stopped while the provider was called",
            )
        )
    for digest_id in touched:  # a digest whose last open work became unknown has finished
        refresh_digest_status(session, digest_id)
    return released


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def digest_counts(session: Session, digest_id: int) -> dict[str, int]:
    """Deliveries of a digest by status: planned (all), sent, failed, unknown, suppressed, pending."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.digest_id == digest_id)
        .group_by(Delivery.status)
    ).all()
    counts = {status.value: int(n) for status, n in rows}
    counts["planned"] = sum(counts.values())
    return counts
