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
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import (
    Body,
    DigestRenderer,
    ReaderParts,
    localized_groups,
    localized_subscriptions,
    reasons_line,
    shared_body,
    slot_values,
)
from mail.links import list_headers, reader_links
from mail.providers import EmailMessage, Outcome, Provider, SendResult
from mail.providers.base import SharedBody
from subscriptions import metrics
from subscriptions.i18n import reader_language
from subscriptions.models import (
    Batch,
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
from subscriptions.topics import localized_names
from subscriptions.unknowns import report_unknown
from worker.crashpoints import crash_point
from worker.digests.batches import (
    CLAIM_TIMEOUT,
    UNKNOWN_AFTER_HAND_OVER,
    WAITING,
    Claim,
    claim,
    claimed_digest,
    close_batch,
    hand_over,
    reap,
    record_sent,
    release,
    retry_delay,
)
from worker.digests.jobs import DigestInfo, Job, JobCache, load_jobs
from worker.digests.planner import refresh_digest_status
from worker.ratelimit import GlobalRateLimiter

log = logging.getLogger(__name__)

#: The batch operations stay importable from here, where the send pipeline is described.
__all__ = [
    "CLAIM_TIMEOUT",
    "UNKNOWN_AFTER_HAND_OVER",
    "BatchReport",
    "Claim",
    "Sender",
    "claim",
    "digest_counts",
    "hand_over",
    "reap",
    "release",
]


@dataclass
class BatchReport:
    digest_id: int
    claimed: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    paused: str | None = None

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


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
        self._bodies: dict[tuple[int, tuple[object, ...]], tuple[Body, SharedBody]] = {}
        #: (digest, language) → topic names in that language, read once per digest and language.
        self._names: dict[tuple[int, str], dict[str, str]] = {}
        #: The last variant's body: consecutive readers nearly always share it.
        self._last: tuple[int, object, str, tuple[Body, SharedBody]] | None = None
        #: (digest, topics and frequencies, language) → the reasons line.
        self._reason_lines: dict[tuple[int, tuple[tuple[str, str], ...], str], str] = {}
        self._jobs = JobCache()
        #: Digests whose status this Sender refreshed once (at its first batch of them).
        self._started: set[int] = set()
        self._domain = urlsplit(settings.base_url).hostname or "localhost"
        #: The offered languages, split once (read for every message).
        self._languages = settings.language_list

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
            info, jobs = load_jobs(
                session, ids, cache=self._jobs, claimed=(digest_id, claimed.readers)
            )
            if info is None:  # the rows were claimed in this very transaction: cannot happen
                raise RuntimeError(f"claimed deliveries of digest {digest_id} vanished: {ids[:5]}")
            self._read_topic_names(session, info.id, jobs)
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
                        len(messages), requests=self._provider.requests_for(messages)
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
        metrics.count_outcomes(self._provider.name, [r.outcome.value for r in results])
        with self._sessions() as session, session.begin():
            others = self._record_results(session, report, claimed, jobs, results, now)
            if others or broken or len(ids) < limit or digest_id not in self._started:
                # The digest's first batch here (it is sending, since when), or possibly its last
                # open work; otherwise the next claim finds out (an empty claim refreshes it). Not
                # after every full batch sent whole: the look for open work walks the digest's rows.
                refresh_digest_status(session, digest_id)
                if len(self._started) > 64:
                    self._started.clear()
                self._started.add(digest_id)
            crash_point("recording")
        return report

    def next_retry_in(self, digest_id: int, *, now: datetime | None = None) -> float | None:
        """Seconds until the digest's next waiting batch is due (0.0: now); None without one."""
        now = now or utcnow()
        waiting = (Batch.digest_id == digest_id) & (Batch.status == WAITING)
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
    ) -> bool:
        """Write each delivery's outcome, then whether the batch waits for a retry or is done.
        True when any outcome was not `sent`."""
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
        # A fresh batch's rows were all claimed here; recorded sent, none can be left pending (a
        # retry's batch may hold rows an admin changed meanwhile: it is looked at).
        done = not others and not claimed.retry
        close_batch(session, claimed.batch_id, retry_at=retry_at, uncertain=uncertain, done=done)
        return bool(others)

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

    def _read_topic_names(self, session: Session, digest_id: int, jobs: list[Job]) -> None:
        """Topic names in the batch's languages, read in the claiming transaction (a second
        session would wait on SQLite's write lock), once per digest and language."""
        offered = self._languages
        for language in {reader_language(offered, job.language) for job in jobs}:
            if (digest_id, language) not in self._names:
                if len(self._names) > 64:
                    self._names.clear()
                self._names[(digest_id, language)] = localized_names(
                    session=session, language=language
                )

    def _topic_names(self, digest_id: int, language: str) -> dict[str, str]:
        return self._names.get((digest_id, language), {})

    def _message(self, info: DigestInfo, job: Job, batch_key: str) -> EmailMessage:
        # The variant includes the reader's language: one shared body per language, not per reader.
        language = reader_language(self._languages, job.language)
        last = self._last
        if (
            last is not None
            and last[0] == info.id
            and last[1] is job.groups
            and last[2] == language
        ):
            # Readers of one batch nearly always share their groups (one tuple, from the JobCache):
            # the same body, without hashing the variant's posts again for every reader.
            body, shared = last[3]
        else:
            key = (info.id, job.variant)
            cached = self._bodies.get(key)
            if cached is None:
                # 256 bodies per offered language: each language doubles the variants, and a cache
                # that overflows is cleared (bench/digest.py --spanish 0.5 showed the thrash).
                if len(self._bodies) > 256 * len(self._languages):
                    self._bodies.clear()
                body = self._renderer.body(
                    info.kind,
                    localized_groups(job.groups, self._topic_names(info.id, language)),
                    intro_markdown=info.intro_markdown,
                    editorial_subject=info.subject,
                    language=language,
                )
                cached = self._bodies[key] = (body, shared_body(body))
            self._last = (info.id, job.groups, language, cached)
            body, shared = cached
        links = reader_links(
            self._settings, self._signer, subscriber_id=job.subscriber_id, version=job.token_version
        )
        parts = ReaderParts(links.manage, links.unsubscribe, self._reasons(info.id, job, language))
        email = self._renderer.personalize(body, parts)
        return EmailMessage(
            to=job.email,
            sender=self._settings.from_address,
            subject=body.subject,
            text=email.text,
            html=email.html,
            headers=list_headers(self._settings, links),
            message_id=message_id(info.id, job.delivery_id, self._domain),
            metadata={"delivery_id": str(job.delivery_id)},
            # The batch's key, fixed at its first try, and the delivery: a provider that keys whole
            # requests (Resend) sees the same key whenever the same batch goes again.
            idempotency_key=f"{batch_key}.{job.delivery_id}",
            # Providers that merge per-reader values send the shared body once per request.
            shared=shared,
            slot_values=slot_values(parts),
        )

    def _reasons(self, digest_id: int, job: Job, language: str) -> str:
        """The reader's "why you get this" line; readers with the same topics and frequencies share
        one (made once per digest and language, not per reader)."""
        key = (digest_id, job.subscriptions, language)
        line = self._reason_lines.get(key)
        if line is None:
            if len(self._reason_lines) > 4096:
                self._reason_lines.clear()
            line = self._reason_lines[key] = reasons_line(
                localized_subscriptions(job.subscriptions, self._topic_names(digest_id, language)),
                language,
            )
        return line

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


def message_id(digest_id: int, delivery_id: int, domain: str) -> str:
    """`<nl.DIGEST.DELIVERY.RANDOM@host>`: 96 random bits, so no two emails ever share one (not even
    after the database is reset and ids start again) and none can be guessed from another."""
    return f"<nl.{digest_id}.{delivery_id}.{secrets.token_urlsafe(12)}@{domain}>"


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
