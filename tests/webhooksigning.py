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


def sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed PEM certificate for it, named like SNS's own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2010, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


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
