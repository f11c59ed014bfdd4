"""Amazon SNS HTTP(S) messages: parse the JSON envelope and verify its RSA signature.

Follows https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html : the
certificate URL must be HTTPS on an `sns.<region>.amazonaws.com` host, the signature covers a
canonical `Key\\nValue\\n` string, SignatureVersion 1 is SHA1withRSA and 2 is SHA256withRSA.
Fetching the certificate is the caller's (an injected HTTPS fetcher). The certificate's chain is
validated, as AWS recommends, against the system's trust store (the roots OpenSSL uses, e.g.
/etc/ssl/certs/ca-certificates.crt), for the name `sns.amazonaws.com`, at the message's `now`:
intermediates come from the PEM file itself or, where SNS serves the leaf alone, from the leaf's
Authority Information Access "CA Issuers" URL on an `amazontrust.com` host (as a browser completes a
chain). A verified key is remembered by certificate URL (SigningCertificates, LRU-bounded), so a
certificate is fetched and checked once per process, not once per message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from mail.providers.webhooks import WebhookRejected
from subscriptions.errors import ConfigurationError

#: SNS signing certificates and confirmation links live only on these hosts.
SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
#: How old a message may be. SNS signs once at publish time and keeps `Timestamp` on every
#: retry, and an endpoint's delivery policy may spread retries over up to an hour; replays
#: inside the window are stopped by deduplicating on MessageId.
SNS_MAX_AGE_SECONDS = 3600

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
_CONFIRMATIONS = (SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION)
#: The signed fields, in the order the canonical string lists them.
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS[UNSUBSCRIBE_CONFIRMATION] = _SIGNED_FIELDS[SUBSCRIPTION_CONFIRMATION]
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS message. `subscribe_url` is set on (un)subscribe confirmations."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    subject: str | None
    subscribe_url: str | None
    envelope: Mapping[str, Any]


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The SNS JSON envelope, with the fields its type signs; WebhookRejected(400) if malformed."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("SNS message is not JSON", status=400) from None
    if not isinstance(envelope, dict):
        raise WebhookRejected("SNS message is not a JSON object", status=400)
    kind = envelope.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise WebhookRejected(f"unknown SNS message type {kind!r}", status=400)
    required = (*_SIGNED_FIELDS[kind], "Signature", "SignatureVersion", "SigningCertURL")
    for name in required:
        if name in _OPTIONAL_FIELDS and name not in envelope:
            continue
        if not isinstance(envelope.get(name), str):
            raise WebhookRejected(f"SNS {kind} has no string {name!r}", status=400)
    return envelope


def canonical_string(envelope: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs: `Name\\nvalue\\n` for each signed field present, in order."""
    fields = _SIGNED_FIELDS[envelope["Type"]]
    return "".join(f"{name}\n{envelope[name]}\n" for name in fields if name in envelope).encode()


