"""CSV import of readers (subscriptions/imports.py) on a real database: the validation report,
exact counts on a generated file of 10,000 rows, and nothing half-written when a write fails."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import imports, readers
from subscriptions.db import transaction
from subscriptions.errors import InvalidInput
from subscriptions.models import (
    Consent,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
)
from tests.factories import add_demo_topics, migrated_sessions

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
HEADER = "email,topics,frequency,timezone,name\r\n"


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    made = migrated_sessions(database_url)
    with transaction(made) as session:
        add_demo_topics(session)
    yield made
    made.kw["bind"].dispose()


def run_import(sessions: sessionmaker[Session], text: str, **options: Any) -> imports.ImportReport:
    options.setdefault("consent", True)
    with transaction(sessions) as session:
        return imports.import_readers(
            session=session, text=text, editor="ed@example.org", now=NOW, **options
        )


def count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def generated_file(n: int = 10_000) -> tuple[str, dict[str, int], set[str]]:
    """`n` rows: every 10th a bad address, every 10th (offset 3) an unknown topic, every 10th
    (offset 6) a duplicate of the row above, every 50th (offset 8) a bad frequency; the rest valid.
    Returns the text, the expected counts and the valid addresses."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["email", "topics", "frequency", "timezone", "name"])
    expected = {"bad address": 0, "unknown topic": 0, "duplicate": 0, "bad frequency": 0}
    valid: set[str] = set()
    zones = ["UTC", "Europe/Berlin", "America/Mexico_City", ""]
    previous = ""
    for i in range(n):
        email = f"Reader.{i}@Example.org"
        topics = "mexico;migration" if i % 2 else "refugees|border-security:weekly"
        frequency = ["daily", "weekly", "immediate"][i % 3]
        if i % 10 == 0:
            email = f"reader {i} at example.org"
            expected["bad address"] += 1
        elif i % 10 == 3:
            topics = "mexico;no-such-topic"
            expected["unknown topic"] += 1
        elif i % 10 == 6:
            email = previous
            expected["duplicate"] += 1
        elif i % 50 == 8:
            frequency = "hourly"
            expected["bad frequency"] += 1
        else:
            valid.add(email.lower())
        writer.writerow([email, topics, frequency, zones[i % 4], f"Reader {i}"])
        previous = email
    return out.getvalue(), expected, valid


def test_ten_thousand_rows_import_exactly_the_valid_ones_in_seconds(
    sessions: sessionmaker[Session],
) -> None:
    text, expected, valid = generated_file()
    started = time.perf_counter()
    report = run_import(sessions, text, consent=True)
    elapsed = time.perf_counter() - started

    reasons: dict[str, int] = {}
    for issue in report.bad:
        key = next(k for k in expected if issue.reason.startswith(k))
        reasons[key] = reasons.get(key, 0) + 1
    assert (
        reasons
        == expected
        == {
            "bad address": 1000,
            "unknown topic": 1000,
            "duplicate": 1000,
            "bad frequency": 200,
        }
    )
    assert report.rows == 10_000
    assert report.valid == report.imported == len(valid) == 10_000 - 3200
    assert report.written and report.status == "active" and not report.skipped
    # Row numbers count the header as row 1.
    assert report.bad[0] == imports.RowIssue(2, "reader 0 at example.org", report.bad[0].reason)
    duplicate = next(i for i in report.bad if i.reason.startswith("duplicate"))
    assert duplicate.row == 8 and duplicate.reason == "duplicate of row 7"
    assert elapsed < 20, f"10,000 rows took {elapsed:.1f} s"

    with sessions() as session:
        stored = set(session.scalars(select(Subscriber.email)))
        assert stored == valid
        assert set(session.scalars(select(Subscriber.status))) == {SubscriberStatus.ACTIVE}
        # Two topics per row, one consent record per reader saying who imported them.
        assert session.scalar(select(func.count()).select_from(Subscription)) == 2 * len(valid)
        wording = set(session.scalars(select(Consent.wording)))
        assert wording == {"imported by ed@example.org on 2026-11-27"}
        assert session.scalar(select(func.count()).select_from(Consent)) == len(valid)
        one = session.scalar(select(Subscriber).where(Subscriber.email == "reader.2@example.org"))
        assert one is not None and one.timezone == "America/Mexico_City"
        subs = dict(
            session.execute(
                select(Topic.slug, Subscription.frequency)
                .join(Topic, Topic.id == Subscription.topic_id)
                .where(Subscription.subscriber_id == one.id)
            ).all()
        )
        assert subs == {"refugees": Frequency.IMMEDIATE, "border-security": Frequency.WEEKLY}

    # The same file again: every valid row is now "already a reader", nothing changes.
    again = run_import(sessions, text, consent=True)
    assert again.imported == 0 and not again.written
    assert len(again.skipped) == len(valid)
    assert {i.reason for i in again.skipped} == {"already a reader: left unchanged"}
    assert count(sessions, Subscriber) == len(valid)


