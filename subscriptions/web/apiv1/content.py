"""JSON API: topics, feeds and the suppression list (posts are in `posts.py`).

The same operations as the console's content pages (`subscriptions.operations`), each run in a unit
of work; their errors are answered by the app's one handler for `NewsletterError`. Any token may do
all of it except removing a suppression, which needs an admin token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, computed_field

from subscriptions import feeds, suppressions, topics
from subscriptions.errors import NotFound
from subscriptions.operations import feeds as feed_ops
from subscriptions.operations import suppressions as suppression_ops
from subscriptions.operations import topics as topic_ops
from subscriptions.web.apiv1.common import (
    AUTH_RESPONSES,
    AdminTokenDep,
    IdPath,
    Page,
    PageDep,
    TokenDep,
    problem,
)
from subscriptions.web.runtime import RuntimeDep, SessionDep

router = APIRouter(tags=["content"])

#: Text as the database can store it: no NUL character (PostgreSQL refuses it in text).
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=_NO_NUL)]

Responses = dict[int | str, dict[str, Any]]


def _only(responses: Responses, *statuses: int) -> Responses:
    return {k: v for k, v in responses.items() if k in statuses}


NOT_FOUND = problem("no such item")
READ: Responses = _only(AUTH_RESPONSES, 401, 422)
READ_ONE: Responses = {**READ, 404: NOT_FOUND}
WRITE: Responses = {**_only(AUTH_RESPONSES, 400, 401, 422), 404: NOT_FOUND}
#: Actions without a body (nothing to parse, only the path id to check).
ACTION: Responses = {**_only(AUTH_RESPONSES, 401, 422), 404: NOT_FOUND}


def _who(token: TokenDep) -> str:
    """How the stored records name this token (a pause reason, a suppression's "added by")."""
    return f"API token {token.name!r}"


# ------------------------------------------------------------------------------------------ topics


class TopicText(BaseModel):
    """A topic's name and description in one language; empty: the default language's."""

    name: Annotated[Text, Field(max_length=200)] = ""
    description: Annotated[Text, Field(max_length=topics.MAX_DESCRIPTION)] = ""


class TopicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    description: str
    archived: bool
    readers: int = Field(description="active readers subscribed to it, any frequency")
    posts: int
    translations: dict[str, TopicText] = Field(
        default_factory=dict,
        description="name and description per other language; a missing one falls back to the default",
    )


class TopicIn(BaseModel):
    slug: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", examples=["mexico"]
    )
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    description: Annotated[Text, Field(max_length=topics.MAX_DESCRIPTION)] = ""
    translations: dict[str, TopicText] = Field(
        default_factory=dict, examples=[{"es": {"name": "México", "description": ""}}]
    )


class TopicChange(BaseModel):
    """What to change; a field left out stays. Archiving keeps every reader's subscription: it
    simply receives no more posts."""

    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    description: Annotated[Text, Field(max_length=topics.MAX_DESCRIPTION)] | None = None
    translations: dict[str, TopicText] | None = Field(
        None, description="languages given replace theirs; one given empty is removed"
    )
    archived: bool | None = None


def _topic(session: Any, topic_id: int) -> TopicOut:
    for t in topics.summarize_topics(session=session):
        if t.id == topic_id:
            return TopicOut.model_validate(t)
    raise NotFound(f"no topic {topic_id}")


def _texts(given: dict[str, TopicText] | None) -> dict[str, dict[str, str]] | None:
    return None if given is None else {k: v.model_dump() for k, v in given.items()}


