"""Hand work to the worker by task name, after the database commit: the store and the web never import the worker."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

#: The one queue the product's workers consume.
QUEUE = "newsletter"
SEND_CONFIRMATION = "newsletter.send_confirmation"
SEND_MANAGE_LINK = "newsletter.send_manage_link"
#: A preferences link asked for by address on /manage: the worker drops unknown addresses.
SEND_MANAGE_LINK_TO = "newsletter.send_manage_link_to"
SEND_WELCOME = "newsletter.send_welcome"
APPLY_SIGNUPS = "newsletter.apply_signups"
PLAN_POST_ALERTS = "newsletter.plan_post_alerts"
SEND_DIGEST = "newsletter.send_digest"
SEND_EDITORIAL = "newsletter.send_editorial"
POLL_FEED = "newsletter.poll_feed"


class TaskQueue:
    """A thin producer: `send(name, *args)` puts one message on the broker, or logs why it could not.

    A lost enqueue loses nothing: beat's sweeper finds the rows the message would have named.
    """

    def __init__(self, broker_url: str | None) -> None:
        self._broker_url = broker_url
        self._celery: Celery | None = None

    def send(self, name: str, *args: Any) -> bool:
        """Enqueue task `name` with JSON arguments; False when the broker is unset or unreachable."""
        if not self._broker_url:
            log.warning("no broker configured; %s left for the sweeper", name)
            return False
        if self._celery is None:
            self._celery = Celery("newsletter-web", broker=self._broker_url, set_as_current=False)
            self._celery.conf.update(
                task_serializer="json",
                accept_content=["json"],
                broker_connection_retry_on_startup=False,
                broker_connection_max_retries=1,
                broker_transport_options={"max_retries": 1},
                task_default_queue=QUEUE,
            )
        try:
            self._celery.send_task(name, args=list(args))
        except Exception as exc:  # broker down: the sweeper will pick the row up
            log.warning("could not enqueue %s: %s", name, type(exc).__name__)
            return False
        return True
