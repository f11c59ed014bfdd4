"""Editors' Markdown (digest intros) to sanitized HTML and to plain text."""

from __future__ import annotations

from markdown_it import MarkdownIt

from subscriptions.content import plain_text, sanitize_summary

# CommonMark without raw HTML: an editor's "<script>" stays text; nh3 then cleans what remains.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False})


def markdown_html(source: str) -> str:
    """Rendered and sanitized HTML."""
    return sanitize_summary(_md.render(source[:20_000]))


def markdown_text(source: str) -> str:
    """The Markdown source without markup, paragraphs kept apart."""
    paragraphs = [plain_text(_md.render(p), limit=5000) for p in source[:20_000].split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)
