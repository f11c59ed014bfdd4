"""parse_feed, a pure function: RSS 2.0, RSS 1.0 and Atom into plain entries, whatever the document's faults.

Documents are built in code (tests.feedserver's builders) or written out where the fault is the point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from subscriptions.content import sanitize_summary
from tests.feedserver import Item, Raw, atom, rss1, rss2
from worker.feeds.parse import Entry, FeedParseError, fallback_guid, parse_feed

WHEN = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)

Builder = Callable[..., bytes]


@pytest.mark.parametrize("build", [rss2, rss1, atom], ids=["rss2", "rss1", "atom"])
def test_each_format_gives_title_link_guid_summary_author_categories_and_date(
    build: Builder,
) -> None:
    """The three formats read into the same Entry fields, with the date as an aware UTC datetime."""
    doc = build(
        [
            Item(
                "Border talks resume",
                link="http://example.org/posts/1",
                guid="http://example.org/posts/1",
                summary="<p>Officials met.</p>",
                author="Ann Analyst",
                published=WHEN,
                categories=["Mexico", "Border Security"],
            )
        ],
        title="Institute blog",
    )
    feed = parse_feed(doc)
    assert feed.title == "Institute blog" and feed.warning == ""
    assert feed.entries == [
        Entry(
            title="Border talks resume",
            link="http://example.org/posts/1",
            guid="http://example.org/posts/1",
            summary="<p>Officials met.</p>",
            author="Ann Analyst",
            categories=["Mexico", "Border Security"],
            published=WHEN,
        )
    ]


def test_atom_content_stands_in_for_a_missing_summary() -> None:
    """An Atom entry with <content> and no <summary> keeps the content as its summary."""
    doc = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>urn:a</id>'
        b"<updated>2024-01-01T00:00:00Z</updated><entry><title>T</title><id>urn:1</id>"
        b'<link href="http://example.org/1"/><updated>2024-01-01T00:00:00Z</updated>'
        b'<content type="html">&lt;p&gt;Full text&lt;/p&gt;</content></entry></feed>'
    )
    assert parse_feed(doc).entries[0].summary == "<p>Full text</p>"


def test_entries_come_newest_first_and_undated_ones_last() -> None:
    """Order does not depend on the document: newest first, entries without a date at the end."""
    doc = rss2(
        [
            Item("old", link="http://e.org/1", published=WHEN - timedelta(days=2)),
            Item("undated", link="http://e.org/2"),
            Item("new", link="http://e.org/3", published=WHEN),
            Item("middle", link="http://e.org/4", published=WHEN - timedelta(days=1)),
        ]
    )
    assert [e.title for e in parse_feed(doc).entries] == ["new", "middle", "old", "undated"]


def test_dates_in_other_zones_become_utc_and_bad_dates_become_none() -> None:
    """A +02:00 date is converted to UTC; an unreadable pubDate leaves the date unknown, not an error."""
    plus_two = WHEN.astimezone(timezone(timedelta(hours=2)))
    doc = rss2([Item("zoned", link="http://e.org/1", published=plus_two)]).replace(
        b"</channel>",
        b"<item><title>bad</title><link>http://e.org/2</link><pubDate>soon</pubDate></item>"
        b"</channel>",
    )
    entries = {e.title: e for e in parse_feed(doc).entries}
    assert entries["zoned"].published == WHEN and entries["zoned"].published.tzinfo == UTC
    assert entries["bad"].published is None


def test_missing_guid_leaves_guid_none_and_a_missing_title_falls_back_to_the_link() -> None:
    """No <guid>: guid is None (identity then comes from the link); no <title>: the link is the title."""
    doc = rss2([Item(None, link="http://example.org/untitled"), Item("no guid", link="http://e/2")])
    entries = {e.link: e for e in parse_feed(doc).entries}
    assert entries["http://example.org/untitled"].title == "http://example.org/untitled"
    assert all(e.guid is None for e in entries.values())


def test_an_entry_with_neither_title_nor_link_is_dropped() -> None:
    """Nothing to show a reader and nothing to link to: such an entry is not an entry."""
    doc = rss2([Item(None, summary="only a description"), Item("kept", link="http://e.org/1")])
    assert [e.title for e in parse_feed(doc).entries] == ["kept"]


def test_duplicate_guids_are_all_returned_for_the_poller_to_resolve() -> None:
    """parse_feed does not deduplicate; the poller keeps the first (newest) of each GUID."""
    doc = rss2(
        [
            Item("first", link="http://e.org/1", guid="same", published=WHEN),
            Item("second", link="http://e.org/2", guid="same", published=WHEN - timedelta(1)),
        ]
    )
    assert [(e.guid, e.title) for e in parse_feed(doc).entries] == [
        ("same", "first"),
        ("same", "second"),
    ]


@pytest.mark.parametrize(
    ("title_xml", "expected"),
    [
        (
            "Q&amp;A: &lt;em&gt;Border&lt;/em&gt; policy &#8211; 2024",
            "Q&A: Border policy \u2013 2024",
        ),
        ("<![CDATA[<b>Bold</b> &amp; more<script>alert(1)</script>]]>", "Bold & more"),
        ("1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 < 2 && 3 > 2"),
        ("  spaced\n\tout   title ", "spaced out title"),
        ("caf&#233; &#x2014; na&#xEF;ve", "café — naïve"),
    ],
    ids=["escaped-markup", "cdata-with-script", "comparison", "whitespace", "numeric-entities"],
)
def test_titles_are_plain_text_with_entities_decoded(title_xml: str, expected: str) -> None:
    """Markup in a title is removed (a script's text with it), entities decoded, whitespace collapsed."""
    doc = rss2([Item(Raw(title_xml), link="http://e.org/1")])
    assert parse_feed(doc).entries[0].title == expected


def test_script_and_event_handlers_in_summaries_do_not_survive_sanitizing() -> None:
    """parse_feed keeps summaries as sent; sanitize_summary (what add_post applies) removes what runs."""
    hostile = (
        '<p onclick="steal()">Read <a href="javascript:alert(1)">this</a> and '
        '<a href="https://example.org/ok">that</a><img src="x" onerror="alert(2)">'
        "<script>alert(3)</script><iframe src='https://evil.example'></iframe></p>"
    )
    entry = parse_feed(rss2([Item("t", link="http://e.org/1", summary=hostile)])).entries[0]
    assert "<script>" in entry.summary  # parse is faithful; storage is where it is cleaned
    clean = sanitize_summary(entry.summary)
    for bad in ("script", "onerror", "onclick", "javascript:", "alert", "<img", "<iframe"):
        assert bad not in clean
    assert '<a href="https://example.org/ok" rel="noopener noreferrer nofollow">that</a>' in clean
    assert clean.startswith("<p>Read <a")


def test_a_feed_declared_iso_8859_1_is_decoded() -> None:
    """A Latin-1 document that says so in its prolog reads as the right characters."""
    doc = rss2([Item("Señor café", link="http://e.org/1")], title="Año", encoding="iso-8859-1")
    assert "é".encode("latin-1") in doc and "é".encode() not in doc
    feed = parse_feed(doc, content_type="application/rss+xml")
    assert feed.title == "Año" and feed.entries[0].title == "Señor café"


def test_a_windows_1252_feed_is_decoded() -> None:
    """Typographic quotes and dashes of windows-1252 come out as the Unicode characters."""
    doc = rss2(
        [Item("\u201cQuoted\u201d \u2013 dash", link="http://e.org/1")], encoding="windows-1252"
    )
    assert parse_feed(doc).entries[0].title == "\u201cQuoted\u201d \u2013 dash"


def test_the_charset_of_the_content_type_header_is_used() -> None:
    """No encoding in the prolog, Latin-1 bytes, charset=iso-8859-1 in the HTTP header: decoded right."""
    doc = '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>Niño</title><link>http://e.org/1</link></item></channel></rss>'
    feed = parse_feed(doc.encode("latin-1"), content_type="application/xml; charset=iso-8859-1")
    assert feed.entries[0].title == "Niño"


def test_malformed_xml_that_still_has_entries_is_read_with_a_warning() -> None:
    """A bare & and an unclosed <item>: the entries are read and the warning says it was not well-formed."""
    doc = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>M</title>'
        b"<item><title>Trade & security</title><link>http://e.org/1</link></item>"
        b"<item><title>Two</title><link>http://e.org/2</link></channel></rss>"
    )
    feed = parse_feed(doc)
    assert [e.title for e in feed.entries] == ["Trade & security", "Two"]
    assert "not well-formed" in feed.warning


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not an RSS or Atom feed"),
        (b"<html><head><title>Sign in</title></head><body>Log in</body></html>", "not an RSS"),
        (b'{"posts": []}', "not a readable feed"),
        (b"<<<>>> \x00\x01 garbage", "not a readable feed"),
    ],
    ids=["empty-body", "html-page", "json", "garbage"],
)
def test_documents_that_are_not_feeds_are_refused(body: bytes, message: str) -> None:
    """An empty body, an HTML page, JSON or garbage raise FeedParseError with a one-line reason."""
    with pytest.raises(FeedParseError, match=message) as caught:
        parse_feed(body)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("build", [rss2, rss1, atom], ids=["rss2", "rss1", "atom"])
