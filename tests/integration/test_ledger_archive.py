"""Archiving old deliveries (subscriptions/ledger_archive.py): exactly the eligible rows move, work
in flight stays, the audit, the digest's report and a reader's export still answer, and a run
interrupted between chunks (a kill -9 of the `newsletter ledger archive` process right after a
chunk's commit) leaves every delivery in exactly one place; a rerun completes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import audit, dashboard, digests, privacy
from subscriptions.db import transaction
from subscriptions.ledger_archive import (
    BLOCK,
    ArchivedEmail,
    archive_ledger,
    archived_emails,
    parse_age,
)
from subscriptions.models import (
    ArchivedDeliveries,
    ArchivedDigest,
    Batch,
    BatchStatus,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Event,
    Post,
    Subscriber,
    SubscriberStatus,
    delivery_posts,
)
from subscriptions.readers import email_hash
from tests.consoles import Console
from tests.factories import migrated_sessions
from tests.integration.conftest import newsletter

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=100)
#: Reader ids spread over several blocks of 1,024 (and one far away), as a real table's are.
IDS = [1, 2, 3, 700, 1023, 1024, 1500, 2047, 2048, 5000, 9000, 70_001]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    made = migrated_sessions(database_url)
    with transaction(made) as session:
        for i in IDS:
            session.add(Subscriber(id=i, email=f"r{i}@example.org", status=SubscriberStatus.ACTIVE))
        session.add(Post(id=1, identity="p1", title="One", released_at=OLD))
        session.add(Post(id=2, identity="p2", title="Two", released_at=OLD))
    yield made
    made.kw["bind"].dispose()


def digest(
    sessions: sessionmaker[Session],
    *,
    status: DigestStatus = DigestStatus.SENT,
    finished: datetime | None = OLD,
    readers: list[int] = IDS,
    outcome: DeliveryStatus = DeliveryStatus.SENT,
    odd: DeliveryStatus | None = None,
    batch: BatchStatus | None = None,
) -> int:
    """A digest with one delivery per reader (`outcome`; the first reader `odd` if given), each
    carrying posts 1 and 2, and a provider event naming the second reader's delivery."""
    with transaction(sessions) as session:
        row = Digest(
            kind=DigestKind.EDITORIAL,
            status=status,
            subject=f"Digest {status.value}",
            finished_at=finished,
            created_at=OLD - timedelta(hours=1),
        )
        session.add(row)
        session.flush()
        for n, reader in enumerate(readers):
            state = odd if (odd is not None and n == 0) else outcome
            d = Delivery(
                digest_id=row.id,
                subscriber_id=reader,
                status=state,
                attempts=1,
                created_at=OLD - timedelta(hours=1, microseconds=reader),
                sent_at=OLD if state is DeliveryStatus.SENT else None,
                provider_message_id=f"msg-{row.id}-{reader}"
                if state is DeliveryStatus.SENT
                else None,
                last_error="550 no such user" if state is DeliveryStatus.FAILED else "",
            )
            session.add(d)
            session.flush()
            session.execute(
                insert(delivery_posts), [{"delivery_id": d.id, "post_id": p} for p in (1, 2)]
            )
            if n == 1:
                session.add(
                    Event(
                        provider="postmark",
                        provider_event_id=f"ev-{d.id}",
                        type="delivered",
                        email_hash=email_hash(f"r{reader}@example.org"),
                        delivery_id=d.id,
                        occurred_at=OLD,
                    )
                )
        if batch is not None:
            session.add(
                Batch(digest_id=row.id, status=batch, idempotency_key=f"k{row.id}", attempts=1)
            )
        return row.id


def everywhere(sessions: sessionmaker[Session]) -> list[tuple[int, int, int, str]]:
    """Every delivery, in the ledger or in the archive: (delivery, digest, reader, status)."""
    with transaction(sessions) as session:
        live = [
            (d, g, r, s.value)
            for d, g, r, s in session.execute(
                select(Delivery.id, Delivery.digest_id, Delivery.subscriber_id, Delivery.status)
            )
        ]
        moved = [
            (a.delivery_id, a.digest_id, a.subscriber_id, a.status)
            for reader in IDS
            for a in archived_emails(session=session, subscriber_id=reader)
        ]
    return sorted(live + moved)


