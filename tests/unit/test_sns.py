"""Tests for SNS message verification: a test RSA key and self-signed certificate stand in for
the SNS signing certificate, and sign the documentation's example messages."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mail.providers.sns import (
    SNS_MAX_AGE_SECONDS,
    canonical_string,
    check_sns_url,
    parse_timestamp,
    verify_sns_message,
)
from mail.providers.webhooks import WebhookRejected
from subscriptions.errors import ConfigurationError
from tests.webhooksigning import sns_certificate, trust_sns_test_root

FIXTURES = Path(__file__).parent.parent / "fixtures" / "providers" / "ses"


def load_fixture(name: str) -> dict[str, Any]:
    """A JSON fixture from tests/fixtures/providers/ses."""
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def make_certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    not_before: datetime = datetime(2010, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2040, 1, 1, tzinfo=UTC),
) -> bytes:
    """A PEM signing certificate for the key, issued under the test PKI like SNS's own."""
    return sns_certificate(key, not_before=not_before, not_after=not_after)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def trusted_test_root(monkeypatch: pytest.MonkeyPatch) -> Any:
    """SNS verification trusts the test PKI's root (and starts with an empty key cache)."""
    return trust_sns_test_root(monkeypatch)


@dataclass
class SnsSigner:
    """Signs SNS envelopes with a test key; `fetch` serves its certificate and logs the URLs."""

    key: rsa.RSAPrivateKey
    certificate: bytes
    fetched: list[str] = field(default_factory=list)

    @classmethod
    def create(cls) -> SnsSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, make_certificate(key))

    def sign(self, envelope: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """The envelope with SignatureVersion and a Signature over its canonical string."""
        signed = {**envelope, "SignatureVersion": version}
        # SignatureVersion 1 is SHA1withRSA: what SNS itself signs with, not a choice here.
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(canonical_string(signed), padding.PKCS1v15(), digest)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def body(self, envelope: dict[str, Any], version: str = "2") -> bytes:
        """The signed envelope as SNS would POST it."""
        return json.dumps(self.sign(envelope, version)).encode()

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.certificate


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner.create()


def at(envelope: dict[str, Any], seconds_later: float = 30) -> float:
    """A `now` some seconds after the envelope's Timestamp."""
    return parse_timestamp(envelope["Timestamp"]).timestamp() + seconds_later


def verify(signer: SnsSigner, body: bytes, now: float, **options: Any) -> Any:
    """verify_sns_message with the test signer's certificate and a 300 s tolerance."""
    options.setdefault("tolerance_seconds", 300)
    return verify_sns_message(body, fetch_certificate=signer.fetch, now=now, **options)


def test_canonical_string_of_a_notification() -> None:
    envelope = load_fixture("sns_notification.json")
    assert canonical_string(envelope) == (
        b"Message\nHello world!\n"
        b"MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        b"Subject\nMy First Message\n"
        b"Timestamp\n2012-05-02T00:54:06.655Z\n"
        b"TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n"
        b"Type\nNotification\n"
    )
    del envelope["Subject"]
    assert b"Subject" not in canonical_string(envelope)


def test_canonical_string_of_a_subscription_confirmation() -> None:
    envelope = load_fixture("sns_subscription_confirmation.json")
    expected = "".join(
        f"{name}\n{envelope[name]}\n"
        for name in ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn")
    )
    assert canonical_string(envelope) == (expected + "Type\nSubscriptionConfirmation\n").encode()
    assert canonical_string(envelope).startswith(
        b"Message\nYou have chosen to subscribe to the topic"
        b" arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription"
    )


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("fixture", ["sns_notification.json", "sns_subscription_confirmation.json"])
def test_genuine_messages_are_accepted(signer: SnsSigner, fixture: str, version: str) -> None:
    envelope = load_fixture(fixture)
    message = verify(signer, signer.body(envelope, version), at(envelope))
    assert message.type == envelope["Type"]
    assert message.message_id == envelope["MessageId"]
    assert message.topic_arn == "arn:aws:sns:us-west-2:123456789012:MyTopic"
    assert signer.fetched[-1] == envelope["SigningCertURL"]
    if message.type == "SubscriptionConfirmation":
        assert message.subscribe_url == envelope["SubscribeURL"]


def test_signature_version_1_is_sha1_and_2_is_sha256(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    sha1 = signer.sign(envelope, "1")
    swapped = {**sha1, "SignatureVersion": "2"}
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, json.dumps(swapped).encode(), at(envelope))
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("Message", "Goodbye world!"),
        ("MessageId", "00000000-0000-0000-0000-000000000000"),
        ("Subject", "Another subject"),
        ("Type", "SubscriptionConfirmation"),
    ],
)
def test_tampered_fields_are_refused(signer: SnsSigner, field_name: str, value: str) -> None:
    envelope = load_fixture("sns_notification.json")
    signed = signer.sign(envelope)
    signed[field_name] = value
    if field_name == "Type":
        signed.update(SubscribeURL="https://sns.us-west-2.amazonaws.com/?Action=x", Token="t")
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, json.dumps(signed).encode(), at(envelope))
    assert caught.value.status == 401


