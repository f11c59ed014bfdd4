"""Readers in and out as CSV: an import validated whole before anything is written, and an export.

Columns: `email`, `topics` (slugs separated by `;` or `|`, each optionally `slug:frequency` to
override the row's frequency), `frequency` (immediate, daily or weekly), `timezone` (IANA name,
empty for UTC), `name` (accepted and ignored: readers have no name field), `language` (optional:
a language with a catalog, e.g. `en` or `es`; empty for the first of NEWSLETTER_LANGUAGES). Other
columns are ignored. Row numbers count the header as row 1, as a spreadsheet shows them.

An import reads and checks every row first, then writes every valid row in a fixed number of
statements inside the caller's transaction, so a failure while writing leaves nothing behind.
With consent, readers are imported active (subscriptions made, a consent record saying who
imported them and when); without it they are imported pending, and the worker sends each a
confirmation email (they get nothing else until they confirm). An address that is already a
reader is skipped and left as it is (a reader's own choices beat a list); a suppressed one is
skipped. Both are listed in the report.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput
from subscriptions.i18n import available_languages
from subscriptions.models import (
    Consent,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from subscriptions.readers import email_hash, normalize_email

COLUMNS = ("email", "topics", "frequency", "timezone", "name", "language")
REQUIRED = ("email", "topics", "frequency")
MAX_ROWS = 100_000
MAX_BYTES = 20 * 1024 * 1024
#: Rows per statement when writing an import and per query when exporting.
CHUNK = 2_000
_SEPARATORS = re.compile(r"[;|]")
_FREQUENCIES = {f.value: f for f in Frequency}


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One row not imported, and why."""

    row: int
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import found and did. `written` is False for a dry run or a refused strict import."""

    rows: int
    valid: int
    imported: int
    status: str
    written: bool
    bad: list[RowIssue] = field(default_factory=list)
    skipped: list[RowIssue] = field(default_factory=list)

    @property
    def summary(self) -> str:
        what = "imported" if self.written else "would import"
        text = (
            f"{self.rows} rows: {what} {self.imported} readers as {self.status}, "
            f"{len(self.skipped)} skipped, {len(self.bad)} refused"
        )
        if self.status == SubscriberStatus.PENDING.value:
            text += (
                " (pending readers get a confirmation email and nothing else until they confirm)"
            )
        return text


@dataclass(frozen=True, slots=True)
class _Row:
    row: int
    email: str
    topics: dict[str, Frequency]
    frequency: Frequency
    timezone: str
    language: str | None = None


def decode_csv(data: bytes) -> str:
    """The text of an uploaded file: UTF-8 (with or without a byte-order mark)."""
    if len(data) > MAX_BYTES:
        raise InvalidInput(f"the file is larger than {MAX_BYTES // 1024 // 1024} MB", field="file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(
            "the file is not UTF-8 text; save it as CSV UTF-8", field="file"
        ) from None


def _zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def _check_rows(text: str, topics: dict[str, int]) -> tuple[int, list[_Row], list[RowIssue]]:
    """Every row of the file checked on its own and against the rows above it."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InvalidInput(
            f"the file's first line must name the columns; missing: {', '.join(missing)} "
            f"(expected {', '.join(COLUMNS)})",
            field="file",
        )
    reader.fieldnames = header
    zones = _zones()
    languages = available_languages()
    good: list[_Row] = []
    bad: list[RowIssue] = []
    first_row: dict[str, int] = {}
    count = 0
    for count, raw in enumerate(reader, start=1):
        if count > MAX_ROWS:
            raise InvalidInput(f"the file has more than {MAX_ROWS} rows; split it", field="file")
        number = count + 1
        given = (raw.get("email") or "").strip()
        try:
            email = normalize_email(given)
        except InvalidInput as exc:
            bad.append(RowIssue(number, given[:320], f"bad address: {exc}"))
            continue
        frequency = _FREQUENCIES.get((raw.get("frequency") or "").strip().lower())
        if frequency is None:
            bad.append(RowIssue(number, email, "bad frequency (immediate, daily or weekly)"))
            continue
        zone = (raw.get("timezone") or "").strip() or "UTC"
        if zone not in zones:
            bad.append(RowIssue(number, email, f"unknown time zone {zone[:64]!r}"))
            continue
        language = (raw.get("language") or "").strip().lower() or None
        if language is not None and language not in languages:
            known = ", ".join(sorted(languages))
            bad.append(RowIssue(number, email, f"unknown language {language[:16]!r} ({known})"))
            continue
        chosen: dict[str, Frequency] = {}
        problem = ""
        for part in _SEPARATORS.split(raw.get("topics") or ""):
            slug, _, override = part.strip().lower().partition(":")
            if not slug:
                continue
            if slug not in topics:
                problem = f"unknown topic {slug[:64]!r}"
                break
            if override and override not in _FREQUENCIES:
                problem = f"bad frequency {override[:20]!r} for topic {slug}"
                break
            chosen[slug] = _FREQUENCIES[override] if override else frequency
        if not problem and not chosen:
            problem = "no topics"
        if problem:
            bad.append(RowIssue(number, email, problem))
            continue
        if email in first_row:
            bad.append(RowIssue(number, email, f"duplicate of row {first_row[email]}"))
            continue
        first_row[email] = number
        good.append(_Row(number, email, chosen, frequency, zone, language))
    return count, good, bad


