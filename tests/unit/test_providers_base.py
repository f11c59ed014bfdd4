"""Tests for the provider interface: MIME building, header safety, batch limits, the registry."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import random
import string
from collections.abc import Sequence
from typing import Any, Self

import idna
import pytest

from mail.emailurl import EmailURL, parse_email_url
from mail.providers import (
    PROVIDERS,
    EmailMessage,
    OutboxProvider,
    Outcome,
    Provider,
    SendResult,
    SmtpProvider,
    build_mime,
    provider_from_url,
)
from mail.providers.base import (
    address_text,
    check_message,
    check_message_text,
    parse_address,
)
from subscriptions.errors import ConfigurationError, HeaderInjection, InvalidInput
from tests.providers import make_message


def reparse(message: EmailMessage) -> Any:
    """Build the MIME, serialize it and parse the bytes back, as a receiver would."""
    data = build_mime(message).as_bytes()
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(data)


class RecordingProvider(Provider):
    """A provider that remembers what it was asked to send."""

    name = "recording"
    batch_limit = 3

    def __init__(self) -> None:
        self.batches: list[list[EmailMessage]] = []
        self.closed = False

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        return cls()

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.batches.append(list(messages))
        return [SendResult(Outcome.SENT, f"id-{i}") for i, _ in enumerate(messages)]

    def close(self) -> None:
        self.closed = True


def test_html_message_is_multipart_alternative_text_first() -> None:
    parsed = reparse(make_message())
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content() == "Hello reader\n"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hello reader</p>"


def test_text_only_message_is_single_part() -> None:
    parsed = reparse(make_message(html=None))
    assert parsed.get_content_type() == "text/plain"
    assert not parsed.is_multipart()
    assert parsed.get_content() == "Hello reader\n"


def test_standard_and_extra_headers_are_present() -> None:
    parsed = reparse(make_message())
    assert parsed["From"] == "Topic News <news@example.org>"
    assert parsed["To"] == "Reader 1 <reader1@example.net>"
    assert parsed["Subject"] == "Weekly digest"
    assert parsed["Date"].datetime.tzinfo is not None
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Unsubscribe"] == "<https://news.example.org/u/tok1>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Id"] == "Weekly <weekly.news.example.org>"


def test_metadata_becomes_x_newsletter_headers() -> None:
    parsed = reparse(make_message(metadata={"delivery_id": "42", "digest-run": "7"}))
    assert parsed["X-Newsletter-Delivery-Id"] == "42"
    assert parsed["X-Newsletter-Digest-Run"] == "7"


def test_generated_message_id_uses_sender_domain() -> None:
    parsed = reparse(make_message())
    message_id = parsed["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@example.org>")
    assert reparse(make_message())["Message-ID"] != message_id


def test_given_message_id_is_kept() -> None:
    parsed = reparse(make_message(message_id="<d42.r7@news.example.org>"))
    assert parsed["Message-ID"] == "<d42.r7@news.example.org>"


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nthere"},
        {"to": "reader@example.net\r\nBcc: victim@example.com"},
        {"sender": "news@example.org\rX: y"},
        {"headers": {"List-Id": "a\r\nBcc: victim@example.com"}},
        {"headers": {"X-Bad\r\nBcc": "v"}},
        {"metadata": {"delivery_id": "42\nBcc: victim@example.com"}},
        {"metadata": {"delivery\n_id": "42"}},
        {"message_id": "<a@b>\r\nBcc: victim@example.com"},
    ],
)
def test_line_breaks_in_header_values_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(HeaderInjection):
        build_mime(make_message(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": "not an address"},
        {"to": "a@example.org, b@example.org"},
        {"headers": {"Subject": "again"}},
        {"headers": {"Bad Name": "v"}},
        {"metadata": {"delivery id": "1"}},
    ],
)
def test_malformed_fields_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        build_mime(make_message(**overrides))


def test_unicode_subject_is_encoded_and_round_trips() -> None:
    message = make_message(subject="Grüße: ваш дайджест 📰")
    raw = build_mime(message).as_bytes()
    assert raw.isascii()
    assert b"=?utf-8?" in raw
    assert reparse(message)["Subject"] == "Grüße: ваш дайджест 📰"


def test_unicode_body_is_transfer_encoded_for_7bit_servers() -> None:
    message = make_message(text="Zoë's digest ✓\n", html="<p>Zoë</p>")
    assert build_mime(message).as_bytes().isascii()
    assert reparse(message).get_body(("plain",)).get_content() == "Zoë's digest ✓\n"


def test_idn_domain_is_encoded_as_punycode() -> None:
    parsed = reparse(make_message(to="Zoë <zoe@bücher.example>", sender="news@bücher.example"))
    assert parsed["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"
    assert parsed["To"].addresses[0].display_name == "Zoë"
    assert parsed["Message-ID"].endswith("@xn--bcher-kva.example>")


def test_internationalized_local_part_keeps_utf8_headers() -> None:
    mime = build_mime(make_message(to="用户@例子.广告"))
    assert getattr(mime.policy, "utf8", False)
    raw = mime.as_bytes()
    assert "To: 用户@xn--fsqu00a.xn--4rr70v".encode() in raw
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert str(parsed["To"]) == "用户@xn--fsqu00a.xn--4rr70v"


def test_send_refuses_a_batch_over_the_limit() -> None:
    provider = RecordingProvider()
    with pytest.raises(ValueError, match="over the limit of 3"):
        provider.send([make_message()] * 4)
    assert provider.batches == []


def test_send_passes_a_batch_within_the_limit() -> None:
    provider = RecordingProvider()
    results = provider.send([make_message()] * 3)
    assert [r.provider_message_id for r in results] == ["id-0", "id-1", "id-2"]
    assert provider.send([]) == []
    assert len(provider.batches) == 1


def test_context_manager_closes() -> None:
    with RecordingProvider() as provider:
        assert not provider.closed
    assert provider.closed


def test_the_registry_is_the_one_list_of_schemes() -> None:
    """parse_email_url accepts exactly the registry's schemes, and +http only for HTTP APIs."""
    for scheme in PROVIDERS:
        assert parse_email_url(f"{scheme}://key@host.example/x").scheme == scheme
    with pytest.raises(ConfigurationError, match=r"known: outbox, smtp, postmark"):
        parse_email_url("postmak://key@host.example")
    assert parse_email_url("postmark+http://key@127.0.0.1:9").plain_http
    with pytest.raises(ConfigurationError, match=r"\+http"):
        parse_email_url("smtp+http://host.example")
    for scheme, provider_class in PROVIDERS.items():
        assert provider_class.name == scheme
        assert provider_class.batch_limit > 0


