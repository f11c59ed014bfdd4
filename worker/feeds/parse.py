"""Turn a feed document (RSS 0.9x/1.0/2.0, Atom) into plain entries; pure, no I/O."""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import feedparser

from subscriptions.content import plain_text


class FeedParseError(Exception):
    """The document is not a feed we can read; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Entry:
    title: str
    link: str
    guid: str | None
    summary: str
    author: str
    categories: list[str] = field(default_factory=list)
    published: datetime | None = None


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str
    entries: list[Entry]
    warning: str = ""


def parse_feed(body: bytes, *, content_type: str = "", base_url: str = "") -> ParsedFeed:
    """Entries of the feed in `body`, newest first; malformed feeds that still yield entries are read."""
    headers = {"content-type": content_type} if content_type else {}
    if base_url:
        headers["content-location"] = base_url
    parsed = feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    entries = [_entry(raw, base_url) for raw in parsed.entries]
    entries = [e for e in entries if e.title or e.link]
    warning = ""
    if parsed.bozo:
        reason = str(parsed.get("bozo_exception", "malformed feed"))[:200].replace("\n", " ")
        if not entries and not parsed.feed.get("title"):
            raise FeedParseError(f"not a readable feed: {reason}")
        warning = f"feed is not well-formed ({reason}); read what could be read"
    if not parsed.get("version") and not entries and not parsed.feed.get("title"):
        raise FeedParseError("not an RSS or Atom feed")
    entries.sort(key=lambda e: e.published or datetime.min.replace(tzinfo=UTC), reverse=True)
    return ParsedFeed(
        title=plain_text(parsed.feed.get("title", ""), limit=400), entries=entries, warning=warning
    )


def _entry(raw: Any, base_url: str) -> Entry:
    title = plain_text(raw.get("title", ""))
    link = (raw.get("link") or "").strip()
    if link and base_url:
        # Atom allows relative links (RFC 4287 section 4.2.7): resolve them against the feed's URL.
        link = urljoin(base_url, link)
    guid = (raw.get("id") or "").strip() or None
    summary = raw.get("summary") or ""
    if not summary and raw.get("content"):
        summary = raw["content"][0].get("value", "")
    categories = [
        plain_text(t.get("term") or t.get("label") or "", limit=200) for t in raw.get("tags", [])
    ]
    return Entry(
        title=title or link,
        link=link,
        guid=guid,
        summary=summary,
        author=plain_text(raw.get("author", ""), limit=400),
        categories=[c for c in categories if c],
        published=_when(raw),
    )


def _when(raw: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = raw.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def fallback_guid(entry: Entry) -> str:
    """For entries with neither GUID nor link: a hash of title and date."""
    stamp = entry.published.isoformat() if entry.published else ""
    return hashlib.sha256(f"{entry.title}\x00{stamp}".encode()).hexdigest()
