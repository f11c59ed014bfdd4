"""Readers in Spanish and English: the page's language, the reader's stored language, their emails.

The app runs in-process against the real database and Redis (as in test_reader_pages); emails go
through the product's own worker code into the outbox and are read back as MIME.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from subscriptions import imports, readers
from subscriptions.db import transaction
from subscriptions.models import Consent, Subscriber
from subscriptions.tokens import Purpose, TokenSigner
from tests import webforms
from tests.factories import SECRET, active_reader
from tests.integration.test_reader_pages import Site
from worker import reader_mail
from worker.runtime import WorkerRuntime

signer = TokenSigner(SECRET)
SPANISH_BROWSER = {"Accept-Language": "es-MX,es;q=0.9,en;q=0.8"}
ENGLISH_BROWSER = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture
def site(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Site]:
    yield Site(tmp_path, database_url, redis_url, languages="en,es")


def outbox_messages(site: Site) -> list[email.message.EmailMessage]:
    folder = Path(site.settings.email_url.removeprefix("outbox://"))
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    ]


def body_text(message: email.message.EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_the_page_follows_accept_language_and_the_switch_is_remembered(site: Site) -> None:
    client = site.client()
    spanish = client.get("/", headers=SPANISH_BROWSER)
    assert '<html lang="es">' in spanish.text
    assert "Correo electrónico" in spanish.text and "Email address" not in spanish.text
    assert 'name="lang" value="es"' in spanish.text
    # The switch: English on this page, and remembered for the next ones, whatever the browser says.
    english = client.get("/?lang=en", headers=SPANISH_BROWSER)
    assert '<html lang="en">' in english.text and "Email address" in english.text
    assert "newsletter_lang=en" in english.headers["set-cookie"]
    assert '<html lang="en">' in client.get("/manage", headers=SPANISH_BROWSER).text
    # A language that is not offered changes nothing.
    other = site.client().get("/?lang=fr", headers=SPANISH_BROWSER)
    assert '<html lang="es">' in other.text
    assert "newsletter_lang" not in other.headers.get("set-cookie", "")


def test_a_spanish_sign_up_is_stored_and_confirmed_in_spanish(site: Site) -> None:
    client = site.client()
    client.headers.update(SPANISH_BROWSER)
    answer = webforms.subscribe(client, "lectora@example.org", ["mexico"], "weekly", lang="es")
    assert answer.status_code == 200 and "Revisa tu correo" in answer.text
    site.apply()
    with site.sessions() as session:
        reader = session.scalars(
            select(Subscriber).where(Subscriber.email == "lectora@example.org")
        ).one()
        consent_id = session.scalars(
            select(Consent.id).where(Consent.subscriber_id == reader.id)
        ).one()
        assert reader.language == "es"
    runtime = WorkerRuntime(site.settings)
    assert reader_mail.send_confirmation(runtime, consent_id).sent
    [message] = outbox_messages(site)
    assert message["Subject"] == "Confirma tu suscripción a Institute Updates"
    text = body_text(message)
    assert "Frecuencia: cada semana." in text and "How often" not in text
    html = message.get_body(("html",))
    assert html is not None and '<html lang="es">' in str(html.get_content())


def test_an_english_page_signs_up_an_english_reader(site: Site) -> None:
    client = site.client()
    webforms.subscribe(client, "reader@example.org", ["mexico"], lang="en")
    site.apply()
    with site.sessions() as session:
        language = session.scalar(
            select(Subscriber.language).where(Subscriber.email == "reader@example.org")
        )
    assert language == "en"


def test_the_preference_centre_speaks_the_readers_language_and_changes_it(site: Site) -> None:
    with transaction(site.sessions) as session:
        reader_id = active_reader(session, "lectora@example.org", ["mexico"])
        session.get(Subscriber, reader_id).language = "es"  # type: ignore[union-attr]
    token = signer.make(Purpose.MANAGE, subscriber_id=reader_id, version=1)
    client = site.client()
    client.headers.update(ENGLISH_BROWSER)  # the reader's own language wins over the browser's
    page = client.get(f"/manage/{token}")
    assert '<html lang="es">' in page.text and "Tus preferencias" in page.text
    assert '<option value="es" lang="es" selected>' in page.text
    form = {"frequency-mexico": "daily", "pause": "keep", "timezone": "UTC"}
    refused = webforms.post_form(
        client, f"/manage/{token}", f"/manage/{token}", {**form, "language": "fr"}
    )
    assert refused.status_code == 400 and "Elige un idioma de la lista." in refused.text
    saved = webforms.post_form(
        client, f"/manage/{token}", f"/manage/{token}", {**form, "language": "en"}
    )
    assert saved.status_code == 200
    assert '<html lang="en">' in saved.text and "Your preferences are saved." in saved.text
    with site.sessions() as session:
        assert session.get(Subscriber, reader_id).language == "en"  # type: ignore[union-attr]


def test_unsubscribe_pages_and_one_click_answer_in_the_readers_language(site: Site) -> None:
    with transaction(site.sessions) as session:
        reader_id = active_reader(session, "lectora@example.org", ["mexico"])
        readers.update_preferences(
            session=session, subscriber_id=reader_id, frequencies={}, language="es"
        )
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    client = site.client()
    client.headers.update(ENGLISH_BROWSER)
    page = client.get(f"/unsubscribe/{token}")
    assert '<html lang="es">' in page.text and "Tómate un descanso" in page.text
    done = client.post(
        f"/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "Te diste de baja" in done.text
    # A broken link names no reader: the browser's language.
    broken = client.get("/unsubscribe/not-a-token", headers=SPANISH_BROWSER)
    assert broken.status_code == 400 and "Este enlace no es válido" in broken.text


def test_csv_import_and_export_carry_the_language(site: Site) -> None:
    text = (
        "email,topics,frequency,timezone,name,language\r\n"
        "a@example.org,mexico,daily,,,es\r\n"
        "b@example.org,mexico,daily,,,\r\n"
        "c@example.org,mexico,daily,,,klingon\r\n"
    )
    with transaction(site.sessions) as session:
        report = imports.import_readers(session=session, text=text, consent=True, editor="ed")
    assert report.imported == 2
    assert [(i.row, i.reason[:26]) for i in report.bad] == [(4, "unknown language 'klingon'")]
    with site.sessions() as session:
        exported = "".join(imports.export_csv(session=session))
    lines = exported.splitlines()
    assert lines[0] == "email,topics,frequency,timezone,name,language,status"
    assert "a@example.org,mexico,daily,UTC,,es,active" in lines
    assert "b@example.org,mexico,daily,UTC,,,active" in lines


# ------------------------------------------------------------------------------- topics per language


def test_topics_in_both_languages_through_api_console_and_cli(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """The API, the console and the CLI all set a topic's Spanish name and description (one store
    operation); readers of Spanish see it, and an untranslated topic falls back to its name."""
    from click.testing import CliRunner

    from subscriptions.cli import main
    from tests.consoles import Console

    console = Console(tmp_path, database_url, redis_url, languages="en,es")
    try:
        api = console.api("admin")
        made = api.post(
            "/api/v1/topics",
            json={
                "slug": "elections",
                "name": "Elections",
                "translations": {"es": {"name": "Elecciones", "description": "Votos."}},
            },
        )
        assert made.status_code == 201, made.text
        assert made.json()["translations"] == {
            "es": {"name": "Elecciones", "description": "Votos."}
        }
        refused = api.post(
            "/api/v1/topics",
            json={"slug": "x", "name": "X", "translations": {"klingon": {"name": "X"}}},
        )
        assert refused.status_code == 422 and "klingon" in refused.text
        mexico = next(t for t in api.get("/api/v1/topics").json()["items"] if t["slug"] == "mexico")
        patched = api.patch(
            f"/api/v1/topics/{mexico['id']}", json={"translations": {"es": {"name": "México"}}}
        )
        assert patched.json()["translations"]["es"]["name"] == "México"
        # The console: the Spanish fields of the topic page.
        editor = console.signed_in()
        border = next(
            t for t in api.get("/api/v1/topics").json()["items"] if t["slug"] == "border-security"
        )
        page = f"/admin/topics/{border['id']}"
        saved = webforms.post_form(
            editor,
            page,
            page,
            {
                "name": "Border Security",
                "description": "Borders.",
                "name-es": "Seguridad fronteriza",
                "description-es": "Fronteras.",
            },
        )
        assert saved.status_code == 303, saved.text
        # The CLI: `newsletter topics translate`.
        result = CliRunner().invoke(
            main,
            ["topics", "translate", "refugees", "es", "Refugiados"],
            env={
                "NEWSLETTER_DATABASE_URL": database_url,
                "NEWSLETTER_LANGUAGES": "en,es",
                "NEWSLETTER_SECRET_KEY": SECRET,
            },
        )
        assert result.exit_code == 0, result.output
        assert "es: Refugiados" in result.output
        # Readers: Spanish names where given, the default name where not (Migration).
        spanish = console.client().get("/", headers=SPANISH_BROWSER).text
        for name in ("Elecciones", "México", "Seguridad fronteriza", "Fronteras.", "Refugiados"):
            assert name in spanish
        assert "Migration" in spanish and "Border Security" not in spanish
        english = console.client().get("/", headers=ENGLISH_BROWSER).text
        assert "Border Security" in english and "Seguridad fronteriza" not in english
    finally:
        console.close()


def test_a_spanish_readers_emails_name_the_topics_in_spanish(site: Site) -> None:
    from subscriptions.topics import list_topics, update_topic

    with transaction(site.sessions) as session:
        mexico = next(t for t in list_topics(session=session) if t.slug == "mexico")
        update_topic(session=session, topic_id=mexico.id, translations={"es": {"name": "México"}})
        signup = readers.subscribe(
            session=session,
            email="lectora@example.org",
            topics=["mexico", "migration"],
            frequency=readers.Frequency.DAILY,
            timezone="America/Mexico_City",
            language="es",
        )
    runtime = WorkerRuntime(site.settings)
    assert reader_mail.send_confirmation(runtime, signup.consent_id or 0).sent
    [message] = outbox_messages(site)
    text = body_text(message)
    assert "  - México" in text and "  - Migration" in text


def test_the_confirmation_link_opens_in_the_readers_language(site: Site) -> None:
    with transaction(site.sessions) as session:
        signup = readers.subscribe(
            session=session,
            email="lectora@example.org",
            topics=["mexico"],
            frequency=readers.Frequency.DAILY,
            timezone="UTC",
            language="es",
        )
    token = signer.make(
        Purpose.CONFIRM,
        subscriber_id=signup.subscriber_id or 0,
        version=1,
        consent_id=signup.consent_id,
    )
    page = site.client().get(f"/confirm/{token}", headers=ENGLISH_BROWSER)
    assert '<html lang="es">' in page.text and "Sí, quiero suscribirme" in page.text
    # A forged link names no reader: the browser's language.
    forged = site.client().get(f"/confirm/{token}x", headers=ENGLISH_BROWSER)
    assert forged.status_code == 400 and "This link is not valid" in forged.text


BLOG = "https://blog.example.org"


def _box(email: str, **extra: str) -> dict[str, object]:
    """What the console's plain HTML snippet sends (the embed script adds `lang`)."""
    return {
        "email": email,
        "topics": ["mexico"],
        "frequency": "weekly",
        "source": "subscribe box",
        "website": "",
        **extra,
    }


