"""JSON API: topics, feeds, posts (list, search, hold, approve) and the suppression list.

The same operations as the console's content pages. Any token may do all of it except removing a
suppression, which needs an admin token. Publishing a post stays `POST /api/v1/posts` (api.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from subscriptions import feeds, posts, suppressions, topics
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import PostStatus
from subscriptions.queue import PLAN_POST_ALERTS, POLL_FEED
from subscriptions.web.apiv1.common import (
    AUTH_RESPONSES,
    AdminTokenDep,
    IdPath,
    Page,
    PageDep,
    Problem,
    TokenDep,
    problem,
    problem_from,
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
POST_STATE: Responses = {**ACTION, 409: problem("the post is not in a state that allows this")}


def _fail(exc: InvalidInput | NotFound, fields: dict[str, str] | None = None) -> Problem:
    """The operation's error as a problem, its field named as in this API's bodies."""
    if isinstance(exc, InvalidInput) and fields and exc.field in fields:
        exc = InvalidInput(str(exc), field=fields[exc.field])
    return problem_from(exc)


# ------------------------------------------------------------------------------------------ topics


class TopicOut(BaseModel):
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


class TopicText(BaseModel):
    """A topic's name and description in one language; empty: the default language's."""

    name: Annotated[Text, Field(max_length=200)] = ""
    description: Annotated[Text, Field(max_length=topics.MAX_DESCRIPTION)] = ""


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
            return _topic_out(t)
    raise problem_from(NotFound(f"no topic {topic_id}"))


def _topic_out(t: topics.TopicSummary) -> TopicOut:
    return TopicOut(
        id=t.id,
        slug=t.slug,
        name=t.name,
        description=t.description,
        archived=t.archived,
        readers=t.readers,
        posts=t.posts,
        translations={k: TopicText(**v) for k, v in t.translations.items()},
    )


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
        items=[_topic_out(t) for t in window],
        total=len(rows),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/topics", response_model=TopicOut, status_code=201, responses=WRITE)
def create_topic(body: TopicIn, token: TokenDep, session: SessionDep) -> TopicOut:
    """Create a topic (the slug is its name in links and feeds, and cannot change)."""
    try:
        info = topics.add_topic(
            session=session,
            slug=body.slug,
            name=body.name,
            description=body.description,
            translations={k: v.model_dump() for k, v in body.translations.items()},
        )
    except InvalidInput as exc:
        session.rollback()
        raise _fail(exc) from None
    session.commit()
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
    try:
        if body.name is not None or body.description is not None or body.translations is not None:
            topics.update_topic(
                session=session,
                topic_id=topic_id,
                name=body.name,
                description=body.description,
                translations=None
                if body.translations is None
                else {k: v.model_dump() for k, v in body.translations.items()},
            )
        if body.archived is not None:
            topics.set_topic_archived(session=session, topic_id=topic_id, archived=body.archived)
        else:
            topics.get_topic(session=session, topic_id=topic_id)
    except (InvalidInput, NotFound) as exc:
        session.rollback()
        raise _fail(exc) from None
    session.commit()
    if body.archived is not None:
        runtime.live_topics(fresh=True)
    return _topic(session, topic_id)


# ------------------------------------------------------------------------------------------- feeds


class FeedOut(BaseModel):
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
    paused: bool
    paused_reason: str | None
    last_polled_at: datetime | None


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


FEED_FIELDS = {"interval": "poll_interval_seconds", "topics": "topic"}


def _feed_out(info: feeds.FeedInfo) -> FeedOut:
    return FeedOut(
        id=info.id,
        url=info.url,
        title=info.title,
        default_topic=info.default_topic,
        category_map=info.category_map,
        poll_interval_seconds=info.poll_interval_seconds,
        requires_approval=info.requires_approval,
        last_status=info.last_status,
        last_error=info.last_error,
        consecutive_failures=info.consecutive_failures,
        paused=info.paused_reason is not None,
        paused_reason=info.paused_reason,
        last_polled_at=info.last_polled_at,
    )


@router.get("/feeds", response_model=Page[FeedOut], responses=READ)
def list_feeds(token: TokenDep, session: SessionDep, paging: PageDep) -> Page[FeedOut]:
    """Feeds with their health: last poll, last error, failures in a row, paused or not."""
    rows = feeds.list_feeds(session=session)
    window = rows[paging.offset : paging.offset + paging.limit]
    return Page[FeedOut](
        items=[_feed_out(f) for f in window],
        total=len(rows),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/feeds", response_model=FeedOut, status_code=201, responses=WRITE)
def add_feed(body: FeedIn, token: TokenDep, session: SessionDep) -> FeedOut:
    """Register a feed; its first poll is due now and records its backlog without mailing it."""
    try:
        info = feeds.add_feed(
            session=session,
            url=body.url,
            topic=body.topic,
            category_map=body.category_map,
            poll_interval_seconds=body.poll_interval_seconds,
            requires_approval=body.requires_approval,
        )
    except InvalidInput as exc:
        session.rollback()
        raise _fail(exc, FEED_FIELDS) from None
    session.commit()
    return _feed_out(info)


@router.get("/feeds/{feed_id}", response_model=FeedOut, responses=READ_ONE)
def get_feed(feed_id: IdPath, token: TokenDep, session: SessionDep) -> FeedOut:
    """One feed."""
    try:
        return _feed_out(feeds.get_feed(session=session, feed_id=feed_id))
    except NotFound as exc:
        raise _fail(exc) from None


@router.patch("/feeds/{feed_id}", response_model=FeedOut, responses=WRITE)
def change_feed(feed_id: IdPath, body: FeedChange, token: TokenDep, session: SessionDep) -> FeedOut:
    """Change the default topic, the category → topic rules, the interval or approval."""
    try:
        info = feeds.update_feed(
            session=session,
            feed_id=feed_id,
            topic=body.topic,
            category_map=body.category_map,
            poll_interval_seconds=body.poll_interval_seconds,
            requires_approval=body.requires_approval,
        )
    except (InvalidInput, NotFound) as exc:
        session.rollback()
        raise _fail(exc, FEED_FIELDS) from None
    session.commit()
    return _feed_out(info)


@router.post(
    "/feeds/{feed_id}/poll",
    response_model=PollOut,
    status_code=202,
    responses=ACTION,
)
def poll_feed(
    feed_id: IdPath, token: TokenDep, runtime: RuntimeDep, session: SessionDep
) -> PollOut:
    """Ask a worker to poll the feed now (paused or not)."""
    try:
        feeds.get_feed(session=session, feed_id=feed_id)
    except NotFound as exc:
        raise _fail(exc) from None
    return PollOut(queued=runtime.queue.send(POLL_FEED, feed_id))


@router.post("/feeds/{feed_id}/pause", response_model=FeedOut, responses=WRITE)
def pause_feed(feed_id: IdPath, body: PauseIn, token: TokenDep, session: SessionDep) -> FeedOut:
    """Stop polling a feed, with a reason editors can read."""
    reason = " ".join(body.reason.split()) or f"paused by API token {token.name!r}"
    return _set_paused(session, feed_id, reason[:300])


@router.post(
    "/feeds/{feed_id}/resume",
    response_model=FeedOut,
    responses=ACTION,
)
def resume_feed(feed_id: IdPath, token: TokenDep, session: SessionDep) -> FeedOut:
    """Poll a paused feed again, from now; its failure count starts over."""
    return _set_paused(session, feed_id, None)


def _set_paused(session: Any, feed_id: int, reason: str | None) -> FeedOut:
    try:
        feeds.set_feed_paused(session=session, feed_id=feed_id, reason=reason)
        info = feeds.get_feed(session=session, feed_id=feed_id)
    except NotFound as exc:
        session.rollback()
        raise _fail(exc) from None
    session.commit()
    return _feed_out(info)


# ------------------------------------------------------------------------------------------- posts


class PostItem(BaseModel):
    id: int
    title: str
    link: str
    topics: list[str]
    status: str = Field(description="published or held")
    published_at: datetime
    mailed: bool = Field(description="false for a feed's backlog: recorded, never mailed")


class CarrierOut(BaseModel):
    """A digest whose emails carried the post, and their outcomes."""

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


def _post_out(info: posts.PostInfo) -> PostItem:
    return PostItem(
        id=info.id,
        title=info.title,
        link=info.link,
        topics=info.topics,
        status=info.status,
        published_at=info.published_at,
        mailed=info.notify,
    )


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
        items=[_post_out(p) for p in found.items],
        total=found.total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/posts/{post_id}", response_model=PostDetail, responses=READ_ONE)
def get_post(post_id: IdPath, token: TokenDep, session: SessionDep) -> PostDetail:
    """One post and the digests that carried it, with counts."""
    try:
        info = posts.get_post(session=session, post_id=post_id)
        carriers = posts.post_digests(session=session, post_id=post_id)
    except NotFound as exc:
        raise _fail(exc) from None
    return PostDetail(
        **_post_out(info).model_dump(),
        digests=[
            CarrierOut(
                digest_id=c.digest_id,
                kind=c.kind,
                status=c.status,
                subject=c.subject,
                run_key=c.run_key,
                created_at=c.created_at,
                emails=c.emails,
                sent=c.sent,
                failed=c.failed,
                pending=c.pending,
            )
            for c in carriers
        ],
    )


@router.post("/posts/{post_id}/hold", response_model=PostItem, responses=POST_STATE)
def hold_post(post_id: IdPath, token: TokenDep, session: SessionDep) -> PostItem:
    """Hold a published post: digests planned from now on leave it out (409 if already held)."""
    try:
        info = posts.hold_post(session=session, post_id=post_id)
    except NotFound as exc:
        raise _fail(exc) from None
    except InvalidInput as exc:
        session.rollback()
        raise Problem(409, "Conflict", str(exc)) from None
    session.commit()
    return _post_out(info)


@router.post("/posts/{post_id}/approve", response_model=PostItem, responses=POST_STATE)
def approve_post(
    post_id: IdPath, token: TokenDep, runtime: RuntimeDep, session: SessionDep
) -> PostItem:
    """Release a held post; its immediate alerts are planned (409 if it is not held)."""
    try:
        info = posts.approve_post(session=session, post_id=post_id)
    except NotFound as exc:
        raise _fail(exc) from None
    except InvalidInput as exc:
        session.rollback()
        raise Problem(409, "Conflict", str(exc)) from None
    session.commit()
    if info.announce:
        runtime.queue.send(PLAN_POST_ALERTS, info.id)
    return _post_out(info)


# ------------------------------------------------------------------------------------ suppressions


class SuppressionOut(BaseModel):
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


def _suppression_out(info: suppressions.SuppressionInfo) -> SuppressionOut:
    return SuppressionOut(
        id=info.id,
        hash_prefix=info.hash_prefix,
        reason=info.reason,
        detail=info.detail,
        created_at=info.created_at,
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
    try:
        found = suppressions.list_suppressions(
            session=session, email=email, reason=reason, limit=paging.limit, offset=paging.offset
        )
    except InvalidInput as exc:
        raise _fail(exc) from None
    return Page[SuppressionOut](
        items=[_suppression_out(s) for s in found.items],
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
def add_suppression(body: SuppressionIn, token: TokenDep, session: SessionDep) -> JSONResponse:
    """Suppress an address at once, on every topic: 201 when new, 200 when it already was."""
    try:
        info, created = suppressions.add_suppression(
            session=session,
            email=body.email,
            detail=body.reason,
            added_by=f"API token {token.name!r}",
        )
    except InvalidInput as exc:
        session.rollback()
        raise _fail(exc) from None
    session.commit()
    out = _suppression_out(info)
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete(
    "/suppressions/{suppression_id}",
    status_code=204,
    response_class=Response,
    responses={k: v for k, v in AUTH_RESPONSES.items() if k != 400}
    | {404: problem("no such item")},
)
def remove_suppression(
    suppression_id: IdPath, token: AdminTokenDep, session: SessionDep
) -> Response:
    """Take an address off the list (admin tokens only). This resumes nothing: a reader with that
    address stays unsubscribed until they sign up again and confirm."""
    try:
        suppressions.remove_suppression(session=session, suppression_id=suppression_id)
    except NotFound as exc:
        raise _fail(exc) from None
    session.commit()
    return Response(status_code=204)
