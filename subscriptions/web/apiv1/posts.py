"""JSON API for posts: publish (bearer token or a signed CMS hook), list, search, hold, approve.

Every route calls one operation of `subscriptions.operations.posts` in a unit of work; errors are
answered by the app's one handler for `NewsletterError` (see `subscriptions.web.api.problem_for`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from subscriptions import posts
from subscriptions.models import PostStatus
from subscriptions.operations import posts as post_ops
from subscriptions.posts import PostInfo
from subscriptions.web.apiv1.common import (
    AUTH_RESPONSES,
    IdPath,
    Page,
    PageDep,
    Problem,
    TokenDep,
    problem,
)
from subscriptions.web.runtime import RuntimeDep, SessionDep, WebRuntime

router = APIRouter(tags=["posts"])

SIGNATURE_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 256 * 1024

#: Text as the database can store it: no NUL character (PostgreSQL refuses it in text).
_NO_NUL = r"^[^\x00]*$"

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND = problem("no such item")
READ: Responses = {k: v for k, v in AUTH_RESPONSES.items() if k in (401, 422)}
READ_ONE: Responses = {**READ, 404: NOT_FOUND}
POST_STATE: Responses = {
    **READ,
    404: NOT_FOUND,
    409: problem("the post is not in a state that allows this"),
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
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    link: str
    topics: list[str]
    status: str
    published_at: datetime
    created: bool


class PostItem(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: int
    title: str
    link: str
    topics: list[str]
    status: str = Field(description="published or held")
    published_at: datetime
    mailed: bool = Field(
        validation_alias="notify", description="false for a feed's backlog: recorded, never mailed"
    )


class CarrierOut(BaseModel):
    """A digest whose emails carried the post, and their outcomes."""

    model_config = ConfigDict(from_attributes=True)

    digest_id: int
    kind: str
    status: str
    subject: str
    run_key: str | None
    created_at: datetime
    emails: int
    sent: int
    failed: int = Field(description="failed, unknown outcome or suppressed")
    pending: int


class PostDetail(PostItem):
    digests: list[CarrierOut]


PUBLISHED: Responses = {
    200: {"model": PostOut, "description": "the post was known (by GUID or link): updated"},
    400: problem("the body is not JSON"),
}


@router.post(
    "/posts",
    response_model=PostOut,
    status_code=201,
    responses={
        **PUBLISHED,
        401: problem("no valid bearer token"),
        422: problem("invalid post"),
    },
)
def publish_post(post: PostIn, editor: TokenDep, runtime: RuntimeDep) -> JSONResponse:
    """Publish a post now (idempotent on GUID or link): 201 when new, 200 when it was known (updated)."""
    return _publish(post, runtime)


@router.post(
    "/posts/signed",
    response_model=PostOut,
    status_code=201,
    responses={
        **PUBLISHED,
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
    return await run_in_threadpool(_publish, post, runtime)


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


def _publish(post: PostIn, runtime: WebRuntime) -> JSONResponse:
    with runtime.unit() as uow:
        info = post_ops.add(
            uow,
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
    out = PostOut.model_validate(info)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if info.created else 200)


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
    ]


def _item(info: PostInfo) -> PostItem:
    return PostItem.model_validate(info)


@router.get("/posts", response_model=Page[PostItem], responses=READ)
def search_posts(
    token: TokenDep,
    session: SessionDep,
    paging: PageDep,
    q: Annotated[
        str,
        Query(max_length=posts.MAX_SEARCH_CHARS, pattern=_NO_NUL, description="in title or link"),
    ] = "",
    topic: Annotated[str | None, Query(max_length=64, pattern=_NO_NUL)] = None,
    status: PostStatus | None = None,
) -> Page[PostItem]:
    """Posts newest first, found by a piece of their title or link, a topic and a status."""
    found = posts.search_posts(
        session=session,
        text=q,
        topic=topic,
        status=status,
        limit=paging.limit,
        offset=paging.offset,
    )
    return Page[PostItem](
        items=[_item(p) for p in found.items],
        total=found.total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/posts/{post_id}", response_model=PostDetail, responses=READ_ONE)
def get_post(post_id: IdPath, token: TokenDep, session: SessionDep) -> PostDetail:
    """One post and the digests that carried it, with counts."""
    info = posts.get_post(session=session, post_id=post_id)
    carriers = posts.post_digests(session=session, post_id=post_id)
    return PostDetail(
        **_item(info).model_dump(),
        digests=[CarrierOut.model_validate(c) for c in carriers],
    )


@router.post("/posts/{post_id}/hold", response_model=PostItem, responses=POST_STATE)
def hold_post(post_id: IdPath, token: TokenDep, runtime: RuntimeDep) -> PostItem:
    """Hold a published post: digests planned from now on leave it out (409 if already held)."""
    with runtime.unit() as uow:
        info = post_ops.hold(uow, post_id)
    return _item(info)


@router.post("/posts/{post_id}/approve", response_model=PostItem, responses=POST_STATE)
def approve_post(post_id: IdPath, token: TokenDep, runtime: RuntimeDep) -> PostItem:
    """Release a held post; its immediate alerts are planned (409 if it is not held)."""
    with runtime.unit() as uow:
        info = post_ops.approve(uow, post_id)
    return _item(info)
