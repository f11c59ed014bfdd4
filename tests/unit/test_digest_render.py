"""Digest rendering (mail/bodies.py): the shared body rendered once per variant, the
per-reader parts filled in per reader, byte-identical to a full Jinja2 render for every reader; and
hostile feed content (stored through subscriptions.posts.add_post) never becomes markup in any email.

The database parts use a SQLite file in tmp_path; no other service.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import (
    Body,
    DigestRenderer,
    Group,
    ReaderParts,
    localized_groups,
    localized_subscriptions,
    post_view,
    reasons_line,
    subject_for,
)
from mail.links import reader_links
from mail.providers import EmailMessage, Outcome, Provider, SendResult
from subscriptions import digests as editorial
from subscriptions.content import SUMMARY_TAGS
from subscriptions.db import transaction
from subscriptions.editorial import preview
from subscriptions.errors import InvalidInput
from subscriptions.models import (
    Delivery,
    DigestKind,
    Frequency,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
)
from subscriptions.posts import add_post
from subscriptions.settings import Settings
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from subscriptions.topics import add_topic
from tests.factories import LONG_AGO, SECRET, add_demo_topics, make_settings, migrated_sessions
from worker.digests import planner
from worker.digests.jobs import load_jobs
from worker.digests.sender import Sender, message_id

KINDS = ("immediate", "daily", "weekly", "editorial")
signer = TokenSigner(SECRET)


class Capture(Provider):
    """A provider that keeps what it is given."""

    name = "capture"
    batch_limit: ClassVar[int] = 500

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    @classmethod
    def from_url(cls, url: Any) -> Capture:  # pragma: no cover - not built from a URL
        return cls()

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.messages += messages
        return [SendResult(Outcome.SENT, provider_message_id=f"c{len(self.messages)}")] * len(
            messages
        )


def renderer_for(tmp_path: Path, **overrides: Any) -> tuple[Settings, DigestRenderer]:
    settings = make_settings(tmp_path, **overrides)
    return settings, DigestRenderer(template_environment(settings, "email"))


# Content that stresses every escaping rule of the inliner's serializer: & < > " ' and no-break
# spaces in text and in attributes, entities, non-ASCII, and an already-sanitized summary with links.
AWKWARD_GROUPS = (
    Group(
        'Border & "Security" <Ops>',
        (
            post_view(
                'Caf\xe9 "tax" & <fees>\xa0now',
                "https://example.org/a?b=1&c=%22x%22",
                '<p>Fees &amp; <a href="https://x.example/?a=1&amp;b=2" rel="noopener">rates</a>'
                "\xa0\u2014 \u201cquoted\u201d</p><ul><li>one</li></ul>",
            ),
            post_view("Plain", "https://example.org/plain", ""),
        ),
    ),
    Group(
        "Mexico",
        (post_view("\U0001f1f2\U0001f1fd Elections", "https://example.org/e", "<p>Vote.</p>"),),
    ),
)


def _readers(settings: Settings) -> list[ReaderParts]:
    subs_variants: list[list[tuple[str, str]]] = [
        [],
        [("Border Security", "daily")],
        [('Border & "Security" <Ops>', "daily"), ("Mexico", "weekly")],
        [("Caf\xe9\xa0Topic", "immediate"), ("A's", "daily"), ("Z>A", "weekly")],
    ]
    out = []
    for n in range(1, 25):
        links = reader_links(settings, signer, subscriber_id=n * 7919, version=1 + n % 3)
        out.append(ReaderParts(links.manage, links.unsubscribe, reasons_line(subs_variants[n % 4])))
    # Parts with characters a URL from settings or a topic name could hold.
    out.append(
        ReaderParts('https://h.example/m?a=1&b="2"', "https://h.example/u/\xa0x", "<b>&amp;</b>")
    )
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"site_name": 'News & "Views" <Daily>', "base_url": "https://news.example.org/path&x"},
        {"brand_color": "#c0ffee"},
    ],
    ids=["default", "awkward-site", "colour"],
)
def test_personalize_equals_a_full_render_for_every_reader(
    tmp_path: Path, kind: str, overrides: dict[str, str]
) -> None:
    """One shared body per variant, personalized per reader, is byte-identical (text, HTML and
    subject) to rendering that reader's email from scratch."""
    settings, renderer = renderer_for(tmp_path, **overrides)
    intro = 'Hello **readers** & *friends* <b>not bold</b>\n\nSecond "para" \xa0 [link](https://x.example/?a&b)'
    body = renderer.body(kind, AWKWARD_GROUPS, intro_markdown=intro, editorial_subject="Our <week>")
    for parts in _readers(settings):
        mine = renderer.personalize(body, parts)
        subject, full = renderer.full_render(
            kind, AWKWARD_GROUPS, parts, intro_markdown=intro, editorial_subject="Our <week>"
        )
        assert subject == body.subject
        assert mine.text == full.text
        assert mine.html == full.html
        assert "@@NL." not in mine.html and "@@NL." not in mine.text


