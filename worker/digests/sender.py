"""The ledger's sending side: claim a batch, send it through the provider, record each outcome.

claim → hand over → send → record. The claim and the hand-over are one write, committed only once the
batch's messages are rendered, just before the provider is called: a worker that dies before that
commit leaves the rows pending (the transaction is rolled back); one that dies after it leaves
claimed, handed-over deliveries the reaper recognises: resent under the same idempotency key where
the provider honours one, otherwise recorded as unknown, never sent twice. Recording a batch's sent
results is one more write: two per delivery in all.
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

from sqlalchemy import func, literal, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.i18n import reader_language
from subscriptions.models import Delivery, DeliveryStatus, Digest, DigestStatus, utcnow
from subscriptions.notices import REQUEST_WRONG, SENDING_PAUSED, raise_notice, sending_paused
from subscriptions.readers import suppress
from subscriptions.settings import Settings
from subscriptions.tokens import TokenSigner
from subscriptions.topics import localized_names
from worker.digests.jobs import DigestInfo, Job, JobCache, load_jobs
from worker.digests.planner import refresh_digest_status
from worker.digests.render import (
    Body,
    DigestRenderer,
    ReaderParts,
    localized_groups,
    localized_subscriptions,
    reasons_line,
)
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


#: Compared as literals, not parameters, so that PostgreSQL matches the partial indexes on status
#: even in a generic (prepared) plan.
_PENDING = literal(DeliveryStatus.PENDING.value, literal_execute=True)
_CLAIMED = literal(DeliveryStatus.CLAIMED.value, literal_execute=True)


def claim(
    session: Session, digest_id: int, limit: int, *, now: datetime, handed: bool = False
) -> tuple[list[int], bool]:
    """Claim due pending deliveries of a digest for this worker; returns (ids, is_retry_of_a_batch).

    A batch whose outcome was unknown is claimed again whole, under its old key, so that an
    idempotent provider recognises it. Otherwise up to `limit` fresh deliveries get a new key. On
    PostgreSQL, FOR UPDATE SKIP LOCKED lets many workers claim from one digest at once; SQLite
    serializes writers (BEGIN IMMEDIATE), which gives the same guarantee. One UPDATE … RETURNING.

    `handed=True` also records the hand-over: the caller commits only when it is about to call the
    provider (the Sender renders the batch in the claiming transaction).
    """
    due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
    retry_key = session.scalar(
        select(Delivery.batch_key)
        .where(
            Delivery.digest_id == digest_id,
            Delivery.status == _PENDING,
            Delivery.batch_key.is_not(None),
            due,
        )
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if retry_key is not None:
        # The whole group, even rows whose jittered retry time is a moment later.
        pick = select(Delivery.id).where(
            Delivery.digest_id == digest_id,
            Delivery.status == _PENDING,
            Delivery.batch_key.is_not(None),
            Delivery.batch_key == retry_key,
        )
        key = retry_key
    else:
        # Bounded below by the first pending id (answered from the partial index): without it,
        # PostgreSQL may walk past every row already sent while its statistics are stale.
        first = (
            select(func.min(Delivery.id))
            .where(Delivery.digest_id == digest_id, Delivery.status == _PENDING)
            .scalar_subquery()
        )
        pick = (
            select(Delivery.id)
            .where(
                Delivery.digest_id == digest_id,
                Delivery.status == _PENDING,
                due,
                Delivery.batch_key.is_(None),
                Delivery.id >= first,
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
        key = uuid.uuid4().hex
    ids = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(pick.with_for_update(skip_locked=True)))
        .values(
            status=DeliveryStatus.CLAIMED,
            claimed_at=now,
            claimed_by=WORKER_ID,
            handed_at=now if handed else None,
            batch_key=key,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    ).all()
    return sorted(ids), retry_key is not None


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
        #: (digest, language) → topic names in that language, read once per digest and language.
        self._names: dict[tuple[int, str], dict[str, str]] = {}
        self._jobs = JobCache()
        self._domain = urlsplit(settings.base_url).hostname or "localhost"

    @property
    def batch_size(self) -> int:
        """The provider's batch limit, or less when the global rate limit is lower."""
        limit = self._provider.batch_limit
        return min(limit, self._limiter.max_batch) if self._limiter is not None else limit

    def send_batch(self, digest_id: int, *, now: datetime | None = None) -> BatchReport:
        """Claim, render, hand over, send and record one provider-sized batch of a digest."""
        now = now or utcnow()
        report = BatchReport(digest_id)
        limit = self.batch_size
        with self._sessions() as session, session.begin():
            report.paused = sending_paused(session=session)
            if report.paused:
                return report
            # An editor cancelled the digest while it was sending: its unclaimed rows stay unsent.
            if session.scalar(select(Digest.status).where(Digest.id == digest_id)) is (
                DigestStatus.CANCELLED
            ):
                return report
            ids, retry = claim(session, digest_id, limit, now=now, handed=True)
            report.claimed = len(ids)
            if not ids:
                # Every sender ends here: the digest is finished if no other worker holds work.
                refresh_digest_status(session, digest_id)
                return report
            info, jobs = load_jobs(session, ids, cache=self._jobs)
            if info is None:  # the rows were claimed in this very transaction: cannot happen
                raise RuntimeError(f"claimed deliveries of digest {digest_id} vanished: {ids[:5]}")
            self._read_topic_names(session, info.id, jobs)
            # A batch resent under its old idempotency key must be the same batch: nobody is dropped.
            if not retry:
                unmailable = [j for j in jobs if not j.mailable or not j.groups]
                jobs = [j for j in jobs if j.mailable and j.groups]
                self._set_status(
                    session,
                    unmailable,
                    DeliveryStatus.SUPPRESSED,
                    "reader not mailable at send time",
                )
                for _ in unmailable:
                    report.add(DeliveryStatus.SUPPRESSED.value)
            messages, jobs, broken = self._messages(info, jobs)
            for job, error in broken:
                self._set_status(session, [job], DeliveryStatus.FAILED, error)
                report.add(DeliveryStatus.FAILED.value)
        # Committed: from here on a crash leaves these deliveries handed over (see reap()).
        if messages and self._limiter is not None:
            self._limiter.acquire(
                len(messages), requests=self._provider.requests_for(len(messages))
            )
        results = self._provider.send(messages) if messages else []
        with self._sessions() as session, session.begin():
            sent_at = utcnow()
            sent = [
                (job.delivery_id, result.provider_message_id)
                for job, result in zip(jobs, results, strict=True)
                if result.outcome is Outcome.SENT
            ]
            if sent:
                record_sent(session, sent, sent_at=sent_at)
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
            if others or broken or len(ids) < limit:
                # Possibly the digest's last open work; otherwise the next claim finds out.
                refresh_digest_status(session, digest_id)
        return report

    def _messages(
        self, info: DigestInfo, jobs: list[Job]
    ) -> tuple[list[EmailMessage], list[Job], list[tuple[Job, str]]]:
        """The batch's messages, and the jobs that could not be rendered (they fail, loudly)."""
        messages: list[EmailMessage] = []
        rendered: list[Job] = []
        broken: list[tuple[Job, str]] = []
        for job in jobs:
            try:
                messages.append(self._message(info, job))
            except Exception as exc:  # a bug or bad data: never retried, never sent half-made
                log.exception("could not render delivery %s", job.delivery_id)
                broken.append((job, f"could not render: {type(exc).__name__}: {exc}"[:2000]))
                continue
            rendered.append(job)
        return messages, rendered, broken

    @staticmethod
    def _set_status(session: Session, jobs: list[Job], status: DeliveryStatus, error: str) -> None:
        if jobs:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_([j.delivery_id for j in jobs]))
                .values(status=status, last_error=error)
            )

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

    def _read_topic_names(self, session: Session, digest_id: int, jobs: list[Job]) -> None:
        """Topic names in the batch's languages, read in the claiming transaction (a second
        session would wait on SQLite's write lock), once per digest and language."""
        offered = self._settings.language_list
        for language in {reader_language(offered, job.language) for job in jobs}:
            if (digest_id, language) not in self._names:
                if len(self._names) > 64:
                    self._names.clear()
                self._names[(digest_id, language)] = localized_names(
                    session=session, language=language
                )

    def _topic_names(self, digest_id: int, language: str) -> dict[str, str]:
        return self._names.get((digest_id, language), {})

    def _message(self, info: DigestInfo, job: Job) -> EmailMessage:
        # The variant includes the reader's language: one shared body per language, not per reader.
        language = reader_language(self._settings.language_list, job.language)
        key = (info.id, job.variant)
        body = self._bodies.get(key)
        if body is None:
            # 256 bodies per offered language: each language doubles the variants, and a cache
            # that overflows is cleared (bench/digest.py --spanish 0.5 showed the thrash).
            if len(self._bodies) > 256 * len(self._settings.language_list):
                self._bodies.clear()
            body = self._renderer.body(
                info.kind,
                localized_groups(job.groups, self._topic_names(info.id, language)),
                intro_markdown=info.intro_markdown,
                editorial_subject=info.subject,
                language=language,
            )
            self._bodies[key] = body
        links = reader_links(
            self._settings, self._signer, subscriber_id=job.subscriber_id, version=job.token_version
        )
        email = self._renderer.personalize(
            body,
            ReaderParts(
                links.manage,
                links.unsubscribe,
                reasons_line(
                    localized_subscriptions(
                        job.subscriptions, self._topic_names(info.id, language)
                    ),
                    language,
                ),
            ),
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


def record_sent(session: Session, sent: list[tuple[int, str | None]], *, sent_at: datetime) -> None:
    """Mark deliveries sent, each with its provider message id, in one statement per batch."""
    if session.get_bind().dialect.name == "postgresql":
        # One UPDATE joined to the batch's (id, message id) pairs, instead of one per delivery.
        session.execute(
            text(
                "UPDATE deliveries SET status = 'sent', sent_at = :sent_at,"
                " provider_message_id = batch.message_id, last_error = '',"
                " claimed_by = NULL, batch_key = NULL"
                " FROM unnest(CAST(:ids AS bigint[]), CAST(:message_ids AS text[]))"
                " AS batch (id, message_id) WHERE deliveries.id = batch.id"
            ),
            {
                "sent_at": sent_at,
                "ids": [i for i, _ in sent],
                "message_ids": [m for _, m in sent],
            },
        )
        return
    session.execute(
        update(Delivery),
        [
            {"id": i, "status": DeliveryStatus.SENT, "sent_at": sent_at,
             "provider_message_id": m, "last_error": "", "claimed_by": None, "batch_key": None}
            for i, m in sent
        ],
    )  # fmt: skip


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
    stale = (Delivery.status == _CLAIMED) & (Delivery.claimed_at < now - claim_timeout)
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