def check_sns_url(url: str, what: str) -> None:
    """Refuse (403) a URL that is not HTTPS on an SNS host: the certificate could be anyone's."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRejected(f"SNS {what} {url!r} is not a URL", status=403) from None
    host = parts.hostname or ""
    if parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        raise WebhookRejected(f"SNS {what} must be a plain https:// URL, got {url!r}", status=403)
    if not SNS_HOST.fullmatch(host):
        raise WebhookRejected(f"SNS {what} host {host!r} is not an SNS host", status=403)


def verify_sns_message(
    body: bytes,
    *,
    fetch_certificate: Callable[[str], bytes] | None,
    now: float,
    tolerance_seconds: int,
    topic_arns: Collection[str] = (),
) -> SnsMessage:
    """Check an SNS message is genuine, fresh and from an allowed topic; raise WebhookRejected.

    `tolerance_seconds` bounds clock skew into the future; the past is allowed the larger of it
    and SNS_MAX_AGE_SECONDS. An empty `topic_arns` allows every topic.
    """
    envelope = parse_envelope(body)
    kind = envelope["Type"]
    check_sns_url(envelope["SigningCertURL"], "SigningCertURL")
    if kind in _CONFIRMATIONS:
        # The web app GETs this link to confirm: it must not point anywhere but SNS.
        check_sns_url(envelope["SubscribeURL"], "SubscribeURL")
    if topic_arns and envelope["TopicArn"] not in topic_arns:
        raise WebhookRejected(f"SNS topic {envelope['TopicArn']!r} is not allowed", status=403)
    timestamp = parse_timestamp(envelope["Timestamp"])
    age = now - timestamp.timestamp()
    if age > max(tolerance_seconds, SNS_MAX_AGE_SECONDS) or age < -tolerance_seconds:
        raise WebhookRejected(f"SNS message timestamp {envelope['Timestamp']} is stale")
    hash_class = _HASHES.get(envelope["SignatureVersion"])
    if hash_class is None:
        raise WebhookRejected(
            f"unknown SNS SignatureVersion {envelope['SignatureVersion']!r}", status=400
        )
    try:
        signature = base64.b64decode(envelope["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("SNS Signature is not base64", status=400) from None
    public_key = _certificate_key(envelope["SigningCertURL"], fetch_certificate, now)
    try:
        public_key.verify(signature, canonical_string(envelope), padding.PKCS1v15(), hash_class())
    except InvalidSignature:
        raise WebhookRejected("SNS signature does not match") from None
    return SnsMessage(
        type=kind,
        message_id=envelope["MessageId"],
        topic_arn=envelope["TopicArn"],
        message=envelope["Message"],
        timestamp=timestamp,
        subject=envelope.get("Subject"),
        subscribe_url=envelope.get("SubscribeURL"),
        envelope=envelope,
    )


#: The name SNS signing certificates are issued to.
SNS_CERTIFICATE_NAME = "sns.amazonaws.com"
#: Hosts an intermediate certificate may be fetched from (AIA "CA Issuers" of Amazon's CAs).
ISSUER_HOST = re.compile(r"^([a-z0-9-]+\.)*amazontrust\.com$")
_MAX_ISSUER_BYTES = 64 * 1024


@functools.lru_cache(maxsize=1)
def system_roots() -> tuple[x509.Certificate, ...]:
    """The trust anchors of the system's store (the CA file OpenSSL uses), read once."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.exists(candidate):
            with open(candidate, "rb") as handle:
                return tuple(x509.load_pem_x509_certificates(handle.read()))
    raise ConfigurationError(
        "SNS verification needs the system's CA certificates (install ca-certificates, or set"
        " SSL_CERT_FILE)"
    )


def certificate_fetcher(transport: httpx.BaseTransport | None) -> Callable[[str], bytes]:
    """Fetch a signing certificate over `transport` (None: the network), only from an https SNS
    host; the certificates' keys are remembered by DEFAULT_CERTIFICATES, not here."""

    def fetch(url: str) -> bytes:
        check_sns_url(url, "SigningCertURL")
        try:
            with httpx.Client(timeout=10, transport=transport) as client:
                response = client.get(url)
                response.raise_for_status()
                return response.content
        except httpx.HTTPError as exc:
            raise WebhookRejected(
                # Our side failed, not the caller: 503 makes SNS retry (it never retries a 4xx).
                f"cannot fetch the signing certificate: {type(exc).__name__}",
                status=503,
            ) from None

    return fetch


def confirm_subscription(url: str, transport: httpx.BaseTransport | None) -> None:
    """Follow a verified SubscriptionConfirmation's SubscribeURL (https on an SNS host only),
    which is how SNS learns that this endpoint wants the topic's messages."""
    check_sns_url(url, "SubscribeURL")
    with httpx.Client(timeout=10, transport=transport) as client:
        client.get(url)


def fetch_issuer(url: str) -> bytes:
    """An intermediate certificate from an Amazon Trust Services AIA URL (DER or PEM)."""
    try:
        with httpx.Client(timeout=10) as client:
            response = client.get(url)
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise WebhookRejected(
            f"cannot fetch the issuer certificate: {type(exc).__name__}", status=503
        ) from None
    return response.content[:_MAX_ISSUER_BYTES]