@router.get("/topics", response_model=Page[TopicOut], responses=READ)
def list_topics(
    token: TokenDep,
    session: SessionDep,
    paging: PageDep,
    include_archived: Annotated[bool, Query(description="archived topics too")] = True,
) -> Page[TopicOut]:
    """Topics, live ones first, with their active readers and posts."""
    rows = topics.summarize_topics(session=session, include_archived=include_archived)
    window = rows[paging.offset : paging.offset + paging.limit]
    return Page[TopicOut](
        items=[TopicOut.model_validate(t) for t in window],
        total=len(rows),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/topics", response_model=TopicOut, status_code=201, responses=WRITE)
def create_topic(
    body: TopicIn, token: TokenDep, runtime: RuntimeDep, session: SessionDep
) -> TopicOut:
    """Create a topic (the slug is its name in links and feeds, and cannot change)."""
    with runtime.unit() as uow:
        info = topic_ops.add(
            uow,
            slug=body.slug,
            name=body.name,
            description=body.description,
            translations=_texts(body.translations),
        )
    return _topic(session, info.id)


@router.get("/topics/{topic_id}", response_model=TopicOut, responses=READ_ONE)
def get_topic(topic_id: IdPath, token: TokenDep, session: SessionDep) -> TopicOut:
    """One topic."""
    return _topic(session, topic_id)


@router.patch("/topics/{topic_id}", response_model=TopicOut, responses=WRITE)
def change_topic(
    topic_id: IdPath, body: TopicChange, token: TokenDep, runtime: RuntimeDep, session: SessionDep
) -> TopicOut:
    """Rename, describe, archive or bring back a topic."""
    with runtime.unit() as uow:
        topic_ops.edit(
            uow,
            topic_id,
            name=body.name,
            description=body.description,
            translations=_texts(body.translations),
        )
        if body.archived is not None:
            topic_ops.archive(uow, topic_id, archived=body.archived)
    if body.archived is not None:
        runtime.live_topics(fresh=True)
    return _topic(session, topic_id)


# ------------------------------------------------------------------------------------------- feeds


class FeedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    title: str
    default_topic: str | None
    category_map: dict[str, str] = Field(description="category (casefolded) → topic slug")
    poll_interval_seconds: int
    requires_approval: bool
    last_status: str
    last_error: str
    consecutive_failures: int
    paused_reason: str | None
    last_polled_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def paused(self) -> bool:
        return self.paused_reason is not None


CategoryMap = Annotated[
    dict[
        Annotated[Text, Field(min_length=1, max_length=200)],
        Annotated[Text, Field(min_length=1, max_length=64)],
    ],
    Field(max_length=feeds.MAX_CATEGORY_RULES),
]
Interval = Annotated[int, Field(ge=feeds.MIN_INTERVAL_SECONDS, le=feeds.MAX_INTERVAL_SECONDS)]


class FeedIn(BaseModel):
    url: Annotated[Text, Field(min_length=1, max_length=2000)]
    topic: Annotated[Text, Field(min_length=1, max_length=64, description="default topic slug")]
    category_map: CategoryMap = Field(default_factory=dict)
    poll_interval_seconds: Interval = 900
    requires_approval: bool = False


class FeedChange(BaseModel):
    """What to change; a field left out stays. New rules apply from the next poll."""

    topic: Annotated[Text, Field(min_length=1, max_length=64)] | None = None
    category_map: CategoryMap | None = None
    poll_interval_seconds: Interval | None = None
    requires_approval: bool | None = None


class PauseIn(BaseModel):
    reason: Annotated[Text, Field(max_length=300)] = ""


class PollOut(BaseModel):
    queued: bool = Field(description="false when the broker could not be reached")


@router.get("/feeds", response_model=Page[FeedOut], responses=READ)
def list_feeds(token: TokenDep, session: SessionDep, paging: PageDep) -> Page[FeedOut]:
    """Feeds with their health: last poll, last error, failures in a row, paused or not."""
    rows = feeds.list_feeds(session=session)
    window = rows[paging.offset : paging.offset + paging.limit]
    return Page[FeedOut](
        items=[FeedOut.model_validate(f) for f in window],
        total=len(rows),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/feeds", response_model=FeedOut, status_code=201, responses=WRITE)
def add_feed(body: FeedIn, token: TokenDep, runtime: RuntimeDep) -> FeedOut:
    """Register a feed; its first poll is due now and records its backlog without mailing it."""
    with runtime.unit() as uow:
        info = feed_ops.add(
            uow,
            url=body.url,
            topic=body.topic,
            category_map=body.category_map,
            poll_interval_seconds=body.poll_interval_seconds,
            requires_approval=body.requires_approval,
        )
    return FeedOut.model_validate(info)


@router.get("/feeds/{feed_id}", response_model=FeedOut, responses=READ_ONE)
def get_feed(feed_id: IdPath, token: TokenDep, session: SessionDep) -> FeedOut:
    """One feed."""
    return FeedOut.model_validate(feeds.get_feed(session=session, feed_id=feed_id))


@router.patch("/feeds/{feed_id}", response_model=FeedOut, responses=WRITE)
def change_feed(feed_id: IdPath, body: FeedChange, token: TokenDep, runtime: RuntimeDep) -> FeedOut:
    """Change the default topic, the category → topic rules, the interval or approval."""
    with runtime.unit() as uow:
        info = feed_ops.edit(
            uow,
            feed_id,
            topic=body.topic,
            category_map=body.category_map,
            poll_interval_seconds=body.poll_interval_seconds,
            requires_approval=body.requires_approval,
        )
    return FeedOut.model_validate(info)


@router.post("/feeds/{feed_id}/poll", response_model=PollOut, status_code=202, responses=ACTION)
def poll_feed(feed_id: IdPath, token: TokenDep, runtime: RuntimeDep) -> PollOut:
    """Ask a worker to poll the feed now (paused or not)."""
    with runtime.unit() as uow:
        feed_ops.poll_now(uow, feed_id)
    return PollOut(queued=uow.queued)


@router.post("/feeds/{feed_id}/pause", response_model=FeedOut, responses=WRITE)
def pause_feed(feed_id: IdPath, body: PauseIn, token: TokenDep, runtime: RuntimeDep) -> FeedOut:
    """Stop polling a feed, with a reason editors can read."""
    with runtime.unit() as uow:
        info = feed_ops.pause(uow, feed_id, reason=body.reason, by=_who(token))
    return FeedOut.model_validate(info)


@router.post("/feeds/{feed_id}/resume", response_model=FeedOut, responses=ACTION)
def resume_feed(feed_id: IdPath, token: TokenDep, runtime: RuntimeDep) -> FeedOut:
    """Poll a paused feed again, from now; its failure count starts over."""
    with runtime.unit() as uow:
        info = feed_ops.resume(uow, feed_id)
    return FeedOut.model_validate(info)


# ------------------------------------------------------------------------------------ suppressions


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    hash_prefix: str = Field(description="the start of the SHA-256 of the normalized address")
    reason: str
    detail: str
    created_at: datetime


class SuppressionIn(BaseModel):
    email: Annotated[Text, Field(min_length=1, max_length=320)]
    reason: Annotated[Text, Field(min_length=1, max_length=suppressions.MAX_DETAIL)] = Field(
        description="what happened, who asked"
    )


@router.get("/suppressions", response_model=Page[SuppressionOut], responses=READ)
def list_suppressions(
    token: TokenDep,
    session: SessionDep,
    paging: PageDep,
    email: Annotated[
        str,
        Query(max_length=320, pattern=_NO_NUL, description="find this address (hashed first)"),
    ] = "",
    reason: Annotated[str | None, Query(max_length=40, pattern=_NO_NUL)] = None,
) -> Page[SuppressionOut]:
    """Suppressed addresses, newest first, by hash prefix, reason and date."""
    found = suppressions.list_suppressions(
        session=session, email=email, reason=reason, limit=paging.limit, offset=paging.offset
    )
    return Page[SuppressionOut](
        items=[SuppressionOut.model_validate(s) for s in found.items],
        total=found.total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post(
    "/suppressions",
    response_model=SuppressionOut,
    status_code=201,
    responses={
        **WRITE,
        200: {"model": SuppressionOut, "description": "already suppressed: the entry as it was"},
    },
)
def add_suppression(body: SuppressionIn, token: TokenDep, runtime: RuntimeDep) -> JSONResponse:
    """Suppress an address at once, on every topic: 201 when new, 200 when it already was."""
    with runtime.unit() as uow:
        info, created = suppression_ops.add(
            uow, email=body.email, reason=body.reason, by=_who(token)
        )
    out = SuppressionOut.model_validate(info)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete(
    "/suppressions/{suppression_id}",
    status_code=204,
    response_class=Response,
    responses={k: v for k, v in AUTH_RESPONSES.items() if k != 400} | {404: NOT_FOUND},
)
def remove_suppression(
    suppression_id: IdPath, token: AdminTokenDep, runtime: RuntimeDep
) -> Response:
    """Take an address off the list (admin tokens only). This resumes nothing: a reader with that
    address stays unsubscribed until they sign up again and confirm."""
    with runtime.unit() as uow:
        suppression_ops.remove(uow, suppression_id)
    return Response(status_code=204)
