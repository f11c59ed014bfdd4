"""Every malformed credential, signature or id answers 4xx, on every authenticated route.

The routes are read off the app itself, so a route added later is covered without editing this
file. Each request is sent with values an attacker would try: non-ASCII, empty, oversize, and
numbers past what an id column holds; the answer must be a 4xx (or the console's redirect to its
sign-in page), never a 500 and never a success.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests import webhooksigning
from tests.consoles import Console

HOOK_SECRET = "hook-secret-for-tests-0123456789"

#: Authorization header values (bytes: some are not ASCII, which httpx refuses in a str).
BAD_AUTHORIZATION: list[bytes] = [
    b"",
    b"Bearer",
    b"Bearer ",
    "Bearer nl_é\u2028".encode(),
    b"Bearer \xff\xfe",
    b"Bearer nl_" + b"a" * 10_000,
    b"Bearer nl_" + b"9" * 400,
    b"Basic dXNlcjpwYXNz",
    b"bearer\tnl_x",
]

#: Values for an id in a path.
BAD_IDS = ["99999999999999999999999", "9223372036854775808", "-1", "0", "%C3%A9", "1e3", "0x10"]

#: Values for a reader's token in a path.
BAD_TOKENS = ["%C3%A9%E2%80%A8", "x" * 5000, "a.b.c", "%00", "%FF%FE", "-"]


def routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, included routers' prefixes applied."""

    def walk(items: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for route in items:
            if hasattr(route, "original_router"):
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif getattr(route, "methods", None):
                for method in sorted(route.methods - {"HEAD"}):
                    yield method, prefix + route.path

    yield from walk(app.router.routes, "")


def fill(path: str, value: str) -> str:
    """The path with every {parameter} replaced by `value` (an action keeps a real word)."""
    out = path.replace("{action}", "pause").replace("{provider}", "postmark")
    while "{" in out:
        start = out.index("{")
        out = out[:start] + value + out[out.index("}", start) + 1 :]
    return out


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Console]:
    console = Console(
        tmp_path,
        database_url,
        redis_url,
        publish_webhook_secret=HOOK_SECRET,
        webhook_postmark="user:password",
        webhook_mailgun="mailgun-signing-key",
        webhook_resend=webhooksigning.svix_secret(),
        webhook_sendgrid=webhooksigning.sendgrid_key()[1],
        webhook_ses="arn:aws:sns:us-east-1:123456789012:newsletter-ses-events",
    )
    yield console
    console.close()


def _send(client: TestClient, method: str, path: str, **kwargs: Any) -> int:
    return client.request(method, path, **kwargs).status_code


def test_every_api_route_answers_401_to_every_malformed_bearer_token(console: Console) -> None:
    client = console.client()
    wrong = []
    for method, path in routes(console.app):
        if not path.startswith("/api/v1/") or path == "/api/v1/posts/signed":
            continue
        for value in BAD_AUTHORIZATION:
            status = _send(client, method, fill(path, "1"), headers={"Authorization": value})
            if status != 401:
                wrong.append((method, path, value[:40], status))
    assert wrong == []


def test_every_api_route_answers_4xx_to_every_malformed_id(console: Console) -> None:
    api = console.api()
    wrong = []
    for method, path in routes(console.app):
        if not path.startswith("/api/v1/") or "{" not in path:
            continue
        for value in BAD_IDS:
            status = _send(api, method, fill(path, value), json={})
            if not 400 <= status < 500:
                wrong.append((method, path, value, status))
    assert wrong == []


def test_every_console_route_refuses_every_malformed_session_cookie(console: Console) -> None:
    client = console.client()
    cookies = [
        "",
        "é\u2028",
        "x" * 8000,
        "WzEsMF0.Zz.forged",
        '["1",0]',
        "[99999999999999999999,0]",
    ]
    wrong = []
    for method, path in routes(console.app):
        if not path.startswith("/admin") or path == "/admin/login":
            continue
        for cookie in cookies:
            client.cookies.clear()
            headers = {"Cookie": f"nl_admin={cookie}".encode("utf-8", "surrogateescape")}
            status = _send(client, method, fill(path, "1"), headers=headers)
            if not (status == 303 or 400 <= status < 500):
                wrong.append((method, path, cookie[:20], status))
    assert wrong == []


