"""Prometheus metrics: counters that processes bump, and the fleet's state read at scrape time.

Two kinds, kept apart on purpose:

- **Counters** of things that happen in a process (emails by provider and outcome, feed polls, webhook
  events, rate-limiter waits). Web (uvicorn workers), Celery's prefork pool and beat are many processes, so
  prometheus-client runs in multiprocess mode: each process writes its counts to files in one folder
  (`NEWSLETTER_METRICS_DIR`, shared by every process of a host; docker-compose shares the var volume) and
  `GET /metrics` adds them up. The folder must be named before prometheus-client is first imported, which is
  why this module imports it only inside functions and `use_metrics_dir` runs first at every entry point.
- **State** (ledger rows by state, digest progress, sign-ups waiting in Redis, tasks waiting in the queue)
  is counted from the database and Redis when Prometheus scrapes, never kept in a process: it is then right
  whichever process did the work, and survives restarts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.models import Delivery, Digest, DigestStatus

if TYPE_CHECKING:
    from prometheus_client import Counter

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_counters: dict[str, Counter] = {}
_lock = threading.Lock()


def use_metrics_dir(folder: Path, *, clear: bool = False) -> None:
    """Put this process (and its children) in multiprocess mode, counting into `folder`.

    `clear` empties the folder first: only for a supervisor that starts every process writing there
    (`newsletter dev`); a process that shares the folder with others that are running must not.
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if clear:
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)


def _counter(name: str, documentation: str, labels: tuple[str, ...]) -> Counter:
    counter = _counters.get(name)
    if counter is None:
        from prometheus_client import Counter

        with _lock:
            counter = _counters.get(name)
            if counter is None:
                counter = Counter(name, documentation, labels)
                _counters[name] = counter
    return counter


def count_outcomes(provider: str, outcomes: list[str]) -> None:
    """Emails handed to `provider`, one outcome each (the provider layer's vocabulary)."""
    counter = _counter(
        "newsletter_emails", "Emails sent through a provider, by outcome.", ("provider", "outcome")
    )
    for outcome in set(outcomes):
        counter.labels(provider, outcome).inc(outcomes.count(outcome))


def count_feed_poll(status: str) -> None:
    """One feed poll ended with `status` (ok, not_modified, failed)."""
    _counter("newsletter_feed_polls", "Feed polls, by result.", ("result",)).labels(status).inc()


def count_webhook_events(provider: str, event_types: list[str]) -> None:
    """Verified webhook events arrived from `provider`, one type each."""
    counter = _counter(
        "newsletter_webhook_events",
        "Verified provider webhook events, by type.",
        ("provider", "type"),
    )
    for event_type in set(event_types):
        counter.labels(provider, event_type).inc(event_types.count(event_type))


def count_rate_limit_wait(seconds: float) -> None:
    """A sender waited `seconds` for the fleet-wide rate limiter."""
    if seconds > 0:
        _counter("newsletter_rate_limit_waits", "Waits for the fleet-wide rate limit.", ()).inc()
        _counter(
            "newsletter_rate_limit_wait_seconds", "Seconds spent waiting for the rate limit.", ()
        ).inc(seconds)


class _StateCollector:
    """Reads the fleet's state from the database and Redis at each scrape."""

    def __init__(
        self, sessions: sessionmaker[Session], redis_url: str | None, stream: str | None
    ) -> None:
        self._sessions = sessions
        self._redis_url = redis_url
        self._stream = stream

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ledger = GaugeMetricFamily(
            "newsletter_deliveries",
            "Ledger rows (one per reader per digest), by state.",
            labels=["state"],
        )
        progress = GaugeMetricFamily(
            "newsletter_digest_deliveries",
            "Ledger rows of each digest being planned or sent, by state.",
            labels=["digest", "state"],
        )
        with self._sessions() as session:
            for state, count in session.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ):
                ledger.add_metric([str(state)], float(count))
            running = select(Digest.id).where(
                Digest.status.in_([DigestStatus.PLANNING, DigestStatus.SENDING])
            )
            for digest_id, state, count in session.execute(
                select(Delivery.digest_id, Delivery.status, func.count())
                .where(Delivery.digest_id.in_(running))
                .group_by(Delivery.digest_id, Delivery.status)
            ):
                progress.add_metric([str(digest_id), str(state)], float(count))
        yield ledger
        yield progress
        yield from self._redis_state()

    def _redis_state(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from subscriptions.queue import QUEUE

        up = GaugeMetricFamily("newsletter_broker_up", "1 when Redis answered this scrape.")
        if not self._redis_url or not self._redis_url.startswith(("redis://", "rediss://")):
            return
        import redis

        client = redis.Redis.from_url(self._redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            backlog = int(client.xlen(self._stream)) if self._stream else 0
            queued = int(client.llen(QUEUE))
        except redis.RedisError:
            up.add_metric([], 0.0)
            yield up
            return
        finally:
            client.close()
        up.add_metric([], 1.0)
        yield up
        yield GaugeMetricFamily(
            "newsletter_intake_backlog",
            "Sign-ups answered 'check your email' and not yet applied to the database.",
            value=float(backlog),
        )
        queue = GaugeMetricFamily(
            "newsletter_queue_length", "Tasks waiting in the Celery queue.", labels=["queue"]
        )
        queue.add_metric([QUEUE], float(queued))
        yield queue


def render(sessions: sessionmaker[Session], redis_url: str | None, stream: str | None) -> bytes:
    """The text exposition of every metric: counters of all processes, plus the state right now."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        MultiProcessCollector(registry, path=folder)
    else:  # one process (tests, a bare `uvicorn`): this process's own counters
        for counter in list(_counters.values()):
            registry.register(counter)
    registry.register(_StateCollector(sessions, redis_url, stream))
    data: bytes = generate_latest(registry)
    return data
