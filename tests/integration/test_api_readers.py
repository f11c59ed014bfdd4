"""/api/v1/readers: search, record, audit, CSV import and export, erasure; tokens and roles."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from subscriptions import editors, readers
from subscriptions.models import Frequency, Subscriber, Suppression
from tests.consoles import Console

pytestmark = pytest.mark.integration

CSV = (
    "email,topics,frequency,timezone,name\r\n"
    "new1@example.org,mexico;refugees,daily,Europe/Berlin,One\r\n"
    "new2@example.org,mexico|migration:weekly,immediate,,Two\r\n"
    "not an address,mexico,daily,UTC,\r\n"
)


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    with made.sessions.begin() as session:
        for n in range(7):
            readers.subscribe(
                session=session,
                email=f"reader{n}@example.org",
                topics=["mexico"] if n % 2 else ["refugees"],
                frequency=Frequency.DAILY,
                timezone="UTC",
            )
    yield made
    made.close()


def first_id(console: Console) -> int:
    with console.sessions() as session:
        found = session.scalar(select(func.min(Subscriber.id)))
    assert found is not None
    return int(found)


def test_every_endpoint_wants_a_valid_token(console: Console) -> None:
    reader_id = first_id(console)
    calls = [
        ("GET", "/api/v1/readers"),
        ("GET", f"/api/v1/readers/{reader_id}"),
        ("GET", f"/api/v1/readers/{reader_id}/audit"),
        ("GET", "/api/v1/readers/export"),
        ("POST", "/api/v1/readers/import"),
        ("DELETE", f"/api/v1/readers/{reader_id}"),
    ]
    with console.sessions.begin() as session:
        info, revoked = editors.create_token(session=session, name="old", role="admin")
        editors.revoke_token(session=session, token_id=info.id)
    client = console.client()
    for header in (None, "Bearer wrong-token", f"Bearer {revoked}", f"Basic {revoked}"):
        headers = {"Authorization": header} if header else {}
        for method, path in calls:
            answer = client.request(
                method, path, headers={**headers, "Content-Type": "text/csv"}, content=CSV
            )
            assert answer.status_code == 401, (method, path, header)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"] == "Bearer"
    editor = console.api("editor")
    for method, path in calls[3:]:
        answer = editor.request(method, path, headers={"Content-Type": "text/csv"}, content=CSV)
        assert answer.status_code == 403, (method, path)
        assert answer.json()["title"] == "Forbidden"
    for method, path in calls[:3]:
        assert editor.request(method, path).status_code == 200, path
    assert console.app.state.runtime  # the readers are untouched
    with console.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 7


def test_search_filters_and_pages(console: Console) -> None:
    api = console.api("editor")
    page = api.get("/api/v1/readers", params={"limit": 3}).json()
    assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == 0
    assert [r["email"] for r in page["items"]] == [
        "reader6@example.org",
        "reader5@example.org",
        "reader4@example.org",
    ]
    last = api.get("/api/v1/readers", params={"limit": 3, "offset": 6}).json()
    assert [r["email"] for r in last["items"]] == ["reader0@example.org"]
    found = api.get("/api/v1/readers", params={"q": "DER3@EXA"}).json()
    assert [r["email"] for r in found["items"]] == ["reader3@example.org"]
    assert api.get("/api/v1/readers", params={"q": "%"}).json()["total"] == 0
    pending = api.get("/api/v1/readers", params={"status": "pending"}).json()
    assert pending["total"] == 7
    assert api.get("/api/v1/readers", params={"status": "active"}).json()["total"] == 0
    # Pending readers have no subscriptions yet: none matches a topic.
    assert api.get("/api/v1/readers", params={"topic": "mexico"}).json()["total"] == 0
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"status": "gone"}):
        answer = api.get("/api/v1/readers", params=bad)
        assert answer.status_code == 422, bad
        assert answer.headers["content-type"] == "application/problem+json"


def test_a_reader_and_their_audit(console: Console) -> None:
    api = console.api("editor")
    reader_id = first_id(console)
    one = api.get(f"/api/v1/readers/{reader_id}").json()
    assert one["email"] == "reader0@example.org" and one["status"] == "pending"
    assert one["consents"][0]["topics"] == ["refugees"]
    trail = api.get(f"/api/v1/readers/{reader_id}/audit").json()
    assert trail == {
        "reader_id": reader_id,
        "email": "reader0@example.org",
        "emails": [],
        "posts": [],
        "events": [],
    }
    assert api.get("/api/v1/readers/999999").status_code == 404
    assert api.get("/api/v1/readers/999999/audit").json()["title"] == "Not Found"
    assert api.get(f"/api/v1/readers/{reader_id}/audit", params={"posts": 0}).status_code == 422
    naive = api.get(f"/api/v1/readers/{reader_id}/audit", params={"since": "2026-01-01T00:00"})
    assert naive.status_code == 422


def test_import_report_strict_and_multipart(console: Console) -> None:
    api = console.api("admin")
    strict = api.post(
        "/api/v1/readers/import",
        params={"strict": "true", "consent": "true"},
        content=CSV,
        headers={"Content-Type": "text/csv"},
    )
    assert strict.status_code == 422
    assert strict.headers["content-type"] == "application/problem+json"
    report = strict.json()["report"]
    assert report["written"] is False and report["imported"] == 2
    assert report["bad"] == [
        {"row": 4, "email": "not an address", "reason": report["bad"][0]["reason"]}
    ]
    with console.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 7

    done = api.post(
        "/api/v1/readers/import",
        params={"consent": "true"},
        files={"file": ("readers.csv", CSV.encode(), "text/csv")},
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["imported"], body["status"], body["written"]) == (2, "active", True)
    assert len(body["bad"]) == 1 and body["skipped"] == []
    active = api.get("/api/v1/readers", params={"status": "active", "topic": "migration"}).json()
    assert [r["email"] for r in active["items"]] == ["new2@example.org"]

    again = api.post("/api/v1/readers/import", content=CSV, headers={"Content-Type": "text/csv"})
    assert again.json()["status"] == "pending" and len(again.json()["skipped"]) == 2
    for content, kind, status in [
        (CSV, "application/json", 415),
        ("name\r\nx\r\n", "text/csv", 422),
        (b"\xff\xfe", "text/csv", 422),
    ]:
        answer = api.post("/api/v1/readers/import", content=content, headers={"Content-Type": kind})
        assert answer.status_code == status, (content, answer.text)
    missing = api.post("/api/v1/readers/import", files={"other": ("x.csv", b"x", "text/csv")})
    assert missing.status_code == 422


def test_export_and_erase(console: Console) -> None:
    api = console.api("admin")
    api.post(
        "/api/v1/readers/import",
        params={"consent": "true"},
        content=CSV,
        headers={"Content-Type": "text/csv"},
    )
    exported = api.get("/api/v1/readers/export", params={"status": "active"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["email"], r["topics"], r["frequency"]) for r in rows] == [
        ("new1@example.org", "mexico;refugees", "daily"),
        ("new2@example.org", "mexico;migration:weekly", "immediate"),
    ]
    reader_id = first_id(console)
    assert api.delete(f"/api/v1/readers/{reader_id}").status_code == 204
    assert api.delete(f"/api/v1/readers/{reader_id}").status_code == 404
    assert api.get(f"/api/v1/readers/{reader_id}").status_code == 404
    with console.sessions() as session:
        assert session.scalar(select(Suppression.reason)) == "erased"


def test_editors_see_and_change_a_readers_language(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    both = Console(tmp_path, database_url, redis_url, languages="en,es")
    try:
        with both.sessions.begin() as session:
            readers.subscribe(
                session=session,
                email="lectora@example.org",
                topics=["mexico"],
                frequency=Frequency.DAILY,
                timezone="UTC",
            )
        reader_id = first_id(both)
        console_client = both.signed_in(role="editor")
        page = console_client.get(f"/admin/readers/{reader_id}")
        assert "English (en)" in page.text and "language (default)" in page.text
        api = both.api("editor")
        changed = api.patch(f"/api/v1/readers/{reader_id}", json={"language": "es"})
        assert changed.status_code == 200 and changed.json()["language"] == "es"
        assert api.get(f"/api/v1/readers/{reader_id}").json()["language"] == "es"
        page = console_client.get(f"/admin/readers/{reader_id}")
        assert "español (es)" in page.text and "language (default)" not in page.text
        # Only offered languages; anything else changes nothing.
        for bad in ({"language": "fr"}, {"language": ""}, {"language": 5}, {"other": "es"}, {}):
            refused = api.patch(f"/api/v1/readers/{reader_id}", json=bad)
            assert refused.status_code == 422, bad
        assert api.patch("/api/v1/readers/999999", json={"language": "es"}).status_code == 404
        with both.sessions() as session:
            assert session.get(Subscriber, reader_id).language == "es"  # type: ignore[union-attr]
    finally:
        both.close()