def test_every_console_route_answers_4xx_to_every_malformed_id(console: Console) -> None:
    client = console.signed_in()
    wrong = []
    for method, path in routes(console.app):
        if not path.startswith("/admin") or "{" not in path:
            continue
        for value in BAD_IDS:
            status = _send(client, method, fill(path, value), data={})
            if not 400 <= status < 500:
                wrong.append((method, path, value, status))
    assert wrong == []


def test_every_reader_token_route_answers_4xx_to_every_malformed_token(console: Console) -> None:
    client = console.client()
    wrong = []
    for method, path in routes(console.app):
        if "{token}" not in path:
            continue
        for value in BAD_TOKENS:
            status = _send(client, method, fill(path, value), data={})
            if not 400 <= status < 500:
                wrong.append((method, path, value[:20], status))
    assert wrong == []


def _webhook_calls() -> list[tuple[str, dict[str, bytes], bytes]]:
    now = str(int(time.time()))
    weird = "é\u2028\xff".encode()
    mailgun = {"signature": {"timestamp": now, "token": "t", "signature": "é" * 64}}
    mailgun_digits = {"signature": {"timestamp": "²³", "token": "t", "signature": "a" * 64}}
    return [
        ("postmark", {"Authorization": b"Basic " + weird}, b"{}"),
        ("postmark", {"Authorization": b"Basic " + b"A" * 10_000}, b"{}"),
        ("postmark", {"Authorization": b""}, b"{}"),
        ("mailgun", {"Content-Type": b"application/json"}, json.dumps(mailgun).encode()),
        ("mailgun", {"Content-Type": b"application/json"}, json.dumps(mailgun_digits).encode()),
        ("mailgun", {"Content-Type": b"application/json"}, b"\xff\xfe"),
        (
            "sendgrid",
            {
                webhooksigning.SENDGRID_SIGNATURE: weird,
                webhooksigning.SENDGRID_TIMESTAMP: now.encode(),
            },
            b"[]",
        ),
        ("sendgrid", {webhooksigning.SENDGRID_SIGNATURE: b"", "X": b""}, b"[]"),
        (
            "resend",
            {"svix-id": weird, "svix-timestamp": "²".encode(), "svix-signature": weird},
            b"{}",
        ),
        (
            "resend",
            {"svix-id": b"x", "svix-timestamp": b"9" * 400, "svix-signature": b"v1,x"},
            b"{}",
        ),
        (
            "ses",
            {"Content-Type": b"text/plain"},
            b'{"Type": "Notification", "Signature": "\xc3\xa9"}',
        ),
        ("ses", {"Content-Type": b"text/plain"}, b"\xff" * 100),
    ]


def test_every_webhook_answers_4xx_to_malformed_signatures(console: Console) -> None:
    client = console.client()
    wrong = []
    for provider, headers, body in _webhook_calls():
        status = _send(client, "POST", f"/webhooks/{provider}", headers=headers, content=body)
        if not 400 <= status < 500:
            wrong.append((provider, headers, status))
    assert wrong == []


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (b"", b""),
        ("²³".encode(), b"sha256=abc"),
        (b"9" * 400, b"sha256=abc"),
        ("NOW", "sha256=é\u2028".encode()),
        ("NOW", b"\xff" * 64),
        ("NOW", b"a" * 10_000),
    ],
)
def test_the_signed_publish_hook_answers_401_to_malformed_signatures(
    console: Console, timestamp: bytes | str, signature: bytes
) -> None:
    stamp = str(int(time.time())).encode() if timestamp == "NOW" else timestamp
    assert isinstance(stamp, bytes)
    answer = console.client().post(
        "/api/v1/posts/signed",
        content=b"{}",
        headers={
            "Content-Type": b"application/json",
            "X-Newsletter-Timestamp": stamp,
            "X-Newsletter-Signature": signature,
        },
    )
    assert answer.status_code == 401, answer.text