def ledger_rows(sessions: sessionmaker[Session], digest_id: int) -> int:
    with transaction(sessions) as session:
        return int(session.scalar(select(func.count()).where(Delivery.digest_id == digest_id)) or 0)


def test_only_finished_digests_older_than_the_cutoff_with_nothing_in_flight_move(
    sessions: sessionmaker[Session],
) -> None:
    old = digest(sessions, odd=DeliveryStatus.FAILED)
    cancelled = digest(sessions, status=DigestStatus.CANCELLED, outcome=DeliveryStatus.SUPPRESSED)
    recent = digest(sessions, finished=NOW - timedelta(days=10))
    unknown = digest(sessions, odd=DeliveryStatus.UNKNOWN)
    pending = digest(
        sessions, status=DigestStatus.SENDING, finished=None, outcome=DeliveryStatus.PENDING
    )
    claimed = digest(sessions, odd=DeliveryStatus.CLAIMED)
    waiting = digest(sessions, batch=BatchStatus.WAITING)
    before = everywhere(sessions)
    with transaction(sessions) as session:
        counts = digests.summarize(session=session, digest_id=old).counts

    report = archive_ledger(sessions=sessions, older_than=timedelta(days=90), chunk=BLOCK)

    assert sorted(report.digests) == [old, cancelled]
    assert report.moved == 2 * len(IDS)
    assert ledger_rows(sessions, old) == 0 and ledger_rows(sessions, cancelled) == 0
    for kept in (recent, unknown, pending, claimed, waiting):
        assert ledger_rows(sessions, kept) == len(IDS), kept
    assert everywhere(sessions) == before  # nothing lost, nothing twice
    with transaction(sessions) as session:
        # The report still adds up: counts come from archived_digests.
        assert digests.summarize(session=session, digest_id=old).counts == counts
        assert counts == {"failed": 1, "sent": len(IDS) - 1, "planned": len(IDS)}
        listed = {s.id: s.counts for s in digests.list_digests(session=session, limit=20)[0]}
        assert listed[old] == counts
        board = {r.id: r for r in dashboard.recent_digests(session=session, limit=20)}
        assert (board[old].sent, board[old].failed) == (len(IDS) - 1, 1)
        # Blocks of 1,024 reader ids: 0, 1, 4 (5000), 8 (9000) and 68 (70,001).
        blocks = session.scalars(
            select(ArchivedDeliveries.block).where(ArchivedDeliveries.digest_id == old)
        ).all()
        assert sorted(blocks) == [0, 1, 2, 4, 8, 68]
        # delivery_posts went with their deliveries.
        assert session.scalar(select(func.count()).select_from(delivery_posts)) == 2 * 5 * len(IDS)

    # Nothing left to do: a second run moves nothing.
    again = archive_ledger(sessions=sessions, older_than=timedelta(days=90), chunk=BLOCK)
    assert again.digests == [] and again.moved == 0


def test_the_audit_and_the_export_answer_for_an_archived_copy_as_before(
    sessions: sessionmaker[Session],
) -> None:
    old = digest(sessions, odd=DeliveryStatus.FAILED)
    reader = IDS[1]  # the reader whose delivery a provider event names
    with transaction(sessions) as session:
        before = audit.audit_reader(session=session, subscriber_id=reader)
        failed_before = audit.audit_reader(session=session, subscriber_id=IDS[0])
        export_before = privacy.export_reader(session=session, subscriber_id=reader)
    assert before.emails[0].events and before.emails[0].post_ids == [1, 2]

    archive_ledger(sessions=sessions, older_than=timedelta(days=90))

    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        after = audit.audit_reader(session=session, subscriber_id=reader)
        failed_after = audit.audit_reader(session=session, subscriber_id=IDS[0])
        export_after = privacy.export_reader(session=session, subscriber_id=reader)
    [email] = after.emails
    assert email.archived and email.digest_id == old
    assert {**asdict(email), "archived": False} == asdict(before.emails[0])
    assert after.posts == before.posts  # "sent in the editorial email ..." for posts 1 and 2
    assert after.events == before.events == []  # the event is on the email, not stray
    assert failed_after.emails[0].last_error == "550 no such user"
    assert failed_after.posts == failed_before.posts
    assert export_after == export_before


