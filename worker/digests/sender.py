"""The ledger's sending side: claim a batch, send it through the provider, record each outcome.

claim → hand over → send → record, three commits per batch:

1. The claim takes up to a provider batch of pending deliveries into a new `batches` row (its
   idempotency key fixed there, once), or takes one waiting batch whole through its row, and
   renders the messages in the same transaction. Committed, the rows are claimed but not handed
   over: a worker that dies now, or while it waits for the rate limiter, leaves a claim the reaper
   puts back to waiting after the claim timeout, to be sent normally (never `unknown`).
2. The hand-over commits `batches.handed_at` when the request is about to leave (after the rate
   limiter), fenced by the claim's token so a worker whose claim was reaped cannot hand it over.
3. The record commits each delivery's outcome. A batch with rows left to retry waits as one batch
   for one due time; a retry is always the whole batch, by the one worker that claims its row,
   under the same key. A claim abandoned after the hand-over may have reached the provider: the
   reaper sends it again under its key where the provider honours one, otherwise records `unknown`.
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

from sqlalchemy import delete, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.models import (
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestStatus,
    utcnow,
)
from subscriptions.notices import REQUEST_WRONG, SENDING_PAUSED, raise_notice, sending_paused
from subscriptions.readers import suppress
from subscriptions.settings import Settings
from subscriptions.tokens import TokenSigner
from subscriptions.unknowns import report_unknown
from worker.crashpoints import crash_point
from worker.digests.jobs import DigestInfo, Job, JobCache, load_jobs
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


#: Compared as literals, not parameters, so that PostgreSQL matches the partial indexes on status
#: even in a generic (prepared) plan.
_PENDING = literal(DeliveryStatus.PENDING.value, literal_execute=True)
_CLAIMED = literal(DeliveryStatus.CLAIMED.value, literal_execute=True)
_WAITING = literal(BatchStatus.WAITING.value, literal_execute=True)
_BATCH_CLAIMED = literal(BatchStatus.CLAIMED.value, literal_execute=True)


@dataclass(frozen=True, slots=True)
class Claim:
    """One batch claimed by this worker: its rows, its key, and the token that fences the claim."""

    batch_id: int
    token: str
    key: str
    ids: list[int]
    #: The batch was sent before with an unknown outcome: it must go again exactly as it was.
    uncertain: bool = False
    retry: bool = False


def claim(session: Session, digest_id: int, limit: int, *, now: datetime) -> Claim | None:
    """Claim a waiting batch of a digest whole, or up to `limit` fresh deliveries as a new batch.

    A waiting batch is taken through its one `batches` row (FOR UPDATE SKIP LOCKED on PostgreSQL;
    SQLite serializes writers with BEGIN IMMEDIATE), so exactly one worker gets it, with all its
    pending rows and its first key. The caller commits the claim; nothing is handed over yet.
    """
    token = uuid.uuid4().hex
    due_batch = or_(Batch.next_attempt_at.is_(None), Batch.next_attempt_at <= now)
    while True:
        found = session.execute(
            select(Batch.id, Batch.idempotency_key, Batch.uncertain)
            .where(Batch.digest_id == digest_id, Batch.status == _WAITING, due_batch)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if found is None:
            break
        batch_id, key, uncertain = found
        ids = session.scalars(
            update(Delivery)
            .where(Delivery.batch_id == batch_id, Delivery.status == _PENDING)
            .values(
                status=DeliveryStatus.CLAIMED,
                claimed_at=now,
                claimed_by=WORKER_ID,
                attempts=Delivery.attempts + 1,
            )
            .returning(Delivery.id)
        ).all()
        if not ids:  # nothing of it left to send (an admin closed its rows): done
            session.execute(
                update(Batch).where(Batch.id == batch_id).values(status=BatchStatus.DONE)
            )
            continue
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=BatchStatus.CLAIMED,
                claimed_at=now,
                claimed_by=WORKER_ID,
                claim_token=token,
                handed_at=None,
                attempts=Batch.attempts + 1,
            )
        )
        return Claim(batch_id, token, key, sorted(ids), uncertain=bool(uncertain), retry=True)
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
            Delivery.batch_id.is_(None),
            Delivery.id >= first,
        )
        .order_by(Delivery.id)
        .limit(limit)
    )
    key = uuid.uuid4().hex
    new_id = session.scalar(
        insert(Batch)
        .values(
            digest_id=digest_id,
            status=BatchStatus.CLAIMED,
            idempotency_key=key,
            attempts=1,
            claimed_at=now,
            claimed_by=WORKER_ID,
            claim_token=token,
            uncertain=False,
            created_at=now,
        )
        .returning(Batch.id)
    )
    if new_id is None:
        raise RuntimeError("INSERT INTO batches returned no id")
    batch_id = int(new_id)
    ids = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(pick.with_for_update(skip_locked=True)))
        .values(
            status=DeliveryStatus.CLAIMED,
            claimed_at=now,
            claimed_by=WORKER_ID,
            batch_id=batch_id,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    ).all()
    if not ids:
        session.execute(delete(Batch).where(Batch.id == batch_id))
        return None
    return Claim(batch_id, token, key, sorted(ids))


def hand_over(session: Session, claimed: Claim, *, now: datetime) -> bool:
    """Record that the batch's request is about to leave; False if the claim is no longer ours."""
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == claimed.batch_id,
            Batch.claim_token == claimed.token,
            Batch.status == _BATCH_CLAIMED,
        )
        # The claim timeout now counts from here: a long wait for the limiter is not a dead worker.
        .values(handed_at=now, claimed_at=now)
    )
    return _rowcount(result) == 1