def test_signature_from_another_key_is_refused(signer: SnsSigner) -> None:
    forger = SnsSigner.create()
    envelope = load_fixture("sns_notification.json")
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, forger.body(envelope), at(envelope))
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ec.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com@evil.example/cert.pem",
        "https://user@sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com:8443/cert.pem",
        "https://s3.us-west-2.amazonaws.com/cert.pem",
        "https://evilsns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us_west.amazonaws.com/cert.pem",
        "ftp://sns.us-west-2.amazonaws.com/cert.pem",
        "not a url",
    ],
)
def test_certificate_from_anywhere_but_sns_is_refused(signer: SnsSigner, url: str) -> None:
    envelope = {**load_fixture("sns_notification.json"), "SigningCertURL": url}
    fetched_before = len(signer.fetched)
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, signer.body(envelope), at(envelope))
    assert caught.value.status == 403
    assert len(signer.fetched) == fetched_before  # refused before any fetch


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com:443/x.pem",
    ],
)
def test_sns_hosts_in_every_partition_are_accepted(url: str) -> None:
    check_sns_url(url, "SigningCertURL")


def test_subscribe_url_must_be_an_sns_url_too(signer: SnsSigner) -> None:
    envelope = {
        **load_fixture("sns_subscription_confirmation.json"),
        "SubscribeURL": "https://internal.example/admin?Action=ConfirmSubscription",
    }
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, signer.body(envelope), at(envelope))
    assert caught.value.status == 403


def test_old_messages_are_accepted_up_to_an_hour(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    body = signer.body(envelope)
    verify(signer, body, at(envelope, SNS_MAX_AGE_SECONDS - 1))  # SNS retries keep Timestamp
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, body, at(envelope, SNS_MAX_AGE_SECONDS + 1))
    assert caught.value.status == 401
    assert "stale" in str(caught.value)


def test_a_larger_configured_tolerance_wins(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    verify(signer, signer.body(envelope), at(envelope, 7200), tolerance_seconds=7300)


def test_messages_from_the_future_get_only_the_tolerance(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    body = signer.body(envelope)
    verify(signer, body, at(envelope, -299))
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, body, at(envelope, -301))
    assert caught.value.status == 401


def test_topic_allowlist(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    body = signer.body(envelope)
    allowed = {"arn:aws:sns:us-west-2:123456789012:MyTopic"}
    verify(signer, body, at(envelope), topic_arns=allowed)
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, body, at(envelope), topic_arns={"arn:aws:sns:us-west-2:1:Other"})
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"Type": "Notification"}',
        b'{"Type": "Surprise", "MessageId": "1"}',
    ],
)
def test_malformed_bodies_are_bad_requests(signer: SnsSigner, body: bytes) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, body, 0)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Signature": "%%% not base64 %%%"}, 400),
        ({"SignatureVersion": "3"}, 400),
        ({"Timestamp": "yesterday"}, 400),
        ({"MessageId": 12}, 400),
    ],
)
def test_malformed_fields(signer: SnsSigner, change: dict[str, Any], status: int) -> None:
    envelope = load_fixture("sns_notification.json")
    signed = {**signer.sign(envelope), **change}
    with pytest.raises(WebhookRejected) as caught:
        verify(signer, json.dumps(signed).encode(), at(envelope))
    assert caught.value.status == status


