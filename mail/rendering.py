"""Render emails from templates/email: every email an .html and a .txt template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import css_inline
from jinja2 import Environment

from subscriptions.i18n import SOURCE_LANGUAGE, jinja_callables


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    text: str
    html: str


class EmailRenderer:
    """Renders named email pairs with CSS inlined into the HTML.

    Transactional mail (one reader at a time) inlines each render; digests, where one body serves
    many readers, render and inline once per variant (see the digest issue).
    """

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._inliner = css_inline.CSSInliner(keep_style_tags=True)

    def render(
        self, name: str, *, language: str = SOURCE_LANGUAGE, **context: Any
    ) -> RenderedEmail:
        """The text and HTML bodies of template pair `name` (e.g. "confirm") in `language`."""
        context = {**jinja_callables(language), **context}
        text = self._env.get_template(f"{name}.txt").render(**context)
        html = self._env.get_template(f"{name}.html").render(**context)
        return RenderedEmail(text=text, html=self._inliner.inline(html))