def release(session: Session, claimed: Claim, *, now: datetime) -> None:
    """Give back a claim that was never handed over: its rows wait, untried, due at once."""
    result = session.execute(
        update(Batch)
        .where(
            Batch.id == claimed.batch_id,
            Batch.claim_token == claimed.token,
            Batch.handed_at.is_(None),
        )
        .values(status=BatchStatus.WAITING, claimed_by=None, claim_token=None, next_attempt_at=now)
    )
    if _rowcount(result) == 1:
        session.execute(
            update(Delivery)
            .where(Delivery.batch_id == claimed.batch_id, Delivery.status == _CLAIMED)
            .values(
                status=DeliveryStatus.PENDING,
                claimed_by=None,
                next_attempt_at=None,
                attempts=Delivery.attempts - 1,  # the claim counted a try that never happened
            )
        )


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
        self._jobs = JobCache()
        self._domain = urlsplit(settings.base_url).hostname or "localhost"

    @property
    def batch_size(self) -> int:
        """The provider's batch limit, or less when the global rate limit is lower."""
        limit = self._provider.batch_limit
        return min(limit, self._limiter.max_batch) if self._limiter is not None else limit

    def send_batch(self, digest_id: int, *, now: datetime | None = None) -> BatchReport:
        """Claim and render, wait for the rate limiter, hand over, send and record one batch."""
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
            claimed = claim(session, digest_id, limit, now=now)
            if claimed is None:
                # Every sender ends here: the digest is finished if no other worker holds work.
                refresh_digest_status(session, digest_id)
                return report
            ids = claimed.ids
            report.claimed = len(ids)
            info, jobs = load_jobs(session, ids, cache=self._jobs)
            if info is None:  # the rows were claimed in this very transaction: cannot happen
                raise RuntimeError(f"claimed deliveries of digest {digest_id} vanished: {ids[:5]}")
            # A batch resent after an unknown outcome must be the same request: nobody is dropped.
            if not claimed.uncertain:
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
            messages, jobs, broken = self._messages(info, jobs, claimed.key)
            for job, error in broken:
                self._set_status(session, [job], DeliveryStatus.FAILED, error)
                report.add(DeliveryStatus.FAILED.value)
        # Committed: claimed, not handed over. A crash from here to the hand-over loses nothing.
        crash_point("claimed")
        if messages:
            try:
                if self._limiter is not None:
                    crash_point("rate_limit")
                    self._limiter.acquire(
                        len(messages), requests=self._provider.requests_for(len(messages))
                    )
                with self._sessions() as session, session.begin():
                    handed = hand_over(session, claimed, now=utcnow())
            except Exception:
                # Redis gone, the wait too long, the database away: the rows wait, untried.
                with self._sessions() as session, session.begin():
                    release(session, claimed, now=utcnow())
                raise
            if not handed:
                log.warning("batch %s was reaped before its hand-over; not sent", claimed.batch_id)
                return report
        crash_point("request_left")
        results = self._provider.send(messages) if messages else []
        crash_point("answered")
        with self._sessions() as session, session.begin():
            self._record_results(session, report, claimed, jobs, results, now)
            if results or broken or len(ids) < limit:
                # Possibly the digest's last open work; otherwise the next claim finds out.
                refresh_digest_status(session, digest_id)
            crash_point("recording")
        return report

    def next_retry_in(self, digest_id: int, *, now: datetime | None = None) -> float | None:
        """Seconds until the digest's next waiting batch is due (0.0: now); None without one."""
        now = now or utcnow()
        waiting = (Batch.digest_id == digest_id) & (Batch.status == _WAITING)
        with self._sessions() as session:
            found = session.execute(
                select(func.count(), func.min(Batch.next_attempt_at)).where(waiting)
            ).one()
            undated = session.scalar(
                select(literal(1)).where(waiting, Batch.next_attempt_at.is_(None)).limit(1)
            )
        count, due = found
        if not count:
            return None
        if undated or due is None:
            return 0.0
        return max(0.0, (due - now).total_seconds())

    def _record_results(
        self,
        session: Session,
        report: BatchReport,
        claimed: Claim,
        jobs: list[Job],
        results: list[SendResult],
        now: datetime,
    ) -> None:
        """Write each delivery's outcome, then whether the batch waits for a retry or is done."""
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
        # One due time for the whole batch: its retries leave together.
        retry_at: datetime | None = None
        uncertain = False
        if others:
            attempts = dict(
                session.execute(
                    select(Delivery.id, Delivery.attempts).where(
                        Delivery.id.in_([j.delivery_id for j, _ in others])
                    )
                ).all()
            )
            tries = max(attempts.values(), default=1) or 1
            asked = max((r.retry_after or 0.0 for _, r in others), default=0.0)
            retry_at = now + retry_delay(tries, asked or None)
            later = False
            for job, result in others:
                status = self._record(
                    session, job, result, retry_at, attempts.get(job.delivery_id, 1)
                )
                report.add(status)
                if status == DeliveryStatus.PENDING.value:
                    uncertain = uncertain or result.outcome is Outcome.UNKNOWN
                    later = later or result.outcome is not Outcome.ACCOUNT_BLOCKED
            if not later:  # only untried rows wait (sending paused): due as soon as it resumes
                retry_at = None
            self._tell_editors(session, [r for _, r in others])
            if report.counts.get(DeliveryStatus.UNKNOWN.value):
                report_unknown(session=session, digest_id=claimed_digest(session, claimed))
        close_batch(session, claimed.batch_id, retry_at=retry_at, uncertain=uncertain)

    def _messages(
        self, info: DigestInfo, jobs: list[Job], key: str
    ) -> tuple[list[EmailMessage], list[Job], list[tuple[Job, str]]]:
        """The batch's messages, and the jobs that could not be rendered (they fail, loudly)."""
        messages: list[EmailMessage] = []
        rendered: list[Job] = []
        broken: list[tuple[Job, str]] = []
        for job in jobs:
            try:
                messages.append(self._message(info, job, key))
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

    def _message(self, info: DigestInfo, job: Job, batch_key: str) -> EmailMessage:
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
            # The batch's key, fixed at its first try, and the delivery: a provider that keys whole
            # requests (Resend) sees the same key whenever the same batch goes again.
            idempotency_key=f"{batch_key}.{job.delivery_id}",
        )

    def _record(
        self, session: Session, job: Job, result: SendResult, retry_at: datetime, attempts: int
    ) -> str:
        values: dict[str, object] = {"last_error": result.detail[:2000], "claimed_by": None}
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
            values.update(
                status=DeliveryStatus.PENDING, attempts=max(0, attempts - 1), next_attempt_at=None
            )
        elif outcome is Outcome.TEMPORARY and attempts < self._settings.max_delivery_attempts:
            values.update(status=DeliveryStatus.PENDING, next_attempt_at=retry_at)
        elif outcome is Outcome.TEMPORARY:
            values.update(
                status=DeliveryStatus.FAILED,
                last_error=f"gave up after {attempts} tries: {result.detail}"[:2000],
            )
        elif outcome is Outcome.RECIPIENT_PERMANENT:
            values.update(status=DeliveryStatus.FAILED)
            suppress(session=session, email=job.email, reason="hard_bounce", detail=result.detail)
        elif outcome is Outcome.UNKNOWN and self._provider.supports_idempotency:
            # Sent again later as the very same batch, under the same idempotency key.
            values.update(status=DeliveryStatus.PENDING, next_attempt_at=retry_at)
        elif outcome is Outcome.UNKNOWN:
            values.update(status=DeliveryStatus.UNKNOWN)
        else:
            values.update(status=DeliveryStatus.FAILED)
        session.execute(update(Delivery).where(Delivery.id == job.delivery_id).values(**values))
        return str(getattr(values["status"], "value", values["status"]))


