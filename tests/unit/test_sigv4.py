"""Tests for AWS Signature Version 4 against AWS's published signature test suite.

The vectors below are copied from AWS's "Signature Version 4 test suite" (aws-sig-v4-test-suite,
https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html; the same files are
kept in awslabs/aws-c-auth under tests/aws-signing-test-suite/v4/). Each gives the request, then
the canonical request (.creq), the string to sign (.sts) and the Authorization header (.authz)
exactly as published. All of them use the suite's example credentials, region, service and date.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from mail.providers.sigv4 import (
    Credentials,
    canonical_query,
    canonical_uri,
    sign,
    signing_key,
)

SUITE_CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_DATE = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)  # 20150830T123600Z
SUITE_SCOPE = "20150830/us-east-1/service/aws4_request"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class Vector:
    """One case of the suite: the request, then its .creq, .sts and .authz files."""

    name: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    creq: str
    sts: str
    authz: str


VECTORS = [
    Vector(
        name="get-vanilla",
        method="GET",
        url="https://example.amazonaws.com/",
        headers={"Host": "example.amazonaws.com"},
        body=b"",
        creq=(
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            f"host;x-amz-date\n{EMPTY}"
        ),
        sts=(
            f"AWS4-HMAC-SHA256\n20150830T123600Z\n{SUITE_SCOPE}\n"
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        ),
        authz=(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
            " SignedHeaders=host;x-amz-date,"
            " Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ),
    ),
    Vector(
        name="post-vanilla",
        method="POST",
        url="https://example.amazonaws.com/",
        headers={"Host": "example.amazonaws.com"},
        body=b"",
        creq=(
            "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            f"host;x-amz-date\n{EMPTY}"
        ),
        sts=(
            f"AWS4-HMAC-SHA256\n20150830T123600Z\n{SUITE_SCOPE}\n"
            "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87"
        ),
        authz=(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
            " SignedHeaders=host;x-amz-date,"
            " Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ),
    ),
    Vector(
        name="get-vanilla-query-order-key-case",
        method="GET",
        url="https://example.amazonaws.com/?Param2=value2&Param1=value1",
        headers={"Host": "example.amazonaws.com"},
        body=b"",
        creq=(
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n"
            f"x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY}"
        ),
        sts=(
            f"AWS4-HMAC-SHA256\n20150830T123600Z\n{SUITE_SCOPE}\n"
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0"
        ),
        authz=(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
            " SignedHeaders=host;x-amz-date,"
            " Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ),
    ),
    Vector(
        name="post-x-www-form-urlencoded",
        method="POST",
        url="https://example.amazonaws.com/",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Host": "example.amazonaws.com",
        },
        body=b"Param1=value1",
        creq=(
            "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n"
            "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "content-type;host;x-amz-date\n"
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        ),
        sts=(
            f"AWS4-HMAC-SHA256\n20150830T123600Z\n{SUITE_SCOPE}\n"
            "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"
        ),
        authz=(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
            " SignedHeaders=content-type;host;x-amz-date,"
            " Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        ),
    ),
]


def sign_vector(vector: Vector, credentials: Credentials = SUITE_CREDENTIALS) -> object:
    """Sign one suite request with the suite's credentials, region, service and date."""
    return sign(
        vector.method,
        vector.url,
        vector.headers,
        vector.body,
        credentials=credentials,
        region="us-east-1",
        service="service",
        now=SUITE_DATE,
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_published_vectors(vector: Vector) -> None:
    signed = sign(
        vector.method,
        vector.url,
        vector.headers,
        vector.body,
        credentials=SUITE_CREDENTIALS,
        region="us-east-1",
        service="service",
        now=SUITE_DATE,
    )
    assert signed.canonical_request == vector.creq
    assert signed.string_to_sign == vector.sts
    assert signed.authorization == vector.authz
    assert signed.headers["Authorization"] == vector.authz
    assert signed.headers["X-Amz-Date"] == "20150830T123600Z"


def test_string_to_sign_hashes_the_canonical_request() -> None:
    # The .sts files' last line is the SHA-256 of the .creq: a check on the vectors themselves.
    for vector in VECTORS:
        digest = hashlib.sha256(vector.creq.encode()).hexdigest()
        assert vector.sts.endswith(digest), vector.name


def test_session_token_is_signed() -> None:
    # get-vanilla-with-session-token, from aws-c-auth's copy of the suite
    # (context.json gives the token; header-signed-request.txt the Authorization).
    token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"
    credentials = Credentials(
        SUITE_CREDENTIALS.access_key_id, SUITE_CREDENTIALS.secret_access_key, token
    )
    signed = sign(
        "GET",
        "https://example.amazonaws.com/",
        {"Host": "example.amazonaws.com"},
        b"",
        credentials=credentials,
        region="us-east-1",
        service="service",
        now=SUITE_DATE,
    )
    assert signed.headers["X-Amz-Security-Token"] == token
    assert signed.authorization == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
        " SignedHeaders=host;x-amz-date;x-amz-security-token,"
        " Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    )


def test_host_comes_from_the_url_when_not_given() -> None:
    (vanilla,) = [v for v in VECTORS if v.name == "get-vanilla"]
    signed = sign(
        "GET",
        vanilla.url,
        {},
        b"",
        credentials=SUITE_CREDENTIALS,
        region="us-east-1",
        service="service",
        now=SUITE_DATE,
    )
    assert signed.authorization == vanilla.authz
    assert signed.headers["Host"] == "example.amazonaws.com"


def test_content_sha256_header_is_optional_and_signed() -> None:
    signed = sign(
        "POST",
        "https://example.amazonaws.com/",
        {},
        b"Param1=value1",
        credentials=SUITE_CREDENTIALS,
        region="us-east-1",
        service="service",
        now=SUITE_DATE,
        content_sha256_header=True,
    )
    body_hash = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    assert signed.headers["X-Amz-Content-Sha256"] == body_hash
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in signed.authorization


def test_a_changed_body_or_key_changes_the_signature() -> None:
    (post,) = [v for v in VECTORS if v.name == "post-x-www-form-urlencoded"]
    reference = sign_vector(post)
    tampered = sign_vector(Vector(**{**post.__dict__, "body": b"Param1=value2"}))
    other_key = sign_vector(post, Credentials("AKIDEXAMPLE", "another-secret"))
    assert tampered != reference
    assert other_key != reference


def test_signing_key_depends_on_every_part_of_the_scope() -> None:
    secret = SUITE_CREDENTIALS.secret_access_key
    base = signing_key(secret, "20150830", "us-east-1", "service")
    assert len(base) == 32
    assert base != signing_key(secret, "20150831", "us-east-1", "service")
    assert base != signing_key(secret, "20150830", "eu-west-1", "service")
    assert base != signing_key(secret, "20150830", "us-east-1", "ses")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("b=2&a=1&A=0", "A=0&a=1&b=2"),
        ("Param1=value2&Param1=Value1", "Param1=Value1&Param1=value2"),
        ("q=a%20b&r=c+d", "q=a%20b&r=c%2Bd"),
        ("key", "key="),
    ],
)
def test_canonical_query(query: str, expected: str) -> None:
    assert canonical_query(query) == expected


def test_canonical_uri_encodes_the_sent_path_again() -> None:
    assert canonical_uri("") == "/"
    assert canonical_uri("/v2/email/outbound-emails") == "/v2/email/outbound-emails"
    assert canonical_uri("/a%20b/") == "/a%2520b/"


def test_credentials_repr_hides_the_secret() -> None:
    text = repr(Credentials("AKID", "s3cret", "t0ken"))
    assert "AKID" in text
    assert "s3cret" not in text and "t0ken" not in text
