"""What the scheduler does each tick: plan due digests, find work to send, reap abandoned claims."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, literal, or_, select
from sqlalchemy.orm import Session

from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Post,
    PostStatus,
    utcnow,
)
from subscriptions.settings import Settings
from worker.digests import planner

#: Parallel senders started for one digest at most (each claims its own batches).
MAX_SENDERS_PER_DIGEST = 4


@dataclass
class TickReport:
    planned: dict[int, int] = field(default_factory=dict)

    def add(self, result: planner.PlanResult | None) -> None:
        if result is not None:
            self.planned[result.digest_id] = self.planned.get(result.digest_id, 0) + result.planned


def plan_due(session: Session, settings: Settings, *, now: datetime | None = None) -> TickReport:
    """Daily and weekly digests whose period ended, alerts whose enqueue was lost, scheduled editions."""
    now = now or utcnow()
    report = TickReport()
    for kind in (DigestKind.DAILY, DigestKind.WEEKLY):
        for result in planner.plan_periodic(
            session, kind, now=now, hour=settings.digest_hour, weekday=settings.weekly_digest_day
        ):
            report.add(result)
    for post_id in unplanned_alerts(session, now=now):
        report.add(planner.plan_post_alerts(session, post_id, now=now))
    for digest_id in session.scalars(
        select(Digest.id).where(
            Digest.kind == DigestKind.EDITORIAL,
            Digest.status == DigestStatus.SCHEDULED,
            Digest.scheduled_at <= now,
        )
    ).all():
        report.add(planner.plan_editorial(session, digest_id, now=now))
    return report


def unplanned_alerts(session: Session, *, now: datetime) -> list[int]:
    """Posts released in the last two days whose alerts were never planned."""
    planned = select(literal(1)).where(
        Digest.kind == DigestKind.IMMEDIATE,
        Digest.run_key == literal("post:") + func.cast(Post.id, Digest.run_key.type),
    )
    return list(
        session.scalars(
            select(Post.id)
            .where(
                Post.status == PostStatus.PUBLISHED,
                Post.notify.is_(True),
                Post.released_at > now - timedelta(days=2),
                ~planned.exists(),
            )
            .order_by(Post.id)
            .limit(100)
        )
    )


def sendable(session: Session, *, batch_size: int, now: datetime | None = None) -> dict[int, int]:
    """Digests with deliveries due now, and how many senders each deserves.

    Walks the digests with pending work through the partial index of pending rows (one lookup per
    digest) and counts each one's due rows only up to what its senders could take, so a tick costs
    the same whether a digest has a thousand readers or a million.
    """
    now = now or utcnow()
    pending = Delivery.status == literal(DeliveryStatus.PENDING.value, literal_execute=True)
    due = or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now)
    enough = MAX_SENDERS_PER_DIGEST * batch_size
    work: dict[int, int] = {}
    digest_id = session.scalar(select(func.min(Delivery.digest_id)).where(pending))
    while digest_id is not None:
        cancelled = session.scalar(select(Digest.status).where(Digest.id == digest_id)) is (
            DigestStatus.CANCELLED
        )
        if not cancelled:
            rows = select(literal(1)).where(Delivery.digest_id == digest_id, pending, due)
            n = session.scalar(select(func.count()).select_from(rows.limit(enough).subquery()))
            if n:
                work[digest_id] = min(MAX_SENDERS_PER_DIGEST, math.ceil(n / batch_size))
        digest_id = session.scalar(
            select(func.min(Delivery.digest_id)).where(pending, Delivery.digest_id > digest_id)
        )
    return work