def test_the_console_and_the_api_show_an_archived_copy(
    sessions: sessionmaker[Session], database_url: str, redis_url: str, tmp_path: Path
) -> None:
    digest(sessions)
    archive_ledger(sessions=sessions, older_than=timedelta(days=90))
    console = Console(tmp_path, database_url, redis_url)
    try:
        got = console.api().get(f"/api/v1/readers/{IDS[1]}/audit")
        assert got.status_code == 200, got.text
        [email] = got.json()["emails"]
        assert email["archived"] is True and email["status"] == "sent"
        assert email["provider_message_id"] == f"msg-1-{IDS[1]}"
        assert [e["type"] for e in email["events"]] == ["delivered"]
        page = console.signed_in().get(f"/admin/readers/{IDS[1]}/audit")
        assert page.status_code == 200
        assert f"msg-1-{IDS[1]}" in page.text and "Digest sent" in page.text
    finally:
        console.close()


def test_an_interrupted_run_leaves_each_delivery_in_one_place_and_a_rerun_completes(
    sessions: sessionmaker[Session],
) -> None:
    first = digest(sessions)
    second = digest(sessions, odd=DeliveryStatus.FAILED)
    before = everywhere(sessions)

    class Interrupted(Exception):
        pass

    def stop(digest_id: int, moved: int) -> None:
        raise Interrupted  # right after the second chunk's commit: "ledger_chunk:2"

    calls = []

    def count(digest_id: int, moved: int) -> None:
        calls.append((digest_id, moved))
        if len(calls) == 2:
            stop(digest_id, moved)

    with pytest.raises(Interrupted):
        archive_ledger(
            sessions=sessions, older_than=timedelta(days=90), chunk=BLOCK, after_chunk=count
        )
    assert everywhere(sessions) == before
    with transaction(sessions) as session:
        partial = session.get(ArchivedDigest, first)
        assert partial is not None and partial.finished_at is None
        assert sum(partial.counts.values()) == 5 + 3  # blocks 0 and 1 (ids 1..1023, 1024..2047)
    assert 0 < ledger_rows(sessions, first) < len(IDS)

    report = archive_ledger(sessions=sessions, older_than=timedelta(days=90), chunk=BLOCK)
    assert report.digests == [first, second]
    assert everywhere(sessions) == before
    with transaction(sessions) as session:
        for digest_id in (first, second):
            row = session.get(ArchivedDigest, digest_id)
            assert row is not None and row.finished_at is not None
            assert sum(row.counts.values()) == len(IDS)


