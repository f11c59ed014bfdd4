"""Tests for parsing NEWSLETTER_EMAIL_URL."""

from __future__ import annotations

import pytest

from mail.emailurl import EmailURL, parse_email_url
from subscriptions.errors import ConfigurationError


def test_relative_outbox_folder() -> None:
    url = parse_email_url("outbox://var/outbox")
    assert url.scheme == "outbox"
    assert url.location == "var/outbox"
    assert url.username is None and url.password is None


@pytest.mark.parametrize("value", ["outbox:///srv/outbox", "outbox:////srv/outbox"])
def test_absolute_outbox_folder(value: str) -> None:
    location = parse_email_url(value).location
    assert location.startswith("/")
    assert location.lstrip("/") == "srv/outbox"


def test_smtp_url_with_everything() -> None:
    url = parse_email_url("smtp://user:pass@mail.example.org:587?tls=starttls&timeout=10")
    assert url == EmailURL(
        scheme="smtp",
        username="user",
        password="pass",
        host="mail.example.org",
        port=587,
        params={"tls": "starttls", "timeout": "10"},
    )


def test_scheme_is_case_insensitive_and_host_lowercased() -> None:
    url = parse_email_url("SMTP://Mail.Example.ORG")
    assert (url.scheme, url.host, url.port) == ("smtp", "mail.example.org", None)


def test_credentials_are_unquoted() -> None:
    url = parse_email_url("smtp://apikey%40corp:p%40ss%3Aw%2Frd%20x@mail.example.org")
    assert url.username == "apikey@corp"
    assert url.password == "p@ss:w/rd x"


def test_unknown_scheme_lists_known_schemes() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_email_url("postmak://token@api")
    assert str(caught.value) == (
        "NEWSLETTER_EMAIL_URL: unknown scheme 'postmak' (known: outbox, smtp, postmark, sendgrid, mailgun, resend, ses)"
    )


def test_malformed_port_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^NEWSLETTER_EMAIL_URL: malformed URL"):
        parse_email_url("smtp://mail.example.org:58x7")
    with pytest.raises(ConfigurationError, match=r"^TEST_EMAIL_URL: malformed URL"):
        parse_email_url("smtp://mail.example.org:99999", variable="TEST_EMAIL_URL")


@pytest.mark.parametrize("value", ["", "mail.example.org", "smtp:mail.example.org"])
def test_not_a_url(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"is not a URL; expected e\.g\. outbox://"):
        parse_email_url(value)


def test_smtp_needs_a_host() -> None:
    with pytest.raises(ConfigurationError, match="smtp URL needs a host"):
        parse_email_url("smtp:///nothing")


def test_http_suffix_is_refused_for_non_http_providers() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown scheme suffix '\+http' for 'smtp'"):
        parse_email_url("smtp+http://mail.example.org")


def test_redacted_hides_credentials() -> None:
    url = parse_email_url("smtp://user:s3cret@mail.example.org:465?tls=ssl")
    redacted = url.redacted()
    assert redacted == "smtp://***@mail.example.org:465"
    assert "s3cret" not in redacted and "user" not in redacted


def test_redacted_without_credentials_is_unchanged() -> None:
    assert parse_email_url("outbox://var/outbox").redacted() == "outbox://var/outbox"
    assert parse_email_url("smtp://mail.example.org").redacted() == "smtp://mail.example.org"