class SigningCertificates:
    """SNS signing keys whose certificate chain was validated, remembered by URL (at most `size`).

    `roots` are the trust anchors (default: the system's store); `fetch_issuer` fetches a missing
    intermediate from the leaf's AIA URL (only on an amazontrust.com host). Thread-safe: the web
    app may verify from several threads.
    """

    def __init__(
        self,
        roots: Sequence[x509.Certificate] | None = None,
        *,
        size: int = 32,
        fetch_issuer: Callable[[str], bytes] = fetch_issuer,
    ) -> None:
        self._roots = roots
        self._size = size
        self._fetch_issuer = fetch_issuer
        self._keys: OrderedDict[str, tuple[rsa.RSAPublicKey, datetime, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def key(
        self, url: str, fetch_certificate: Callable[[str], bytes], now: float
    ) -> rsa.RSAPublicKey:
        """The RSA key of the certificate at `url`, its chain valid now; WebhookRejected otherwise."""
        at = datetime.fromtimestamp(now, UTC)
        with self._lock:
            cached = self._keys.get(url)
            if cached is not None:
                self._keys.move_to_end(url)
        if cached is not None:
            key, not_before, not_after = cached
            if not not_before <= at <= not_after:
                raise WebhookRejected(
                    f"SNS signing certificate at {url} is not valid now", status=403
                )
            return key
        try:
            certificates = x509.load_pem_x509_certificates(fetch_certificate(url))
        except ValueError:
            raise WebhookRejected(f"no PEM certificate at {url}", status=403) from None
        leaf, intermediates = certificates[0], list(certificates[1:])
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            raise WebhookRejected(f"SNS signing certificate at {url} is not valid now", status=403)
        public_key = leaf.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise WebhookRejected(f"SNS signing certificate at {url} has no RSA key", status=403)
        self._validate(url, leaf, intermediates, at)
        with self._lock:
            self._keys[url] = (public_key, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
        return public_key

    def _validate(
        self, url: str, leaf: x509.Certificate, intermediates: list[x509.Certificate], at: datetime
    ) -> None:
        roots = self._roots if self._roots is not None else system_roots()
        verifier = (
            PolicyBuilder()
            .store(Store(list(roots)))
            .time(at)
            .build_server_verifier(DNSName(SNS_CERTIFICATE_NAME))
        )
        try:
            verifier.verify(leaf, intermediates)
            return
        except VerificationError as first:
            issuer = self._aia_issuer(leaf)
            if issuer is None:
                raise WebhookRejected(
                    f"SNS signing certificate at {url} does not chain to a trusted root: {first}",
                    status=403,
                ) from None
        try:
            verifier.verify(leaf, [*intermediates, issuer])
        except VerificationError as exc:
            raise WebhookRejected(
                f"SNS signing certificate at {url} does not chain to a trusted root: {exc}",
                status=403,
            ) from None

    def _aia_issuer(self, leaf: x509.Certificate) -> x509.Certificate | None:
        """The leaf's issuer from its AIA "CA Issuers" URL, if that is on an amazontrust.com host."""
        try:
            access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
        except x509.ExtensionNotFound:
            return None
        for description in access.value:
            if description.access_method != AuthorityInformationAccessOID.CA_ISSUERS:
                continue
            location = description.access_location
            if not isinstance(location, x509.UniformResourceIdentifier):
                continue
            parts = urlsplit(location.value)
            if parts.scheme not in ("http", "https") or not ISSUER_HOST.fullmatch(
                parts.hostname or ""
            ):
                continue
            data = self._fetch_issuer(location.value)
            try:
                if data.lstrip().startswith(b"-----BEGIN"):
                    return x509.load_pem_x509_certificate(data)
                return x509.load_der_x509_certificate(data)
            except ValueError:
                return None
        return None


#: The process's verified SNS keys, checked against the system's trust store.
DEFAULT_CERTIFICATES = SigningCertificates()


def _certificate_key(
    url: str, fetch_certificate: Callable[[str], bytes] | None, now: float
) -> rsa.RSAPublicKey:
    """The RSA key of the certificate at `url`, if its chain is trusted and valid now."""
    if fetch_certificate is None:
        # A deployment error, not a bad request: the web app must pass its HTTPS fetcher.
        raise ConfigurationError(
            "SNS verification needs WebhookConfig.fetch_certificate (a caching HTTPS fetcher)"
        )
    return DEFAULT_CERTIFICATES.key(url, fetch_certificate, now)


def parse_timestamp(value: str) -> datetime:
    """An SNS ISO 8601 UTC timestamp (`2012-05-02T00:54:06.655Z`)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WebhookRejected(f"SNS Timestamp {value!r} is not ISO 8601", status=400) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