def test_a_kill_after_a_chunk_commit_then_a_rerun_through_the_cli(
    sessions: sessionmaker[Session], service_env: dict[str, str]
) -> None:
    """Step "ledger_chunk:2": SIGKILL of the `newsletter ledger archive` process right after its
    second chunk's commit. Only the client dies (the database server keeps running), so the fast,
    non-durable test PostgreSQL shows the same as a durable one would."""
    digest(sessions)
    before = everywhere(sessions)
    env = {**service_env, "NEWSLETTER_TEST_CRASH_AT": "ledger_chunk:2"}
    killed = newsletter(
        "ledger", "archive", "--older-than", "90d", "--chunk", "1024", env=env, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert everywhere(sessions) == before
    assert ledger_rows(sessions, 1) == len(IDS) - 8  # blocks 0 and 1 moved, then the kill

    done = newsletter("ledger", "archive", "--older-than", "90d", env=service_env)
    assert "1 digests archived, 4 deliveries moved" in done.stdout
    assert everywhere(sessions) == before and ledger_rows(sessions, 1) == 0


def test_bad_ages_are_refused_and_change_nothing(
    sessions: sessionmaker[Session], service_env: dict[str, str]
) -> None:
    digest(sessions)
    bad = newsletter("ledger", "archive", "--older-than", "soon", env=service_env, check=False)
    assert bad.returncode == 2 and "give an age such as 90d" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert ledger_rows(sessions, 1) == len(IDS)
    assert parse_age("90d") == timedelta(days=90) and parse_age("12h") == timedelta(hours=12)
    assert parse_age("30") == timedelta(days=30)
    for text in ("", "d", "-3d", "1.5d", "3w"):
        with pytest.raises(ValueError):
            parse_age(text)


def test_erasing_a_reader_removes_them_from_the_archive(sessions: sessionmaker[Session]) -> None:
    digest(sessions)
    archive_ledger(sessions=sessions, older_than=timedelta(days=90))
    with transaction(sessions) as session:
        privacy.erase_reader(session=session, subscriber_id=IDS[0])
    with transaction(sessions) as session:
        assert archived_emails(session=session, subscriber_id=IDS[0]) == []
        neighbours: list[ArchivedEmail] = archived_emails(session=session, subscriber_id=IDS[1])
        assert [a.subscriber_id for a in neighbours] == [IDS[1]]
        alone = archived_emails(session=session, subscriber_id=70_001)
        privacy.erase_reader(session=session, subscriber_id=70_001)
        assert len(alone) == 1
        # The last reader of a block takes the block's row with them.
        assert session.get(ArchivedDeliveries, (1, 70_001 // BLOCK)) is None


def test_a_real_worker_archives_on_beats_task_when_retention_is_set(
    sessions: sessionmaker[Session], service_env: dict[str, str], redis_url: str, start: Any
) -> None:
    from subscriptions.queue import TaskQueue
    from worker.app import BEAT_SCHEDULE

    assert BEAT_SCHEDULE["archive-ledger"]["task"] == "newsletter.archive_ledger"
    old = digest(sessions)
    recent = digest(sessions, finished=NOW - timedelta(days=10))
    start(
        ["worker", "--concurrency", "1"], {**service_env, "NEWSLETTER_LEDGER_RETENTION_DAYS": "90"}
    )
    TaskQueue(redis_url).send("newsletter.archive_ledger")
    deadline = time.monotonic() + 60
    while ledger_rows(sessions, old) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ledger_rows(sessions, old) == 0
    assert ledger_rows(sessions, recent) == len(IDS)
    with transaction(sessions) as session:
        assert digests.summarize(session=session, digest_id=old).counts["sent"] == len(IDS)


def test_a_digest_reopened_between_chunks_is_left_alone_from_there(
    sessions: sessionmaker[Session],
) -> None:
    """A delivery turning `unknown` (or pending again) after the run chose the digest: the chunk
    holding it is not moved, the digest is reported skipped, what moved before stays counted."""
    old = digest(sessions)
    before = everywhere(sessions)

    def reopen(digest_id: int, moved: int) -> None:
        with transaction(sessions) as session:
            session.execute(
                update(Delivery)
                .where(Delivery.digest_id == digest_id, Delivery.subscriber_id == 2048)
                .values(status=DeliveryStatus.UNKNOWN)
            )

    report = archive_ledger(
        sessions=sessions, older_than=timedelta(days=90), chunk=BLOCK, after_chunk=reopen
    )
    assert report.digests == [] and old in report.skipped
    assert report.moved == 5 + 3  # blocks 0 and 1; block 2 holds the reopened delivery
    after = everywhere(sessions)
    assert len(after) == len(before)
    assert ledger_rows(sessions, old) == len(IDS) - 8
    with transaction(sessions) as session:
        assert digests.summarize(session=session, digest_id=old).counts == {
            "sent": len(IDS) - 1,
            "unknown": 1,
            "planned": len(IDS),
        }
    # Not eligible while the unknown outcome waits for an admin.
    assert archive_ledger(sessions=sessions, older_than=timedelta(days=90)).moved == 0
