"""The ledger's batches: claim, hand over, release, close and reap, each a few statements.

A batch is one provider request's worth of deliveries with one identity for all its tries (the
`batches` row, its idempotency key fixed at the first claim). The Sender (sender.py) drives one batch
through claim → hand over → send → record; the dispatcher's reaper takes back what a dead worker left.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from subscriptions.models import Batch, BatchStatus, Delivery, DeliveryStatus, utcnow
from subscriptions.unknowns import report_unknown
from worker.digests.planner import refresh_digest_status

#: A claim older than this, still unrecorded, was abandoned by a worker that died (the default of
#: NEWSLETTER_CLAIM_TIMEOUT_SECONDS; far longer than one batch takes).
CLAIM_TIMEOUT = timedelta(minutes=10)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


#: Compared as literals, not parameters, so that PostgreSQL matches the partial indexes on status
#: even in a generic (prepared) plan.
_PENDING = literal(DeliveryStatus.PENDING.value, literal_execute=True)
_CLAIMED = literal(DeliveryStatus.CLAIMED.value, literal_execute=True)
WAITING = literal(BatchStatus.WAITING.value, literal_execute=True)
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
    #: (delivery id, reader id) of each row, as the claim returned them: load_jobs need not read them.
    readers: tuple[tuple[int, int], ...] = ()


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
            .where(Batch.digest_id == digest_id, Batch.status == WAITING, due_batch)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if found is None:
            break
        batch_id, key, uncertain = found
        rows = session.execute(
            update(Delivery)
            .where(Delivery.batch_id == batch_id, Delivery.status == _PENDING)
            .values(
                status=DeliveryStatus.CLAIMED,
                claimed_at=now,
                claimed_by=WORKER_ID,
                attempts=Delivery.attempts + 1,
            )
            .returning(Delivery.id, Delivery.subscriber_id)
        ).all()
        ids = [r[0] for r in rows]
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
        return Claim(
            batch_id,
            token,
            key,
            sorted(ids),
            uncertain=bool(uncertain),
            retry=True,
            readers=tuple(sorted((int(d), int(r)) for d, r in rows)),
        )
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
    rows = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(pick.with_for_update(skip_locked=True)))
        .values(
            status=DeliveryStatus.CLAIMED,
            claimed_at=now,
            claimed_by=WORKER_ID,
            batch_id=batch_id,
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id, Delivery.subscriber_id)
    ).all()
    if not rows:
        session.execute(delete(Batch).where(Batch.id == batch_id))
        return None
    readers = tuple(sorted((int(d), int(r)) for d, r in rows))
    return Claim(batch_id, token, key, [d for d, _ in readers], readers=readers)


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


def claimed_digest(session: Session, claimed: Claim) -> int:
    digest_id = session.scalar(select(Batch.digest_id).where(Batch.id == claimed.batch_id))
    if digest_id is None:
        raise RuntimeError(f"batch {claimed.batch_id} vanished")
    return int(digest_id)


def close_batch(
    session: Session,
    batch_id: int,
    *,
    retry_at: datetime | None,
    uncertain: bool,
    done: bool = False,
) -> None:
    """After a try: the batch waits (one due time) while any row of it is pending, else is done.
    `done`: the caller knows none is pending (every row it claimed was recorded sent)."""
    left = not done and session.scalar(
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
