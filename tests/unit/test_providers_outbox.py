"""Tests for the outbox provider: files in a folder, written atomically, read back in order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mail.emailurl import parse_email_url
from mail.providers import OutboxProvider, Outcome, read_outbox
from subscriptions.errors import ConfigurationError
from tests.providers import make_message


def test_each_message_becomes_one_eml_file(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "nested"
    provider = OutboxProvider(folder)
    results = provider.send([make_message(1), make_message(2, html="<p>2</p>")])
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(r.provider_message_id for r in results if r.provider_message_id)
    assert all(name.endswith(".eml") for name in names)


def test_files_parse_back_with_headers_and_bodies(tmp_path: Path) -> None:
    OutboxProvider(tmp_path).send([make_message(1), make_message(2, html="<p>2</p>")])
    first, second = read_outbox(tmp_path)
    html = second.get_body(("html",))
    assert html is not None
    assert first["Subject"] == "Weekly digest"
    assert first["To"] == "Reader 1 <reader1@example.net>"
    assert first["X-Newsletter-Delivery-Id"] == "101"
    assert first["List-Unsubscribe"] == "<https://news.example.org/u/tok1>"
    assert first.get_body(("plain",)).get_content() == "Hello reader\n"
    assert second.get_content_type() == "multipart/alternative"
    assert html.get_content().strip() == "<p>2</p>"


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    OutboxProvider(tmp_path).send([make_message(n) for n in range(20)])
    leftovers = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".eml")]
    assert leftovers == []
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_names_sort_in_sending_order(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    for batch in range(3):
        provider.send([make_message(batch * 100 + n) for n in range(50)])
    readers = [m["To"].addresses[0].username for m in read_outbox(tmp_path)]
    expected = [f"reader{batch * 100 + n}" for batch in range(3) for n in range(50)]
    assert readers == expected


def test_name_starts_with_a_utc_timestamp(tmp_path: Path) -> None:
    (result,) = OutboxProvider(tmp_path).send([make_message()])
    assert result.provider_message_id is not None
    stamp, _, rest = result.provider_message_id.partition("-")
    assert len(stamp) == len("20240501T120000123456Z") and stamp.endswith("Z")
    assert rest.endswith(".eml") and len(rest) == len("1a2b3c4d.eml")


def test_read_outbox_ignores_hidden_files_and_missing_folder(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "missing") == []
    (tmp_path / ".half-written.tmp").write_bytes(b"Subject: partial\n")
    (tmp_path / ".x.eml").write_bytes(b"Subject: hidden\n")
    assert read_outbox(tmp_path) == []


def test_bad_message_fails_alone(tmp_path: Path) -> None:
    results = OutboxProvider(tmp_path).send(
        [make_message(1), make_message(2, subject="x\r\nBcc: v@example.com"), make_message(3)]
    )
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert "subject" in results[1].detail
    assert [m["To"].addresses[0].username for m in read_outbox(tmp_path)] == ["reader1", "reader3"]


def test_unwritable_folder_is_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    results = OutboxProvider(blocker / "out").send([make_message(1), make_message(2)])
    assert [r.outcome for r in results] == [Outcome.TEMPORARY, Outcome.TEMPORARY]
    assert "cannot create" in results[0].detail


def test_relative_url_is_under_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    provider = OutboxProvider.from_url(parse_email_url("outbox://var/outbox"))
    assert provider.folder == tmp_path / "var" / "outbox"
    provider.send([make_message()])
    assert len(read_outbox(tmp_path / "var" / "outbox")) == 1


@pytest.mark.parametrize("slashes", ["///", "////"])
def test_absolute_url(tmp_path: Path, slashes: str) -> None:
    url = f"outbox:{slashes}{str(tmp_path).lstrip('/')}/abs"
    provider = OutboxProvider.from_url(parse_email_url(url))
    assert provider.folder == tmp_path / "abs"
    assert str(provider.folder).startswith("/") and not str(provider.folder).startswith("//")
    provider.send([make_message()])
    assert len(os.listdir(tmp_path / "abs")) == 1


def test_url_without_folder_or_with_options_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs a folder"):
        OutboxProvider.from_url(parse_email_url("outbox://"))
    with pytest.raises(ConfigurationError, match="unknown option 'x'"):
        OutboxProvider.from_url(parse_email_url("outbox://var/outbox?x=1"))
