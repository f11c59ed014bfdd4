"""Sign webhook calls the way each provider does, for tests that go through the real route.

Written from the providers' documentation, not from the product's verifiers, so that a test signs a
call independently of the code that checks it:

- Postmark: Basic credentials from the webhook URL (no signature).
- SendGrid: ECDSA P-256 / SHA-256 over `timestamp + body`, base64 DER, in two `X-Twilio-…` headers.
- Mailgun: hex HMAC-SHA256 of `timestamp + token` with the signing key, inside the JSON body.
- Resend (Svix): base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the base64 after `whsec_`.
- SNS: RSA PKCS#1 v1.5 over the canonical `Name\\nvalue\\n` string, SHA-256 for SignatureVersion 2,
  with a self-signed certificate standing in for the one at the SigningCertURL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"

#: The fields SNS signs, in canonical order, per message type.
SNS_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def basic_auth(credentials: str) -> dict[str, str]:
    """The Authorization header Postmark sends for `https://user:password@host/...`."""
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it (base64 DER SubjectPublicKeyInfo)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def sendgrid_headers(
    private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int
) -> dict[str, str]:
    """SendGrid's signature headers for `body` sent at `timestamp`."""
    signature = private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SENDGRID_SIGNATURE: base64.b64encode(signature).decode(),
        SENDGRID_TIMESTAMP: str(timestamp),
    }


def mailgun_signature(signing_key: str, timestamp: int, token: str | None = None) -> dict[str, str]:
    """The `signature` object of a Mailgun webhook body (a fresh random token by default)."""
    token = token or secrets.token_hex(25)
    digest = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {"timestamp": str(timestamp), "token": token, "signature": digest.hexdigest()}


def svix_secret() -> str:
    """A Svix signing secret as Resend shows it: `whsec_` then base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def svix_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The svix-id, svix-timestamp and svix-signature headers of a Resend webhook call."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "svix-id": message_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": f"v1,{signature}",
    }


def _ca(name: str, issuer: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:  # fmt: skip
    """A test CA: a root (self-signed) or an intermediate under `issuer`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2010, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2045, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
        .sign(signer_key, hashes.SHA256())
    )
    return key, certificate


#: A test PKI standing in for Amazon's: SNS signing certificates chain to SNS_TEST_ROOT through
#: SNS_TEST_INTERMEDIATE; tests trust the root with `trust_sns_test_root`.
SNS_TEST_ROOT = _ca("Test Root CA for SNS")
SNS_TEST_INTERMEDIATE = _ca("Test Intermediate CA for SNS", SNS_TEST_ROOT)


def sns_certificate(
    key: rsa.RSAPrivateKey,
    *,
    not_before: datetime = datetime(2010, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2040, 1, 1, tzinfo=UTC),
    issuer: tuple[rsa.RSAPrivateKey, x509.Certificate] = SNS_TEST_INTERMEDIATE,
    name: str = "sns.amazonaws.com",
    with_chain: bool = True,
    aia: str | None = None,
) -> bytes:
    """A PEM signing certificate for `key` issued like SNS's (then the intermediate, if with_chain)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()),
            critical=False,
        )
    )
    if aia is not None:
        access = x509.AccessDescription(
            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    leaf = builder.sign(issuer[0], hashes.SHA256())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    if with_chain:
        pem += issuer[1].public_bytes(serialization.Encoding.PEM)
    return pem


def sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a PEM signing certificate for it (with its intermediate), named like SNS's own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, sns_certificate(key)


def trust_sns_test_root(monkeypatch: Any) -> Any:
    """Make SNS verification trust the test root (a fresh key cache): returns the cache."""
    from mail.providers import sns

    certificates = sns.SigningCertificates(roots=[SNS_TEST_ROOT[1]])
    monkeypatch.setattr(sns, "DEFAULT_CERTIFICATES", certificates)
    return certificates


def sns_timestamp(at: float) -> str:
    """An SNS `Timestamp` (`2012-05-02T00:54:06.655Z`) for a POSIX time."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sns_sign(key: rsa.RSAPrivateKey, envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with SignatureVersion 2 and its Signature, as SNS would POST it."""
    signed = {**envelope, "SignatureVersion": "2"}
    fields = SNS_SIGNED_FIELDS[signed["Type"]]
    canonical = "".join(f"{name}\n{signed[name]}\n" for name in fields if name in signed)
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def sns_body(key: rsa.RSAPrivateKey, envelope: dict[str, Any]) -> bytes:
    """The signed envelope, serialized."""
    return json.dumps(sns_sign(key, envelope)).encode()