def test_an_empty_feed_is_a_feed_with_no_entries(build: Builder) -> None:
    """A well-formed feed without items is not an error: no entries, no warning."""
    feed = parse_feed(build([], title="Quiet blog"))
    assert feed.title == "Quiet blog" and feed.entries == [] and feed.warning == ""


def test_fallback_guid_is_a_hash_of_title_and_date() -> None:
    """The identity of an entry without GUID or link: stable for the same title and date, else different."""
    entry = Entry("Title", "", None, "", "", published=WHEN)
    expected = hashlib.sha256(f"Title\x00{WHEN.isoformat()}".encode()).hexdigest()
    assert fallback_guid(entry) == expected
    assert fallback_guid(Entry("Title", "", None, "", "", published=WHEN)) == expected
    assert fallback_guid(Entry("Title", "", None, "", "", published=None)) != expected
    assert fallback_guid(Entry("Other", "", None, "", "", published=WHEN)) != expected


def test_rss2_permalink_guid_without_link_becomes_the_link() -> None:
    """<guid isPermaLink="true"> with no <link>: the GUID is the post's URL."""
    doc = rss2([Item("t", guid="http://example.org/p/7", guid_is_permalink=True)])
    entry = parse_feed(doc).entries[0]
    assert entry.link == "http://example.org/p/7" and entry.guid == "http://example.org/p/7"


def test_relative_links_are_resolved_against_the_feed_url() -> None:
    """Atom allows relative links (RFC 4287 §4.2.7): they resolve against the feed's URL, while
    absolute links are left alone. (Regression: base_url used to be ignored.)"""
    doc = atom(
        [
            Item("root-relative", link="/posts/1", guid="urn:1", published=WHEN),
            Item("relative", link="posts/2", guid="urn:2", published=WHEN - timedelta(1)),
            Item("absolute", link="https://other.example/3", guid="urn:3", published=None),
        ]
    )
    feed = parse_feed(doc, base_url="http://example.org/blog/feed.xml")
    assert [e.link for e in feed.entries] == [
        "http://example.org/posts/1",
        "http://example.org/blog/posts/2",
        "https://other.example/3",
    ]
    assert parse_feed(doc).entries[0].link == "/posts/1"  # no base: nothing is invented
