"""Golden files for every email the product sends: HTML, text and headers, byte for byte.

Each email is produced through the product's own path with fixed inputs and fixed settings: digests
(alert, daily, weekly, editorial) are planned in a SQLite file and sent by the Sender; the confirm,
welcome and manage-link emails by worker.reader_mail with the built-in templates. The messages are
captured at the provider boundary and built into MIME by mail.providers.build_mime, as every
provider does. What legitimately varies is normalized: the Date header, the random part of each
Message-ID, the MIME boundary. Signed links are made with a fixed secret and a frozen token
timestamp, so they are stable.

Files live in tests/golden/<email>.html, .txt and .headers. After an intended change to a template,
a subject or a header, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden_emails.py

A missing golden file fails the test with that hint rather than being written silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from mail.bodies import DigestRenderer
from mail.providers import EmailMessage, Outcome, Provider, SendResult, build_mime
from subscriptions import digests as editorial
from subscriptions import readers
from subscriptions.db import transaction
from subscriptions.models import (
    DigestKind,
    Frequency,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
)
from subscriptions.posts import add_post
from subscriptions.templating import template_environment
from subscriptions.tokens import Purpose, TokenSigner
from tests.factories import LONG_AGO, SECRET, add_demo_topics, make_settings, migrated_sessions
from worker import reader_mail
from worker.digests import planner
from worker.digests.sender import Sender
from worker.runtime import WorkerRuntime

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
FROZEN_TOKEN_TIME = 1_718_000_000  # 2024-06-10T06:13:20Z
MONDAY = datetime(2024, 6, 10, tzinfo=UTC)

# Posts of the demo institute (subscriptions/demo/sample-posts.txt), with typographic quotes and
# dashes, a post in two topics, and a summary with a link and a list.
POSTS = [
    (
        "Charting a New Course Part 3: U.S. \u2013 Mexico Security Relations",
        ["border-security", "mexico"],
        "<p>Mexico Institute Senior Advisor Eric Olson is the guest for part three of the series,"
        " \u201cCharting a New Course.\u201d How has the Merida Initiative evolved?"
        ' <a href="https://example.org/merida">Read the background</a>.</p>',
    ),
    (
        "A New Migration Agenda Between the United States and Mexico",
        ["migration", "mexico"],
        "<p>Today, the number of Mexicans crossing the border illegally has dropped to a 40-year"
        " low.</p><ul><li>Fewer crossings</li><li>More Central Americans</li></ul>",
    ),
    (
        "8 Misguided Arguments on Refugees and Terrorism",
        ["refugees"],
        "<p>Refugee resettlement in the United States is as politicized as it has been in"
        " generations.</p>",
    ),
    (
        "What\u2019s the Impact of President Trump\u2019s Executive Order on the Mexico Border Wall?",
        ["border-security"],
        "<p>Director of the Wilson Center\u2019s Mexico Institute Duncan Wood explains the short and"
        " long term implications.</p>",
    ),
    ("The Evolution of U.S.-Mexico Military Cooperation", ["mexico"], ""),
]
INTRO = """Dear readers,

This month we look at **three** shifts in policy:

- border data
- elections in *Mexico*
- resettlement

