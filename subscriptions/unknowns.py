"""Deliveries whose outcome is unknown: one notice per digest, and an admin's resend or close.

A delivery is `unknown` when its request may have reached a provider without idempotency keys and
no answer was recorded (a dropped connection, a worker killed after the hand-over): it was never
resent by itself, since that could mail the reader twice. An admin decides, from the console, the
API or the CLI, all through `settle_unknown`: resend them (each may then arrive twice) or close
them (they stay `unknown`, the notice is resolved, nothing is sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import Delivery, DeliveryStatus, Digest, DigestStatus, Notice, utcnow

UNKNOWN_OUTCOMES = "unknown_outcomes"
RESENT = "resent by an admin after an unknown outcome (the reader may get it twice)"
CLOSED = "closed by an admin: outcome unknown, not resent"

Action = Literal["resend", "close"]


@dataclass(frozen=True, slots=True)
class UnknownReport:
    """A digest's unknown deliveries: how many, and why (last error → count)."""

    digest_id: int
    count: int
    open: int
    reasons: dict[str, int]


def _prefix(digest_id: int) -> str:
    return f"Digest {digest_id}: "


def unknown_report(*, session: Session, digest_id: int) -> UnknownReport:
    """Count a digest's unknown deliveries by reason; `open` excludes the ones an admin closed."""
    rows = session.execute(
        select(Delivery.last_error, func.count())
        .where(Delivery.digest_id == digest_id, Delivery.status == DeliveryStatus.UNKNOWN)
        .group_by(Delivery.last_error)
    ).all()
    reasons = {str(error or "no detail"): int(n) for error, n in rows}
    total = sum(reasons.values())
    return UnknownReport(digest_id, total, total - reasons.get(CLOSED, 0), reasons)


def report_unknown(*, session: Session, digest_id: int) -> None:
    """Open (or refresh) the digest's notice of unknown outcomes, with the count and the reason."""
    found = unknown_report(session=session, digest_id=digest_id)
    notice = session.scalar(
        select(Notice).where(
            Notice.kind == UNKNOWN_OUTCOMES,
            Notice.resolved_at.is_(None),
            Notice.message.startswith(_prefix(digest_id), autoescape=True),
        )
    )
    if found.open == 0:
        if notice is not None:
            notice.resolved_at = utcnow()
        return
    reason = max(
        ((r, n) for r, n in found.reasons.items() if r != CLOSED), key=lambda item: item[1]
    )[0]
    message = (
        f"{_prefix(digest_id)}{found.open} deliveries have an unknown outcome ({reason}):"
        f" the provider may or may not have sent them. Resend them (a reader may get two copies)"
        f" or close them: `newsletter digest unknown {digest_id} --resend|--close`, the console's"
        f" digest report, or POST /api/v1/digests/{digest_id}/unknown."
    )[:2000]
    if notice is None:
        session.add(Notice(kind=UNKNOWN_OUTCOMES, message=message))
    else:
        notice.message = message
    session.flush()


def settle_unknown(*, session: Session, digest_id: int, action: str) -> int:
    """Resend or close a digest's open unknown deliveries; returns how many. Resending puts them
    back to pending in new batches (new idempotency keys) and the digest back to sending."""
    if action not in ("resend", "close"):
        raise InvalidInput("action must be 'resend' or 'close'", field="action")
    digest = session.get(Digest, digest_id, with_for_update=True)
    if digest is None:
        raise NotFound(f"no digest {digest_id}")
    still_open = (
        (Delivery.digest_id == digest_id)
        & (Delivery.status == DeliveryStatus.UNKNOWN)
        & (Delivery.last_error != CLOSED)
    )
    if action == "close":
        values: dict[str, object] = {"last_error": CLOSED}
    else:
        if digest.status is DigestStatus.CANCELLED:
            raise InvalidInput("the digest was cancelled: nothing is resent", field="action")
        values = {
            "status": DeliveryStatus.PENDING,
            "last_error": RESENT,
            "batch_id": None,
            "claimed_by": None,
            "next_attempt_at": None,
        }
    result = session.execute(
        update(Delivery).where(still_open).values(**values),
        execution_options={"preserve_rowcount": True},
    )
    changed = int(getattr(result, "rowcount", 0) or 0)
    if action == "resend" and changed:
        digest.status = DigestStatus.SENDING
        digest.finished_at = None
    session.flush()
    report_unknown(session=session, digest_id=digest_id)
    return changed
