"""Thin Celery tasks: each names its plain function and handles retries; logic lives elsewhere."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from subscriptions import metrics
from subscriptions.db import transaction
from subscriptions.feeds import claim_due_feeds
from subscriptions.queue import (
    APPLY_SIGNUPS,
    PLAN_POST_ALERTS,
    POLL_FEED,
    SEND_CONFIRMATION,
    SEND_DIGEST,
    SEND_EDITORIAL,
    SEND_MANAGE_LINK,
    SEND_MANAGE_LINK_TO,
    SEND_WELCOME,
)
from worker import dispatch, reader_mail
from worker.digests import planner
from worker.digests.sender import reap
from worker.feeds.poll import FetchOptions, poll_feed

if TYPE_CHECKING:
    from celery import Task

    from worker.app import NewsletterCelery
    from worker.runtime import WorkerRuntime

MAX_TRIES = 5
#: How long one send task works before handing over (well under the broker's visibility timeout).
SEND_SLICE_SECONDS = 60
#: A sender with nothing due waits for a batch due within this long instead of ending.
RETRY_WAIT_SECONDS = 10.0


#: Commits of the hourly ledger archive (16,384 reader ids each): about 3 million deliveries, a
#: few minutes, well under the broker's visibility timeout on this machine's figures (bench/README).
ARCHIVE_CHUNKS_PER_RUN = 200


def _backoff(retries: int) -> float:
    # Short, jittered delays: far below the broker's visibility timeout.
    return min(300, 10 * 2**retries) + random.uniform(0, 5)


def register(app: NewsletterCelery) -> None:
    """Define this project's tasks on `app`, each with an explicit, stable name.

    `shared=False`: the tasks close over `app` (its runtime), so they must not be copied into other
    Celery apps of the same process (tests make one per configuration).
    """

    def reader_mail_task(
        name: str, send: Callable[[WorkerRuntime, int], reader_mail.MailResult]
    ) -> Task:
        @app.task(name=name, bind=True, max_retries=MAX_TRIES, shared=False)
        def task(self: Task, record_id: int) -> str:
            result = send(app.runtime, record_id)
            if result.retry:
                raise self.retry(countdown=_backoff(self.request.retries))
            return result.outcome

        return task

    send_confirmation = reader_mail_task(SEND_CONFIRMATION, reader_mail.send_confirmation)
    reader_mail_task(SEND_WELCOME, reader_mail.send_welcome)
    reader_mail_task(SEND_MANAGE_LINK, reader_mail.send_manage_link)

    @app.task(name=SEND_MANAGE_LINK_TO, bind=True, max_retries=MAX_TRIES, shared=False)
    def send_manage_link_to(self: Task, address: str) -> str:
        result = reader_mail.send_manage_link_to(app.runtime, address)
        if result.retry:
            raise self.retry(countdown=_backoff(self.request.retries))
        return result.outcome

    @app.task(name=POLL_FEED, shared=False)
    def poll_one_feed(feed_id: int) -> str:
        settings = app.runtime.settings
        options = FetchOptions(
            allow_private=settings.feeds_allow_private_addresses,
            max_bytes=settings.feeds_max_bytes,
            timeout=settings.feeds_timeout_seconds,
        )
        report = poll_feed(app.runtime.sessions, feed_id, options)
        metrics.count_feed_poll(report.status)
        # The posts are committed: their alerts are planned by name (the planner owns that task).
        for post_id in report.announce:
            app.send_task(PLAN_POST_ALERTS, args=[post_id])
        return report.summary()

    @app.task(name="newsletter.poll_due_feeds", shared=False)
    def poll_due_feeds() -> int:
        with transaction(app.runtime.sessions) as session:
            due = claim_due_feeds(session=session)
        for feed_id in due:
            poll_one_feed.delay(feed_id)
        return len(due)

    @app.task(name=SEND_DIGEST, shared=False)
    def send_digest(digest_id: int) -> int:
        """Send batches of one digest for up to a minute, then hand over to a fresh task."""
        deadline = time.monotonic() + SEND_SLICE_SECONDS
        sender = app.runtime.sender
        sent = 0
        while time.monotonic() < deadline:
            report = sender.send_batch(digest_id)
            if report.claimed:
                sent += report.claimed
                continue
            if report.paused:
                return sent
            # Retries leave when due, not at the next dispatch tick: a batch the provider asked
            # to retry in a moment (Retry-After) is waited for here, briefly.
            wait = sender.next_retry_in(digest_id)
            # Due now yet not claimed: held back (a cancelled digest); the dispatcher looks again.
            if wait is None or wait <= 0 or wait > RETRY_WAIT_SECONDS:
                return sent
            if time.monotonic() + wait >= deadline:
                break
            time.sleep(wait + 0.05)
        send_digest.delay(digest_id)
        return sent

    def start_senders(work: dict[int, int]) -> None:
        for digest_id, senders in work.items():
            for _ in range(senders):
                send_digest.delay(digest_id)

    @app.task(name=PLAN_POST_ALERTS, shared=False)
    def plan_post_alerts(post_id: int) -> int:
        with transaction(app.runtime.sessions) as session:
            result = planner.plan_post_alerts(session, post_id)
        if result is None:
            return 0
        start_senders({result.digest_id: 1})
        return result.planned

    @app.task(name=SEND_EDITORIAL, shared=False)
    def send_editorial(digest_id: int) -> int:
        """Plan an editor's digest that is due now and start its senders."""
        with transaction(app.runtime.sessions) as session:
            result = planner.plan_editorial(session, digest_id)
        start_senders({result.digest_id: 1})
        return result.planned

    @app.task(name="newsletter.plan_digests", shared=False)
    def plan_digests() -> dict[str, int]:
        runtime = app.runtime
        with transaction(runtime.sessions) as session:
            report = dispatch.plan_due(session, runtime.settings)
        return {str(k): v for k, v in report.planned.items()}

    @app.task(name="newsletter.dispatch", shared=False)
    def dispatch_work() -> int:
        """Reap abandoned claims, then start senders for every digest with work due."""
        runtime = app.runtime
        with transaction(runtime.sessions) as session:
            reap(
                session,
                supports_idempotency=runtime.provider.supports_idempotency,
                claim_timeout=timedelta(seconds=runtime.settings.claim_timeout_seconds),
            )
            work = dispatch.sendable(session, batch_size=runtime.sender.batch_size)
        start_senders(work)
        return sum(work.values())

    @app.task(name="newsletter.archive_ledger", shared=False)
    def archive_ledger() -> int:
        """Archive the ledger of digests older than NEWSLETTER_LEDGER_RETENTION_DAYS (0: off),
        at most ARCHIVE_CHUNKS_PER_RUN commits a run (the next hourly run continues)."""
        days = app.runtime.settings.ledger_retention_days
        if not days:
            return 0
        from subscriptions.ledger_archive import archive_ledger as archive

        report = archive(
            sessions=app.runtime.sessions,
            older_than=timedelta(days=days),
            limit=ARCHIVE_CHUNKS_PER_RUN,
        )
        return report.moved

    @app.task(name=APPLY_SIGNUPS, shared=False)
    def apply_signups() -> dict[str, int]:
        """Apply the sign-ups queued by the web (subscriptions/intake.py), then queue their emails."""
        intake = app.runtime.intake
        if intake is None:
            return {}
        done = intake.apply_pending(
            app.runtime.sessions,
            on_confirmation=lambda consent_id: send_confirmation.delay(consent_id),
        )
        return {"applied": done.applied, "skipped": done.skipped, "dropped": done.dropped}

    @app.task(name="newsletter.sweep_confirmations", shared=False)
    def sweep_confirmations() -> int:
        pending = reader_mail.unsent_confirmations(app.runtime)
        for consent_id in pending:
            send_confirmation.delay(consent_id)
        return len(pending)