Read [our methodology](https://example.org/methodology) & tell us what you think."""


class Capture(Provider):
    """A provider that keeps the messages it is given, in order."""

    name = "capture"
    batch_limit: ClassVar[int] = 500

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    @classmethod
    def from_url(cls, url: Any) -> Capture:  # pragma: no cover - not built from a URL
        return cls()

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.messages += messages
        return [SendResult(Outcome.SENT, provider_message_id="golden")] * len(messages)


def normalized_headers(message: EmailMessage) -> str:
    """The top-level headers as build_mime writes them, minus what differs from run to run."""
    lines = []
    for name, value in build_mime(message).items():
        value = str(value)
        if name == "Date":
            value = "<normalized>"
        elif name == "Message-ID":
            # email.utils.make_msgid: <time.pid.random[.idstring]@domain>; the Sender's own ids:
            # <nl.DIGEST.DELIVERY.RANDOM@host>, only the random part normalized.
            value = re.sub(r"^<\d+\.\d+\.\d+((?:\.[^@]+)?)@", r"<normalized\1@", value)
            value = re.sub(r"^<(nl\.\d+\.\d+)\.[\w-]{16}@", r"<\1.<random>@", value)
        elif name == "Content-Type":
            value = re.sub(r'boundary="[^"]+"', 'boundary="<normalized>"', value)
        lines.append(f"{name}: {value}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EmailMessage]]:
    """Every kind of email, produced once for the whole module with fixed inputs."""
    patch = pytest.MonkeyPatch()
    patch.setattr(TimestampSigner, "get_timestamp", lambda self: FROZEN_TOKEN_TIME)
    try:
        yield _produce(tmp_path_factory.mktemp("golden"))
    finally:
        patch.undo()


def _produce(folder: Path) -> dict[str, EmailMessage]:
    settings = make_settings(
        folder,
        base_url="https://news.example.org",
        list_unsubscribe_mailto="unsubscribe@example.org",
    )
    sessions = migrated_sessions(settings.database_url)
    signer = TokenSigner(SECRET)
    with transaction(sessions) as session:
        add_demo_topics(session)
        topics = {
            slug: topic_id for slug, topic_id in session.execute(select(Topic.slug, Topic.id))
        }
        for email, zone, subs in (
            (
                "ana@example.org",
                "UTC",
                {"border-security": Frequency.IMMEDIATE, "mexico": Frequency.WEEKLY},
            ),
            (
                "ben@example.org",
                "UTC",
                {
                    "border-security": Frequency.DAILY,
                    "migration": Frequency.DAILY,
                    "refugees": Frequency.DAILY,
                },
            ),
            ("cleo@example.org", "UTC", {"mexico": Frequency.WEEKLY, "refugees": Frequency.WEEKLY}),
        ):
            reader = Subscriber(email=email, status=SubscriberStatus.ACTIVE, timezone=zone)
            session.add(reader)
            session.flush()
            for slug, frequency in subs.items():
                session.add(
                    Subscription(
                        subscriber_id=reader.id,
                        topic_id=topics[slug],
                        frequency=frequency,
                        created_at=LONG_AGO,
                    )
                )
        post_ids = []
        for n, (title, slugs, summary) in enumerate(POSTS):
            info = add_post(
                session=session,
                title=title,
                link=f"https://www.example.org/article/{n + 1}",
                topics=slugs,
                summary=summary,
            )
            post = session.get(Post, info.id)
            assert post is not None
            post.released_at = post.published_at = MONDAY + timedelta(days=1, hours=9 + n)
            post_ids.append(info.id)

    capture = Capture()
    sender = Sender(
        sessions, capture, DigestRenderer(template_environment(settings, "email")), settings, signer
    )
    out: dict[str, EmailMessage] = {}

    def send(name: str, plan: Any, to: str) -> None:
        with transaction(sessions) as session:
            digest_id = plan(session)
        before = len(capture.messages)
        sender.send_batch(digest_id)
        mine = [m for m in capture.messages[before:] if m.to == to]
        assert len(mine) == 1, (name, [m.to for m in capture.messages[before:]])
        out[name] = mine[0]

    def alert(session: Any) -> int:
        result = planner.plan_post_alerts(
            session, post_ids[0], now=MONDAY + timedelta(days=1, hours=9)
        )
        assert result is not None
        return result.digest_id

    def periodic(kind: DigestKind, now: datetime) -> Any:
        def plan(session: Any) -> int:
            [result] = planner.plan_periodic(session, kind, now=now)
            return result.digest_id

        return plan

    def editorial_digest(session: Any) -> int:
        digest = editorial.create_editorial(
            session=session,
            subject="The month in migration policy",
            intro_markdown=INTRO,
            post_ids=post_ids[:3],
            audience_topics=["refugees"],
        )
        editorial.schedule(
            session=session,
            digest_id=digest.id,
            at=MONDAY,
            expected_count=editorial.count_audience(session=session, digest_id=digest.id).total,
        )
        return planner.plan_editorial(session, digest.id, now=MONDAY + timedelta(days=2)).digest_id

    send("alert", alert, "ana@example.org")
    send(
        "daily", periodic(DigestKind.DAILY, MONDAY + timedelta(days=2, hours=7)), "ben@example.org"
    )
    send(
        "weekly",
        periodic(DigestKind.WEEKLY, MONDAY + timedelta(days=7, hours=7)),
        "cleo@example.org",
    )
    send("editorial", editorial_digest, "ben@example.org")

    # Transactional mail through worker.reader_mail, as the worker sends it.
    runtime = WorkerRuntime(settings)
    runtime.__dict__["provider"] = capture
    with transaction(runtime.sessions) as session:
        signup = readers.subscribe(
            session=session,
            email="reader@example.org",
            topics=["mexico", "border-security"],
            frequency=Frequency.WEEKLY,
            timezone="America/Mexico_City",
        )
    assert signup.consent_id is not None and signup.subscriber_id is not None
    for name, call in (
        ("confirm", lambda: reader_mail.send_confirmation(runtime, signup.consent_id or 0)),
        ("welcome", lambda: reader_mail.send_welcome(runtime, signup.consent_id or 0)),
        ("manage_link", lambda: reader_mail.send_manage_link(runtime, signup.subscriber_id or 0)),
    ):
        if name == "welcome":
            with transaction(runtime.sessions) as session:
                readers.confirm(
                    session=session,
                    consent_id=signup.consent_id,
                    subscriber_id=signup.subscriber_id,
                    token_version=1,
                )
        before = len(capture.messages)
        assert call().sent, name
        [out[name]] = capture.messages[before:]
    runtime.close()
    return out


NAMES = ["alert", "daily", "weekly", "editorial", "confirm", "welcome", "manage_link"]


def _compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run UPDATE_GOLDEN=1 .venv/bin/python -m pytest {__file__}")
    expected = path.read_bytes().decode("utf-8")
    assert actual == expected, f"{path.name} changed; if intended, regenerate with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", NAMES)
def test_html_matches_golden(emails: dict[str, EmailMessage], name: str) -> None:
    """The HTML part, exactly as sent."""
    html = emails[name].html
    assert html is not None
    _compare(GOLDEN / f"{name}.html", html)


@pytest.mark.parametrize("name", NAMES)
def test_text_matches_golden(emails: dict[str, EmailMessage], name: str) -> None:
    """The plain-text part, exactly as sent."""
    _compare(GOLDEN / f"{name}.txt", emails[name].text)


@pytest.mark.parametrize("name", NAMES)
def test_headers_match_golden(emails: dict[str, EmailMessage], name: str) -> None:
    """The message's headers as build_mime writes them (Date, Message-ID and boundary normalized)."""
    _compare(GOLDEN / f"{name}.headers", normalized_headers(emails[name]))


def test_golden_folder_has_no_stale_files() -> None:
    """Every file in tests/golden belongs to an email this module produces."""
    if UPDATE or not GOLDEN.exists():
        return
    expected = {f"{n}.{ext}" for n in NAMES for ext in ("html", "txt", "headers")}
    extra = sorted(p.name for p in GOLDEN.iterdir() if p.name not in expected)
    assert extra == [], f"stale golden files: {extra}"


def test_subscription_emails_carry_the_list_headers(emails: dict[str, EmailMessage]) -> None:
    """Read from the goldens' source: every subscription email has a one-click List-Unsubscribe,
    List-Unsubscribe-Post, List-Id and its delivery id; transactional ones carry their kind."""
    signer = TokenSigner(SECRET)
    for name in ("alert", "daily", "weekly", "editorial", "welcome", "manage_link"):
        headers = emails[name].headers
        # Every email with List-Unsubscribe offers the mailto too, whose subject carries the
        # reader's signed unsubscribe token (the https URL's), never a guessable id.
        match = re.fullmatch(
            r"<https://news\.example\.org/unsubscribe/([\w.-]+)>,"
            r" <mailto:unsubscribe@example\.org\?subject=unsubscribe-([\w.-]+)>",
            headers["List-Unsubscribe"],
        )
        assert match is not None, (name, headers["List-Unsubscribe"])
        assert match[1] == match[2]
        claims = signer.verify(Purpose.UNSUBSCRIBE, match[2], max_age_seconds=None)
        assert claims.subscriber_id >= 1
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for name in ("alert", "daily", "weekly", "editorial"):
        assert emails[name].metadata["delivery_id"].isdigit()
    for name in ("confirm", "welcome", "manage_link"):
        assert emails[name].metadata == {"kind": name}
    assert "List-Unsubscribe" not in emails["confirm"].headers


def test_every_html_email_opens_with_a_preheader() -> None:
    """The line an inbox shows after the subject: hidden in the email, never empty."""
    for path in sorted(GOLDEN.glob("*.html")):
        body = path.read_text(encoding="utf-8")
        found = re.search(r'<div class="preheader" style="display:none;[^"]*">([^<]*)</div>', body)
        assert found is not None, f"{path.name} has no preheader"
        text = found.group(1).replace("\u034f", "").replace("\u200c", "").replace("&nbsp;", "")
        assert len(text.strip()) > 20, f"{path.name}: preheader {text!r}"
