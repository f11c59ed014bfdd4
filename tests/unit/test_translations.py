"""Every reader-facing message is marked for translation, and the Spanish catalog translates all of it.

Messages are extracted with Babel's own extract API and the project's babel.cfg (what `pybabel extract`
does), so a new `{{ _("…") }}` without a Spanish translation fails here. Text a template shows without
marking is found by a heuristic: the template's literal text (Jinja2 TemplateData nodes; text inside
`{% trans %}` and `_()` is not literal data after parsing) with tags, style/script blocks, entities
and punctuation removed must hold no words.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from jinja2 import Environment, nodes

from subscriptions import i18n
from subscriptions.templating import template_environment
from tests.factories import make_settings

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
SPANISH = i18n.LOCALES / "es" / "LC_MESSAGES"
#: The editors' console stays in English.
READER_TEMPLATES = sorted(
    [*TEMPLATES.glob("web/*.html"), *TEMPLATES.glob("email/*.html"), *TEMPLATES.glob("email/*.txt")]
)


def extracted_messages() -> dict[tuple[str | tuple[str, ...], str | None], list[str]]:
    """(msgid or singular/plural pair, context) → where it was found, as `pybabel extract -F
    babel.cfg` sees it."""
    with (REPO / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: dict[tuple[str | tuple[str, ...], str | None], list[str]] = {}
    for filename, _lineno, message, _comments, context in extract_from_dir(
        str(REPO), method_map, options_map
    ):
        key = message if isinstance(message, str) else tuple(m for m in message if m)
        found.setdefault((key, context), []).append(filename)
    return found


def spanish_catalog():  # type: ignore[no-untyped-def]
    with (SPANISH / "messages.po").open("rb") as po:
        return read_po(po, locale="es")


def test_babel_cfg_extracts_templates_and_python_messages() -> None:
    found = extracted_messages()
    where = {f for files in found.values() for f in files}
    assert "templates/web/subscribe.html" in where
    assert "templates/email/confirm.txt" in where
    assert "worker/reader_mail.py" in where
    assert not any(f.startswith("templates/web/admin/") for f in where), "the console stays English"
    assert len(found) > 150


def test_every_extracted_message_has_a_spanish_translation() -> None:
    catalog = spanish_catalog()
    missing, fuzzy = [], []
    for (key, context), files in extracted_messages().items():
        msgid = key if isinstance(key, str) else key[0]
        entry = catalog.get(msgid, context=context)
        if entry is None or not all(entry.string if entry.pluralizable else [entry.string]):
            missing.append((key, files[0]))
        elif entry.fuzzy:
            fuzzy.append((key, files[0]))
    assert not missing, f"untranslated in es (run pybabel update, then translate): {missing}"
    assert not fuzzy, f"fuzzy in es (review, then remove the fuzzy flag): {fuzzy}"
    # Placeholders agree between msgid and translation (Babel's python-format checker).
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert not problems


def test_committed_mo_is_compiled_from_the_po() -> None:
    with (SPANISH / "messages.mo").open("rb") as mo:
        compiled = read_mo(mo)
    fresh = read_mo(io.BytesIO(i18n.compile_catalog((SPANISH / "messages.po").read_bytes())))
    assert _entries(compiled) == _entries(fresh), "run: pybabel compile -d subscriptions/locales"


def _entries(catalog) -> dict[object, object]:  # type: ignore[no-untyped-def]
    frozen = lambda v: v if isinstance(v, str) else tuple(v)  # noqa: E731
    return {frozen(m.id): frozen(m.string) for m in catalog if m.id}


_STYLE_OR_SCRIPT = re.compile(r"<(style|script)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>", re.S)
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|\w+);", re.I)
_WORD = re.compile(r"[^\W\d_]{2,}")


def unmarked_words(env: Environment, source: str) -> list[str]:
    """Words a template shows that are not inside {% trans %} or _()/gettext/ngettext."""
    tree = env.parse(source)
    # Literal text in document order; a gap (an expression or a tag) becomes \x00 so that a tag
    # interrupted by {{ … }} is still one tag for the pattern below.
    data = "\x00".join(node.data for node in tree.find_all(nodes.TemplateData))
    text = _ENTITY.sub(" ", _TAG.sub(" ", _STYLE_OR_SCRIPT.sub(" ", data)))
    return _WORD.findall(text)


@pytest.fixture(scope="module")
def email_env() -> Environment:
    return template_environment(make_settings(REPO / "var"), "email")


def test_the_unmarked_text_heuristic_sees_words_and_ignores_markup(email_env: Environment) -> None:
    assert unmarked_words(email_env, "<p>Hello {{ name }}</p>") == ["Hello"]
    assert (
        unmarked_words(email_env, '<a href="{{ url }}" class="x">{{ _("Hi") }}</a> · {{ n }}') == []
    )
    assert unmarked_words(email_env, "{% trans %}Hello {{ name }}{% endtrans %}") == []
    assert unmarked_words(email_env, "<style>.a { color: red; }</style>&nbsp;--") == []


@pytest.mark.parametrize("path", READER_TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_templates_show_no_unmarked_text(path: Path, email_env: Environment) -> None:
    words = unmarked_words(email_env, path.read_text())
    assert not words, f"{path.relative_to(REPO)}: mark for translation: {words}"


def test_a_spanish_render_is_spanish_and_says_so() -> None:
    env = template_environment(make_settings(REPO / "var", languages="en,es"), "web")
    page = env.get_template("manage_request.html").render(
        **i18n.jinja_callables("es"), csrf_token="t"
    )
    assert '<html lang="es">' in page
    assert "Administra tu suscripción" in page
    assert "Manage your subscription" not in page
    english = env.get_template("manage_request.html").render(csrf_token="t")
    assert '<html lang="en">' in english and "Manage your subscription" in english


def test_a_message_made_in_python_is_translated_but_still_escaped() -> None:
    env = template_environment(make_settings(REPO / "var"), "web")
    template = env.from_string("{{ translate(message) }}")
    es = i18n.jinja_callables("es")
    assert (
        template.render(**es, message="Choose how long to pause.") == "Elige cuánto tiempo pausar."
    )
    assert template.render(**es, message="<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"


def test_accept_language_is_negotiated_among_the_offered_languages() -> None:
    assert i18n.negotiate("es-MX,es;q=0.9,en;q=0.8", ("en", "es")) == "es"
    assert i18n.negotiate("fr-FR,en;q=0.5,es;q=0.7", ("en", "es")) == "es"
    assert i18n.negotiate("fr", ("en", "es")) == "en"
    assert i18n.negotiate("es-MX", ("en",)) == "en"
    assert i18n.negotiate(None, ("es", "en")) == "es"
    assert i18n.negotiate("es;q=0, en", ("en", "es")) == "en"


def test_a_language_without_a_catalog_is_refused_with_what_is_known() -> None:
    from subscriptions.errors import ConfigurationError
    from subscriptions.settings import load_settings

    with pytest.raises(ConfigurationError, match=r"NEWSLETTER_LANGUAGES: no catalog for fr"):
        load_settings(_env_file=None, languages="en,fr")
    assert load_settings(_env_file=None, languages=" ES , en,es").language_list == ("es", "en")


def test_the_rate_limit_page_says_when_to_try_again_in_spanish() -> None:
    from datetime import UTC, datetime

    from subscriptions.web.reader import retry_words

    now = datetime(2026, 1, 5, 13, 59, 30, tzinfo=UTC)
    assert retry_words(30, now, language="es") == (
        "Inténtalo de nuevo en 30 segundos (después de las 14:00 UTC)."
    )
    assert retry_words(12 * 60, now) == "Please try again in about 12 minutes (after 14:11 UTC)."