def test_form_errors_on_a_spanish_page_are_in_spanish_only(site: Site) -> None:
    client = site.client()
    client.headers.update(SPANISH_BROWSER)
    # A body with more fields than any form has: the count is in the sentence, in Spanish.
    crowded = client.post(
        "/subscribe",
        content="&".join(f"f{n}=x" for n in range(150)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert crowded.status_code == 400
    assert "Demasiados campos. El número máximo de campos es 100." in crowded.text
    assert "Too many fields" not in crowded.text
    # An address email-validator refuses: a Spanish sentence, not its English detail.
    bad = webforms.subscribe(client, "lectora-sin-arroba.example.org", ["mexico"], lang="es")
    assert bad.status_code == 400
    assert "Esa dirección de correo no es válida; revisa que esté bien escrita." in bad.text
    assert "not valid" not in bad.text and "@-sign" not in bad.text
    # The manage-link request form too.
    manage = webforms.post_form(client, "/manage", "/manage", {"email": "nadie.example.org"})
    assert manage.status_code == 400 and "no es válida" in manage.text
    assert "not valid" not in manage.text
    # An English page keeps the validator's own explanation.
    english = site.client()
    english.headers.update(ENGLISH_BROWSER)
    shown = webforms.subscribe(english, "reader-without-at.example.org", ["mexico"], lang="en")
    assert shown.status_code == 400 and "That email address is not valid: " in shown.text
    crowded_en = english.post(
        "/subscribe",
        content="&".join(f"f{n}=x" for n in range(150)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "Too many fields. Maximum number of fields is 100." in crowded_en.text


def test_the_embed_scripts_json_answers_in_the_boxs_language(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    boxed = Site(tmp_path, database_url, redis_url, languages="en,es", embed_origins=BLOG)
    client = boxed.client()
    headers = {"Origin": BLOG, "Accept": "application/json", **ENGLISH_BROWSER}
    ok = client.post("/subscribe", data=_box("Lectora@Example.org", lang="es"), headers=headers)
    assert ok.status_code == 200
    assert ok.json() == {
        "ok": True,
        "title": "Revisa tu correo",
        "message": "Enviamos un enlace a Lectora@Example.org. Ábrelo para confirmar tu suscripción.",
    }
    bad = client.post("/subscribe", data=_box("sin-arroba", lang="es"), headers=headers)
    assert bad.status_code == 400
    assert bad.json() == {
        "ok": False,
        "title": "Revisa el formulario",
        "message": "Esa dirección de correo no es válida; revisa que esté bien escrita.",
    }
    # Without a `lang` the browser's language decides; English stays English.
    english = client.post("/subscribe", data=_box("reader@example.org"), headers=headers)
    assert english.json()["title"] == "Check your email"
    spanish = client.post(
        "/subscribe",
        data=_box("otra@example.org"),
        headers={**headers, **SPANISH_BROWSER},
    )
    assert spanish.json()["title"] == "Revisa tu correo"
    boxed.apply()
    assert boxed.reader("lectora@example.org") is not None
    boxed.app.state.runtime.engine.dispose()
    boxed.worker.runtime.engine.dispose()


def test_the_embed_script_sends_the_boxs_or_the_pages_language() -> None:
    script = (Path(__file__).resolve().parents[2] / "templates/static/embed.js").read_text()
    assert 'data.set("lang", document.documentElement.lang)' in script
    assert 'es: "Enviando…"' in script
