"""Notices for editors: what went wrong that a person must act on, and the global sending pause."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from subscriptions.models import Notice, utcnow

SENDING_PAUSED = "sending_paused"
REQUEST_WRONG = "request_wrong"


@dataclass(frozen=True, slots=True)
class NoticeInfo:
    id: int
    kind: str
    message: str
    created_at: datetime


def raise_notice(*, session: Session, kind: str, message: str) -> None:
    """Record a notice, unless the same kind and message is already open."""
    open_same = session.scalar(
        select(Notice.id).where(
            Notice.kind == kind, Notice.message == message[:2000], Notice.resolved_at.is_(None)
        )
    )
    if open_same is None:
        session.add(Notice(kind=kind, message=message[:2000]))
        session.flush()


def open_notices(*, session: Session) -> list[NoticeInfo]:
    rows = session.scalars(select(Notice).where(Notice.resolved_at.is_(None)).order_by(Notice.id))
    return [NoticeInfo(n.id, n.kind, n.message, n.created_at) for n in rows]


def sending_paused(*, session: Session) -> str | None:
    """Why all sending is paused, or None."""
    return session.scalar(
        select(Notice.message)
        .where(Notice.kind == SENDING_PAUSED, Notice.resolved_at.is_(None))
        .limit(1)
    )


def resolve(*, session: Session, kind: str | None = None, notice_id: int | None = None) -> int:
    """Close open notices of a kind (e.g. resume sending) or one notice by id."""
    query = update(Notice).where(Notice.resolved_at.is_(None))
    if kind is not None:
        query = query.where(Notice.kind == kind)
    if notice_id is not None:
        query = query.where(Notice.id == notice_id)
    return int(getattr(session.execute(query.values(resolved_at=utcnow())), "rowcount", 0) or 0)
