"""The subscribe box's pure parts: origins, the back link, the snippets, the retry sentence."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from subscriptions.web.embed import back_link, framing_policy, origin_of, snippets
from subscriptions.web.reader import CONSENT_WORDING, retry_words
from subscriptions.web.suppressed import SuppressedAddresses
from tests.factories import make_settings


def test_embed_origins_are_normalized_and_deduplicated(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        embed_origins="https://Blog.Example.org/, http://localhost:8080 https://blog.example.org",
    )
    assert settings.embed_origins == "https://blog.example.org,http://localhost:8080"
    assert settings.allowed_embed_origins == {"https://blog.example.org", "http://localhost:8080"}
    assert make_settings(tmp_path).allowed_embed_origins == frozenset()


def test_origin_of_accepts_only_http_urls() -> None:
    assert origin_of("https://Blog.example.org/a/b?c#d") == "https://blog.example.org"
    assert origin_of("http://127.0.0.1:8101/x") == "http://127.0.0.1:8101"
    for bad in (
        "javascript:alert(1)",
        "//blog.example.org/x",
        "https://user@blog.example.org/",
        "null",
        "",
    ):
        assert origin_of(bad) is None, bad


def test_back_link_only_to_allowed_origins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, embed_origins="https://blog.example.org")
    assert (
        back_link("https://blog.example.org/post?x=1", settings)
        == "https://blog.example.org/post?x=1"
    )
    for bad in (
        "https://evil.example/",
        "javascript:alert(1)",
        None,
        3,
        "https://blog.example.org/" + "x" * 2100,
    ):
        assert back_link(bad, settings) is None
    assert "frame-ancestors 'self' https://blog.example.org;" in framing_policy(settings)


class _Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_form_snippet_is_a_plain_form_that_posts_straight_to_the_service() -> None:
    made = snippets("https://news.example.org", ["mexico", "refugees"], "weekly", CONSENT_WORDING)
    parser = _Fields()
    parser.feed(made.form)
    [form] = [attrs for tag, attrs in parser.tags if tag == "form"]
    assert form["method"] == "post" and form["action"] == "https://news.example.org/subscribe"
    inputs = [attrs for tag, attrs in parser.tags if tag == "input"]
    assert [(i["name"], i.get("value")) for i in inputs if i.get("type") == "hidden"] == [
        ("topics", "mexico"),
        ("topics", "refugees"),
        ("frequency", "weekly"),
        ("source", "subscribe box"),
    ]
    assert any(i["name"] == "website" for i in inputs)  # the honeypot
    assert any(i["name"] == "email" and i.get("type") == "email" for i in inputs)
    assert "<script" not in made.form
    assert made.script == '<script src="https://news.example.org/static/embed.js" defer></script>'
    assert (
        'src="https://news.example.org/embed/form?topic=mexico,refugees&amp;frequency=weekly"'
        in made.frame
    )


def test_retry_words_say_when() -> None:
    now = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    assert retry_words(30, now) == "Please try again in 30 seconds (after 14:00 UTC)."
    assert retry_words(12 * 60, now) == "Please try again in about 12 minutes (after 14:12 UTC)."


def test_the_suppression_copy_keeps_going_when_the_database_fails(tmp_path: Path) -> None:
    broken = sessionmaker(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    copy = SuppressedAddresses()
    assert copy.stale()
    copy.refresh(broken)  # logs, does not raise
    assert not copy.stale() and not copy.may_be_blocked("a@example.org")
