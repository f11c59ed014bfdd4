"""JSON API: digests — list, compose, read with counts, preview as a reader, test send, send now,
schedule, cancel. Any editor token (editor or admin role) may use them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from subscriptions import digests as digest_ops
from subscriptions import unknowns as unknown_ops
from subscriptions.digests import DigestSummary
from subscriptions.errors import InvalidInput, NotFound, RateLimited
from subscriptions.models import MAX_ID
from subscriptions.operations import digests as operations
from subscriptions.web.api import Problem
from subscriptions.web.apiv1.common import (
    AdminTokenDep,
    Page,
    PageDep,
    TokenDep,
    problem,
    problem_from,
)
from subscriptions.web.runtime import RuntimeDep, SessionDep

router = APIRouter(prefix="/digests", tags=["digests"])

#: Ids are 32-bit in the database; a larger one could never match.
DigestId = Annotated[int, Path(ge=1, le=MAX_ID, description="the digest's id")]
PostId = Annotated[int, Field(ge=1, le=MAX_ID)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=64)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL characters in text; say so instead of failing on the insert.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented problems of an endpoint (422 always: a path or query value can be invalid)."""
    reasons = {
        400: "the body could not be parsed",
        401: "no valid bearer token (missing, wrong or revoked)",
        403: "the token lacks the admin role",
        404: "no such digest (or reader)",
        409: "the digest's state does not allow this, or the recipient count changed",
        422: "invalid input",
        429: "too many test sends (to that address, or in all) this hour",
    }
    return {s: problem(reasons[s]) for s in sorted({422, *statuses})}


class Progress(BaseModel):
    """Sending progress: planned deliveries and how many have an outcome (`percent` of them)."""

    model_config = ConfigDict(from_attributes=True)

    planned: int
    sent: int
    failed: int
    suppressed: int
    unknown: int
    pending: int = Field(description="pending or claimed: still to be sent")
    percent: int = Field(ge=0, le=100)
    finished: bool


class Report(BaseModel):
    """The final report: ledger outcomes and the provider events about this digest's emails."""

    model_config = ConfigDict(from_attributes=True)

    sent: int
    failed: int
    suppressed: int
    unknown: int
    bounced: int
    complained: int
    unsubscribed: int


class DigestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str
    subject: str
    intro_markdown: str
    post_ids: list[int]
    audience: str
    scheduled_at: datetime | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="deliveries by status, and `planned` (all)")
    progress: Progress


class DigestDetail(DigestOut):
    report: Report


