"""Archiving old deliveries: the ledger of finished digests folded into compact per-block rows.

Why archiving and not table partitioning (bench/README.md, "growth.py", has the figures): the
embedded default is SQLite, which has no partitions; on PostgreSQL a partitioned `deliveries`
would need the partition key in its primary key and in the unique (digest, reader) constraint, and
the foreign key of `events.delivery_id` could no longer point at it; and the audit's per-reader
lookup would probe every partition's index. Archiving works the same on both, keeps the hot table
(what the planner inserts into, the sender claims from, the reaper scans) as small as the digests
still in flight, and its indexes with it.

What moves: for a digest that is `sent` or `cancelled`, finished before the cutoff, with no
delivery `pending`, `claimed` or `unknown` and no batch `claimed` or `waiting` (the exactly-once
machinery's work in flight is never touched; an unknown outcome waits for an admin to settle it),
its deliveries move to `archived_deliveries`, one row per block of BLOCK reader ids: the block's
deliveries as columns of JSON, zlib-compressed (format VERSION, see `_pack`). They carry what the
audit shows per reader (status, attempts, planned and sent times, the provider's message id, the
last error, the posts carried and the provider events that named the delivery). `archived_digests`
keeps the digest's counts by status, so its report still adds up.

Crash safety: each chunk (up to `chunk` reader ids of one digest, whole blocks only) is one
transaction that writes its blocks, deletes its deliveries and adds its counts to the digest's
`archived_digests` row. An interruption between chunks leaves every delivery either in the ledger
or in the archive, never both, never neither; a rerun continues where the last commit ended.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.db import transaction
from subscriptions.models import (
    ArchivedDeliveries,
    ArchivedDigest,
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestStatus,
    Event,
    delivery_posts,
    utcnow,
)

#: Reader ids per archive row: a reader's archived copy of a digest is in row `id // BLOCK`.
BLOCK = 1024
#: The format of `archived_deliveries.data`; a reader of the archive refuses others.
VERSION = 1
#: Delivery states that are still work, or still waiting for a person: never archived.
IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.CLAIMED, DeliveryStatus.UNKNOWN)
#: Digest states after which no delivery changes any more (except by a provider's late event).
FINISHED = (DigestStatus.SENT, DigestStatus.CANCELLED)
#: Crash point for tests: NEWSLETTER_TEST_CRASH_AT=ledger_chunk[:N] kills this process right after
#: the Nth chunk's commit (see `_crash_point`).
CRASH_STEP = "ledger_chunk"


def parse_age(text: str) -> timedelta:
    """`90d`, `12h` or `30m` (or a bare number of days) → a timedelta; refuses anything else."""
    raw = text.strip().lower()
    units = {"d": "days", "h": "hours", "m": "minutes"}
    unit = units.get(raw[-1:], "") if raw else ""
    number = raw[:-1] if unit else raw
    if not number.isdigit():
        raise ValueError(f"{text!r}: give an age such as 90d, 12h or 30m")
    return timedelta(**{unit or "days": int(number)})


@dataclass
class ArchiveReport:
    """What one run did: digests finished and still moving, deliveries moved, digests skipped."""

    digests: list[int] = field(default_factory=list)
    moved: int = 0
    chunks: int = 0
    #: digest id → why it was left alone (in-flight work appeared while archiving).
    skipped: dict[int, str] = field(default_factory=dict)


def eligible_digests(*, session: Session, cutoff: datetime) -> list[int]:
    """Digests whose ledger may move: finished before `cutoff` with nothing in flight, plus any
    whose archiving began and was interrupted; oldest first."""
    open_rows = exists().where(Delivery.digest_id == Digest.id, Delivery.status.in_(IN_FLIGHT))
    open_batches = exists().where(
        Batch.digest_id == Digest.id, Batch.status.in_((BatchStatus.CLAIMED, BatchStatus.WAITING))
    )
    done = exists().where(
        ArchivedDigest.digest_id == Digest.id, ArchivedDigest.finished_at.is_not(None)
    )
    return list(
        session.scalars(
            select(Digest.id)
            .where(
                Digest.status.in_(FINISHED),
                Digest.finished_at.is_not(None),
                Digest.finished_at < cutoff,
                ~open_rows,
                ~open_batches,
                ~done,
            )
            .order_by(Digest.finished_at, Digest.id)
        )
    )


def archive_ledger(
    *,
    sessions: sessionmaker[Session],
    older_than: timedelta,
    now: datetime | None = None,
    chunk: int = 16 * BLOCK,
    limit: int | None = None,
    after_chunk: Callable[[int, int], None] | None = None,
) -> ArchiveReport:
    """Move the ledger of every eligible digest to the archive, `chunk` reader ids per commit.

    `limit` stops after that many chunks (a run bounded in time; the next continues).
    `after_chunk(digest_id, moved)` is called after each commit (progress, tests)."""
    if chunk < BLOCK:
        raise ValueError(f"chunk: at least {BLOCK} reader ids (one block)")
    span = chunk // BLOCK
    cutoff = (now or utcnow()) - older_than
    report = ArchiveReport()
    with transaction(sessions) as session:
        digest_ids = eligible_digests(session=session, cutoff=cutoff)
    for digest_id in digest_ids:
        try:
            with transaction(sessions) as session:
                if session.get(ArchivedDigest, digest_id) is None:
                    session.add(
                        ArchivedDigest(
                            digest_id=digest_id, started_at=utcnow(), counts={}, events={}
                        )
                    )
        except IntegrityError:
            pass  # another run (beat's, a person's) began on this digest at the same moment
        while True:
            if limit is not None and report.chunks >= limit:
                return report
            with transaction(sessions) as session:
                moved, why = _move_chunk(session, digest_id, span)
            if why:
                report.skipped[digest_id] = why
                break
            if moved is None:
                report.digests.append(digest_id)
                break
            report.moved += moved
            report.chunks += 1
            _crash_point()
            if after_chunk is not None:
                after_chunk(digest_id, moved)
    return report


def _move_chunk(session: Session, digest_id: int, span: int) -> tuple[int | None, str]:
    """Move the next `span` blocks of one digest's deliveries, in the caller's transaction.

    Returns (rows moved, "") or (None, "") when none were left (the digest is then marked
    finished), or (None, reason) when in-flight work was found and nothing was changed."""
    summary = session.execute(
        select(ArchivedDigest).where(ArchivedDigest.digest_id == digest_id).with_for_update()
    ).scalar_one()
    first = session.scalar(
        select(func.min(Delivery.subscriber_id)).where(Delivery.digest_id == digest_id)
    )
    if first is None:
        if summary.finished_at is None:
            summary.finished_at = utcnow()
        return None, ""
    lo = (first // BLOCK) * BLOCK
    hi = lo + span * BLOCK
    in_chunk = (
        Delivery.digest_id == digest_id,
        Delivery.subscriber_id >= lo,
        Delivery.subscriber_id < hi,
    )
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.status,
            Delivery.attempts,
            Delivery.created_at,
            Delivery.sent_at,
            Delivery.provider_message_id,
            Delivery.last_error,
        )
        .where(*in_chunk)
        .order_by(Delivery.subscriber_id)
        .with_for_update()
    ).all()
    if any(r.status in IN_FLIGHT for r in rows):
        return None, "a delivery is in flight again (resent or reopened): left in the ledger"
    posts: dict[int, list[int]] = {}
    for delivery_id, post_id in session.execute(
        select(delivery_posts.c.delivery_id, delivery_posts.c.post_id)
        .join(Delivery, Delivery.id == delivery_posts.c.delivery_id)
        .where(*in_chunk)
        .order_by(delivery_posts.c.post_id)
    ):
        posts.setdefault(delivery_id, []).append(post_id)
    events: dict[int, list[int]] = {}
    event_types: dict[str, int] = {}
    for event_id, delivery_id, type_ in session.execute(
        select(Event.id, Event.delivery_id, Event.type)
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(*in_chunk)
        .order_by(Event.id)
    ):
        events.setdefault(int(delivery_id or 0), []).append(event_id)
        event_types[type_] = event_types.get(type_, 0) + 1
    blocks: dict[int, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for r in rows:
        status = r.status.value
        counts[status] = counts.get(status, 0) + 1
        blocks.setdefault(r.subscriber_id // BLOCK, []).append(
            {
                "subscriber": r.subscriber_id,
                "delivery": r.id,
                "status": status,
                "attempts": r.attempts,
                "planned": _micros(r.created_at),
                "sent": _micros(r.sent_at),
                "message_id": r.provider_message_id,
                "error": r.last_error,
                "posts": posts.get(r.id, []),
                "events": events.get(r.id, []),
            }
        )
    for block, entries in blocks.items():
        existing = session.get(ArchivedDeliveries, (digest_id, block))
        if existing is not None:
            # Only if deliveries of an archived block came back (a digest reopened and finished
            # again): merge, so the block stays one row.
            merged = {e["subscriber"]: e for e in _unpack(existing.data)}
            merged.update({e["subscriber"]: e for e in entries})
            entries = sorted(merged.values(), key=lambda e: int(e["subscriber"]))
            existing.data = _pack(entries)
            existing.readers = len(entries)
        else:
            session.add(
                ArchivedDeliveries(
                    digest_id=digest_id, block=block, readers=len(entries), data=_pack(entries)
                )
            )
    session.flush()
    # delivery_posts rows go with their deliveries (migration 0008's triggers); events keep
    # themselves, their delivery_id set to NULL by the foreign key (the archive names them).
    session.execute(delete(Delivery).where(*in_chunk))
    total = dict(summary.counts)
    for status, n in counts.items():
        total[status] = int(total.get(status, 0)) + n
    summary.counts = total
    typed = dict(summary.events)
    for type_, n in event_types.items():
        typed[type_] = int(typed.get(type_, 0)) + n
    summary.events = typed
    summary.finished_at = None
    return len(rows), ""


# ------------------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class ArchivedEmail:
    """One reader's archived copy of one digest, as the ledger held it when it moved."""

    delivery_id: int
    digest_id: int
    subscriber_id: int
    status: str
    attempts: int
    planned_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None
    last_error: str
    post_ids: list[int]
    event_ids: list[int]


