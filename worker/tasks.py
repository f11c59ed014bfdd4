"""Thin Celery tasks: each names its plain function and handles retries; logic lives elsewhere.

Every task is a module-level function on one base class, `NewsletterTask`, which reaches the shared
runtime of its worker process (settings, sessions, provider, sender) through the app it runs in.
The names are stable (subscriptions.queue): the store and the web send them by name. The tasks are
Celery shared tasks, so each app `worker.app.create_celery` makes (tests make one per
configuration) gets its own copies bound to it; a task hands work on by name through its own app.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Task, shared_task
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import metrics
from subscriptions.db import transaction
from subscriptions.errors import ConfigurationError
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
from subscriptions.settings import Settings
from worker import dispatch, reader_mail
from worker.digests import planner
from worker.digests.sender import reap
from worker.feeds.poll import FetchOptions, poll_feed

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime

MAX_TRIES = 5
#: How long one send task works before handing over (well under the broker's visibility timeout).
SEND_SLICE_SECONDS = 60
#: A sender with nothing due waits for a batch due within this long instead of ending.
RETRY_WAIT_SECONDS = 10.0
#: Commits of the hourly ledger archive (16,384 reader ids each): about 3 million deliveries, a
#: few minutes, well under the broker's visibility timeout on this machine's figures (bench/README).
ARCHIVE_CHUNKS_PER_RUN = 200
ARCHIVE_LEDGER = "newsletter.archive_ledger"
POLL_DUE_FEEDS = "newsletter.poll_due_feeds"
PLAN_DIGESTS = "newsletter.plan_digests"
DISPATCH = "newsletter.dispatch"
SWEEP_CONFIRMATIONS = "newsletter.sweep_confirmations"


class NewsletterTask(Task):
    """The base of every task here: the worker runtime of the app the task is bound to."""

    @property
    def runtime(self) -> WorkerRuntime:
        runtime: WorkerRuntime | None = getattr(self.app, "runtime", None)
        if runtime is None:
            raise ConfigurationError(
                f"task {self.name} runs only in an app made by worker.app.create_celery"
            )
        return runtime

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.runtime.sessions

    def enqueue(self, name: str, *args: Any) -> None:
        """Queue task `name` with `args` on this task's own app (after any commit of the caller)."""
        self.app.send_task(name, args=list(args))

    def retry_later(self) -> Exception:
        """A retry after a short, jittered delay, far below the broker's visibility timeout."""
        retries = self.request.retries
        countdown = min(300, 10 * 2**retries) + random.uniform(0, 5)
        exc: Exception = self.retry(countdown=countdown)
        return exc


def _task(name: str, **options: Any) -> Any:
    return shared_task(name=name, base=NewsletterTask, bind=True, **options)


def _reader_mail(task: NewsletterTask, result: reader_mail.MailResult) -> str:
    if result.retry:
        raise task.retry_later()
    return result.outcome


@_task(SEND_CONFIRMATION, max_retries=MAX_TRIES)
def send_confirmation(self: NewsletterTask, consent_id: int) -> str:
    return _reader_mail(self, reader_mail.send_confirmation(self.runtime, consent_id))


@_task(SEND_WELCOME, max_retries=MAX_TRIES)
def send_welcome(self: NewsletterTask, consent_id: int) -> str:
    return _reader_mail(self, reader_mail.send_welcome(self.runtime, consent_id))


@_task(SEND_MANAGE_LINK, max_retries=MAX_TRIES)
def send_manage_link(self: NewsletterTask, subscriber_id: int) -> str:
    return _reader_mail(self, reader_mail.send_manage_link(self.runtime, subscriber_id))


@_task(SEND_MANAGE_LINK_TO, max_retries=MAX_TRIES)
def send_manage_link_to(self: NewsletterTask, address: str) -> str:
    return _reader_mail(self, reader_mail.send_manage_link_to(self.runtime, address))