def test_provider_from_url_accepts_text_or_parsed(tmp_path: Any) -> None:
    outbox = provider_from_url(f"outbox://{tmp_path}/out")
    assert isinstance(outbox, OutboxProvider)
    smtp = provider_from_url(parse_email_url("smtp://mail.example.org:587"))
    assert isinstance(smtp, SmtpProvider)
    assert (smtp.host, smtp.port, smtp.tls) == ("mail.example.org", 587, "starttls")


def test_provider_from_url_refuses_unknown_options() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'tsl' \(known: timeout, tls\)"):
        provider_from_url("smtp://mail.example.org?tsl=ssl")
    with pytest.raises(ConfigurationError, match="unknown scheme 'postmak'"):
        provider_from_url("postmak://token@x")


def _parsed_the_long_way(value: str) -> tuple[str, str, str] | None:
    """What parse_address gives through getaddresses() and IDNA alone (None: refused)."""
    pairs = email.utils.getaddresses([value])
    if len(pairs) != 1 or "@" not in pairs[0][1]:
        return None
    name, spec = pairs[0]
    username, _, domain = spec.rpartition("@")
    try:
        return name, username, idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, ValueError):
        return None


def test_plain_addresses_parse_as_the_parser_would() -> None:
    """The fast path for plain addresses answers exactly as getaddresses() and IDNA do, refusals
    included (hyphens at the wrong place, empty labels, over-long labels)."""
    rng = random.Random(6)
    local = string.ascii_letters + string.digits + "._%+-"
    domain = string.ascii_letters + string.digits + ".-"
    values = ["reader1@example.org", "A.B+tag@Sub.Example.ORG", "x@a--b.org", "x@-a.org",
              "x@a-.org", "x@" + "a" * 64 + ".org", "x_y%z@xn--bcher-kva.example", "a@b"]  # fmt: skip
    values += [
        "".join(rng.choice(local) for _ in range(rng.randint(1, 12)))
        + "@"
        + "".join(rng.choice(domain) for _ in range(rng.randint(1, 16)))
        for _ in range(3000)
    ]
    for value in values:
        expected = _parsed_the_long_way(value)
        try:
            address = parse_address(value, "to")
        except InvalidInput:
            assert expected is None, value
            continue
        assert (address.display_name, address.username, address.domain) == expected, value