def claimed_digest(session: Session, claimed: Claim) -> int:
    digest_id = session.scalar(select(Batch.digest_id).where(Batch.id == claimed.batch_id))
    if digest_id is None:
        raise RuntimeError(f"batch {claimed.batch_id} vanished")
    return int(digest_id)


def close_batch(
    session: Session, batch_id: int, *, retry_at: datetime | None, uncertain: bool
) -> None:
    """After a try: the batch waits (one due time) while any row of it is pending, else is done."""
    left = session.scalar(
        select(literal(1))
        .where(Delivery.batch_id == batch_id, Delivery.status == _PENDING)
        .limit(1)
    )
    if left:
        values: dict[str, object] = {
            "status": BatchStatus.WAITING,
            "next_attempt_at": retry_at,
            "uncertain": uncertain,
        }
    else:
        values = {"status": BatchStatus.DONE}
    values.update(claimed_by=None, claim_token=None)
    session.execute(update(Batch).where(Batch.id == batch_id).values(**values))


def record_sent(session: Session, sent: list[tuple[int, str | None]], *, sent_at: datetime) -> None:
    """Mark deliveries sent, each with its provider message id, in one statement per batch."""
    if session.get_bind().dialect.name == "postgresql":
        # One UPDATE joined to the batch's (id, message id) pairs, instead of one per delivery.
        session.execute(
            text(
                "UPDATE deliveries SET status = 'sent', sent_at = :sent_at,"
                " provider_message_id = batch.message_id, last_error = '',"
                " claimed_by = NULL"
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
             "provider_message_id": m, "last_error": "", "claimed_by": None}
            for i, m in sent
        ],
    )  # fmt: skip


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """When the provider said when (Retry-After), then, with a little jitter; otherwise
    exponential back-off with jitter."""
    if retry_after:
        return timedelta(seconds=retry_after * random.uniform(1.0, 1.2))
    base = min(3600.0, 30.0 * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
    return timedelta(seconds=base)


UNKNOWN_AFTER_HAND_OVER = "worker stopped after the request was handed to the provider"


def reap(
    session: Session,
    *,
    supports_idempotency: bool,
    now: datetime | None = None,
    claim_timeout: timedelta = CLAIM_TIMEOUT,
) -> int:
    """Release batches claimed and abandoned: never handed over → waiting, sent normally; handed
    over → waiting under the same key (uncertain) only where the provider honours idempotency
    keys, otherwise their rows become unknown (never silently resent). Returns the rows released."""
    now = now or utcnow()
    stale = session.execute(
        select(Batch.id, Batch.digest_id, Batch.handed_at)
        .where(Batch.status == _BATCH_CLAIMED, Batch.claimed_at < now - claim_timeout)
        .with_for_update(skip_locked=True)
    ).all()
    released = 0
    for batch_id, digest_id, handed_at in stale:
        claimed_rows = (Delivery.batch_id == batch_id) & (Delivery.status == _CLAIMED)
        if handed_at is not None and not supports_idempotency:
            session.execute(
                update(Delivery)
                .where(claimed_rows)
                .values(status=DeliveryStatus.UNKNOWN, last_error=UNKNOWN_AFTER_HAND_OVER)
            )
            close_batch(session, batch_id, retry_at=None, uncertain=False)
            report_unknown(session=session, digest_id=digest_id)
            continue
        values: dict[str, object] = {
            "status": DeliveryStatus.PENDING,
            "claimed_by": None,
            "next_attempt_at": None,
        }
        if handed_at is None:
            values["attempts"] = Delivery.attempts - 1  # a try that never happened
        released += _rowcount(
            session.execute(update(Delivery).where(claimed_rows).values(**values))
        )
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                status=BatchStatus.WAITING,
                claimed_by=None,
                claim_token=None,
                next_attempt_at=now,
                uncertain=Batch.uncertain | (handed_at is not None),
            )
        )
    for digest_id in {d for _, d, _ in stale}:  # a digest whose last open work became unknown
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
