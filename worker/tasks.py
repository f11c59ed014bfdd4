"""Thin Celery tasks: each names its plain function and handles retries; logic lives elsewhere."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from subscriptions.queue import SEND_CONFIRMATION
from worker import confirmations

if TYPE_CHECKING:
    from celery import Task

    from worker.app import NewsletterCelery

MAX_CONFIRMATION_TRIES = 5


def register(app: NewsletterCelery) -> None:
    """Define this project's tasks on `app`, each with an explicit, stable name."""

    @app.task(name=SEND_CONFIRMATION, bind=True, max_retries=MAX_CONFIRMATION_TRIES)
    def send_confirmation(self: Task, consent_id: int) -> str:
        result = confirmations.send_confirmation(app.runtime, consent_id)
        if result.retry:
            # Short, jittered delays: far below the broker's visibility timeout.
            delay = min(300, 10 * 2**self.request.retries) + random.uniform(0, 5)
            raise self.retry(countdown=delay)
        return result.outcome

    @app.task(name="newsletter.sweep_confirmations")
    def sweep_confirmations() -> int:
        pending = confirmations.unsent_confirmations(app.runtime)
        for consent_id in pending:
            send_confirmation.delay(consent_id)
        return len(pending)
