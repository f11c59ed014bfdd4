"""Request bodies are limited while they stream in, and /api/v1 checks its token before any body.

The memory test runs the real web process (`newsletter web`, uvicorn) and sends each route class a
300 MB body over a raw socket, chunked (so no Content-Length warns the server) and declared (so the
server can refuse it unread); the process's peak resident memory (VmHWM) must stay within 20 MB of
what it was after serving small requests on the same routes. The other tests run the app in-process.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from subscriptions import editors
from subscriptions.web import guards
from tests.consoles import Console
from tests.factories import migrated_sessions
from tests.integration.conftest import free_port, wait_until_serving

MB = 1024 * 1024
BIG = 300 * MB
HOOK_SECRET = "hook-secret-for-tests-0123456789"


def _peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(10)
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def stream_chunked(port: int, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """Send up to BIG bytes chunked; stop when the server answers. (status, bytes sent)."""
    piece = b"a" * MB
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_head("POST", path, port, {**headers, "Transfer-Encoding": "chunked"}))
        if "multipart" in headers.get(
            "Content-Type", ""
        ):  # one endless field of a well-formed form
            sock.sendall(f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
        try:
            while sent < BIG:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(frame)
                sent += len(piece)
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _status(_read_answer(sock)), sent


def send_declared(port: int, path: str, headers: dict[str, str]) -> int:
    """Declare a BIG body, send none of it: the answer must not wait for it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_head("POST", path, port, {**headers, "Content-Length": str(BIG)}))
        return _status(_read_answer(sock))


PART = b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=xyz"}
JSON = {"Content-Type": "application/json"}

#: (path, headers, the answer expected) per route class; "token" is filled in with an admin token.
#: A multipart field is refused at Starlette's 1 MB part limit (400) or ours (413), whichever first.
ROUTES: list[tuple[str, dict[str, str], int | tuple[int, ...]]] = [
    ("/subscribe", FORM, 413),
    ("/subscribe", MULTIPART, (400, 413)),
    ("/unsubscribe/x", FORM, 413),
    ("/manage", FORM, 413),
    ("/admin/login", FORM, 413),
    ("/webhooks/postmark", JSON, 413),
    ("/api/v1/posts/signed", JSON, 413),
    ("/api/v1/topics", JSON, 401),
    ("/api/v1/topics", {**JSON, "Authorization": "Bearer token"}, 413),
    ("/api/v1/readers/import", {"Content-Type": "text/csv"}, 401),
    ("/admin/readers/import", MULTIPART, 303),
]


def test_a_300_mb_body_to_any_route_leaves_the_web_process_within_20_mb_of_idle(
    tmp_path: Path, service_env: dict[str, str], start: Callable[..., Any]
) -> None:
    sessions = migrated_sessions(service_env["NEWSLETTER_DATABASE_URL"])
    with sessions.begin() as session:
        _, token = editors.create_token(session=session, name="rss", role="admin")
    port = free_port()
    env = {
        **service_env,
        "NEWSLETTER_PUBLISH_WEBHOOK_SECRET": HOOK_SECRET,
        "NEWSLETTER_WEBHOOK_POSTMARK": "user:password",
    }
    web = start(["web", "--port", str(port)], env)
    wait_until_serving(f"http://127.0.0.1:{port}/healthz", web)
    pid = web.popen.pid

    def filled(headers: dict[str, str]) -> dict[str, str]:
        return {k: v.replace("Bearer token", f"Bearer {token}") for k, v in headers.items()}

    # Warm every route with a small body, so that idle includes what any request loads once.
    for path, headers, _ in ROUTES:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            body = b"a=b"
            head = _head("POST", path, port, {**filled(headers), "Content-Length": str(len(body))})
            sock.sendall(head + body)
            assert _status(_read_answer(sock)) > 0, path
    time.sleep(0.5)
    idle = _peak_mib(pid)

    answers = []
    for path, headers, expected in ROUTES:
        status, sent = stream_chunked(port, path, filled(headers))
        answers.append((path, status, sent))
        allowed = expected if isinstance(expected, tuple) else (expected,)
        assert status in allowed, (path, headers, status)
        assert sent < 64 * MB, (path, sent)  # the server stopped reading long before the end
        declared = send_declared(port, path, filled(headers))
        assert declared in (*allowed, 413), (path, headers, declared)
    peak = _peak_mib(pid)
    assert peak - idle <= 20, f"idle {idle:.0f} MiB, peak {peak:.0f} MiB: {answers}"


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Any:
    console = Console(tmp_path, database_url, redis_url, publish_webhook_secret=HOOK_SECRET)
    yield console
    console.close()


def test_api_answers_401_to_a_call_without_a_token_before_reading_its_body(console: Any) -> None:
    received: list[int] = []
    client: TestClient = console.client()

    def body() -> Any:
        for _ in range(100):
            received.append(1)
            yield b"x" * 1024

    answer = client.post("/api/v1/topics", content=body(), headers=JSON)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert len(received) <= 1  # the first chunk at most is pulled by the transport, never parsed


def test_api_with_a_token_still_validates_its_body(console: Any) -> None:
    api = console.api()
    answer = api.post("/api/v1/topics", json={"slug": ""})
    assert answer.status_code == 422
    assert api.get("/api/v1/me").status_code == 200


def test_a_chunked_body_past_the_limit_gets_413_in_the_routes_format(console: Any) -> None:
    client = console.client()

    def chunks(total: int) -> Any:
        for _ in range(total // 65536 + 1):
            yield b"a" * 65536

    api = console.api()
    answer = api.post(
        "/api/v1/topics", content=chunks(guards.API_JSON.max_bytes + 65536), headers=JSON
    )
    assert answer.status_code == 413
    assert answer.json()["status"] == 413
    answer = client.post("/subscribe", content=chunks(guards.FORMS.max_bytes + 65536), headers=FORM)
    assert answer.status_code == 413
    assert "too large" in answer.text
    # Under the limit: the route runs as before (a form without a token is refused as a form).
    assert (
        client.post("/subscribe", content=b"email=a%40example.org", headers=FORM).status_code == 400
    )


def test_route_classes_have_their_own_limits() -> None:
    assert guards.body_class("/subscribe") is guards.FORMS
    assert guards.body_class("/webhooks/ses") is guards.WEBHOOKS
    assert guards.body_class("/api/v1/topics") is guards.API_JSON
    assert guards.body_class("/api/v1/readers/import") is guards.CSV_IMPORT
    assert guards.body_class("/admin/readers/import").max_bytes > guards.FORMS.max_bytes
