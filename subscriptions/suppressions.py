"""The suppression list as editors see it: list and search, add an address, remove an entry.

Entries are kept as a hash of the normalized address (`readers.email_hash`), so an erased reader
stays erased: the list shows a hash prefix, and a search by address hashes the address first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import Subscriber, SubscriberStatus, Subscription, Suppression
from subscriptions.readers import email_hash, normalize_email, suppress

#: The reason recorded for an address an editor added (the editor's words go in `detail`).
EDITOR_REASON = "editor"
MAX_DETAIL = 500
#: How many characters of the hash the console and the API show.
HASH_PREFIX = 12


@dataclass(frozen=True, slots=True)
class SuppressionInfo:
    id: int
    hash_prefix: str
    reason: str
    detail: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    items: list[SuppressionInfo]
    total: int


def _info(row: Suppression) -> SuppressionInfo:
    return SuppressionInfo(
        row.id, row.email_hash[:HASH_PREFIX], row.reason, row.detail, row.created_at
    )


def list_suppressions(
    *,
    session: Session,
    email: str = "",
    reason: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> SuppressionPage:
    """Entries newest first; `email` finds the one entry for that address (hashed for the lookup)."""
    query = select(Suppression)
    if email.strip():
        query = query.where(Suppression.email_hash == email_hash(normalize_email(email)))
    if reason:
        query = query.where(Suppression.reason == reason)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Suppression.created_at.desc(), Suppression.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return SuppressionPage([_info(r) for r in rows], total)


def add_suppression(
    *, session: Session, email: str, detail: str, added_by: str = ""
) -> tuple[SuppressionInfo, bool]:
    """Suppress an address on an editor's word: no more email to it, on any topic, at once.

    Returns the entry and whether it is new (an address already suppressed keeps its first reason).
    """
    address = normalize_email(email)
    detail = " ".join(detail.split())
    if not detail:
        raise InvalidInput("give a reason (what happened, who asked)", field="reason")
    if len(detail) > MAX_DETAIL:
        raise InvalidInput(f"reason: at most {MAX_DETAIL} characters", field="reason")
    if added_by:
        detail = f"{detail} (added by {added_by})"
    created = suppress(session=session, email=address, reason=EDITOR_REASON, detail=detail)
    row = session.scalar(select(Suppression).where(Suppression.email_hash == email_hash(address)))
    if row is None:  # pragma: no cover - suppress() just wrote or found it
        raise NotFound("the suppression entry vanished")
    return _info(row), created


def remove_suppression(*, session: Session, suppression_id: int) -> SuppressionInfo:
    """Take an entry off the list. This sends nothing and resumes nothing: a reader with that
    address stays unsubscribed until they sign up again and confirm by email."""
    row = session.get(Suppression, suppression_id)
    if row is None:
        raise NotFound(f"no suppression {suppression_id}")
    info = _info(row)
    # The reader row (if any) holds the address in clear: find it by hash of its address.
    readers = [
        reader_id
        for reader_id, address in session.execute(
            select(Subscriber.id, Subscriber.email).where(
                Subscriber.status == SubscriberStatus.SUPPRESSED
            )
        )
        if email_hash(address) == row.email_hash
    ]
    if readers:
        session.execute(delete(Subscription).where(Subscription.subscriber_id.in_(readers)))
        session.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(readers))
            .values(status=SubscriberStatus.UNSUBSCRIBED)
        )
    session.delete(row)
    session.flush()
    return info