def test_the_shared_body_has_each_placeholder_once_in_one_context(tmp_path: Path) -> None:
    """The body keeps the per-reader parts as placeholders: the links in attributes, the reasons
    in text, in both the HTML and the text part; nothing reader-specific is in the body."""
    _, renderer = renderer_for(tmp_path)
    for kind in KINDS:
        body = renderer.body(kind, AWKWARD_GROUPS)
        assert body.html.count('href="@@NL.MANAGE@@"') == 1
        assert body.html.count('href="@@NL.UNSUBSCRIBE@@"') == 1
        assert body.html.count("<p>@@NL.REASONS@@</p>") == 1
        assert re.findall(r"@@NL\.\w+@@", body.text) == [
            "@@NL.REASONS@@",
            "@@NL.MANAGE@@",
            "@@NL.UNSUBSCRIBE@@",
        ]


def test_feed_text_that_looks_like_a_placeholder_stays_text(tmp_path: Path) -> None:
    """A post may say anything, including the renderer's placeholder strings."""
    settings, renderer = renderer_for(tmp_path)
    groups = (
        Group(
            "Mexico",
            (
                post_view(
                    "Read @@NL.MANAGE@@",
                    "https://evil.example/c?u=@@NL.UNSUBSCRIBE@@",
                    "<p>@@NL.REASONS@@</p>",
                ),
            ),
        ),
    )
    parts = _readers(settings)[1]
    for kind in KINDS:
        body = renderer.body(kind, groups)
        mine = renderer.personalize(body, parts)
        _, full = renderer.full_render(kind, groups, parts)
        assert mine.html == full.html
        assert mine.text == full.text


def test_subjects_per_kind() -> None:
    """ "{Topic}: {title}" for an alert, "{Site}: N new posts today / this week", the editor's own."""
    groups = AWKWARD_GROUPS
    assert subject_for("immediate", site_name="S", groups=groups) == (
        'Border & "Security" <Ops>: Caf\xe9 "tax" & <fees>\xa0now'
    )
    assert (
        subject_for("daily", site_name="Institute", groups=groups) == "Institute: 3 new posts today"
    )
    assert subject_for("weekly", site_name="Institute", groups=groups[1:]) == (
        "Institute: 1 new post this week"
    )
    assert subject_for("editorial", site_name="S", groups=groups, editorial_subject="Ed") == "Ed"


@pytest.mark.parametrize(
    ("subs", "line"),
    [
        ([], "You get this email because you subscribed."),
        ([("Mexico", "weekly")], "You get Mexico weekly."),
        (
            [("Mexico", "weekly"), ("Border Security", "daily")],
            "You get Border Security daily and Mexico weekly.",
        ),
        (
            [("Refugees", "immediate"), ("Mexico", "weekly"), ("Border Security", "daily")],
            "You get Border Security daily, Mexico weekly and Refugees as it happens.",
        ),
    ],
)
def test_reasons_line(subs: list[tuple[str, str]], line: str) -> None:
    """The footer's "why you get this" line, topics in name order."""
    assert reasons_line(subs) == line


# ------------------------------------------------------------------------------------ the Sender's path


class CountingRenderer(DigestRenderer):
    def __init__(self, settings: Settings) -> None:
        super().__init__(template_environment(settings, "email"))
        self.bodies = 0
        self.personalized = 0

    def body(self, *args: Any, **kwargs: Any) -> Body:
        self.bodies += 1
        return super().body(*args, **kwargs)

    def personalize(self, body: Body, parts: ReaderParts) -> Any:
        self.personalized += 1
        return super().personalize(body, parts)


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    factory = migrated_sessions(f"sqlite:///{tmp_path / 'render.db'}")
    with transaction(factory) as session:
        add_demo_topics(session)
    return factory


def _reader(
    session: Session, email: str, subs: dict[str, Frequency], topic_ids: dict[str, int]
) -> int:
    reader = Subscriber(email=email, status=SubscriberStatus.ACTIVE, timezone="UTC")
    session.add(reader)
    session.flush()
    for slug, frequency in subs.items():
        session.add(
            Subscription(
                subscriber_id=reader.id,
                topic_id=topic_ids[slug],
                frequency=frequency,
                created_at=LONG_AGO,
            )
        )
    return reader.id


