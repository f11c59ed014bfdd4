"""Names editors type are one line of printable text; URL credentials are masked by parsing."""

from __future__ import annotations

import pytest

from subscriptions.errors import InvalidInput
from subscriptions.names import check_name
from subscriptions.web.admin.settings import mask_url

BAD = ["\r", "\n", "\u2028", "\u2029", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\t", "\u202e"]


@pytest.mark.parametrize("char", BAD)
def test_a_name_with_a_control_or_line_separator_character_is_refused(char: str) -> None:
    with pytest.raises(InvalidInput, match="control characters and line breaks") as caught:
        check_name(f"Border{char}Security", what="topic name", field="name")
    assert caught.value.field == "name"


def test_a_printable_name_passes_without_its_outer_spaces() -> None:
    assert check_name("  Mexico — Économie 🇲🇽 ", what="topic name", field="name") == (
        "Mexico — Économie 🇲🇽"
    )
    with pytest.raises(InvalidInput, match="1 to 200"):
        check_name("   ", what="topic name", field="name")
    with pytest.raises(InvalidInput, match="1 to 200"):
        check_name("x" * 201, what="topic name", field="name")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://news:S3cr/tPass@db/newsletter",
            "postgresql+psycopg://news:***@db/newsletter",
        ),
        ("redis://:p@ssw0rd@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://:p#w:d@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "postmark://SERVER-TOKEN@api.postmarkapp.com?stream=x",
            "postmark://***@api.postmarkapp.com?stream=x",
        ),
        (
            "ses://AKID:SE/CR+ET@email.us-east-1.amazonaws.com",
            "ses://AKID:***@email.us-east-1.amazonaws.com",
        ),
        (
            "smtp://relay:587?tls=starttls&password=hunter2",
            "smtp://relay:587?tls=starttls&password=***",
        ),
        ("sqlite:///var/newsletter.db", "sqlite:///var/newsletter.db"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("Institute <news@example.org>", "Institute <news@example.org>"),
    ],
)
def test_url_credentials_are_masked_whatever_characters_the_password_holds(
    url: str, shown: str
) -> None:
    assert mask_url(url) == shown
