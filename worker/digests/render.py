"""Render subscription emails once per shared body, then fill in each reader's own parts.

Readers who get the same posts under the same topics share one body: it is rendered from Jinja2 and
CSS-inlined once, with placeholders where the reader's links and "why you get this" line go. Per reader
only those placeholders are replaced, escaped exactly as the HTML serializer of the inliner would
have escaped them, so the result is byte-identical to a full render (a test holds this).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import css_inline
from jinja2 import Environment
from markupsafe import Markup

from subscriptions.content import plain_text
from subscriptions.i18n import (
    N_,
    SOURCE_LANGUAGE,
    gettext_for,
    jinja_callables,
    translations,
)
from subscriptions.markdown import markdown_html, markdown_text
from worker.providers.base import SharedBody
from worker.rendering import RenderedEmail

#: The per-reader parts; each appears in one HTML context only (attribute or text). While a body is
#: rendered they are marked with a random nonce (feed text cannot forge it), then the body is cut at
#: the marks: personalizing joins the pieces, so text in a post that merely looks like a placeholder
#: is never replaced.
SLOTS = ("MANAGE", "UNSUBSCRIBE", "REASONS")


@dataclass(frozen=True, slots=True)
class PostView:
    title: str
    link: str
    summary_html: str
    summary_text: str


@dataclass(frozen=True, slots=True)
class Group:
    topic: str
    posts: tuple[PostView, ...]


@dataclass(frozen=True, slots=True)
class ReaderParts:
    """What differs between two readers of the same body."""

    manage_url: str
    unsubscribe_url: str
    reasons: str


@dataclass(frozen=True, slots=True)
class Body:
    """A rendered, inlined body cut at its per-reader slots: shared by every reader of one variant.

    `text_pieces` has one more item than `text_slots` (and the same for HTML): piece, slot, piece, ….
    """

    subject: str
    text_pieces: tuple[str, ...]
    text_slots: tuple[str, ...]
    html_pieces: tuple[str, ...]
    html_slots: tuple[str, ...]

    @property
    def text(self) -> str:
        """The text with each slot shown as `@@NL.NAME@@`."""
        return _join(self.text_pieces, [f"@@NL.{s}@@" for s in self.text_slots])

    @property
    def html(self) -> str:
        """The HTML with each slot shown as `@@NL.NAME@@`."""
        return _join(self.html_pieces, [f"@@NL.{s}@@" for s in self.html_slots])


def _join(pieces: Sequence[str], values: Sequence[str]) -> str:
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        out.append(value)
        out.append(piece)
    return "".join(out)


def _cut(rendered: str, nonce: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    parts = re.split(rf"@@NL{nonce}\.({'|'.join(SLOTS)})@@", rendered)
    return tuple(parts[0::2]), tuple(parts[1::2])


def post_view(title: str, link: str, summary: str) -> PostView:
    """A post as templates show it (the summary is already sanitized when stored)."""
    return PostView(
        title=title, link=link, summary_html=summary, summary_text=plain_text(summary, limit=600)
    )


#: How often, as the reasons line says it ("Mexico daily").
REASON_WORDS = {"immediate": N_("as it happens"), "daily": N_("daily"), "weekly": N_("weekly")}


def reasons_line(subscriptions: Iterable[tuple[str, str]], language: str = SOURCE_LANGUAGE) -> str:
    """ "You get Border Security daily and Mexico weekly." from (topic name, frequency) pairs."""
    _ = gettext_for(language)
    parts = [
        # Translators: one topic and how often it comes, e.g. "Mexico daily".
        _("%(topic)s %(how_often)s") % {"topic": name, "how_often": _(REASON_WORDS[freq])}
        if freq in REASON_WORDS
        else f"{name} {freq}"
        for name, freq in sorted(subscriptions)
    ]
    if not parts:
        return _("You get this email because you subscribed.")
    if len(parts) == 1:
        joined = parts[0]
    else:
        joined = _("%(first)s and %(last)s") % {"first": ", ".join(parts[:-1]), "last": parts[-1]}
    return _("You get %(topics)s.") % {"topics": joined}


def localized_groups(groups: Sequence[Group], names: Mapping[str, str]) -> tuple[Group, ...]:
    """`groups` with each topic named as in `names` (default name → translated; others stay)."""
    if not names:
        return tuple(groups)
    return tuple(Group(names.get(g.topic, g.topic), g.posts) for g in groups)


def localized_subscriptions(
    subscriptions: Iterable[tuple[str, str]], names: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(topic name, frequency) pairs with each name as in `names`."""
    return [(names.get(name, name), freq) for name, freq in subscriptions]


def subject_for(
    kind: str,
    *,
    site_name: str,
    groups: Sequence[Group],
    editorial_subject: str = "",
    language: str = SOURCE_LANGUAGE,
) -> str:
    """Subjects per kind: "Border Security: {title}", "{Site}: 3 new posts this week"."""
    if kind == "immediate":
        return f"{groups[0].topic}: {groups[0].posts[0].title}"
    if kind == "editorial":
        return editorial_subject
    count = len({p.link or p.title for g in groups for p in g.posts})
    catalog = translations(language)
    if kind == "daily":
        text = catalog.ngettext(
            "%(site)s: %(num)d new post today", "%(site)s: %(num)d new posts today", count
        )
    else:
        text = catalog.ngettext(
            "%(site)s: %(num)d new post this week", "%(site)s: %(num)d new posts this week", count
        )
    return text % {"site": site_name, "num": count}


