"""Reader and team operations through their entry points: the console (a signed-in admin, CSRF
forms), the API (an admin bearer token) and the CLI. They must store the same result and queue
the same tasks (none here: read back from the real Redis queue), because they call one function."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from subscriptions import readers
from subscriptions.models import (
    Editor,
    EditorToken,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
)
from tests import webforms
from tests.consoles import PASSWORD
from tests.entrypoints import EntryPoints
from tests.factories import active_reader


@pytest.fixture
def ways(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[EntryPoints]:
    ways = EntryPoints(tmp_path, database_url, redis_url, languages="en,es")
    ways.queued()
    yield ways
    ways.close()


def csv_for(who: str) -> str:
    """The same file for each entry point, with addresses of its own."""
    return (
        "email,topics,frequency,timezone,name\r\n"
        f"{who}1@example.org,mexico;refugees,daily,Europe/Berlin,One\r\n"
        f"{who}2@example.org,mexico|migration:weekly,immediate,,Two\r\n"
        "not an address,mexico,daily,UTC,\r\n"
        f"{who}1@example.org,mexico,daily,UTC,\r\n"
    )


def imported(ways: EntryPoints, who: str) -> list[tuple[Any, ...]]:
    """The readers a file of `who` made, with their subscriptions, addresses left out."""
    with ways.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Subscriber.status, Subscriber.timezone, Topic.slug)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscriber.email.like(f"{who}%"))
            .order_by(Subscriber.email, Topic.slug)
        ).all()
    return [(e.removeprefix(who), s, z, t) for e, s, z, t in rows]


def test_import_stores_the_same_readers_and_reports_the_same_rows_from_each(
    ways: EntryPoints,
) -> None:
    token = webforms.form_token(ways.web, "/admin/readers/import")
    page = ways.web.post(
        "/admin/readers/import",
        data={"csrf_token": token, "consent": "yes"},
        files={"file": ("readers.csv", csv_for("console").encode(), "text/csv")},
    )
    assert page.status_code == 200, page.text
    api = ways.http.post(
        "/api/v1/readers/import?consent=true",
        content=csv_for("api").encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert api.status_code == 200, api.text
    (ways.cwd / "r.csv").write_text(csv_for("cli"))
    result = ways.cli("readers", "import", str(ways.cwd / "r.csv"), "--consent")
    assert result.exit_code == 0, result.output

    report = api.json()
    assert report["summary"] in result.output
    assert report["summary"] == "4 rows: imported 2 readers as active, 0 skipped, 2 refused"
    assert "Imported 2 readers as active." in page.text
    assert [(b["row"], b["email"]) for b in report["bad"]] == [
        (4, "not an address"),
        (5, "api1@example.org"),
    ]
    assert "bad\t4\tnot an address" in result.output
    assert "bad\t5\tcli1@example.org" in result.output
    made = imported(ways, "console")
    assert made == imported(ways, "api") == imported(ways, "cli")
    assert made[0] == ("1@example.org", SubscriberStatus.ACTIVE, "Europe/Berlin", "mexico")
    assert len(made) == 4

    # Strict: each refuses the file and writes nothing.
    token = webforms.form_token(ways.web, "/admin/readers/import")
    page = ways.web.post(
        "/admin/readers/import",
        data={"csrf_token": token, "strict": "yes"},
        files={"file": ("readers.csv", csv_for("s-console").encode(), "text/csv")},
    )
    api = ways.http.post(
        "/api/v1/readers/import?strict=true",
        content=csv_for("s-api").encode(),
        headers={"Content-Type": "text/csv"},
    )
    (ways.cwd / "s.csv").write_text(csv_for("s-cli"))
    result = ways.cli("readers", "import", str(ways.cwd / "s.csv"), "--strict")
    assert (page.status_code, api.status_code, result.exit_code) == (422, 422, 1)
    assert "2 bad rows: nothing imported" in result.output
    for who in ("s-console", "s-api", "s-cli"):
        assert imported(ways, who) == []
    assert ways.queued() == []


def test_export_gives_the_same_csv_from_each(ways: EntryPoints) -> None:
    with ways.sessions.begin() as session:
        active_reader(session, "mx@example.org", ["mexico"])
        active_reader(session, "both@example.org", ["mexico", "refugees"])
        active_reader(session, "ref@example.org", ["refugees"])
    query = {"status": "active", "topic": "mexico"}
    page = ways.web.get("/admin/readers/export", params=query)
    api = ways.http.get("/api/v1/readers/export", params=query)
    result = ways.cli("readers", "export", "--status", "active", "--topic", "mexico")
    assert page.status_code == api.status_code == 200 and result.exit_code == 0
    assert page.content == api.content == result.stdout_bytes
    lines = result.stdout.splitlines()
    assert lines[0] == "email,topics,frequency,timezone,name,language,status"
    assert sorted(line.split(",")[0] for line in lines[1:]) == [
        "both@example.org",
        "mx@example.org",
    ]


def test_erase_leaves_the_same_trace_from_each(ways: EntryPoints) -> None:
    with ways.sessions.begin() as session:
        ids = [active_reader(session, f"{who}@example.org", ["mexico"]) for who in "abc"]
    console, api, cli = ids
    page = webforms.post_form(
        ways.web,
        f"/admin/readers/{console}/erase",
        f"/admin/readers/{console}/erase",
        {"confirm": "erase"},
    )
    assert page.status_code == 303, page.text
    assert ways.http.delete(f"/api/v1/readers/{api}").status_code == 204
    result = ways.cli("readers", "erase", str(cli), "--yes")
    assert result.exit_code == 0, result.output
    with ways.sessions() as session:
        assert session.scalars(select(Subscriber.id)).all() == []
        kept = session.execute(select(Suppression.email_hash, Suppression.reason)).all()
    assert sorted(kept) == sorted(
        (readers.email_hash(f"{who}@example.org"), "erased") for who in "abc"
    )
    # Once more: no such reader, from each.
    page = webforms.post_form(
        ways.web, "/admin/readers", f"/admin/readers/{console}/erase", {"confirm": "erase"}
    )
    assert page.status_code == 404
    assert ways.http.delete(f"/api/v1/readers/{api}").status_code == 404
    result = ways.cli("readers", "erase", str(cli), "--yes")
    assert result.exit_code == 1 and "no such reader" in result.output
    assert ways.queued() == []


def test_a_readers_language_is_set_the_same_way_by_the_api_and_the_cli(ways: EntryPoints) -> None:
    """The console shows the language but does not change it; the API and the CLI do, alike."""
    with ways.sessions.begin() as session:
        api, cli = (active_reader(session, f"{w}@example.org", ["mexico"]) for w in "ab")
    answer = ways.http.patch(f"/api/v1/readers/{api}", json={"language": "es"})
    assert answer.status_code == 200 and answer.json()["language"] == "es", answer.text
    result = ways.cli("readers", "language", str(cli), "es")
    assert result.exit_code == 0, result.output
    refused = ways.http.patch(f"/api/v1/readers/{api}", json={"language": "fr"})
    result = ways.cli("readers", "language", str(cli), "fr")
    assert refused.status_code == 422 and result.exit_code == 1
    assert "language must be one of: en, es" in refused.text
    assert "language must be one of: en, es" in result.output
    with ways.sessions() as session:
        assert session.scalars(select(Subscriber.language).order_by(Subscriber.id)).all() == [
            "es",
            "es",
        ]
    page = ways.web.get(f"/admin/readers/{api}")
    assert page.status_code == 200 and "(es)</strong>" in page.text
    assert ways.queued() == []


def test_editors_are_added_the_same_way_by_the_console_and_the_cli(ways: EntryPoints) -> None:
    """The API has no editor accounts (tokens only); the console and the CLI add them alike."""
    page = webforms.post_form(
        ways.web,
        "/admin/team",
        "/admin/team/editors",
        {"email": "Ed.Console@Example.org", "name": "Ed", "role": "editor", "password": PASSWORD},
    )
    assert page.status_code == 200 and "Editor ed.console@example.org added" in page.text
    result = ways.cli(
        "editors", "create", "Ed.Cli@Example.org", "--name", "Ed", "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with ways.sessions() as session:
        made = session.execute(
            select(Editor.email, Editor.name, Editor.role, Editor.disabled_at)
            .where(Editor.email.like("ed.%"))
            .order_by(Editor.email)
        ).all()
    assert [tuple(m)[1:] for m in made] == [("Ed", "editor", None)] * 2
    assert [m.email for m in made] == ["ed.cli@example.org", "ed.console@example.org"]
    # The same refusal for an address already taken.
    page = webforms.post_form(
        ways.web,
        "/admin/team",
        "/admin/team/editors",
        {"email": "ed.cli@example.org", "role": "editor", "password": PASSWORD},
    )
    result = ways.cli(
        "editors", "create", "ed.console@example.org", "--password-stdin", input=PASSWORD + "\n"
    )
    assert page.status_code == 400 and "there is already an editor" in page.text
    assert result.exit_code == 1 and "there is already an editor" in result.output
    assert ways.queued() == []


def test_tokens_are_made_and_revoked_alike_by_the_console_the_api_and_the_cli(
    ways: EntryPoints,
) -> None:
    page = webforms.post_form(
        ways.web, "/admin/team", "/admin/team/tokens", {"name": "cms", "role": "editor"}
    )
    assert page.status_code == 200, page.text
    answer = ways.http.post("/api/v1/tokens", json={"name": "cms", "role": "editor"})
    assert answer.status_code == 201, answer.text
    result = ways.cli("editors", "create-token", "cms", "--role", "editor")
    assert result.exit_code == 0, result.output
    shown = re.search(r"nl_[A-Za-z0-9_-]{40,}", page.text)
    assert shown, "the console shows the new token once"
    plain = [shown.group(0), answer.json()["token"], result.output.strip().splitlines()[-1]]
    assert len(set(plain)) == 3 and all(p.startswith("nl_") for p in plain)
    with ways.sessions() as session:
        made = session.execute(
            select(EditorToken.id, EditorToken.role, EditorToken.revoked_at)
            .where(EditorToken.name == "cms")
            .order_by(EditorToken.id)
        ).all()
    assert [(r, v) for _, r, v in made] == [("editor", None)] * 3
    # Each token works, and each entry point revokes one.
    for value in plain:
        me = ways.client().get("/api/v1/me", headers={"Authorization": f"Bearer {value}"})
        assert me.status_code == 200 and me.json()["name"] == "cms"
    console, api, cli = (m.id for m in made)
    page = webforms.post_form(ways.web, "/admin/team", f"/admin/team/tokens/{console}/revoke", {})
    assert page.status_code == 200 and "Token cms revoked." in page.text
    assert ways.http.delete(f"/api/v1/tokens/{api}").json()["revoked"] is True
    result = ways.cli("editors", "revoke-token", str(cli))
    assert result.exit_code == 0 and f"{cli}\trevoked\tcms" in result.output
    with ways.sessions() as session:
        assert all(session.scalars(select(EditorToken.revoked_at).where(EditorToken.name == "cms")))
    for value in plain:
        me = ways.client().get("/api/v1/me", headers={"Authorization": f"Bearer {value}"})
        assert me.status_code == 401
    # An unknown token: refused by each.
    page = webforms.post_form(ways.web, "/admin/team", "/admin/team/tokens/4242/revoke", {})
    assert page.status_code == 400 and "4242" in page.text
    assert ways.http.delete("/api/v1/tokens/4242").status_code == 404
    assert ways.cli("editors", "revoke-token", "4242").exit_code == 1
    assert ways.queued() == []


def test_an_editors_role_and_lock_change_alike_from_the_console_and_the_cli(
    ways: EntryPoints,
) -> None:
    """Changing an account has no API; the Team page and `editors change` call one operation."""
    ids = [ways.editor(f"ed{n}@example.org", role="editor").id for n in (1, 2)]
    console, cli = ids
    page = webforms.post_form(
        ways.web,
        "/admin/team",
        f"/admin/team/editors/{console}",
        {"action": "role", "role": "admin"},
    )
    assert page.status_code == 200 and "ed1@example.org is now admin." in page.text
    result = ways.cli("editors", "change", str(cli), "--role", "admin")
    assert result.exit_code == 0 and "ed2@example.org is now admin." in result.output
    page = webforms.post_form(
        ways.web, "/admin/team", f"/admin/team/editors/{console}", {"action": "lock"}
    )
    assert page.status_code == 200 and "ed1@example.org is locked out." in page.text
    result = ways.cli("editors", "change", str(cli), "--lock")
    assert result.exit_code == 0 and "ed2@example.org is locked out." in result.output
    with ways.sessions() as session:
        rows = session.execute(
            select(Editor.role, Editor.disabled_at, Editor.session_version)
            .where(Editor.id.in_(ids))
            .order_by(Editor.id)
        ).all()
    assert [(r, d is not None, v) for r, d, v in rows] == [("admin", True, rows[0][2])] * 2
    # Unknown editors and roles: refused by both.
    page = webforms.post_form(
        ways.web, "/admin/team", "/admin/team/editors/4242", {"action": "lock"}
    )
    result = ways.cli("editors", "change", "4242", "--lock")
    assert page.status_code == 400 and "no editor 4242" in page.text
    assert result.exit_code == 1 and "no editor 4242" in result.output
    assert ways.queued() == []
