"""The sending side of the ledger end to end: planner → Sender → the outbox provider → .eml files.

A real database (SQLite, or PostgreSQL with NEWSLETTER_TEST_DATABASE_URL), the real renderer and
templates, and the outbox provider writing files that are read back and parsed like a mail client
would: headers (List-Unsubscribe with the reader's one-click URL and a mailto, List-Unsubscribe-Post,
List-Id, Message-ID, the delivery id), the text and HTML alternatives, subjects per kind, the footer's
reasons line; readers who leave between planning and sending; digest counts and status; the reaper;
retries; an editor's digest with preview, test send and cancel.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage as MIMEMessage
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import Body, DigestRenderer, ReaderParts
from mail.providers import (
    EmailMessage,
    OutboxProvider,
    Outcome,
    Provider,
    SendResult,
    provider_from_url,
    read_outbox,
)
from mail.rendering import RenderedEmail
from subscriptions import digests as editorial
from subscriptions import readers
from subscriptions.db import transaction
from subscriptions.editorial import preview, send_test
from subscriptions.errors import InvalidInput
from subscriptions.models import (
    Batch,
    Delivery,
    Digest,
    DigestKind,
    Frequency,
    Post,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from subscriptions.posts import add_post
from subscriptions.settings import Settings
from subscriptions.templating import template_environment
from subscriptions.tokens import Purpose, TokenSigner
from tests.factories import (
    SECRET,
    add_demo_topics,
    make_settings,
    migrated_sessions,
    subscribed_since,
)
from worker import dispatch
from worker.digests import planner
from worker.digests.sender import CLAIM_TIMEOUT, Sender, claim, digest_counts, hand_over, reap

pytestmark = pytest.mark.integration

BASE = "https://news.example.org"
DAILY, WEEKLY, IMMEDIATE = Frequency.DAILY, Frequency.WEEKLY, Frequency.IMMEDIATE
# A Monday; every reader here is in UTC, so the daily send is 07:00 UTC.
MONDAY = datetime(2024, 6, 10, tzinfo=UTC)
signer = TokenSigner(SECRET)


@dataclass
class Site:
    """A migrated database with the demo topics, settings, the outbox provider and a Sender."""

    sessions: sessionmaker[Session]
    settings: Settings
    outbox: Path
    provider: Provider
    renderer: DigestRenderer
    sender: Sender

    def reader(self, email: str, frequencies: dict[str, Frequency], zone: str = "UTC") -> int:
        """A confirmed reader, through the same operations as the web form and preference centre."""
        with transaction(self.sessions) as session:
            slugs = list(frequencies)
            signup = readers.subscribe(
                session=session, email=email, topics=slugs, frequency=DAILY, timezone=zone
            )
            assert signup.subscriber_id is not None and signup.consent_id is not None
            readers.confirm(
                session=session,
                consent_id=signup.consent_id,
                subscriber_id=signup.subscriber_id,
                token_version=1,
            )
            readers.update_preferences(
                session=session,
                subscriber_id=signup.subscriber_id,
                frequencies=dict(frequencies),
                timezone=zone,
            )
            subscribed_since(session, signup.subscriber_id)
            return signup.subscriber_id

    def post(
        self,
        title: str,
        topics: list[str],
        released: datetime,
        *,
        link: str | None = None,
        summary: str = "",
    ) -> int:
        with transaction(self.sessions) as session:
            info = add_post(
                session=session,
                title=title,
                link=link or f"https://example.org/{title.lower().replace(' ', '-')}",
                topics=topics,
                summary=summary or f"<p>What to know about {title}.</p>",
            )
            post = session.get(Post, info.id)
            assert post is not None
            post.released_at = post.published_at = released
            return info.id

    def plan(self, kind: DigestKind, now: datetime) -> int:
        """Plan the run of `kind` due at `now`; its digest id (one time zone here)."""
        with transaction(self.sessions) as session:
            [result] = planner.plan_periodic(session, kind, now=now)
        return result.digest_id

    def alerts(self, post_id: int, now: datetime) -> int:
        with transaction(self.sessions) as session:
            result = planner.plan_post_alerts(session, post_id, now=now)
        assert result is not None
        return result.digest_id

    def send_all(self, digest_id: int, sender: Sender | None = None) -> int:
        """send_batch until nothing is claimed; how many deliveries were claimed in all."""
        total = 0
        while True:
            report = (sender or self.sender).send_batch(digest_id)
            if report.claimed == 0:
                return total
            total += report.claimed

    def mail(self) -> list[MIMEMessage]:
        return read_outbox(self.outbox)

    def statuses(self, digest_id: int) -> dict[str, str]:
        with self.sessions() as session:
            rows = session.execute(
                select(Subscriber.email, Delivery.status)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.digest_id == digest_id)
            ).all()
        return {email: status.value for email, status in rows}

    def delivery_id(self, digest_id: int, reader_id: int) -> int:
        with self.sessions() as session:
            found = session.scalar(
                select(Delivery.id).where(
                    Delivery.digest_id == digest_id, Delivery.subscriber_id == reader_id
                )
            )
        assert found is not None
        return found


def make_site(tmp_path: Path, database_url: str, provider: Provider | None = None) -> Site:
    sessions = migrated_sessions(database_url)
    with transaction(sessions) as session:
        add_demo_topics(session)
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        base_url=BASE,
        list_unsubscribe_mailto="unsubscribe@example.org",
    )
    outbox = tmp_path / "outbox"
    provider = provider or provider_from_url(f"outbox://{outbox}")
    renderer = DigestRenderer(template_environment(settings, "email"))
    sender = Sender(sessions, provider, renderer, settings, signer)
    return Site(sessions, settings, outbox, provider, renderer, sender)


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Site:
    return make_site(tmp_path, database_url)


def parts(message: MIMEMessage) -> tuple[str, str]:
    """The text and HTML alternatives, checking they come in that order in multipart/alternative."""
    assert message.get_content_type() == "multipart/alternative"
    found = [(p.get_content_type(), p.get_content()) for p in message.iter_parts()]
    assert [kind for kind, _ in found] == ["text/plain", "text/html"]
    return found[0][1], found[1][1]


def token_of(url: str, purpose: Purpose) -> int:
    """The reader id a signed link is for (the link must verify for `purpose`)."""
    parts_ = urlsplit(url)
    assert f"{parts_.scheme}://{parts_.netloc}" == BASE
    prefix = f"/{purpose.value}/"
    assert parts_.path.startswith(prefix), url
    return signer.verify(purpose, parts_.path[len(prefix) :], max_age_seconds=None).subscriber_id


# ------------------------------------------------------------------------------------ digests


def test_daily_digest_end_to_end(site: Site) -> None:
    """Plan, send and read back a daily run: one email per reader with their posts, the list headers,
    the reasons line, the reader's own links; readers who leave, are suppressed or pause between
    planning and sending get nothing (suppressed); the run ends "sent"; sending again sends nothing."""
    ana = site.reader("ana@example.org", {"border-security": DAILY, "mexico": WEEKLY})
    ben = site.reader("ben@example.org", {"mexico": DAILY, "migration": DAILY})
    cal = site.reader("cal@example.org", {"border-security": DAILY})
    site.reader("dee@example.org", {"border-security": DAILY})
    site.reader("eve@example.org", {"border-security": DAILY})
    site.post("The wall", ["border-security"], MONDAY + timedelta(hours=9))
    site.post("Trade talks", ["mexico", "migration"], MONDAY + timedelta(hours=10))
    site.post("Camps", ["refugees"], MONDAY + timedelta(hours=11))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=7, minutes=5))
    with transaction(site.sessions) as session:
        readers.unsubscribe(session=session, subscriber_id=cal)
        readers.suppress(session=session, email="eve@example.org", reason="complaint")
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == "dee@example.org")
            .values(paused_until=utcnow() + timedelta(days=7))
        )

    assert site.send_all(digest_id) == 5
    messages = {m["To"]: m for m in site.mail()}
    assert sorted(messages) == ["ana@example.org", "ben@example.org"]
    assert site.statuses(digest_id) == {
        "ana@example.org": "sent",
        "ben@example.org": "sent",
        "cal@example.org": "suppressed",
        "dee@example.org": "suppressed",
        "eve@example.org": "suppressed",
    }

    message_ids = set()
    for reader_id, email, title, reasons in (
        (ana, "ana@example.org", "The wall", "You get Border Security daily and Mexico weekly."),
        (ben, "ben@example.org", "Trade talks", "You get Mexico daily and Migration daily."),
    ):
        m = messages[email]
        assert m["From"] == "Institute Updates <news@example.org>"
        assert m["Subject"] == "Institute Updates: 1 new post today"
        # Folded after the colon when long (valid RFC 5322): the unfolded value starts with a space.
        listed = re.fullmatch(r"<([^>]+)>, <([^>]+)>", m["List-Unsubscribe"].strip())
        assert listed is not None, m["List-Unsubscribe"]
        unsubscribe, mailto = listed.groups()
        assert token_of(unsubscribe, Purpose.UNSUBSCRIBE) == reader_id
        # The mailto's subject carries the reader's signed unsubscribe token, not their id.
        assert mailto == f"mailto:unsubscribe@example.org?subject=unsubscribe-{unsubscribe.rsplit('/', 1)[1]}"  # fmt: skip
        assert not mailto.endswith(f"unsubscribe-{reader_id}")
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert m["List-Id"] == '"Institute Updates" <newsletter.news.example.org>'
        assert m["X-Newsletter-Delivery-Id"] == str(site.delivery_id(digest_id, reader_id))
        assert re.fullmatch(r"<[^@<>\s]+@news\.example\.org>", m["Message-ID"])
        message_ids.add(m["Message-ID"])
        text, html = parts(m)
        assert title in text and title in html
        assert text.count(reasons) == 1 and html.count(reasons) == 1
        manage = re.search(r"Change topics or how often: (\S+)", text)
        assert manage is not None and token_of(manage.group(1), Purpose.MANAGE) == reader_id
        assert f'href="{manage.group(1)}"' in html
        assert f"Unsubscribe: {unsubscribe}" in text and f'href="{unsubscribe}"' in html
        assert "Camps" not in text  # not their topic
    assert len(message_ids) == 2

    with site.sessions() as session:
        summary = editorial.summarize(session=session, digest_id=digest_id)
        counts = digest_counts(session, digest_id)
        digest = session.get(Digest, digest_id)
        assert digest is not None and digest.finished_at is not None
    assert summary.status == "sent"
    assert summary.counts == counts == {"sent": 2, "suppressed": 3, "planned": 5}
    assert site.sender.send_batch(digest_id).claimed == 0
    assert len(site.mail()) == 2


def test_weekly_digest_subject_counts_posts_once_grouped_by_topic(site: Site) -> None:
    """ "{Site}: 3 new posts this week", the posts under their topics, a post in two topics once."""
    site.reader("wes@example.org", {"mexico": WEEKLY, "migration": WEEKLY})
    site.post("Remittances", ["mexico"], MONDAY - timedelta(days=3))
    site.post("Asylum rules", ["migration"], MONDAY - timedelta(days=2))
    site.post("Border towns", ["mexico", "migration"], MONDAY - timedelta(days=1))
    digest_id = site.plan(DigestKind.WEEKLY, MONDAY + timedelta(hours=7))
    site.send_all(digest_id)
    [m] = site.mail()
    assert m["Subject"] == "Institute Updates: 3 new posts this week"
    text, html = parts(m)
    assert text.startswith("3 new posts this week:")
    assert text.index("== Mexico ==") < text.index("Border towns") < text.index("Remittances")
    assert text.index("Remittances") < text.index("== Migration ==") < text.index("Asylum rules")
    assert text.count("https://example.org/border-towns") == 1
    assert html.count('href="https://example.org/border-towns"') == 1
    assert "You get Mexico weekly and Migration weekly." in text


def test_alert_once_per_reader_with_the_matching_topic_in_the_subject(site: Site) -> None:
    """An immediate alert: "{Topic}: {title}", one email even when two of the reader's topics match."""
    both = site.reader("both@example.org", {"border-security": IMMEDIATE, "mexico": IMMEDIATE})
    site.reader("mx@example.org", {"mexico": IMMEDIATE})
    site.reader("digest@example.org", {"border-security": DAILY})
    post = site.post("Crossings fall", ["border-security", "mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.alerts(post, MONDAY + timedelta(hours=9))
    assert site.alerts(post, MONDAY + timedelta(hours=9, minutes=1)) == digest_id  # rerun: same run
    site.send_all(digest_id)
    subjects = {m["To"]: m["Subject"] for m in site.mail()}
    assert subjects == {
        "both@example.org": "Border Security: Crossings fall",
        "mx@example.org": "Mexico: Crossings fall",
    }
    text, _ = parts(next(m for m in site.mail() if m["To"] == "both@example.org"))
    assert text.startswith("A new post in Border Security:")
    assert "You get Border Security as it happens and Mexico as it happens." in text
    assert site.statuses(digest_id) == {"both@example.org": "sent", "mx@example.org": "sent"}
    assert site.delivery_id(digest_id, both)


# ------------------------------------------------------------------------------------ crashes


def test_reaper_releases_an_abandoned_claim_and_never_resends_a_handed_over_one(site: Site) -> None:
    """Claimed and abandoned before the provider was called: pending again, then sent once. Claimed,
    handed over, abandoned (outcome unknown) with a provider without idempotency keys: unknown, never
    resent. A fresh claim is left alone."""
    a = site.reader("a@example.org", {"mexico": DAILY})
    b = site.reader("b@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    handed, released = site.delivery_id(digest_id, b), site.delivery_id(digest_id, a)
    now = utcnow()
    with transaction(site.sessions) as session:
        first = claim(session, digest_id, 1, now=now - CLAIM_TIMEOUT - timedelta(minutes=1))
        second = claim(session, digest_id, 1, now=now - CLAIM_TIMEOUT - timedelta(minutes=1))
        assert first is not None and second is not None
        assert (first.ids, second.ids) == ([released], [handed]) and not first.retry
        assert hand_over(session, second, now=now - CLAIM_TIMEOUT - timedelta(minutes=1))
    with transaction(site.sessions) as session:
        assert reap(session, supports_idempotency=False, now=now - timedelta(minutes=5)) == 0
    with transaction(site.sessions) as session:
        assert reap(session, supports_idempotency=False, now=now) == 1
    assert site.statuses(digest_id) == {"a@example.org": "pending", "b@example.org": "unknown"}
    assert site.send_all(digest_id) == 1
    assert site.send_all(digest_id) == 0
    assert [m["To"] for m in site.mail()] == ["a@example.org"]
    assert site.statuses(digest_id) == {"a@example.org": "sent", "b@example.org": "unknown"}
    with site.sessions() as session:
        summary = editorial.summarize(session=session, digest_id=digest_id)
        attempts = session.scalar(select(Delivery.attempts).where(Delivery.id == released))
    assert summary.status == "sent"
    assert summary.counts == {"sent": 1, "unknown": 1, "planned": 2}
    assert attempts == 1  # the abandoned claim never reached the provider: not a try


def unsubscribe_token(site: Site, reader_id: int) -> str:
    with site.sessions() as session:
        version = session.scalar(select(Subscriber.token_version).where(Subscriber.id == reader_id))
    assert version is not None
    return signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=version)


class Killed(BaseException):
    """Stands for the worker process dying (not an Exception: nothing may catch it)."""


class DyingRenderer(DigestRenderer):
    """Dies while personalizing the email of one reader."""

    def __init__(self, site: Site, victim: str) -> None:
        super().__init__(template_environment(site.settings, "email"))
        self.victim = victim

    def personalize(self, body: Body, parts: ReaderParts) -> RenderedEmail:
        if f"/{self.victim}" in parts.unsubscribe_url:
            raise Killed
        return super().personalize(body, parts)


def test_a_worker_that_dies_before_the_hand_over_leaves_its_batch_pending(site: Site) -> None:
    """Claim and hand-over are one write, committed only once the batch is rendered: a worker that
    dies before that leaves nothing claimed (no reaper needed), and the batch is sent once later."""
    a = site.reader("a@example.org", {"mexico": DAILY})
    site.reader("b@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    victim = unsubscribe_token(site, a)
    dying = Sender(site.sessions, site.provider, DyingRenderer(site, victim), site.settings, signer)
    with pytest.raises(Killed):
        dying.send_batch(digest_id)
    assert site.statuses(digest_id) == {"a@example.org": "pending", "b@example.org": "pending"}
    with site.sessions() as session:
        untouched = session.execute(
            select(Delivery.attempts, Delivery.claimed_at, Delivery.batch_id)
        ).all()
        batches = session.scalar(select(func.count()).select_from(Batch))
    assert set(untouched) == {(0, None, None)} and batches == 0
    assert site.mail() == []
    assert site.send_all(digest_id) == 2
    assert sorted(m["To"] for m in site.mail()) == ["a@example.org", "b@example.org"]


class BrokenRenderer(DigestRenderer):
    """Cannot personalize one reader's email (a bug, or data it chokes on)."""

    def __init__(self, site: Site, victim: str) -> None:
        super().__init__(template_environment(site.settings, "email"))
        self.victim = victim

    def personalize(self, body: Body, parts: ReaderParts) -> RenderedEmail:
        if f"/{self.victim}" in parts.unsubscribe_url:
            raise ValueError("cannot render this one")
        return super().personalize(body, parts)


def test_an_email_that_cannot_be_rendered_fails_alone_and_says_why(site: Site) -> None:
    """Not retried for ever, and not holding up the rest of its batch."""
    a = site.reader("a@example.org", {"mexico": DAILY})
    site.reader("b@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    victim = unsubscribe_token(site, a)
    broken = Sender(
        site.sessions, site.provider, BrokenRenderer(site, victim), site.settings, signer
    )
    assert site.send_all(digest_id, broken) == 2
    assert site.statuses(digest_id) == {"a@example.org": "failed", "b@example.org": "sent"}
    assert [m["To"] for m in site.mail()] == ["b@example.org"]
    with site.sessions() as session:
        error = session.scalar(
            select(Delivery.last_error).where(Delivery.id == site.delivery_id(digest_id, a))
        )
        summary = editorial.summarize(session=session, digest_id=digest_id)
    assert error == "could not render: ValueError: cannot render this one"
    assert summary.status == "sent"


class IdempotentOutbox(OutboxProvider):
    """The outbox, pretending to honour idempotency keys; remembers the keys it was given."""

    supports_idempotency: ClassVar[bool] = True

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.keys: list[str | None] = []

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.keys += [m.idempotency_key for m in messages]
        return super()._send_batch(messages)


def test_reaper_requeues_a_handed_over_claim_under_its_idempotency_key(
    tmp_path: Path, database_url: str
) -> None:
    """With a provider that honours idempotency keys, a handed-over, abandoned claim is sent again
    under the same key (the provider drops the duplicate)."""
    provider = IdempotentOutbox(tmp_path / "outbox")
    site = make_site(tmp_path, database_url, provider)
    reader = site.reader("a@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    delivery = site.delivery_id(digest_id, reader)
    now = utcnow()
    with transaction(site.sessions) as session:
        claimed = claim(session, digest_id, 500, now=now - timedelta(hours=1))
        assert claimed is not None
        assert hand_over(session, claimed, now=now - timedelta(hours=1))
    with transaction(site.sessions) as session:
        assert reap(session, supports_idempotency=True, now=now) == 1
    assert site.send_all(digest_id) == 1
    assert provider.keys == [f"{claimed.key}.{delivery}"]
    assert site.statuses(digest_id) == {"a@example.org": "sent"}


def test_a_digest_whose_last_claim_is_reaped_as_unknown_is_finished(site: Site) -> None:
    """The dispatch tick (reap, then find sendable work) leaves no digest "sending" without work."""
    reader = site.reader("a@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    delivery = site.delivery_id(digest_id, reader)
    now = utcnow()
    with transaction(site.sessions) as session:
        claimed = claim(session, digest_id, 500, now=now - timedelta(hours=1))
        assert claimed is not None and claimed.ids == [delivery]
        assert hand_over(session, claimed, now=now - timedelta(hours=1))
    with transaction(site.sessions) as session:
        reap(session, supports_idempotency=False, now=now)
        assert dispatch.sendable(session, batch_size=500, now=now) == {}
    with site.sessions() as session:
        summary = editorial.summarize(session=session, digest_id=digest_id)
    assert summary.counts == {"unknown": 1, "planned": 1}
    assert summary.status == "sent"


class FlakyProvider(OutboxProvider):
    """Answers each address with a scripted outcome first, then writes to the outbox."""

    def __init__(self, folder: Path, script: dict[str, list[Outcome]]) -> None:
        super().__init__(folder)
        self.script = script

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        results = []
        for message in messages:
            queue = self.script.get(message.to, [])
            if queue:
                results.append(SendResult(queue.pop(0), detail="scripted", retry_after=60))
            else:
                results += super()._send_batch([message])
        return results


def test_temporary_failures_retry_later_and_permanent_ones_suppress(
    tmp_path: Path, database_url: str
) -> None:
    """A temporary failure puts the delivery back with a later due time (not claimed before it),
    then it goes once; a hard bounce fails it and suppresses the address."""
    provider = FlakyProvider(
        tmp_path / "outbox",
        {
            "slow@example.org": [Outcome.TEMPORARY],
            "gone@example.org": [Outcome.RECIPIENT_PERMANENT],
        },
    )
    site = make_site(tmp_path, database_url, provider)
    for email in ("ok@example.org", "slow@example.org", "gone@example.org"):
        site.reader(email, {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    now = utcnow()
    report = site.sender.send_batch(digest_id, now=now)
    assert report.counts == {"sent": 1, "pending": 1, "failed": 1}
    assert site.sender.send_batch(digest_id, now=now + timedelta(seconds=30)).claimed == 0
    with site.sessions() as session:
        assert dispatch.sendable(session, batch_size=500, now=now) == {}
        assert dispatch.sendable(session, batch_size=500, now=now + timedelta(hours=2)) == {
            digest_id: 1
        }
        gone = session.scalar(select(Subscriber).where(Subscriber.email == "gone@example.org"))
        assert gone is not None and gone.status is SubscriberStatus.SUPPRESSED
    assert site.sender.send_batch(digest_id, now=now + timedelta(hours=2)).counts == {"sent": 1}
    assert sorted(m["To"] for m in site.mail()) == ["ok@example.org", "slow@example.org"]
    assert site.statuses(digest_id) == {
        "ok@example.org": "sent",
        "slow@example.org": "sent",
        "gone@example.org": "failed",
    }
    with site.sessions() as session:
        assert editorial.summarize(session=session, digest_id=digest_id).status == "sent"


class SmallBatches(OutboxProvider):
    batch_limit: ClassVar[int] = 40


def test_the_digest_is_sending_from_the_first_batch_and_sent_after_the_last(
    tmp_path: Path, database_url: str
) -> None:
    """The status is refreshed at a Sender's first batch and when a claim comes up short or empty,
    not after every full batch (#18): sending (with a start time) from the first batch on, sent
    (with a finish time) once the work ran out; every full batch sent whole is closed done."""
    site = make_site(tmp_path, database_url, SmallBatches(tmp_path / "outbox"))
    for n in range(80):
        site.reader(f"r{n:02d}@example.org", {"mexico": DAILY})
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))

    def digest() -> tuple[str, bool, bool, list[str]]:
        with site.sessions() as session:
            found = session.get(Digest, digest_id)
            assert found is not None
            batches = session.scalars(select(Batch.status).order_by(Batch.id)).all()
            return (
                found.status.value,
                found.started_at is not None,
                found.finished_at is not None,
                [b.value for b in batches],
            )

    assert site.sender.send_batch(digest_id).counts == {"sent": 40}
    assert digest() == ("sending", True, False, ["done"])
    assert site.sender.send_batch(digest_id).counts == {"sent": 40}
    assert digest() == ("sending", True, False, ["done", "done"])
    assert site.sender.send_batch(digest_id).claimed == 0
    assert digest() == ("sent", True, True, ["done", "done"])
    assert len(site.mail()) == 80


def test_parallel_senders_send_each_reader_once(tmp_path: Path, database_url: str) -> None:
    """Two senders (own engines, as two worker processes) work one digest in provider-sized batches
    at once: every reader gets exactly one email, every Message-ID is unique."""
    site = make_site(tmp_path, database_url, SmallBatches(tmp_path / "outbox"))
    emails = [f"r{n:03d}@example.org" for n in range(150)]
    with transaction(site.sessions) as session:
        for email in emails:
            signup = readers.subscribe(
                session=session, email=email, topics=["mexico"], frequency=DAILY, timezone="UTC"
            )
            assert signup.consent_id is not None and signup.subscriber_id is not None
            readers.confirm(
                session=session,
                consent_id=signup.consent_id,
                subscriber_id=signup.subscriber_id,
                token_version=1,
            )
            subscribed_since(session, signup.subscriber_id)
    site.post("News", ["mexico"], MONDAY + timedelta(hours=9))
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    other = Sender(
        migrated_sessions(site.settings.database_url),
        site.provider,
        site.renderer,
        site.settings,
        signer,
    )
    barrier = threading.Barrier(2)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def work(sender: Sender) -> None:
        barrier.wait()
        try:
            claimed.append(site.send_all(digest_id, sender))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (site.sender, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert sum(claimed) == 150
    mail = site.mail()
    assert sorted(m["To"] for m in mail) == emails
    assert len({m["Message-ID"] for m in mail}) == 150
    assert len({m["X-Newsletter-Delivery-Id"] for m in mail}) == 150
    with site.sessions() as session:
        assert digest_counts(session, digest_id) == {"sent": 150, "planned": 150}


# ------------------------------------------------------------------------------------ editors


def test_editorial_digest_preview_test_send_and_send(site: Site) -> None:
    """An editor's digest: the preview shows the reader's email with inert links, a test copy goes
    to the editor without touching the ledger, scheduling plans it for its audience, sending sends it."""
    site.reader("mx1@example.org", {"mexico": WEEKLY})
    site.reader("mx2@example.org", {"mexico": DAILY, "refugees": DAILY})
    site.reader("other@example.org", {"migration": DAILY})
    one = site.post("Elections", ["mexico"], MONDAY + timedelta(hours=9))
    two = site.post("Shelters", ["refugees"], MONDAY + timedelta(hours=10))
    with transaction(site.sessions) as session:
        digest_id = editorial.create_editorial(
            session=session,
            subject="The week at the border",
            intro_markdown="Hello **readers**.\n\n<script>alert(1)</script> [more](javascript:alert(2))",
            post_ids=[one, two],
            audience_topics=["mexico"],
        ).id
    with site.sessions() as session:
        subject, email = preview(
            session, site.renderer, site.settings, digest_id, "mx2@example.org"
        )
    assert subject == "The week at the border"
    assert "<strong>readers</strong>" in email.html
    assert "<script" not in email.html and "&lt;script&gt;alert(1)" in email.html
    assert not re.search(r"href=\"javascript:", email.html)
    assert "You get Mexico daily and Refugees daily." in email.text
    own_links = [u for u in re.findall(r'href="([^"]+)"', email.html) if u.startswith(BASE)]
    assert own_links and set(own_links) == {f"{BASE}/manage"}  # inert: no token
    assert f"{BASE}/unsubscribe/" not in email.text and f"{BASE}/manage/" not in email.text

    with site.sessions() as session:
        result = send_test(
            session,
            site.renderer,
            site.settings,
            site.provider,
            digest_id,
            as_reader="mx1@example.org",
            to="editor@example.org",
        )
    assert result.outcome is Outcome.SENT
    [test_copy] = site.mail()
    assert test_copy["To"] == "editor@example.org"
    assert test_copy["Subject"] == "[TEST] The week at the border"
    with site.sessions() as session:
        assert editorial.summarize(session=session, digest_id=digest_id).counts == {"planned": 0}

    with transaction(site.sessions) as session:
        editorial.schedule(session=session, digest_id=digest_id, at=utcnow(), expected_count=2)
    with transaction(site.sessions) as session:
        dispatch.plan_due(session, site.settings)
    site.send_all(digest_id)
    sent = {m["To"]: m for m in site.mail() if m["To"] != "editor@example.org"}
    assert sorted(sent) == ["mx1@example.org", "mx2@example.org"]
    for m in sent.values():
        assert m["Subject"] == "The week at the border"
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = parts(m)
        assert "Elections" in text and "<strong>readers</strong>" in html
    # Each copy carries the posts of the reader's topics: Shelters (Refugees) only for mx2.
    assert "Shelters" in parts(sent["mx2@example.org"])[0]
    assert "Shelters" not in parts(sent["mx1@example.org"])[0]
    with site.sessions() as session:
        summary = editorial.summarize(session=session, digest_id=digest_id)
    assert summary.status == "sent" and summary.counts == {"sent": 2, "planned": 2}
    with transaction(site.sessions) as session, pytest.raises(InvalidInput):
        editorial.cancel(session=session, digest_id=digest_id)


def test_a_cancelled_editorial_digest_sends_nothing(site: Site) -> None:
    """Cancelled before its time: the scheduler never plans it and nothing is sent."""
    site.reader("mx@example.org", {"mexico": DAILY})
    post = site.post("Elections", ["mexico"], MONDAY + timedelta(hours=9))
    with transaction(site.sessions) as session:
        digest_id = editorial.create_editorial(
            session=session, subject="Soon", post_ids=[post], audience_topics=["mexico"]
        ).id
        editorial.schedule(
            session=session,
            digest_id=digest_id,
            at=utcnow() + timedelta(hours=1),
            expected_count=1,
        )
    with transaction(site.sessions) as session:
        editorial.cancel(session=session, digest_id=digest_id)
    with transaction(site.sessions) as session:
        dispatch.plan_due(session, site.settings, now=utcnow() + timedelta(hours=2))
        assert planner.plan_editorial(session, digest_id).planned == 0
    assert site.send_all(digest_id) == 0
    assert site.mail() == []
    with site.sessions() as session:
        summary = editorial.summarize(session=session, digest_id=digest_id)
    assert summary.status == "cancelled" and summary.counts == {"planned": 0}


# ------------------------------------------------------------------------------------ feed content


def test_feed_content_cannot_capture_a_readers_links(site: Site) -> None:
    """A post whose link and title hold the renderer's placeholders: the emails show them as they
    are, and no reader's signed link appears anywhere but in the footer and the headers."""
    reader = site.reader("victim@example.org", {"mexico": DAILY})
    site.post(
        "Read @@NL.MANAGE@@",
        ["mexico"],
        MONDAY + timedelta(hours=9),
        link="https://evil.example/collect?u=@@NL.UNSUBSCRIBE@@",
        summary="<p>@@NL.REASONS@@</p>",
    )
    digest_id = site.plan(DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8))
    site.send_all(digest_id)
    [m] = site.mail()
    text, html = parts(m)
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert [h for h in hrefs if h.startswith("https://evil.example/")] == [
        "https://evil.example/collect?u=@@NL.UNSUBSCRIBE@@"
    ]
    assert "Read @@NL.MANAGE@@" in text and "Read @@NL.MANAGE@@" in html
    signed = [u for u in re.findall(rf"{re.escape(BASE)}/(?:manage|unsubscribe)/[\w.-]+", text)]
    assert len(signed) == 2 and all(token_of(u, Purpose(u.split("/")[3])) == reader for u in signed)
