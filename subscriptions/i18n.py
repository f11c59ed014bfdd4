"""Reader languages: the gettext catalogs under subscriptions/locales, choosing a language, and
the translation callables installed into a Jinja2 render.

English is the source language: the msgids are the English text, so English needs no catalog.
Every other language is `locales/<lang>/LC_MESSAGES/messages.po`, compiled to `messages.mo` with
`pybabel compile` (the .mo files are committed, so a wheel carries them). A .po without an up to date
.mo is compiled in memory when first used, so an edited catalog never serves stale text.
"""

from __future__ import annotations

import gettext as gettext_module
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

#: The catalogs; inside an installed wheel too (they are part of the package).
LOCALES = Path(__file__).parent / "locales"
#: The language the templates and the Python strings are written in.
SOURCE_LANGUAGE = "en"
#: The language of the request being answered (set by the web app's language middleware).
current_language: ContextVar[str] = ContextVar("current_language", default=SOURCE_LANGUAGE)


def N_(message: str) -> str:
    """Mark `message` for extraction; it is translated where it is shown (`{{ _(message) }}`)."""
    return message


def available_languages() -> frozenset[str]:
    """English plus every language with a catalog in LOCALES."""
    found = {SOURCE_LANGUAGE}
    if LOCALES.is_dir():
        for folder in LOCALES.iterdir():
            messages = folder / "LC_MESSAGES"
            if (messages / "messages.po").is_file() or (messages / "messages.mo").is_file():
                found.add(folder.name.lower())
    return frozenset(found)


@cache
def translations(language: str) -> gettext_module.NullTranslations:
    """The compiled catalog of `language`; the source language (or none found) translates nothing."""
    if language == SOURCE_LANGUAGE:
        return gettext_module.NullTranslations()
    folder = LOCALES / language / "LC_MESSAGES"
    po, mo = folder / "messages.po", folder / "messages.mo"
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as handle:
            return gettext_module.GNUTranslations(handle)
    if po.is_file():
        return gettext_module.GNUTranslations(io.BytesIO(compile_catalog(po.read_bytes())))
    return gettext_module.NullTranslations()


def compile_catalog(po_bytes: bytes) -> bytes:
    """The .mo bytes of a .po file (what `pybabel compile` writes); fuzzy entries are left out."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(po_bytes))
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def choose_language(value: str | None, offered: Iterable[str]) -> str | None:
    """`value` (a `lang` parameter, e.g. "es" or "es-MX") if it names an offered language, else None."""
    if not value:
        return None
    offered = tuple(offered)
    tag = value.strip().replace("_", "-").lower()
    if tag in offered:
        return tag
    primary = tag.split("-", 1)[0]
    return primary if primary in offered else None


def reader_language(offered: Sequence[str], language: str | None) -> str:
    """A reader's stored language if it is still offered, else the fallback (the first offered)."""
    return language if language is not None and language in offered else offered[0]


def negotiate(accept_language: str | None, offered: Iterable[str]) -> str:
    """The offered language the browser prefers most (RFC 9110 `Accept-Language` with q-values);
    the first offered language when none matches."""
    offered = tuple(offered)
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(val)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag))
    for _quality, _position, tag in sorted(ranked):
        chosen = choose_language(tag, offered)
        if chosen is not None:
            return chosen
    return offered[0] if offered else SOURCE_LANGUAGE


def gettext_for(language: str) -> Callable[[str], str]:
    """Plain gettext of `language`, for Python strings (subjects, frequency words)."""
    return translations(language).gettext


def jinja_callables(language: str) -> dict[str, Any]:
    """`gettext`, `ngettext`, `_` and `lang` for one render in `language` (Jinja2's newstyle
    gettext: `%(name)s` placeholders filled from keyword arguments, escaped when autoescaping)."""
    catalog = translations(language)

    @pass_context
    def gettext(context: Context, string: str, /, **variables: Any) -> str:
        text = catalog.gettext(string)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - catalog text for a literal msgid, as Jinja2 does
        return text % variables

    @pass_context
    def ngettext(
        context: Context, singular: str, plural: str, num: int, /, **variables: Any
    ) -> str:
        variables.setdefault("num", num)
        text = catalog.ngettext(singular, plural, num)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - catalog text for a literal msgid, as Jinja2 does
        return text % variables

    @pass_context
    def pgettext(context: Context, msgctxt: str, string: str, /, **variables: Any) -> str:
        # The same English word in two roles ("Subscribe" as a heading and as a button).
        text = catalog.pgettext(msgctxt, string)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - catalog text for a literal msgid, as Jinja2 does
        return text % variables

    def translate(message: str) -> str:
        # For messages made in Python (errors, notices) and marked there with N_: a plain str, so
        # autoescaping still applies; `_()` would mark its result safe, which only a literal may be.
        return catalog.gettext(message) if message else message

    return {
        "gettext": gettext,
        "ngettext": ngettext,
        "pgettext": pgettext,
        "_": gettext,
        "translate": translate,
        "lang": language,
    }


def format_datetime(moment: datetime, language: str, timezone: str, form: str = "medium") -> str:
    """`moment` in the reader's language and time zone (Babel, CLDR patterns)."""
    from babel.dates import format_datetime as babel_format

    return babel_format(moment, form, tzinfo=ZoneInfo(timezone), locale=language)


def format_date(moment: datetime, language: str, timezone: str, form: str = "long") -> str:
    """The date of `moment` in the reader's language and time zone."""
    from babel.dates import format_date as babel_format

    return babel_format(moment.astimezone(ZoneInfo(timezone)).date(), form, locale=language)


def format_number(number: float, language: str) -> str:
    """`number` with the reader's language's separators."""
    from babel.numbers import format_decimal

    return format_decimal(number, locale=language)


def language_names(languages: Iterable[str]) -> Mapping[str, str]:
    """Each language's name in itself ("English", "español"), for the language switch."""
    from babel import Locale

    return {code: Locale.parse(code).get_display_name(code) or code for code in languages}