class DigestIn(BaseModel):
    """An editor's digest: `posts`, or `topics` and a window [`since`, `until`)."""

    subject: str = Field(min_length=1, max_length=200)
    intro_markdown: str = Field("", max_length=20_000)
    posts: list[PostId] = Field(default_factory=list, max_length=digest_ops.MAX_POSTS)
    topics: list[Slug] = Field(default_factory=list, max_length=50)
    since: datetime | None = None
    until: datetime | None = None
    audience: list[Slug] = Field(
        default_factory=list,
        max_length=50,
        description="topic slugs whose readers get it; default: the chosen topics, or the "
        "chosen posts' topics",
    )
    everyone: bool = Field(False, description="send to every active reader, every post")
    for_everyone: bool = Field(
        False,
        description="each reader of the audience gets every post (default: only the posts of "
        "their topics)",
    )

    @field_validator("subject", "intro_markdown")
    @classmethod
    def _text(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-27T09:00:00Z")
        return value


class AudienceOut(BaseModel):
    """How many readers the digest would reach if sent now: in all, by topic, by frequency (a
    reader of two topics counts once in `total` and under each topic)."""

    total: int
    by_topic: dict[str, int]
    by_frequency: dict[str, int]


class PreviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reader: str
    subject: str
    html: str
    text: str


class TestIn(BaseModel):
    to: str = Field(min_length=3, max_length=320, description="where the test copy goes")
    as_reader: str | None = Field(
        None, max_length=320, description="render as this reader (default: the first active one)"
    )


class TestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    to: str
    as_reader: str


class UnknownIn(BaseModel):
    action: Literal["resend", "close"] = Field(
        description="resend: send them again (a reader may get two copies); close: leave them"
        " unsent and close the notice"
    )


class UnknownOut(BaseModel):
    digest_id: int
    action: str
    changed: int = Field(description="deliveries resent or closed")
    unknown: int = Field(description="deliveries of the digest still unknown (closed included)")
    reasons: dict[str, int] = Field(description="why, with how many each")


class SendIn(BaseModel):
    """The recipient count the editor checked (see `GET /digests/{id}/audience`)."""

    expected_count: int = Field(
        ge=0, le=MAX_ID, description="the count you confirmed; 409 if the audience is no longer so"
    )


class ScheduleIn(SendIn):
    at: datetime = Field(description="when to send, with a time zone")

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T09:00:00+01:00")
        return value


def digest_out(summary: DigestSummary) -> DigestOut:
    """The answer for a digest: its summary as is, with its progress."""
    return DigestOut.model_validate(summary)


def _problem(exc: InvalidInput | NotFound) -> Problem:
    # A digest in the wrong state for the change is a conflict, not a malformed request.
    if isinstance(exc, InvalidInput) and exc.field in ("status", "expected_count"):
        return Problem(409, "Conflict", str(exc))
    return problem_from(exc)


@contextmanager
def _answered() -> Iterator[None]:
    """An operation's error as this API's problem (409 for a digest in the wrong state or a
    changed count, 404, 422, 429)."""
    try:
        yield
    except (InvalidInput, NotFound) as exc:
        raise _problem(exc) from None
    except RateLimited as exc:
        raise Problem(429, "Too Many Requests", str(exc)) from None


@router.get("", response_model=Page[DigestOut], responses=_problems(401, 422))
def list_digests(
    token: TokenDep,
    session: SessionDep,
    paging: PageDep,
    kind: str | None = Query(
        None, description="only this kind: immediate, daily, weekly, editorial, transactional"
    ),
) -> Page[DigestOut]:
    """Digests of every kind, newest first, with their delivery counts."""
    try:
        found, total = digest_ops.list_digests(
            session=session, limit=paging.limit, offset=paging.offset, kind=kind
        )
    except InvalidInput as exc:
        raise _problem(exc) from None
    return Page[DigestOut](
        items=[digest_out(s) for s in found],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("", response_model=DigestOut, status_code=201, responses=_problems(400, 401))
def create_digest(body: DigestIn, token: TokenDep, runtime: RuntimeDep) -> DigestOut:
    """Compose a draft editor's digest."""
    with _answered(), runtime.unit() as uow:
        summary = operations.compose(
            uow,
            subject=body.subject,
            intro_markdown=body.intro_markdown,
            post_ids=body.posts,
            topics=body.topics,
            since=body.since,
            until=body.until,
            audience_topics=body.audience,
            everyone=body.everyone,
            for_everyone=body.for_everyone,
        )
    return digest_out(summary)


@router.get("/{digest_id}", response_model=DigestDetail, responses=_problems(401, 404, 422))
def get_digest(digest_id: DigestId, token: TokenDep, session: SessionDep) -> DigestDetail:
    """A digest with its counts, progress and final report."""
    try:
        summary = digest_ops.summarize(session=session, digest_id=digest_id)
        report = digest_ops.outcomes(session=session, digest_id=digest_id)
    except NotFound as exc:
        raise _problem(exc) from None
    return DigestDetail.model_validate(
        {**digest_out(summary).model_dump(), "report": Report.model_validate(report)}
    )


@router.get("/{digest_id}/preview", response_model=PreviewOut, responses=_problems(401, 404, 422))
def preview_digest(
    digest_id: DigestId,
    token: TokenDep,
    runtime: RuntimeDep,
    email: str | None = Query(
        None, max_length=320, description="the reader to render as (default: the first active)"
    ),
) -> PreviewOut:
    """The digest's subject, HTML and text as a reader gets it (links made inert)."""
    with _answered(), runtime.unit() as uow:
        shown = operations.preview(uow, runtime.settings, digest_id, email=email)
    return PreviewOut.model_validate(shown)


@router.post("/{digest_id}/test", response_model=TestOut, responses=_problems(400, 401, 404, 429))
def test_digest(digest_id: DigestId, body: TestIn, token: TokenDep, runtime: RuntimeDep) -> TestOut:
    """Send a test copy (subject marked [TEST], links inert); nothing is recorded."""
    with _answered(), runtime.unit() as uow:
        sent = operations.send_test(
            uow, runtime.settings, digest_id, to=body.to, as_reader=body.as_reader
        )
    return TestOut.model_validate(sent)


@router.post(
    "/{digest_id}/send",
    response_model=DigestOut,
    status_code=202,
    responses=_problems(400, 401, 404, 409, 422),
)
def send_digest(
    digest_id: DigestId, body: SendIn, token: TokenDep, runtime: RuntimeDep
) -> DigestOut:
    """Send a draft or scheduled digest now: the worker plans and sends it (see `progress`).
    409 when `expected_count` is not the audience's count any more: nothing is sent."""
    with _answered(), runtime.unit() as uow:
        summary = operations.send_now(uow, digest_id, expected_count=body.expected_count)
    return digest_out(summary)


@router.post(
    "/{digest_id}/schedule", response_model=DigestOut, responses=_problems(400, 401, 404, 409)
)
def schedule_digest(
    digest_id: DigestId, body: ScheduleIn, token: TokenDep, runtime: RuntimeDep
) -> DigestOut:
    """Send a draft (or move a scheduled digest) at a given time, for `expected_count` readers
    (409 when the audience's count differs: nothing changed)."""
    with _answered(), runtime.unit() as uow:
        summary = operations.schedule(
            uow, digest_id, at=body.at, expected_count=body.expected_count
        )
    return digest_out(summary)


@router.get("/{digest_id}/audience", response_model=AudienceOut, responses=_problems(401, 404))
def digest_audience(digest_id: DigestId, token: TokenDep, session: SessionDep) -> AudienceOut:
    """The exact number of readers the digest would go to now, to confirm before sending."""
    try:
        count = digest_ops.count_audience(session=session, digest_id=digest_id)
    except NotFound as exc:
        raise _problem(exc) from None
    return AudienceOut(
        total=count.total, by_topic=dict(count.by_topic), by_frequency=count.by_frequency
    )


@router.post(
    "/{digest_id}/cancel", response_model=DigestOut, responses=_problems(401, 404, 409, 422)
)
def cancel_digest(digest_id: DigestId, token: TokenDep, runtime: RuntimeDep) -> DigestOut:
    """Cancel a draft, scheduled or sending digest (what was sent stays sent)."""
    with _answered(), runtime.unit() as uow:
        summary = operations.cancel(uow, digest_id)
    return digest_out(summary)


@router.post(
    "/{digest_id}/unknown", response_model=UnknownOut, responses=_problems(400, 401, 403, 404)
)
def settle_unknown(
    digest_id: DigestId,
    body: UnknownIn,
    token: AdminTokenDep,
    runtime: RuntimeDep,
) -> UnknownOut:
    """Resend or close the deliveries whose outcome is unknown (the provider may have sent them)."""
    with _answered(), runtime.unit() as uow:
        changed = operations.settle_unknown(uow, digest_id, action=body.action)
        found = unknown_ops.unknown_report(session=uow.session, digest_id=digest_id)
    return UnknownOut(
        digest_id=digest_id,
        action=body.action,
        changed=changed,
        unknown=found.count,
        reasons=found.reasons,
    )
