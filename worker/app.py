"""The Celery app, configured from the settings, and its beat schedule."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown

from subscriptions.queue import QUEUE
from subscriptions.settings import Settings
from worker.runtime import WorkerRuntime

#: Longer than any task runs or any countdown waits: a delay past it would be delivered twice.
VISIBILITY_TIMEOUT_SECONDS = 3600

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    # The web kicks this task itself; beat's run picks up a lost kick and a crashed applier's work.
    "apply-signups": {"task": "newsletter.apply_signups", "schedule": 10.0},
    "sweep-confirmations": {"task": "newsletter.sweep_confirmations", "schedule": 60.0},
    "poll-due-feeds": {"task": "newsletter.poll_due_feeds", "schedule": 30.0},
    "plan-digests": {"task": "newsletter.plan_digests", "schedule": 60.0},
    "dispatch": {"task": "newsletter.dispatch", "schedule": 30.0},
    # Does nothing unless NEWSLETTER_LEDGER_RETENTION_DAYS is set.
    "archive-ledger": {"task": "newsletter.archive_ledger", "schedule": 3600.0},
}


class NewsletterCelery(Celery):
    """A Celery app that carries the worker runtime its tasks use."""

    runtime: WorkerRuntime


def create_celery(settings: Settings) -> NewsletterCelery:
    """The Celery app for `settings`: JSON only, late acks, prefetch 1, results ignored."""
    if not settings.broker_url:
        from subscriptions.errors import ConfigurationError

        raise ConfigurationError(
            "NEWSLETTER_BROKER_URL: not set (`newsletter dev` starts an embedded Redis; "
            "elsewhere point it at redis://host:6379/0)"
        )
    app = NewsletterCelery("newsletter", broker=settings.broker_url, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        timezone="UTC",
        enable_utc=True,
        beat_schedule=BEAT_SCHEDULE,
        task_default_queue=QUEUE,
    )
    app.runtime = WorkerRuntime(settings)
    # Imported for its shared tasks: Celery binds a copy of each to this app when it finalizes.
    import worker.tasks  # noqa: F401

    @worker_process_shutdown.connect(weak=False)
    def _close(**_: Any) -> None:
        app.runtime.close()

    return app
