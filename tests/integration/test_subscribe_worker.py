"""Over HTTP, with a real worker process and a real Redis: subscribe, then find the email in the outbox."""

from __future__ import annotations

import email
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from subscriptions.db import create_db_engine, session_factory
from subscriptions.models import Subscriber, SubscriberStatus
from tests import webforms
from tests.integration.conftest import free_port, newsletter, wait_for_files, wait_until_serving


def _read(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert isinstance(message, EmailMessage)
    return message


def test_subscribe_form_to_confirmation_email_to_confirmed(
    tmp_path: Path, service_env: dict[str, str], start: Any
) -> None:
    newsletter("db", "upgrade", env=service_env)
    newsletter(
        "topics",
        "add",
        "mexico",
        "Mexico",
        "--description",
        "U.S.-Mexico relations",
        env=service_env,
    )
    newsletter("topics", "add", "refugees", "Refugees", env=service_env)
    port = free_port()
    web = start(["web", "--port", str(port)], service_env)
    start(["worker", "--concurrency", "1"], service_env)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{base}/healthz", web)

    with httpx.Client(base_url=base, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and "Refugees" in page.text
        answer = webforms.subscribe(
            client,
            "Lector@Example.org",
            ["mexico", "refugees"],
            "weekly",
            timezone="America/Mexico_City",
        )
        assert answer.status_code == 200 and "Check your email" in answer.text

        [path] = wait_for_files(tmp_path / "outbox", 1)
        message = _read(path)
        assert message["To"] == "lector@example.org"
        assert message["From"] == "Institute Updates <news@example.org>"
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        body = text.get_content()
        assert "Mexico" in body and "Refugees" in body
        link = re.search(r"http://\S+/confirm/\S+", body)
        assert link is not None
        path_only = (
            link.group(0).split("8000", 1)[-1]
            if ":8000" in link.group(0)
            else "/confirm/" + link.group(0).rsplit("/confirm/", 1)[1]
        )
        assert path_only.rsplit("/", 1)[1] in html.get_content()

        # A link scanner's GET changes nothing; the person's POST confirms.
        assert client.get(path_only).status_code == 200
        engine = create_db_engine(service_env["NEWSLETTER_DATABASE_URL"])
        sessions = session_factory(engine)
        with sessions() as session:
            reader = session.scalar(select(Subscriber))
            assert reader is not None and reader.status is SubscriberStatus.PENDING
        done = webforms.post_form(client, path_only, path_only, {})
        assert done.status_code == 200 and "You are subscribed" in done.text
        with sessions() as session:
            reader = session.scalar(select(Subscriber))
            assert reader is not None and reader.status is SubscriberStatus.ACTIVE
            assert reader.timezone == "America/Mexico_City"
            assert sorted(s.frequency.value for s in reader.subscriptions) == ["weekly", "weekly"]
        # Used once; a second POST changes nothing and says the reader is already confirmed.
        again = webforms.post_form(client, "/", path_only, {})
        assert again.status_code == 200 and "already confirmed" in again.text
        engine.dispose()


def test_healthz_reports_each_service(
    tmp_path: Path, service_env: dict[str, str], start: Any
) -> None:
    newsletter("db", "upgrade", env=service_env)
    port = free_port()
    web = start(["web", "--port", str(port)], service_env)
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", web)
    ok = httpx.get(f"http://127.0.0.1:{port}/healthz")
    assert ok.status_code == 200
    assert ok.json()["checks"] == {"database": "ok", "broker": "ok"}

    down = dict(service_env, NEWSLETTER_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    port2 = free_port()
    web2 = start(["web", "--port", str(port2)], down)
    wait_until_serving(f"http://127.0.0.1:{port2}/livez", web2)
    bad = httpx.get(f"http://127.0.0.1:{port2}/healthz", timeout=10)
    assert bad.status_code == 503
    assert bad.json()["checks"]["broker"].startswith("error")
