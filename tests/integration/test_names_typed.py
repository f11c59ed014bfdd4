"""A name an editor types with a line break or a control character is refused where it is typed
(API and console alike: they call the same operations), and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from subscriptions.models import Digest, Topic
from tests import webforms
from tests.consoles import Console


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    console = Console(tmp_path, database_url, redis_url)
    yield console
    console.close()


@pytest.mark.parametrize("bad", ["Border\u2028Security", "Border\r\nBcc: x", "Mexico\x1b[31m"])
def test_topic_names_and_digest_subjects_with_line_breaks_are_refused(
    console: Console, bad: str
) -> None:
    api = console.api("admin")
    answer = api.post("/api/v1/topics", json={"slug": "new-topic", "name": bad})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "name"
    renamed = api.patch("/api/v1/topics/1", json={"name": bad})
    assert renamed.status_code == 422
    digest = api.post("/api/v1/digests", json={"subject": bad, "topics": ["mexico"]})
    assert digest.status_code == 422 and digest.json()["errors"][0]["field"] == "subject"
    token = api.post("/api/v1/tokens", json={"name": bad, "role": "editor"})
    assert token.status_code == 422
    client = console.signed_in()
    page = webforms.post_form(
        client, "/admin/topics", "/admin/topics", {"slug": "other-topic", "name": bad}
    )
    assert page.status_code == 400 and "line breaks are not allowed" in page.text
    with console.sessions() as session:
        assert session.scalar(select(func.count(Topic.id))) == 4  # the demo topics only
        assert session.scalar(select(Topic.name).where(Topic.id == 1)) != bad
        assert session.scalar(select(func.count(Digest.id))) == 0
