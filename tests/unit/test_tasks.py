"""The Celery tasks: module-level, on one base class, with the names the store and the web send."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from subscriptions import queue
from subscriptions.errors import ConfigurationError
from tests.factories import make_settings
from worker.app import BEAT_SCHEDULE, create_celery
from worker.tasks import NewsletterTask

#: Every task name, as the worker has always registered them (queue.py, the beat schedule).
NAMES = {
    queue.SEND_CONFIRMATION,
    queue.SEND_WELCOME,
    queue.SEND_MANAGE_LINK,
    queue.SEND_MANAGE_LINK_TO,
    queue.APPLY_SIGNUPS,
    queue.PLAN_POST_ALERTS,
    queue.POLL_FEED,
    queue.SEND_DIGEST,
    queue.SEND_EDITORIAL,
    "newsletter.poll_due_feeds",
    "newsletter.plan_digests",
    "newsletter.dispatch",
    "newsletter.sweep_confirmations",
    "newsletter.archive_ledger",
}


def _ours(app: Celery) -> dict[str, NewsletterTask]:
    return {name: task for name, task in app.tasks.items() if name.startswith("newsletter.")}


def test_each_app_gets_every_task_bound_to_its_own_runtime(tmp_path: Path) -> None:
    """Two apps in one process (as tests make them) each run the tasks with their own settings."""
    first = create_celery(make_settings(tmp_path / "a", broker_url="redis://127.0.0.1:1/0"))
    second = create_celery(make_settings(tmp_path / "b", broker_url="redis://127.0.0.1:2/0"))

    for app in (first, second):
        tasks = _ours(app)
        assert set(tasks) == NAMES
        for task in tasks.values():
            assert isinstance(task, NewsletterTask)
            assert task.runtime is app.runtime
            assert task.settings is app.runtime.settings
    assert first.runtime is not second.runtime
    assert {entry["task"] for entry in BEAT_SCHEDULE.values()} <= NAMES


def test_a_task_outside_a_newsletter_app_says_where_it_runs() -> None:
    plain = Celery("plain", set_as_current=False)
    task = plain.tasks[queue.SEND_DIGEST]

    with pytest.raises(ConfigurationError, match="create_celery"):
        _ = task.runtime
