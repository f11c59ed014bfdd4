"""AWS Signature Version 4 for one HTTP request: canonical request, string to sign, signature.

Just enough for a JSON API such as SES v2, and checked against AWS's published test suite
(tests/unit/test_sigv4.py). Reference:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair, with the session token of temporary (STS) credentials if any."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Signature:
    """Every stage of one signing, so a test can compare each with the published value."""

    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str
    #: The headers to send: the caller's, plus host, x-amz-date, the token, and Authorization.
    headers: dict[str, str]


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime,
    content_sha256_header: bool = False,
) -> Signature:
    """Sign a request; every header passed in is signed, plus host, x-amz-date and the token.

    `url` is the URL as sent, with its path already percent-encoded. `content_sha256_header`
    adds `x-amz-content-sha256` (S3 needs it; most services do not).
    """
    parts = urlsplit(url)
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    names = {name.lower() for name, _ in pairs}
    if "host" not in names:
        pairs.append(("Host", parts.netloc.rpartition("@")[2]))
    pairs.append(("X-Amz-Date", amz_date))
    if credentials.session_token:
        pairs.append(("X-Amz-Security-Token", credentials.session_token))
    if content_sha256_header:
        pairs.append(("X-Amz-Content-Sha256", payload_hash))
    canonical_headers, signed_headers = _canonical_headers(pairs)
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_uri(parts.path),
            canonical_query(parts.query),
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(credentials.secret_access_key, amz_date[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope},"
        f" SignedHeaders={signed_headers}, Signature={signature}"
    )
    sent = {name: value for name, value in pairs}
    sent["Authorization"] = authorization
    return Signature(canonical_request, string_to_sign, signature, authorization, sent)


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The key for one day, region and service: four chained HMAC-SHA256."""
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_uri(path: str) -> str:
    """The path, URI-encoded once more (every service but S3 expects the second encoding)."""
    return quote(path or "/", safe="/~")


def canonical_query(query: str) -> str:
    """Parameters decoded, re-encoded the AWS way (space as %20), and sorted by name then value."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _canonical_headers(pairs: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(`name:value` lines, each ending in a newline; `;`-joined names), lower-case and sorted."""
    merged: dict[str, list[str]] = {}
    for name, value in pairs:
        merged.setdefault(name.strip().lower(), []).append(_SPACES.sub(" ", value.strip()))
    names = sorted(merged)
    lines = "".join(f"{name}:{','.join(merged[name])}\n" for name in names)
    return lines, ";".join(names)