@_task(POLL_FEED)
def poll_one_feed(self: NewsletterTask, feed_id: int) -> str:
    settings = self.settings
    options = FetchOptions(
        allow_private=settings.feeds_allow_private_addresses,
        max_bytes=settings.feeds_max_bytes,
        timeout=settings.feeds_timeout_seconds,
    )
    report = poll_feed(self.sessions, feed_id, options)
    metrics.count_feed_poll(report.status)
    # The posts are committed: their alerts are planned by name (the planner owns that task).
    for post_id in report.announce:
        self.enqueue(PLAN_POST_ALERTS, post_id)
    return report.summary()


@_task(POLL_DUE_FEEDS)
def poll_due_feeds(self: NewsletterTask) -> int:
    with transaction(self.sessions) as session:
        due = claim_due_feeds(session=session)
    for feed_id in due:
        self.enqueue(POLL_FEED, feed_id)
    return len(due)


@_task(SEND_DIGEST)
def send_digest(self: NewsletterTask, digest_id: int) -> int:
    """Send batches of one digest for up to a minute, then hand over to a fresh task."""
    deadline = time.monotonic() + SEND_SLICE_SECONDS
    sender = self.runtime.sender
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
    self.enqueue(SEND_DIGEST, digest_id)
    return sent


def _start_senders(task: NewsletterTask, work: dict[int, int]) -> None:
    for digest_id, senders in work.items():
        for _ in range(senders):
            task.enqueue(SEND_DIGEST, digest_id)


@_task(PLAN_POST_ALERTS)
def plan_post_alerts(self: NewsletterTask, post_id: int) -> int:
    with transaction(self.sessions) as session:
        result = planner.plan_post_alerts(session, post_id)
    if result is None:
        return 0
    _start_senders(self, {result.digest_id: 1})
    return result.planned


@_task(SEND_EDITORIAL)
def send_editorial(self: NewsletterTask, digest_id: int) -> int:
    """Plan an editor's digest that is due now and start its senders."""
    with transaction(self.sessions) as session:
        result = planner.plan_editorial(session, digest_id)
    _start_senders(self, {result.digest_id: 1})
    return result.planned


@_task(PLAN_DIGESTS)
def plan_digests(self: NewsletterTask) -> dict[str, int]:
    with transaction(self.sessions) as session:
        report = dispatch.plan_due(session, self.settings)
    return {str(k): v for k, v in report.planned.items()}


@_task(DISPATCH)
def dispatch_work(self: NewsletterTask) -> int:
    """Reap abandoned claims, then start senders for every digest with work due."""
    runtime = self.runtime
    with transaction(runtime.sessions) as session:
        reap(
            session,
            supports_idempotency=runtime.provider.supports_idempotency,
            claim_timeout=timedelta(seconds=runtime.settings.claim_timeout_seconds),
        )
        work = dispatch.sendable(session, batch_size=runtime.sender.batch_size)
    _start_senders(self, work)
    return sum(work.values())


@_task(ARCHIVE_LEDGER)
def archive_ledger(self: NewsletterTask) -> int:
    """Archive the ledger of digests older than NEWSLETTER_LEDGER_RETENTION_DAYS (0: off),
    at most ARCHIVE_CHUNKS_PER_RUN commits a run (the next hourly run continues)."""
    days = self.settings.ledger_retention_days
    if not days:
        return 0
    from subscriptions.ledger_archive import archive_ledger as archive

    report = archive(
        sessions=self.sessions, older_than=timedelta(days=days), limit=ARCHIVE_CHUNKS_PER_RUN
    )
    return report.moved


@_task(APPLY_SIGNUPS)
def apply_signups(self: NewsletterTask) -> dict[str, int]:
    """Apply the sign-ups queued by the web (subscriptions/intake.py), then queue their emails."""
    intake = self.runtime.intake
    if intake is None:
        return {}
    done = intake.apply_pending(
        self.sessions,
        on_confirmation=lambda consent_id: self.enqueue(SEND_CONFIRMATION, consent_id),
    )
    return {"applied": done.applied, "skipped": done.skipped, "dropped": done.dropped}


@_task(SWEEP_CONFIRMATIONS)
def sweep_confirmations(self: NewsletterTask) -> int:
    pending = reader_mail.unsent_confirmations(self.runtime)
    for consent_id in pending:
        self.enqueue(SEND_CONFIRMATION, consent_id)
    return len(pending)