def archived_emails(*, session: Session, subscriber_id: int) -> list[ArchivedEmail]:
    """Every archived copy of any digest for one reader, newest delivery first: one indexed read
    of the reader's block, one small blob per archived digest."""
    found: list[ArchivedEmail] = []
    for digest_id, data in session.execute(
        select(ArchivedDeliveries.digest_id, ArchivedDeliveries.data).where(
            ArchivedDeliveries.block == subscriber_id // BLOCK
        )
    ):
        entry = _find(data, subscriber_id)
        if entry is not None:
            found.append(_email(digest_id, entry))
    found.sort(key=lambda e: e.delivery_id, reverse=True)
    return found


def archived_counts(*, session: Session, digest_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Archived deliveries by status, per digest (only digests with an archive)."""
    ids = list(digest_ids)
    if not ids:
        return {}
    return {
        digest_id: {str(k): int(v) for k, v in counts.items()}
        for digest_id, counts in session.execute(
            select(ArchivedDigest.digest_id, ArchivedDigest.counts).where(
                ArchivedDigest.digest_id.in_(ids)
            )
        )
    }


def archived_events(*, session: Session, digest_id: int) -> dict[str, int]:
    """Provider events, by type, that named a digest's archived deliveries."""
    found = session.scalar(
        select(ArchivedDigest.events).where(ArchivedDigest.digest_id == digest_id)
    )
    return {str(k): int(v) for k, v in (found or {}).items()}


def forget_reader(*, session: Session, subscriber_id: int) -> int:
    """Remove one reader's entries from every archived block (erasure); returns how many."""
    removed = 0
    for row in session.scalars(
        select(ArchivedDeliveries).where(ArchivedDeliveries.block == subscriber_id // BLOCK)
    ):
        entries = _unpack(row.data)
        kept = [e for e in entries if e["subscriber"] != subscriber_id]
        if len(kept) == len(entries):
            continue
        removed += len(entries) - len(kept)
        if kept:
            row.data = _pack(kept)
            row.readers = len(kept)
        else:
            session.delete(row)
    session.flush()
    return removed


# ------------------------------------------------------------------------------------ format

_COLUMNS = (
    "subscriber",
    "delivery",
    "status",
    "attempts",
    "planned",
    "sent",
    "message_id",
    "error",
    "posts",
    "events",
)


def _pack(entries: list[dict[str, Any]]) -> bytes:
    """Entries (sorted by subscriber) as zlib(JSON) of one list per column: like values sit
    together (statuses, times a few seconds apart, the same post lists), so they compress well."""
    body = {"v": VERSION, **{c: [e[c] for e in entries] for c in _COLUMNS}}
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def _body(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(zlib.decompress(data))
    if body.get("v") != VERSION:
        raise ValueError(f"archived deliveries: unknown format {body.get('v')!r}")
    return body


def _find(data: bytes, subscriber_id: int) -> dict[str, Any] | None:
    """One reader's entry of a block (entries are sorted by subscriber), without building the rest."""
    body = _body(data)
    readers = body["subscriber"]
    at = bisect.bisect_left(readers, subscriber_id)
    if at == len(readers) or readers[at] != subscriber_id:
        return None
    return {c: body[c][at] for c in _COLUMNS}


def _unpack(data: bytes) -> list[dict[str, Any]]:
    body = _body(data)
    columns = [body[c] for c in _COLUMNS]
    return [dict(zip(_COLUMNS, values, strict=True)) for values in zip(*columns, strict=True)]


def _email(digest_id: int, e: dict[str, Any]) -> ArchivedEmail:
    planned = _from_micros(e["planned"])
    assert planned is not None
    return ArchivedEmail(
        delivery_id=int(e["delivery"]),
        digest_id=digest_id,
        subscriber_id=int(e["subscriber"]),
        status=str(e["status"]),
        attempts=int(e["attempts"]),
        planned_at=planned,
        sent_at=_from_micros(e["sent"]),
        provider_message_id=e["message_id"],
        last_error=str(e["error"] or ""),
        post_ids=[int(p) for p in e["posts"]],
        event_ids=[int(i) for i in e["events"]],
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime | None) -> int | None:
    """Microseconds since the epoch: exact, unlike a float of seconds."""
    return None if value is None else (value - _EPOCH) // timedelta(microseconds=1)


def _from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=int(value))


def _crash_point() -> None:
    """Tests only: NEWSLETTER_TEST_CRASH_AT=ledger_chunk[:N] kills this process (SIGKILL) after
    the Nth chunk's commit, as an operator's kill -9 would."""
    raw = os.environ.get("NEWSLETTER_TEST_CRASH_AT", "")
    step, _, count = raw.partition(":")
    if step != CRASH_STEP:
        return
    _crash_seen[0] += 1
    if _crash_seen[0] == (int(count) if count else 1):
        os.kill(os.getpid(), signal.SIGKILL)


_crash_seen = [0]