def _topic_ids(session: Session) -> dict[str, int]:
    return {slug: topic_id for slug, topic_id in session.execute(select(Topic.slug, Topic.id))}


def _released(session: Session, post_id: int, at: datetime) -> None:
    post = session.get(Post, post_id)
    assert post is not None
    post.released_at = post.published_at = at


MONDAY = datetime(2024, 6, 10, tzinfo=UTC)


def test_the_sender_renders_each_shared_body_once(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """60 readers in three variants (same posts under the same topics): three body renders, sixty
    personalizations, and each email equal to that reader's full render."""
    settings = make_settings(tmp_path, base_url="https://news.example.org")
    renderer = CountingRenderer(settings)
    with transaction(sessions) as session:
        ids = _topic_ids(session)
        variants = [
            {"mexico": Frequency.DAILY},
            {"mexico": Frequency.DAILY, "migration": Frequency.DAILY},
            {"migration": Frequency.DAILY, "refugees": Frequency.WEEKLY},
        ]
        for n in range(60):
            _reader(session, f"r{n:02d}@example.org", variants[n % 3], ids)
        for title, topics in (
            ("Trade", ["mexico"]),
            ("Caravan", ["mexico", "migration"]),
            ("Visas", ["migration"]),
        ):
            stored = add_post(
                session=session, title=title, link=f"https://example.org/{title}", topics=topics
            )
            _released(session, stored.id, MONDAY + timedelta(hours=9))
    with transaction(sessions) as session:
        [result] = planner.plan_periodic(
            session, DigestKind.DAILY, now=MONDAY + timedelta(days=1, hours=8)
        )
    provider = Capture()
    sender = Sender(sessions, provider, renderer, settings, signer)
    assert sender.send_batch(result.digest_id).counts == {"sent": 60}
    assert renderer.bodies == 3
    assert renderer.personalized == 60
    reference = DigestRenderer(template_environment(settings, "email"))
    with sessions() as session:
        info, jobs = load_jobs(session, list(session.scalars(select(Delivery.id))))
    assert info is not None
    by_address = {m.to: m for m in provider.messages}
    for job in jobs:
        links = reader_links(
            settings, signer, subscriber_id=job.subscriber_id, version=job.token_version
        )
        subject, full = reference.full_render(
            job.kind,
            job.groups,
            ReaderParts(links.manage, links.unsubscribe, reasons_line(job.subscriptions)),
        )
        message = by_address[job.email]
        assert (message.subject, message.text, message.html) == (subject, full.text, full.html)


# ------------------------------------------------------------------------------------ hostile content

HOSTILE_TITLE = (
    '<script>alert(1)</script>Title "><img src=x onerror=alert(2)> &lt;script&gt;alert(3)&lt;/script&gt;'
    " javascript:alert(4) <b onmouseover=alert(13)>bold</b>"
)
HOSTILE_LINKS = [
    'https://example.org/p?q="><img src=x onerror=alert(5)>',
    "https://example.org/<script>alert(6)</script>",
    "https://example.org/ok' onmouseover='alert(14)",
]
HOSTILE_SUMMARY = (
    '<p onclick="alert(7)">Hi <a href="javascript:alert(8)">click</a> <img src=x onerror=alert(9)>'
    ' <script>alert(10)</script> <a href="https://ok.example/" onmouseover="alert(11)">ok</a>'
    ' "><svg onload=alert(12)> <iframe src="https://evil.example"></iframe> <style>body{}</style>'
    ' <a href="data:text/html,<script>alert(15)</script>">d</a> <a href=" JaVaScRiPt:alert(16)">j</a>'
    " &lt;script&gt;alert(17)&lt;/script&gt;</p>"
)
HOSTILE_TOPIC = '<b>Hostile</b> & "Co" <img src=x onerror=alert(18)>'
SAFE_SCHEMES = {"http", "https", "mailto"}
#: Attributes the email templates and the summary allow-list produce.
TEMPLATE_ATTRIBUTES = {
    *("href", "title", "rel", "style", "class", "lang", "charset", "name", "content", "role"),
    *("width", "cellpadding", "cellspacing", "border", "align"),
}


class Markup(HTMLParser):
    """What an HTML parser makes of a document: elements, attributes, and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Markup:
    parser = Markup()
    parser.feed(html)
    parser.close()
    return parser


def _hostile_emails(tmp_path: Path, sessions: sessionmaker[Session]) -> tuple[list[str], Settings]:
    """The HTML of every kind of email carrying the hostile posts, through the Sender's own path,
    plus an editor's preview."""
    settings = make_settings(tmp_path, base_url="https://news.example.org")
    renderer = DigestRenderer(template_environment(settings, "email"))
    with transaction(sessions) as session:
        add_topic(session=session, slug="hostile", name=HOSTILE_TOPIC)
        ids = _topic_ids(session)
        subs = {
            "hostile": Frequency.IMMEDIATE,
            "mexico": Frequency.DAILY,
            "migration": Frequency.WEEKLY,
        }
        _reader(session, "reader@example.org", subs, ids)
        post_ids = []
        for n, (link, topics) in enumerate(
            zip(HOSTILE_LINKS, (["hostile"], ["mexico"], ["migration"]), strict=True)
        ):
            info = add_post(
                session=session,
                title=f"{HOSTILE_TITLE} {n}",
                link=link,
                summary=HOSTILE_SUMMARY,
                author='<script>alert("a")</script>',
                topics=topics,
            )
            _released(session, info.id, MONDAY + timedelta(hours=9 + n))
            post_ids.append(info.id)
        with pytest.raises(InvalidInput):
            add_post(session=session, title="x", link="javascript:alert(1)", topics=["mexico"])
        digest = editorial.create_editorial(
            session=session,
            subject='Weekly <script>alert(19)</script> "review"',
            intro_markdown=HOSTILE_SUMMARY
            + "\n\n[x](javascript:alert(20)) <img src=x onerror=alert(21)>",
            post_ids=post_ids,
        )
        editorial.schedule(
            session=session,
            digest_id=digest.id,
            at=MONDAY,
            expected_count=editorial.count_audience(session=session, digest_id=digest.id).total,
        )
    digest_ids = []
    with transaction(sessions) as session:
        result = planner.plan_post_alerts(session, post_ids[0], now=MONDAY + timedelta(hours=9))
        assert result is not None
        digest_ids.append(result.digest_id)
        for kind, now in (
            (DigestKind.DAILY, MONDAY + timedelta(days=1, hours=8)),
            (DigestKind.WEEKLY, MONDAY + timedelta(days=7, hours=8)),
        ):
            [run] = planner.plan_periodic(session, kind, now=now)
            assert run.planned == 1
            digest_ids.append(run.digest_id)
        digest_ids.append(planner.plan_editorial(session, digest.id, now=MONDAY).digest_id)
    provider = Capture()
    sender = Sender(sessions, provider, renderer, settings, signer)
    for digest_id in digest_ids:
        sender.send_batch(digest_id)
    assert len(provider.messages) == 4, "an alert, a daily, a weekly and an editorial email"
    with sessions() as session:
        _, previewed = preview(session, renderer, settings, digest.id, "reader@example.org")
    return [m.html or "" for m in provider.messages] + [previewed.html], settings


def test_hostile_feed_content_never_becomes_markup(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """Scripts, event handlers, javascript:/data: links and attribute break-outs in titles, links,
    summaries, topic names and an editor's intro: an HTML parser finds no element, attribute or URL
    scheme that the templates and the summary allow-list do not make themselves."""
    htmls, _ = _hostile_emails(tmp_path, sessions)
    _, renderer = renderer_for(tmp_path)
    benign = renderer.body("daily", AWKWARD_GROUPS, intro_markdown="*hi*")
    allowed_tags = set(parse(benign.html).tags) | set(SUMMARY_TAGS) | {"div"}
    for html in htmls:
        markup = parse(html)
        assert set(markup.tags) <= allowed_tags, set(markup.tags) - allowed_tags
        assert markup.tags.count("style") == 1  # the template's own, in <head>
        assert "script" not in markup.tags and "img" not in markup.tags
        assert [a for a in markup.attributes if a[1].startswith("on")] == []
        for tag, name, value in markup.attributes:
            if name in ("href", "src", "action", "formaction", "background"):
                assert value is not None
                assert urlsplit(value.strip()).scheme.lower() in SAFE_SCHEMES, (tag, name, value)
            assert name in TEMPLATE_ATTRIBUTES, (tag, name)
        text = "".join(markup.text)
        # A title's escaped "<script>" survives as text a reader can read, escaped in the source;
        # a real script element in a title is dropped with its content when the post is stored.
        assert "<script>alert(3)</script>" in text
        assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
        assert "alert(1)" not in text


def test_no_feed_markup_appears_raw_anywhere_in_the_html(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """Not even inside an attribute value: no '<' or '>' of feed content reaches the HTML as is."""
    htmls, _ = _hostile_emails(tmp_path, sessions)
    for html in htmls:
        for raw in ("<img src=x", "<script>alert(6)", "<svg", "<iframe"):
            assert raw not in html


def test_text_summary_keeps_words_of_separate_blocks_apart() -> None:
    """The text alternative of a summary with paragraphs and a list reads as separate words."""
    view = post_view(
        "T",
        "https://example.org/t",
        "<p>One.</p><ul><li>Two</li><li>Three</li></ul><p>Four<br>Five</p>",
    )
    assert view.summary_text.split() == ["One.", "Two", "Three", "Four", "Five"]


def test_message_ids_have_a_random_part_and_never_repeat() -> None:
    """The same digest and delivery ids (as after a database reset) never give the same Message-ID."""

    ids = [message_id(1, 1, "news.example.org") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"<nl\.1\.1\.[\w-]{16}@news\.example\.org>", i) for i in ids)


# ------------------------------------------------------------------------------------------ languages


@pytest.mark.parametrize("kind", KINDS)
def test_a_spanish_body_personalizes_to_a_full_spanish_render(tmp_path: Path, kind: str) -> None:
    """The substitution path holds per language: a Spanish shared body, personalized, equals the
    reader's full Spanish render, and differs from the English one."""
    settings, renderer = renderer_for(tmp_path, languages="en,es")
    body = renderer.body(kind, AWKWARD_GROUPS, editorial_subject="Semana", language="es")
    english = renderer.body(kind, AWKWARD_GROUPS, editorial_subject="Semana")
    for parts in _readers(settings)[:5]:
        mine = renderer.personalize(body, parts)
        subject, full = renderer.full_render(
            kind, AWKWARD_GROUPS, parts, editorial_subject="Semana", language="es"
        )
        assert (subject, mine.text, mine.html) == (body.subject, full.text, full.html)
    assert '<html lang="es">' in body.html and '<html lang="en">' in english.html
    assert "Cambiar temas o frecuencia" in body.html and "Change topics" not in body.html
    if kind in ("daily", "weekly"):
        assert body.subject != english.subject
        assert "publicaciones nuevas" in body.subject


def test_reasons_line_in_spanish() -> None:
    line = reasons_line([("México", "daily"), ("Migración", "weekly")], "es")
    assert line == "Recibes Migración cada semana y México a diario."
    assert reasons_line([], "es") == "Recibes este correo porque te suscribiste."


def test_the_sender_renders_one_shared_body_per_language(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    """Twenty readers of one variant, half in Spanish: two body renders (one per language), and
    each email in its reader's language, equal to that reader's full render."""
    settings = make_settings(tmp_path, base_url="https://news.example.org", languages="en,es")
    renderer = CountingRenderer(settings)
    with transaction(sessions) as session:
        ids = _topic_ids(session)
        mexico = session.get(Topic, ids["mexico"])
        assert mexico is not None
        mexico.translations = {"es": {"name": "México", "description": ""}}
        for n in range(20):
            reader_id = _reader(session, f"r{n:02d}@example.org", {"mexico": Frequency.DAILY}, ids)
            session.get(Subscriber, reader_id).language = "es" if n % 2 else None  # type: ignore[union-attr]
        stored = add_post(
            session=session, title="Trade", link="https://example.org/trade", topics=["mexico"]
        )
        _released(session, stored.id, MONDAY + timedelta(hours=9))
    with transaction(sessions) as session:
        [result] = planner.plan_periodic(
            session, DigestKind.DAILY, now=MONDAY + timedelta(days=1, hours=8)
        )
    provider = Capture()
    sender = Sender(sessions, provider, renderer, settings, signer)
    assert sender.send_batch(result.digest_id).counts == {"sent": 20}
    assert renderer.bodies == 2
    reference = DigestRenderer(template_environment(settings, "email"))
    with sessions() as session:
        _info, jobs = load_jobs(session, list(session.scalars(select(Delivery.id))))
    by_address = {m.to: m for m in provider.messages}
    for job in jobs:
        language = job.language or "en"
        links = reader_links(
            settings, signer, subscriber_id=job.subscriber_id, version=job.token_version
        )
        names = {"Mexico": "México"} if language == "es" else {}
        subject, full = reference.full_render(
            job.kind,
            localized_groups(job.groups, names),
            ReaderParts(
                links.manage,
                links.unsubscribe,
                reasons_line(localized_subscriptions(job.subscriptions, names), language),
            ),
            language=language,
        )
        message = by_address[job.email]
        assert (message.subject, message.text, message.html) == (subject, full.text, full.html)
        assert ("publicación nueva hoy" in message.text) is (language == "es")
        assert ("Recibes México a diario." in message.text) is (language == "es")
