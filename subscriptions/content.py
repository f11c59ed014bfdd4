"""Text from outside (feeds, the publish API) made safe: sanitized HTML summaries, plain-text titles."""

from __future__ import annotations

import html
import re

import nh3

#: What a post summary may keep: text structure and links, nothing that runs or loads.
SUMMARY_TAGS = {
    "a",
    "b",
    "blockquote",
    "br",
    "code",
    "em",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "strong",
    "ul",
}
SUMMARY_ATTRIBUTES = {"a": {"href", "title"}}
MAX_SUMMARY_CHARS = 20_000


def sanitize_summary(value: str) -> str:
    """HTML safe to put in an email or a page: no scripts, no event handlers, http(s)/mailto links only."""
    cleaned = nh3.clean(
        value[:MAX_SUMMARY_CHARS],
        tags=SUMMARY_TAGS,
        attributes=SUMMARY_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return cleaned.strip()


#: Tags that end a block of text: each becomes a space, so "a</p><p>b" reads "a b", not "ab".
_BLOCK_END = re.compile(r"<(?:/(?:p|li|div|h[1-6]|tr|td|blockquote|pre|ul|ol)|br\s*/?)\s*>", re.I)


def plain_text(value: str, *, limit: int = 1000) -> str:
    """Markup and entities removed, whitespace collapsed: a title as a reader should see it."""
    stripped = nh3.clean(_BLOCK_END.sub(" ", value), tags=set(), strip_comments=True)
    text = html.unescape(stripped)
    return " ".join(text.split())[:limit]