def test_certificate_must_be_pem_valid_now_and_rsa(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    body = signer.body(envelope)
    expired = make_certificate(signer.key, not_after=datetime(2011, 1, 1, tzinfo=UTC))
    ec_certificate = make_certificate(ec.generate_private_key(ec.SECP256R1()))
    for served in (b"<html>nope</html>", expired, ec_certificate):

        def fetch(url: str, served: bytes = served) -> bytes:
            return served

        with pytest.raises(WebhookRejected) as caught:
            verify_sns_message(
                body,
                fetch_certificate=fetch,
                now=at(envelope),
                tolerance_seconds=300,
            )
        assert caught.value.status == 403


def test_without_a_certificate_fetcher_it_is_a_configuration_error(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_notification.json")
    with pytest.raises(ConfigurationError, match="fetch_certificate"):
        verify_sns_message(
            signer.body(envelope), fetch_certificate=None, now=at(envelope), tolerance_seconds=300
        )


# --- certificate chain and cache ----------------------------------------------------------------


def _notification_signed_by(key: rsa.RSAPrivateKey, url: str) -> tuple[bytes, float]:
    envelope = {**load_fixture("sns_notification.json"), "SigningCertURL": url}
    envelope.pop("Signature", None)
    signer = SnsSigner(key, b"")
    return signer.body(envelope), at(envelope)


def test_a_self_signed_certificate_is_refused_even_with_a_good_signature() -> None:
    """Chain validation: a certificate named like SNS's but not issued under a trusted root."""
    from mail.providers.sns import verify_sns_message

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue_ca = (key, x509.load_pem_x509_certificates(make_certificate(key))[0])
    self_signed = sns_certificate(key, issuer=rogue_ca, with_chain=False)
    url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-rogue.pem"
    body, now = _notification_signed_by(key, url)
    with pytest.raises(WebhookRejected, match="does not chain to a trusted root") as refused:
        verify_sns_message(
            body, fetch_certificate=lambda _: self_signed, now=now, tolerance_seconds=300
        )
    assert refused.value.status == 403


def test_a_certificate_for_another_name_is_refused() -> None:
    from mail.providers.sns import verify_sns_message

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = sns_certificate(key, name="attacker.example.org")
    url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-other.pem"
    body, now = _notification_signed_by(key, url)
    with pytest.raises(WebhookRejected, match="does not chain"):
        verify_sns_message(body, fetch_certificate=lambda _: other, now=now, tolerance_seconds=300)


def test_a_leaf_served_alone_is_completed_from_its_aia_url_on_amazontrust_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SNS serves the leaf alone: its issuer comes from the AIA "CA Issuers" URL (amazontrust.com)."""
    from mail.providers import sns
    from tests.webhooksigning import SNS_TEST_INTERMEDIATE, SNS_TEST_ROOT

    intermediate = SNS_TEST_INTERMEDIATE[1].public_bytes(serialization.Encoding.DER)
    asked: list[str] = []

    def issuer(url: str) -> bytes:
        asked.append(url)
        return intermediate

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for aia, accepted in (
        ("http://crt.r2m01.amazontrust.com/r2m01.cer", True),
        ("http://crt.attacker.example.org/ca.cer", False),
    ):
        certificates = sns.SigningCertificates(roots=[SNS_TEST_ROOT[1]], fetch_issuer=issuer)
        monkeypatch.setattr(sns, "DEFAULT_CERTIFICATES", certificates)
        leaf = sns_certificate(key, with_chain=False, aia=aia)
        url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-leaf.pem"
        body, now = _notification_signed_by(key, url)
        if accepted:
            sns.verify_sns_message(body, fetch_certificate=lambda _, leaf=leaf: leaf, now=now, tolerance_seconds=300)  # fmt: skip
        else:
            with pytest.raises(WebhookRejected, match="does not chain"):
                sns.verify_sns_message(body, fetch_certificate=lambda _, leaf=leaf: leaf, now=now, tolerance_seconds=300)  # fmt: skip
    assert asked == ["http://crt.r2m01.amazontrust.com/r2m01.cer"]


def test_verified_certificates_are_cached_by_url_with_a_bound(trusted_test_root: Any) -> None:
    """Fetched and validated once per URL; the cache keeps at most its size (least recent out)."""
    from mail.providers import sns

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = sns_certificate(key)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return pem

    certificates = sns.SigningCertificates(roots=trusted_test_root._roots, size=3)
    urls = [
        f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{n}.pem" for n in range(5)
    ]
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    for url in [urls[0], urls[0], urls[0]]:
        certificates.key(url, fetch, now)
    assert fetched == [urls[0]]
    for url in urls:
        certificates.key(url, fetch, now)
    assert len(certificates) == 3
    certificates.key(urls[4], fetch, now)  # still cached
    certificates.key(urls[0], fetch, now)  # evicted: fetched again
    assert fetched == [urls[0], *urls[1:], urls[0]]
    # A cached certificate past its validity is refused without a fetch.
    with pytest.raises(WebhookRejected, match="not valid now"):
        certificates.key(urls[4], fetch, datetime(2041, 1, 1, tzinfo=UTC).timestamp())
