"""A reader whose browser reads Spanish, in a real Chromium against a real web process, worker and Redis.

The browser sends `Accept-Language: es-MX` (Playwright's `locale`): the subscribe page is Spanish, the
confirmation and welcome emails are Spanish, the preference centre is Spanish until the reader switches
to English there, and the next alert (a post the worker plans and sends) arrives in English. The Spanish
pages pass axe-core like the English ones (`lang="es"` set on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from subscriptions.db import create_db_engine, session_factory, transaction
from subscriptions.models import Subscriber
from subscriptions.posts import add_post
from subscriptions.queue import PLAN_POST_ALERTS, TaskQueue
from tests.e2e.axe import assert_accessible
from tests.e2e.conftest import PageFactory
from tests.e2e.test_reader_journey import Journey, _link, _text, _wait_for_email
from tests.integration.conftest import free_port, newsletter, wait_until_serving

ADDRESS = "lectora@example.org"


def test_a_spanish_browser_subscribes_in_spanish_and_switches_to_english(
    service_env: dict[str, str], start: Any, new_page: PageFactory, screenshots: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(service_env, NEWSLETTER_BASE_URL=base, NEWSLETTER_LANGUAGES="en,es")
    outbox = Path(env["NEWSLETTER_EMAIL_URL"].removeprefix("outbox://"))
    newsletter("db", "upgrade", env=env)
    newsletter(
        "topics", "add", "mexico", "Mexico", "--description", "U.S.-Mexico relations",
        "--translation", "es:México:Relaciones entre México y EE. UU.", env=env,
    )  # fmt: skip
    newsletter("topics", "add", "refugees", "Refugees", env=env)
    web = start(["web", "--port", str(port)], env)
    start(["worker", "--concurrency", "1"], env)
    wait_until_serving(f"{base}/healthz", web)
    sessions = session_factory(create_db_engine(env["NEWSLETTER_DATABASE_URL"]))

    journey = Journey(screenshots)
    page = journey.watch(
        new_page(
            locale="es-MX",
            timezone_id="America/Mexico_City",
            viewport={"width": 1024, "height": 800},
        )
    )
    # 1. The subscribe page follows Accept-Language: Spanish, and says so.
    page.goto(f"{base}/")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_role("heading", name="Suscribirse")).to_be_visible()
    assert_accessible(page, "the Spanish subscribe page")
    journey.shot(page, "suscribirse")
    page.get_by_label("Correo electrónico").fill(ADDRESS)
    page.get_by_role("checkbox", name="México").check()
    page.get_by_role("radio", name="De inmediato, un correo por publicación").check()
    page.get_by_role("button", name="Suscribirme").click()
    expect(page.get_by_role("heading", name="Revisa tu correo")).to_be_visible()
    journey.shot(page, "revisa-tu-correo")

    # 2. Confirmation and welcome in Spanish.
    confirmation = _wait_for_email(outbox, "Confirma tu suscripción a Institute Updates")
    text = _text(confirmation)
    assert "  - México" in text and "Frecuencia: de inmediato." in text
    page.goto(_link(text, base, "/confirm/"))
    expect(page.get_by_role("heading", name="Confirma tu suscripción")).to_be_visible()
    assert_accessible(page, "the Spanish confirm page")
    page.get_by_role("button", name="Sí, quiero suscribirme").click()
    expect(page.get_by_role("heading", name="Ya estás suscrito")).to_be_visible()
    journey.shot(page, "suscrito")
    welcome = _wait_for_email(outbox, "Te damos la bienvenida a Institute Updates")
    manage_url = _link(_text(welcome), base, "/manage/")
    with sessions() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == ADDRESS)).one()
        assert reader.language == "es"

    # 3. The preference centre speaks Spanish; the reader switches to English there.
    page.goto(manage_url)
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_role("heading", name="Tus preferencias")).to_be_visible()
    assert_accessible(page, "the Spanish preference centre")
    journey.shot(page, "preferencias")
    page.get_by_label("Correos y páginas en").select_option("en")
    page.get_by_role("button", name="Guardar preferencias").click()
    expect(page.get_by_role("status")).to_have_text("Your preferences are saved.")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    journey.shot(page, "preferences-english")
    with sessions() as session:
        assert (
            session.scalar(select(Subscriber.language).where(Subscriber.email == ADDRESS)) == "en"
        )

    # 4. The next alert arrives in English.
    with transaction(sessions) as session:
        post = add_post(
            session=session,
            title="Elections in Mexico",
            link="https://example.org/elections",
            topics=["mexico"],
            notify=True,
        )
    TaskQueue(env["NEWSLETTER_BROKER_URL"]).send(PLAN_POST_ALERTS, post.id)
    alert = _wait_for_email(outbox, "Mexico: Elections in Mexico")
    alert_text = _text(alert)
    assert "A new post in Mexico:" in alert_text and "Una nueva publicación" not in alert_text
    assert "You get Mexico as it happens." in alert_text
    assert journey.errors == [], "errors in the browser"
