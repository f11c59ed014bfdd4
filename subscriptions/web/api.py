"""The editors' JSON API under /api/v1: bearer tokens, RFC 9457 problem details. For now: posts."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from subscriptions import editors, posts
from subscriptions.errors import InvalidInput
from subscriptions.queue import PLAN_POST_ALERTS
from subscriptions.web.guards import TOKEN_STATE, bearer_token
from subscriptions.web.runtime import RuntimeDep, SessionDep, WebRuntime

router = APIRouter(prefix="/api/v1", tags=["api"])

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 256 * 1024


class Problem(Exception):
    """An RFC 9457 problem: status, title, detail (and field errors)."""

    def __init__(
        self, status: int, title: str, detail: str = "", errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            body, status_code=self.status, media_type="application/problem+json", headers=headers
        )


class FieldError(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


def problem(description: str) -> dict[str, Any]:
    """A documented error answer for `responses=`: a ProblemOut as `application/problem+json`.

    Use it for every error status an endpoint can answer, so the OpenAPI document says what the
    API does (schemathesis checks it). Documenting 422 this way also replaces FastAPI's default
    validation-error schema, which this API does not use.
    """
    return {
        "model": ProblemOut,
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}
        },
    }


class PostIn(BaseModel):
    """A post pushed by a CMS. The same rules as feed entries apply (GUID, else link, is its identity)."""

    title: str = Field(min_length=1, max_length=1000)
    link: str = Field(min_length=1, max_length=2000)
    topics: list[str] = Field(min_length=1, max_length=50)
    guid: str | None = Field(None, max_length=1900)
    summary: str = Field("", max_length=20_000)
    author: str = Field("", max_length=400)
    categories: list[str] = Field(default_factory=list, max_length=50)
    published_at: datetime | None = None
    hold: bool = False

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-27T09:00:00Z")
        return value


class PostOut(BaseModel):
    id: int
    title: str
    link: str
    topics: list[str]
    status: str
    published_at: datetime
    created: bool


def bearer(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header()] = None,
) -> editors.TokenInfo:
    """The editor token in `Authorization: Bearer …`, or a 401 problem.

    `guards.BearerFirst` has normally checked it already, before the body was read, and left it in
    the request's state; it is looked up here only when the app runs without that middleware.
    """
    checked = getattr(request.state, TOKEN_STATE, None)
    if isinstance(checked, editors.TokenInfo):
        return checked
    token = bearer_token(authorization)
    info = editors.authenticate(session=session, token=token) if token else None
    if info is None:
        raise Problem(
            401, "Unauthorized", "a valid editor token is required (Authorization: Bearer …)"
        )
    session.commit()
    return info


EditorDep = Annotated[editors.TokenInfo, Depends(bearer)]


@router.post(
    "/posts",
    response_model=PostOut,
    status_code=201,
    responses={
        200: {"model": PostOut, "description": "the post was known (by GUID or link): updated"},
        400: problem("the body is not JSON"),
        401: problem("no valid bearer token"),
        422: problem("invalid post"),
    },
)
def publish_post(
    post: PostIn, editor: EditorDep, runtime: RuntimeDep, session: SessionDep
) -> JSONResponse:
    """Publish a post now (idempotent on GUID or link): 201 when new, 200 when it was known (updated)."""
    return _store(post, runtime, session)


@router.post(
    "/posts/signed",
    response_model=PostOut,
    status_code=201,
    responses={
        200: {"model": PostOut, "description": "the post was known (by GUID or link): updated"},
        400: problem("the body is not JSON"),
        401: problem("missing, stale or wrong signature"),
        404: problem("the signed hook is off"),
        413: problem("the body is too large"),
        422: problem("invalid post"),
    },
)
async def publish_signed(
    request: Request,
    runtime: RuntimeDep,
    x_newsletter_timestamp: Annotated[str, Header()] = "",
    x_newsletter_signature: Annotated[str, Header()] = "",
) -> JSONResponse:
    """For CMS webhooks without bearer tokens: HMAC-SHA256 of "{timestamp}.{body}" with the publish secret."""
    secret = runtime.settings.publish_webhook_secret
    if not secret:
        raise Problem(
            404,
            "Not Found",
            "the signed publish hook is off (set NEWSLETTER_PUBLISH_WEBHOOK_SECRET)",
        )
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "Payload Too Large")
    verify_signature(secret, x_newsletter_timestamp, body, x_newsletter_signature)
    try:
        post = PostIn.model_validate_json(body)
    except ValidationError as exc:
        raise Problem(422, "Unprocessable Content", "the post is not valid", _errors(exc)) from None

    def store() -> JSONResponse:
        with runtime.sessions() as session:
            response = _store(post, runtime, session)
            return response

    return await run_in_threadpool(store)


def verify_signature(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None
) -> None:
    """Accept only a fresh timestamp and a matching signature (constant-time compare)."""
    now = time.time() if now is None else now
    # isdigit() alone lets "²" through, which int() refuses; an ASCII number of sane length only.
    if (
        not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12)
        or abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS
    ):
        raise Problem(401, "Unauthorized", "missing or stale X-Newsletter-Timestamp")
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    given = signature.removeprefix("sha256=")
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a header can hold one).
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape")):
        raise Problem(401, "Unauthorized", "the signature does not match")


def _store(post: PostIn, runtime: WebRuntime, session: Any) -> JSONResponse:
    try:
        info = posts.add_post(
            session=session,
            title=post.title,
            link=post.link,
            topics=post.topics,
            summary=post.summary,
            author=post.author,
            guid=post.guid,
            published_at=post.published_at,
            categories=post.categories,
            held=post.hold,
        )
    except InvalidInput as exc:
        session.rollback()
        raise Problem(
            422, "Unprocessable Content", str(exc), [{"field": exc.field, "message": str(exc)}]
        ) from None
    session.commit()
    if info.announce:
        runtime.queue.send(PLAN_POST_ALERTS, info.id)
    out = PostOut(
        id=info.id,
        title=info.title,
        link=info.link,
        topics=info.topics,
        status=info.status,
        published_at=info.published_at,
        created=info.created,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if info.created else 200)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]