class DigestRenderer:
    """Renders bodies (once per variant) and personalizes them (per reader)."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._inliner = css_inline.CSSInliner(keep_style_tags=True)

    def _context(
        self, kind: str, groups: Sequence[Group], intro_markdown: str, subject: str, language: str
    ) -> dict[str, Any]:
        # Summaries were sanitized with nh3 when their post was stored.
        views = [
            {
                "topic": g.topic,
                "posts": [
                    {**asdict(p), "summary_html": Markup(p.summary_html)}  # noqa: S704
                    for p in g.posts
                ],
            }
            for g in groups
        ]
        return {
            **jinja_callables(language),
            "kind": kind,
            "subject": subject,
            "groups": views,
            "show_topics": kind != "immediate",
            "post_count": len({p.link or p.title for g in groups for p in g.posts}),
            "intro_html": Markup(markdown_html(intro_markdown)) if intro_markdown else "",  # noqa: S704 - sanitized
            "intro_text": markdown_text(intro_markdown) if intro_markdown else "",
        }

    def _template(self, kind: str) -> str:
        return {
            "immediate": "alert",
            "daily": "digest",
            "weekly": "digest",
            "editorial": "editorial",
        }[kind]

    def body(
        self,
        kind: str,
        groups: Sequence[Group],
        *,
        intro_markdown: str = "",
        editorial_subject: str = "",
        language: str = SOURCE_LANGUAGE,
    ) -> Body:
        """Render the shared body of one variant (its language is part of the variant), CSS
        inlined, with placeholders."""
        subject = subject_for(
            kind,
            site_name=str(self._env.globals["site_name"]),
            groups=groups,
            editorial_subject=editorial_subject,
            language=language,
        )
        context = self._context(kind, groups, intro_markdown, subject, language)
        nonce = secrets.token_hex(8)
        placeholders = {
            "manage_url": f"@@NL{nonce}.MANAGE@@",
            "unsubscribe_url": f"@@NL{nonce}.UNSUBSCRIBE@@",
            "reasons": f"@@NL{nonce}.REASONS@@",
        }
        name = self._template(kind)
        text = self._env.get_template(f"{name}.txt").render(**context, **placeholders)
        html = self._inliner.inline(
            self._env.get_template(f"{name}.html").render(**context, **placeholders)
        )
        text_pieces, text_slots = _cut(text, nonce)
        html_pieces, html_slots = _cut(html, nonce)
        return Body(subject, text_pieces, text_slots, html_pieces, html_slots)

    def personalize(self, body: Body, parts: ReaderParts) -> RenderedEmail:
        """One reader's email from a shared body."""
        values = slot_values(parts)
        text = _join(body.text_pieces, [values[f"{s}.t"] for s in body.text_slots])
        html = _join(body.html_pieces, [values[f"{s}.h"] for s in body.html_slots])
        return RenderedEmail(text=text, html=html)

    def full_render(
        self,
        kind: str,
        groups: Sequence[Group],
        parts: ReaderParts,
        *,
        intro_markdown: str = "",
        editorial_subject: str = "",
        language: str = SOURCE_LANGUAGE,
    ) -> tuple[str, RenderedEmail]:
        """Subject and email rendered from scratch for one reader: the reference the fast path must equal."""
        subject = subject_for(
            kind,
            site_name=str(self._env.globals["site_name"]),
            groups=groups,
            editorial_subject=editorial_subject,
            language=language,
        )
        context = self._context(kind, groups, intro_markdown, subject, language)
        values = {
            "manage_url": parts.manage_url,
            "unsubscribe_url": parts.unsubscribe_url,
            "reasons": parts.reasons,
        }
        name = self._template(kind)
        text = self._env.get_template(f"{name}.txt").render(**context, **values)
        html = self._inliner.inline(
            self._env.get_template(f"{name}.html").render(**context, **values)
        )
        return subject, RenderedEmail(text=text, html=html)


def shared_body(body: Body) -> SharedBody:
    """The body as providers that merge per-reader values take it (a new random key each call)."""
    return SharedBody(
        key=secrets.token_hex(8),
        text_pieces=body.text_pieces,
        text_slots=body.text_slots,
        html_pieces=body.html_pieces,
        html_slots=body.html_slots,
    )


def slot_values(parts: ReaderParts) -> dict[str, str]:
    """A reader's value for each slot: `NAME.t` as it goes in the text, `NAME.h` as written in HTML."""
    return {
        "MANAGE.t": parts.manage_url,
        "UNSUBSCRIBE.t": parts.unsubscribe_url,
        "REASONS.t": parts.reasons,
        "MANAGE.h": _attribute(parts.manage_url),
        "UNSUBSCRIBE.h": _attribute(parts.unsubscribe_url),
        "REASONS.h": _text(parts.reasons),
    }


# The inliner re-serializes HTML (html5ever): attribute values escape & " and no-break space; text
# escapes & < > and no-break space. Escaping the same way keeps personalize() equal to full_render().
def _attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("\xa0", "&nbsp;")


def _text(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\xa0", "&nbsp;")
    )