def _strict_round_trip(message: EmailMessage) -> tuple[list[bytes], Any]:
    raw = build_mime(message).as_bytes()
    _, _, body = raw.partition(b"\n\n")
    parsed = email.parser.BytesParser(policy=email.policy.strict).parsebytes(raw)
    return body.split(b"\n"), parsed


@pytest.mark.parametrize(
    "text",
    [
        # A long digest: ASCII paragraphs as single lines far over 76 characters.
        ("A long paragraph of a digest, with a link https://example.org/" + "p" * 120 + " ") * 60
        + "\n",
        # A Cyrillic one: base64 or quoted-printable, both limited to 76 characters a line.
        ("Пограничная безопасность: новые публикации недели, подробный обзор " * 40 + "\n") * 5,
    ],
    ids=["long-ascii", "cyrillic"],
)
def test_encoded_body_lines_are_at_most_76_characters(text: str) -> None:
    """RFC 2045 6.7/6.8: encoded lines are at most 76 characters; long headers stay unfolded."""
    unsubscribe = "<https://news.example.org/unsubscribe/" + "t" * 200 + ">"
    message = make_message(
        text=text,
        html=f"<p>{text}</p>",
        headers={"List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "x=y"},
    )
    lines, parsed = _strict_round_trip(message)
    assert max(len(line.rstrip(b"\r")) for line in lines) <= 76
    assert parsed.get_body(("plain",)).get_content() == text
    assert parsed.get_body(("html",)).get_content() == f"<p>{text}</p>\n"
    assert {p["Content-Transfer-Encoding"] for p in parsed.iter_parts()} <= {
        "quoted-printable",
        "base64",
    }
    assert parsed["List-Unsubscribe"] == unsubscribe


def test_address_text_is_the_parsed_address_as_text() -> None:
    """address_text (the JSON providers' fast path, #18) equals str(parse_address), refusals too."""
    rng = random.Random(18)
    local = string.ascii_letters + string.digits + "._%+-"
    domain = string.ascii_letters + string.digits + ".-"
    values = ["reader1@example.org", "A.B+tag@Sub.Example.ORG", "x@b\u00fccher.example",
              "Reader One <reader1@example.org>", '"Doe, J." <j@Example.org>', "x@-a.org",
              "x@" + "a" * 64 + ".org", "not an address", "a@b"]  # fmt: skip
    values += [
        "".join(rng.choice(local) for _ in range(rng.randint(1, 12)))
        + "@"
        + "".join(rng.choice(domain) for _ in range(rng.randint(1, 16)))
        for _ in range(2000)
    ]
    for value in values:
        try:
            expected = str(parse_address(value, "to"))
        except InvalidInput:
            with pytest.raises(InvalidInput):
                address_text(value, "to")
            continue
        assert address_text(value, "to") == expected, value
    message = make_message(to="Reader <R1@Example.ORG>", sender="News <news@Example.org>")
    assert check_message_text(message) == tuple(map(str, check_message(message)))
    with pytest.raises(HeaderInjection):
        check_message_text(make_message(subject="a\nBcc: x@example.org"))
