"""Local stand-ins for provider APIs, speaking their documented protocols, failures included.

`ProviderServer` answers Postmark's `POST /email/batch` and Resend's `POST /emails/batch` (with Resend's
Idempotency-Key rules) on 127.0.0.1. Tests script faults request by request: an HTTP error with its
headers, a per-message Postmark ErrorCode, or a connection dropped after the request was read and its
messages "sent" (an unknown outcome for the client). Every message the server accepted is recorded with
the time it arrived, so tests can count deliveries per reader and measure the sending rate.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Fault:
    """What to do with one incoming request instead of (or on top of) accepting it."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Accept the messages, then close the connection without answering.
    drop_after_accepting: bool = False
    #: Close the connection at once, before reading anything (a reset connection; nothing accepted).
    reset: bool = False
    #: Seconds to wait before answering anything (longer than the client's timeout: a timeout).
    delay: float = 0.0
    #: Accept the messages, then wait this long before answering (a crash test kills the client
    #: meanwhile: the request has left, the answer has not come).
    hold_after_accepting: float = 0.0
    #: Postmark only: index in the batch -> (ErrorCode, Message) for that message.
    message_errors: dict[int, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Accepted:
    """One message the stand-in accepted ("sent")."""

    to: str
    subject: str
    headers: dict[str, str]
    metadata: dict[str, str]
    at: float
    #: The reader's copy of the body after the provider's substitutions (SendGrid and Mailgun
    #: stand-ins, when `keep_bodies` is on).
    text: str | None = None
    html: str | None = None


class ProviderServer:
    """A threaded HTTP server; use as a context manager."""

    def __init__(self, *, token: str = "test-token") -> None:
        self.token = token
        self.accepted: list[Accepted] = []
        self.requests: list[tuple[float, str, int]] = []  # (time, path, messages in it)
        self.faults: list[Fault] = []
        #: Keep each reader's expanded body in `Accepted` (off for benchmarks: still expanded).
        self.keep_bodies = True
        self._idempotency: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def delivered_to(self, address: str) -> int:
        return sum(1 for a in self.accepted if a.to == address)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, each answer waits ~40 ms
                # for the client's delayed ACK.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                return

            def _answer(
                self, status: int, body: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                with server._lock:
                    upcoming = server.faults[0] if server.faults else None
                if upcoming is not None and (upcoming.reset or upcoming.delay):
                    server._next_fault()
                    if upcoming.delay:
                        time.sleep(upcoming.delay)
                    self._drop()
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/email/batch":
                    self._postmark(raw)
                elif self.path == "/emails/batch":
                    self._resend(raw)
                else:
                    self._answer(404, {"Message": "not found"})

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)

            def _record(self, messages: Sequence[tuple[Any, ...]]) -> None:
                """Record (to, subject, headers, metadata[, text, html]) per accepted message."""
                now = time.time()
                with server._lock:
                    server.requests.append((now, self.path, len(messages)))
                    for to, subject, headers, metadata, *body in messages:
                        text, html = body if body and server.keep_bodies else (None, None)
                        server.accepted.append(
                            Accepted(to, subject, headers, metadata, now, text, html)
                        )

            def _postmark(self, raw: bytes) -> None:
                if self.headers.get("X-Postmark-Server-Token") != server.token:
                    self._answer(
                        401,
                        {
                            "ErrorCode": 10,
                            "Message": "No Account or Server API tokens were supplied in the HTTP headers.",
                        },
                    )
                    return
                fault = server._next_fault()
                if fault is not None and fault.status is not None:
                    self._answer(
                        fault.status,
                        fault.body or {"ErrorCode": 0, "Message": "error"},
                        fault.headers,
                    )
                    return
                batch = json.loads(raw)
                results, accepted = [], []
                for index, message in enumerate(batch):
                    error = fault.message_errors.get(index) if fault else None
                    if error is not None:
                        results.append({"ErrorCode": error[0], "Message": error[1]})
                        continue
                    headers = {h["Name"]: h["Value"] for h in message.get("Headers", [])}
                    accepted.append(
                        (message["To"], message["Subject"], headers, message.get("Metadata", {}))
                    )
                    results.append({"ErrorCode": 0, "Message": "OK", "MessageID": str(uuid.uuid4()),
                                    "To": message["To"], "SubmittedAt": "2026-11-27T10:00:00Z"})  # fmt: skip
                self._record(accepted)
                if fault is not None and fault.hold_after_accepting:
                    time.sleep(fault.hold_after_accepting)
                if fault is not None and fault.drop_after_accepting:
                    self._drop()
                    return
                self._answer(200, results)

            def _resend(self, raw: bytes) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._answer(
                        401,
                        {
                            "statusCode": 401,
                            "name": "missing_api_key",
                            "message": "Missing API key",
                        },
                    )
                    return
                key = self.headers.get("Idempotency-Key")
                if key:
                    with server._lock:
                        seen = server._idempotency.get(key)
                    if seen is not None:
                        if seen[0] != raw.decode():
                            self._answer(409, {"statusCode": 409, "name": "invalid_idempotent_request",
                                               "message": "Same idempotency key used with a different request payload."})  # fmt: skip
                        else:
                            self._answer(200, json.loads(seen[1]))
                        return
                fault = server._next_fault()
                if fault is not None and fault.status is not None:
                    self._answer(
                        fault.status,
                        fault.body or {"statusCode": fault.status, "name": "application_error"},
                        fault.headers,
                    )
                    return
                batch = json.loads(raw)
                accepted = []
                for message in batch:
                    tags = {t["name"]: t["value"] for t in message.get("tags", [])}
                    to = message["to"][0] if isinstance(message["to"], list) else message["to"]
                    accepted.append((to, message["subject"], message.get("headers", {}), tags))
                response = {"data": [{"id": str(uuid.uuid4())} for _ in batch]}
                if key:
                    with server._lock:
                        server._idempotency[key] = (raw.decode(), json.dumps(response).encode())
                self._record(accepted)
                if fault is not None and fault.hold_after_accepting:
                    time.sleep(fault.hold_after_accepting)
                if fault is not None and fault.drop_after_accepting:
                    self._drop()
                    return
                self._answer(200, response)

        return Handler