def test_an_unexpected_failure_while_writing_leaves_nothing_half_written(
    sessions: sessionmaker[Session],
) -> None:
    run_import(sessions, HEADER + "first@example.org,mexico,daily,UTC,\r\n")
    text, _, valid = generated_file(2_000)
    engine = sessions.kw["bind"]

    def fail_on_consents(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CONSENTS"):
            raise RuntimeError("the disk is full")

    event.listen(engine, "before_cursor_execute", fail_on_consents)
    try:
        with pytest.raises(Exception, match="the disk is full"):
            run_import(sessions, text)
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_consents)
    # Readers and subscriptions were inserted before the failure: all rolled back.
    assert count(sessions, Subscriber) == 1
    assert count(sessions, Subscription) == 1
    assert count(sessions, Consent) == 1
    # And the same file imports whole once the fault is gone.
    assert run_import(sessions, text).imported == len(valid)
    assert count(sessions, Subscriber) == len(valid) + 1


def test_without_consent_readers_are_pending_and_asked_to_confirm(
    sessions: sessionmaker[Session],
) -> None:
    report = run_import(
        sessions, HEADER + "new@example.org,mexico;refugees,weekly,,\r\n", consent=False
    )
    assert report.status == "pending" and report.imported == 1
    assert "confirmation email" in report.summary
    with sessions() as session:
        reader = session.scalar(select(Subscriber))
        assert reader is not None and reader.status is SubscriberStatus.PENDING
        assert reader.confirmed_at is None and reader.timezone == "UTC"
        consent = session.scalar(select(Consent))
        assert consent is not None and consent.send_email and consent.confirmed_at is None
        assert consent.topics == ["mexico", "refugees"] and consent.frequency is Frequency.WEEKLY
    # Subscriptions come with the reader's own confirmation, not with the import.
    assert count(sessions, Subscription) == 0


def test_suppressed_and_known_addresses_are_skipped_and_reported(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as session:
        readers.suppress(session=session, email="gone@example.org", reason="hard_bounce")
        readers.subscribe(
            session=session,
            email="known@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
    text = (
        HEADER
        + "gone@example.org,mexico,daily,UTC,\r\n"
        + "KNOWN@example.org,refugees,weekly,UTC,\r\n"
        + "fresh@example.org,mexico,daily,Mars/Olympus,\r\n"
        + "fresh2@example.org,,daily,UTC,\r\n"
        + "fresh3@example.org,mexico,daily,Asia/Tokyo,Fresh\r\n"
    )
    report = run_import(sessions, text)
    assert [(i.row, i.reason) for i in report.skipped] == [
        (2, "suppressed: this address is never mailed"),
        (3, "already a reader: left unchanged"),
    ]
    assert [(i.row, i.reason) for i in report.bad] == [
        (4, "unknown time zone 'Mars/Olympus'"),
        (5, "no topics"),
    ]
    assert report.imported == 1
    with sessions() as session:
        known = session.scalar(select(Subscriber).where(Subscriber.email == "known@example.org"))
        assert known is not None and known.status is SubscriberStatus.PENDING


def test_strict_and_dry_run_write_nothing(sessions: sessionmaker[Session]) -> None:
    text = HEADER + "a@example.org,mexico,daily,UTC,\r\nnot-an-address,mexico,daily,UTC,\r\n"
    strict = run_import(sessions, text, strict=True)
    assert not strict.written and strict.imported == 1 and len(strict.bad) == 1
    dry = run_import(sessions, text, dry_run=True)
    assert not dry.written and dry.imported == 1
    assert count(sessions, Subscriber) == 0
    lenient = run_import(sessions, text)
    assert lenient.written and count(sessions, Subscriber) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing: email, topics, frequency"),
        ("address,topics\r\nx@example.org,mexico\r\n", "missing: email, frequency"),
        (HEADER, "no rows"),
        (
            'email,topics,frequency\r\n"a@example.org,mexico,daily\r\n' + "x" * 200_000,
            "not valid CSV",
        ),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole(
    sessions: sessionmaker[Session], text: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        run_import(sessions, text)


def test_export_has_the_import_columns_and_imports_back(sessions: sessionmaker[Session]) -> None:
    text = (
        HEADER
        + "a@example.org,mexico;refugees:weekly;migration,daily,Europe/Berlin,\r\n"
        + "b@example.org,border-security,immediate,UTC,\r\n"
    )
    run_import(sessions, text)
    with sessions() as session:
        exported = "".join(imports.export_csv(session=session))
        only_b = "".join(imports.export_csv(session=session, topic="border-security"))
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["email"] for r in rows] == ["a@example.org", "b@example.org"]
    assert rows[0]["topics"] == "mexico;migration;refugees:weekly"
    assert (rows[0]["frequency"], rows[0]["timezone"], rows[0]["status"]) == (
        "daily",
        "Europe/Berlin",
        "active",
    )
    assert len(list(csv.DictReader(io.StringIO(only_b)))) == 1
    # Into an empty database, the export imports back to the same readers.
    with transaction(sessions) as session:
        session.query(Subscriber).delete()
    again = run_import(sessions, exported)
    assert again.imported == 2 and not again.bad
    with sessions() as session:
        assert "".join(imports.export_csv(session=session)) == exported