def import_readers(
    *,
    session: Session,
    text: str,
    consent: bool,
    editor: str,
    strict: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ImportReport:
    """Import readers from CSV text: check every row, then write every valid one at once.

    `strict`: write nothing when any row is refused. `dry_run`: check and report only.
    """
    now = now or utcnow()
    topics = {
        slug: topic_id
        for slug, topic_id in session.execute(
            select(Topic.slug, Topic.id).where(Topic.archived_at.is_(None))
        )
    }
    try:
        rows, good, bad = _check_rows(text, topics)
    except csv.Error as exc:
        raise InvalidInput(f"the file is not valid CSV: {exc}", field="file") from None
    if rows == 0:
        raise InvalidInput("the file has no rows under its header", field="file")
    skipped: list[RowIssue] = []
    suppressed: set[str] = set()
    known: set[str] = set()
    emails = [r.email for r in good]
    for start in range(0, len(emails), CHUNK):
        part = emails[start : start + CHUNK]
        hashes = {email_hash(e): e for e in part}
        suppressed.update(
            hashes[h]
            for h in session.scalars(
                select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes)))
            )
        )
        known.update(session.scalars(select(Subscriber.email).where(Subscriber.email.in_(part))))
    fresh = []
    for r in good:
        if r.email in suppressed:
            skipped.append(RowIssue(r.row, r.email, "suppressed: this address is never mailed"))
        elif r.email in known:
            skipped.append(RowIssue(r.row, r.email, "already a reader: left unchanged"))
        else:
            fresh.append(r)
    status = SubscriberStatus.ACTIVE if consent else SubscriberStatus.PENDING
    write = not dry_run and not (strict and bad) and bool(fresh)
    if write:
        _write(session, fresh, topics, status=status, editor=editor, now=now)
    return ImportReport(
        rows=rows,
        valid=len(good),
        imported=len(fresh),
        status=status.value,
        written=write,
        bad=bad,
        skipped=sorted(skipped, key=lambda i: i.row),
    )


def _write(
    session: Session,
    rows: list[_Row],
    topics: dict[str, int],
    *,
    status: SubscriberStatus,
    editor: str,
    now: datetime,
) -> None:
    """Three set-based inserts (readers, their subscriptions when active, consent records)."""
    active = status is SubscriberStatus.ACTIVE
    ids: dict[str, int] = {}
    for start in range(0, len(rows), CHUNK):
        created = session.execute(
            insert(Subscriber).returning(Subscriber.email, Subscriber.id),
            [
                {
                    "email": r.email,
                    "timezone": r.timezone,
                    "language": r.language,
                    "status": status,
                    "created_at": now,
                    "confirmed_at": now if active else None,
                }
                for r in rows[start : start + CHUNK]
            ],
        )
        ids.update({email: subscriber_id for email, subscriber_id in created})
    if active:
        subscriptions = [
            {
                "subscriber_id": ids[r.email],
                "topic_id": topics[slug],
                "frequency": frequency,
                "created_at": now,
                "updated_at": now,
            }
            for r in rows
            for slug, frequency in r.topics.items()
        ]
        for start in range(0, len(subscriptions), CHUNK):
            session.execute(insert(Subscription), subscriptions[start : start + CHUNK])
    wording = f"imported by {editor} on {now.date().isoformat()}"
    if not active:
        wording += "; not confirmed: the reader was asked to confirm by email"
    consents = [
        {
            "subscriber_id": ids[r.email],
            "created_at": now,
            "ip": None,
            "source": "import",
            "user_agent": "",
            "topics": sorted(r.topics),
            "wording": wording,
            "frequency": r.frequency,
            "timezone": r.timezone,
            # Pending readers get the usual confirmation email (the worker's sweeper sends it).
            "send_email": not active,
            "confirmed_at": now if active else None,
        }
        for r in rows
    ]
    for start in range(0, len(consents), CHUNK):
        session.execute(insert(Consent), consents[start : start + CHUNK])
    session.flush()


def export_csv(
    *,
    session: Session,
    status: SubscriberStatus | None = None,
    topic: str | None = None,
    query: str = "",
) -> Iterator[str]:
    """Readers as CSV text in chunks (the import's columns plus `status`), read by keyset.

    A reader's topics at another frequency than their most common one carry it (`slug:daily`).
    """
    yield _line([*COLUMNS, "status"])
    last = 0
    while True:
        stmt = (
            select(
                Subscriber.id,
                Subscriber.email,
                Subscriber.timezone,
                Subscriber.status,
                Subscriber.language,
            )
            .where(Subscriber.id > last)
            .order_by(Subscriber.id)
            .limit(CHUNK)
        )
        if status is not None:
            stmt = stmt.where(Subscriber.status == status)
        if query:
            stmt = stmt.where(func.lower(Subscriber.email).contains(query.lower(), autoescape=True))
        if topic:
            stmt = stmt.where(
                select(Subscription.id)
                .join(Topic, Topic.id == Subscription.topic_id)
                .where(Subscription.subscriber_id == Subscriber.id, Topic.slug == topic)
                .exists()
            )
        readers = session.execute(stmt).all()
        if not readers:
            return
        chosen: dict[int, list[tuple[str, Frequency]]] = {}
        for subscriber_id, slug, frequency in session.execute(
            select(Subscription.subscriber_id, Topic.slug, Subscription.frequency)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id.in_([r[0] for r in readers]))
            .order_by(Subscription.subscriber_id, Topic.slug)
        ):
            chosen.setdefault(subscriber_id, []).append((slug, frequency))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for subscriber_id, email, zone, state, language in readers:
            subs = chosen.get(subscriber_id, [])
            frequencies = [f for _, f in subs]
            main = max(Frequency, key=frequencies.count) if subs else Frequency.DAILY
            cells = ";".join(s if f is main else f"{s}:{f.value}" for s, f in subs)
            writer.writerow(
                [_cell(email), cells, main.value, zone, "", language or "", state.value]
            )
        yield out.getvalue()
        last = readers[-1][0]


def _cell(value: str) -> str:
    # A cell a spreadsheet would run as a formula gets a leading apostrophe (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _line(cells: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()
