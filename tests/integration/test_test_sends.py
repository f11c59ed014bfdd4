"""Test copies of a digest go only to editors' addresses (or an allowlist), and not too often.

Through the API and the console, which call the same operation (operations.digests.send_test); real
database, real Redis (the counters), the outbox provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from subscriptions.operations.digests import TEST_SENDS_PER_ADDRESS
from subscriptions.posts import add_post
from tests import webforms
from tests.consoles import Console
from tests.factories import active_reader


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    console = Console(tmp_path, database_url, redis_url, test_send_allowlist="QA@Example.org")
    with console.sessions.begin() as session:
        active_reader(session, "mx@example.org", ["mexico"])
        post = add_post(
            session=session, title="Elections", link="https://example.org/e", topics=["mexico"]
        )
    console.post_id = post.id  # type: ignore[attr-defined]
    yield console
    console.close()


def _digest(console: Console) -> str:
    api = console.api("editor")
    answer = api.post("/api/v1/digests", json={"subject": "This week", "posts": [console.post_id]})  # type: ignore[attr-defined]
    assert answer.status_code == 201, answer.text
    return f"/api/v1/digests/{answer.json()['id']}/test"


def _outbox(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outbox").glob("*.eml")) if (tmp_path / "outbox").exists() else []


def test_a_test_copy_to_a_stranger_is_refused_and_nothing_is_sent(
    console: Console, tmp_path: Path
) -> None:
    path = _digest(console)
    answer = console.api("editor").post(path, json={"to": "victim@example.net"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "to"
    assert "editor's address" in answer.json()["detail"]
    assert _outbox(tmp_path) == []


def test_editors_and_allowlisted_addresses_get_test_copies(
    console: Console, tmp_path: Path
) -> None:
    console.editor("ed@example.org", "editor")
    path = _digest(console)
    api = console.api("editor")
    assert api.post(path, json={"to": "ED@example.org"}).status_code == 200
    assert api.post(path, json={"to": "qa@example.org"}).status_code == 200
    assert len(_outbox(tmp_path)) == 2


def test_test_sends_are_rate_limited_per_address(console: Console, tmp_path: Path) -> None:
    path = _digest(console)
    api = console.api("editor")
    statuses = [api.post(path, json={"to": "qa@example.org"}).status_code for _ in range(12)]
    assert statuses == [200] * TEST_SENDS_PER_ADDRESS + [429] * (12 - TEST_SENDS_PER_ADDRESS)
    assert len(_outbox(tmp_path)) == TEST_SENDS_PER_ADDRESS


def test_the_console_refuses_a_stranger_too(console: Console, tmp_path: Path) -> None:
    client = console.signed_in("ed@example.org", "editor")
    digest_id = _digest(console).split("/")[-2]
    page = f"/admin/digests/{digest_id}"
    answer = webforms.post_form(client, page, f"{page}/test", {"to": "victim@example.net"})
    assert answer.status_code == 400 and "editor&#39;s address" in answer.text
    assert _outbox(tmp_path) == []
