"""Gates in front of every route: a body size limit enforced while the body streams in, and the
editor API's bearer token checked before any of its bodies is read.

Both are plain ASGI middleware. Starlette's `request.body()` and FastAPI's body models read a body
whole before a route can look at its size or its credentials: an unauthenticated 300 MB upload then
costs the web process 300 MB (or more, as JSON). Here the size is checked against `Content-Length`
before the first byte is read, and a chunked body is counted as it arrives, so no route ever holds
more than its class's limit; an `/api/v1` call without a valid token is answered 401 before its body is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from subscriptions import editors
from subscriptions.imports import MAX_BYTES as CSV_MAX_BYTES

#: The scope["state"] key where BearerFirst leaves the token it checked (see `api.bearer`).
TOKEN_STATE = "editor_token"  # noqa: S105 (a key name, not a secret)


@dataclass(frozen=True, slots=True)
class BodyClass:
    """A class of routes and the largest body they accept, in bytes."""

    name: str
    max_bytes: int


#: Reader and console forms (URL-encoded or multipart without files), including the console's CSV
#: import, which is a form upload of at most the CSV limit.
FORMS = BodyClass("forms", 1024 * 1024)
#: Provider event webhooks: SendGrid and Mailgun batch up to a few hundred KB.
WEBHOOKS = BodyClass("webhooks", 1024 * 1024)
#: The editor API's JSON bodies (a post's summary is at most 20,000 characters).
API_JSON = BodyClass("api", 256 * 1024)
#: A CSV import (raw or multipart): the import's own limit and room for the multipart framing.
CSV_IMPORT = BodyClass("csv", CSV_MAX_BYTES + 64 * 1024)
CONSOLE_CSV_IMPORT = BodyClass("console-csv", CSV_MAX_BYTES + 64 * 1024)

#: Paths whose bodies are CSV imports.
CSV_PATHS = frozenset({"/api/v1/readers/import", "/admin/readers/import"})
#: The one /api/v1 route that authenticates by an HMAC of its body instead of a bearer token.
SIGNED_PATHS = frozenset({"/api/v1/posts/signed"})


def body_class(path: str) -> BodyClass:
    """The class of a request path, which decides its body limit."""
    if path in CSV_PATHS:
        return CSV_IMPORT if path.startswith("/api/") else CONSOLE_CSV_IMPORT
    if path.startswith("/webhooks/"):
        return WEBHOOKS
    if path.startswith("/api/"):
        return API_JSON
    return FORMS


class BodyTooLarge(HTTPException):
    """The body passed its route's limit while streaming in: 413, rendered by the app's error pages."""

    def __init__(self, limit: BodyClass) -> None:
        super().__init__(413, f"The request is too large (at most {limit.max_bytes // 1024} KB).")
        self.limit = limit


class BodyLimit:
    """Answers 413 for a body larger than its route class allows, before it is buffered.

    A declared `Content-Length` over the limit is refused before any byte is read (the server
    never delivers more than a declared length, so such a request then passes unwrapped); a
    chunked body is counted as it arrives and refused at the first chunk past the limit (the app's
    error handlers render that 413, as they render any HTTPException; a route that swallows it
    still answers 413).
    """

    def __init__(
        self,
        app: ASGIApp,
        classify: Callable[[str], BodyClass] = body_class,
        page: Callable[[int, str], str] | None = None,
    ) -> None:
        self.app = app
        self.classify = classify
        #: Renders the HTML error page of reader and console routes (status, message).
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.classify(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit.max_bytes):
            status = 413 if declared.isdigit() else 400
            await _answer(scope, send, status, BodyTooLarge(limit).detail, page=self.page)
            return
        if declared is not None or _header(scope, b"transfer-encoding") is None:
            # The server delivers no more than a declared length (HTTP/1.1 framing), and no body
            # without one or chunked coding: only a chunked body needs counting.
            await self.app(scope, receive, send)
            return
        seen = 0
        exceeded = answered = replaced = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal answered, replaced
            if message["type"] == "http.response.start":
                answered = True
                # A route that caught the 413 and answered something else still answers 413.
                replaced = exceeded and message["status"] != 413
                if replaced:
                    await _answer(scope, send, 413, BodyTooLarge(limit).detail, page=self.page)
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if answered:
                raise
            await _answer(scope, send, 413, BodyTooLarge(limit).detail, page=self.page)


class BearerFirst:
    """Checks the bearer token of every /api/v1 call before the route (and its body model) runs.

    The token found is left in `scope["state"]` for the route's dependency, so it is looked up once.
    """

    def __init__(self, app: ASGIApp, sessions: Callable[[], Any]) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith("/api/v1/")
            or path in SIGNED_PATHS
            or scope.get("method") == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(_header(scope, b"authorization"))
        info = await run_in_threadpool(self._authenticate, token) if token else None
        if info is None:
            await _answer(
                scope,
                send,
                401,
                "a valid editor token is required (Authorization: Bearer …)",
                headers=[(b"www-authenticate", b"Bearer")],
            )
            return
        scope.setdefault("state", {})[TOKEN_STATE] = info
        await self.app(scope, receive, send)

    def _authenticate(self, token: str) -> editors.TokenInfo | None:
        with self.sessions() as session:
            info = editors.authenticate(session=session, token=token)
            session.commit()
            return info


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value, or None for anything malformed (wrong
    scheme, empty, oversize, or not printable ASCII, which no token of ours contains)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        return None
    if not token.isascii() or not token.isprintable():
        return None
    return token


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


async def _answer(
    scope: Scope,
    send: Send,
    status: int,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    page: Callable[[int, str], str] | None = None,
) -> None:
    """A small answer in the route's own format: a problem under /api, JSON for webhooks, text else.

    The connection is closed afterwards, so the unread rest of the body is never read.
    """
    path = scope.get("path", "")
    titles = {400: "Bad Request", 401: "Unauthorized", 413: "Content Too Large"}
    if path.startswith("/api/"):
        body = json.dumps(
            {"type": "about:blank", "title": titles[status], "status": status, "detail": detail}
        ).encode()
        kind = b"application/problem+json"
    elif path.startswith("/webhooks/"):
        body, kind = json.dumps({"detail": detail}).encode(), b"application/json"
    elif page is not None:
        body, kind = page(status, detail).encode(), b"text/html; charset=utf-8"
    else:
        body, kind = f"{titles[status]}: {detail}\n".encode(), b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
