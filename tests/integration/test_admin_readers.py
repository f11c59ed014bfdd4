"""Console pages for readers: search, record, audit, CSV import and export, erasure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from subscriptions import readers
from subscriptions.models import Frequency, Subscriber
from tests import webforms
from tests.consoles import Console

pytestmark = pytest.mark.integration

CSV = (
    "email,topics,frequency,timezone,name\r\n"
    "imported@example.org,mexico,daily,UTC,\r\n"
    "imported@example.org,mexico,daily,UTC,\r\n"
    "other@example.org,no-such-topic,daily,UTC,\r\n"
)


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    made = Console(tmp_path, database_url, redis_url)
    with made.sessions.begin() as session:
        for n in range(55):
            readers.subscribe(
                session=session,
                email=f"reader{n}@example.org",
                topics=["mexico"],
                frequency=Frequency.DAILY,
                timezone="UTC",
            )
    yield made
    made.close()


def reader_id(console: Console, email: str = "reader0@example.org") -> int:
    with console.sessions() as session:
        found = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    assert found is not None
    return found


def test_pages_want_a_session_and_some_want_an_admin(console: Console) -> None:
    one = reader_id(console)
    everyone = ["/admin/readers", f"/admin/readers/{one}", f"/admin/readers/{one}/audit"]
    admins = ["/admin/readers/import", "/admin/readers/export", f"/admin/readers/{one}/erase"]
    anonymous = console.client()
    for path in everyone + admins:
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith(
            "/admin/login?next="
        ), path
    assert anonymous.post(f"/admin/readers/{one}/erase", data={}).status_code == 303
    editor = console.signed_in("editor@example.org", role="editor")
    for path in everyone:
        assert editor.get(path).status_code == 200, path
    for path in admins:
        assert editor.get(path).status_code == 403, path
    token = webforms.form_token(editor, "/admin/readers")
    erase = editor.post(
        f"/admin/readers/{one}/erase", data={"csrf_token": token, "confirm": "erase"}
    )
    assert erase.status_code == 403
    assert reader_id(console) == one
    assert console.client().get("/admin/readers/999999").status_code == 303
    assert editor.get("/admin/readers/999999").status_code == 404


def test_search_and_pages(console: Console) -> None:
    client = console.signed_in()
    first = client.get("/admin/readers")
    assert "55 readers match" in first.text and "reader54@example.org" in first.text
    assert "reader4@example.org" not in first.text and "Page 1 of 2" in first.text
    second = client.get("/admin/readers", params={"page": 2})
    assert "reader4@example.org" in second.text and "reader54@" not in second.text
    found = client.get("/admin/readers", params={"q": "DER12@", "status": "pending"})
    assert "1 readers match" in found.text and "reader12@example.org" in found.text
    assert "0 readers match" in client.get("/admin/readers", params={"status": "active"}).text
    assert client.get("/admin/readers", params={"page": 0}).status_code == 400


def test_import_with_a_report_then_export(console: Console) -> None:
    client = console.signed_in()
    token = webforms.form_token(client, "/admin/readers/import")
    answer = client.post(
        "/admin/readers/import",
        data={"csrf_token": token, "consent": "yes"},
        files={"file": ("readers.csv", CSV.encode(), "text/csv")},
    )
    assert answer.status_code == 200, answer.text
    assert "Imported 1 readers as active" in answer.text
    assert "duplicate of row 2" in answer.text and "unknown topic" in answer.text
    # The token was used up: the same form again is refused, nothing imported twice.
    replay = client.post(
        "/admin/readers/import",
        data={"csrf_token": token},
        files={"file": ("readers.csv", CSV.encode(), "text/csv")},
    )
    assert replay.status_code == 400
    strict = client.post(
        "/admin/readers/import",
        data={"csrf_token": webforms.form_token(client, "/admin/readers/import"), "strict": "yes"},
        files={"file": ("readers.csv", CSV.replace("imported@", "third@").encode(), "text/csv")},
    )
    assert strict.status_code == 422 and "Nothing was imported" in strict.text
    bad = client.post(
        "/admin/readers/import",
        data={"csrf_token": webforms.form_token(client, "/admin/readers/import")},
        files={"file": ("readers.csv", b"just,a,file\r\n", "text/csv")},
    )
    assert bad.status_code == 422 and "missing: email" in bad.text
    with console.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 56
    exported = client.get("/admin/readers/export", params={"status": "active"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[1:] == ["imported@example.org,mexico,daily,UTC,,,active"]


def test_erase_asks_first(console: Console) -> None:
    client = console.signed_in()
    one = reader_id(console)
    ask = client.get(f"/admin/readers/{one}/erase")
    assert "cannot be undone" in ask.text
    unticked = webforms.post_form(
        client, f"/admin/readers/{one}/erase", f"/admin/readers/{one}/erase", {}
    )
    assert unticked.status_code == 400 and reader_id(console) == one
    done = webforms.post_form(
        client, f"/admin/readers/{one}/erase", f"/admin/readers/{one}/erase", {"confirm": "erase"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/readers?erased=1"
    assert "The reader was erased." in client.get(done.headers["location"]).text
    assert client.get(f"/admin/readers/{one}").status_code == 404
