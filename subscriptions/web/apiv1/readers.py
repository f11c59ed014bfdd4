"""JSON API: readers (see subscriptions/web/apiv1/__init__.py).

Any token may search readers, read one and their audit. Import, export and erasure handle many
readers' personal data at once or destroy it: they need a token with the admin role.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from subscriptions import audit, imports
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import SubscriberStatus
from subscriptions.operations import readers as readers_op
from subscriptions.web.apiv1.common import (
    AUTH_RESPONSES,
    AdminTokenDep,
    IdPath,
    Page,
    PageDep,
    Problem,
    ProblemOut,
    TokenDep,
    problem,
    problem_from,
)
from subscriptions.web.runtime import RuntimeDep, SessionDep, WebRuntime

router = APIRouter(tags=["readers"])

#: A reader id (the column is a 32-bit integer on PostgreSQL).
ReaderId = IdPath


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = AUTH_RESPONSES
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {k: v for k, v in AUTH_RESPONSES.items() if k != 403}
ONE_ERRORS: dict[int | str, dict[str, Any]] = {**AUTH_ERRORS, 404: problem("no such reader")}


class Status(StrEnum):
    pending = "pending"
    active = "active"
    unsubscribed = "unsubscribed"
    suppressed = "suppressed"


class ReaderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    status: str
    timezone: str
    created_at: datetime
    topics: int = Field(description="topics subscribed to")
    language: str | None = Field(
        None,
        description="emails and pages in this language; null: the first of NEWSLETTER_LANGUAGES",
    )


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    topic: str
    name: str
    frequency: str
    since: datetime


class ConsentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    source: str
    ip: str | None
    topics: list[str]
    frequency: str
    timezone: str
    wording: str
    confirmed_at: datetime | None


class ReaderDetailOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    status: str
    timezone: str
    paused_until: datetime | None
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    suppression: str | None
    subscriptions: list[SubscriptionOut]
    consents: list[ConsentOut]
    language: str | None = Field(
        None,
        description="emails and pages in this language; null: the first of NEWSLETTER_LANGUAGES",
    )


class ReaderChange(BaseModel):
    """What to change on a reader; today their language."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(
        max_length=35, description='one of NEWSLETTER_LANGUAGES (e.g. "es"); others are 422'
    )


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    type: str
    occurred_at: datetime
    detail: str


class EmailOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    delivery_id: int
    digest_id: int
    kind: str
    run_key: str | None
    subject: str
    status: str
    attempts: int
    planned_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None
    last_error: str
    post_ids: list[int]
    events: list[EventOut]
    archived: bool = Field(
        False, description="read from the ledger's archive (`newsletter ledger archive`)"
    )


class PostOutcomeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    post_id: int
    title: str
    topics: list[str]
    released_at: datetime | None
    outcome: str = Field(description="sent, planned or not sent")
    delivery_ids: list[int]
    reason: str | None = Field(description="why it was not sent: " + ", ".join(audit.REASONS))
    explanation: str


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reader_id: int
    email: str
    emails: list[EmailOut]
    posts: list[PostOutcomeOut]
    events: list[EventOut]


class RowIssueOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    row: int = Field(description="row number in the file, the header being row 1")
    email: str
    reason: str


class ImportReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rows: int
    valid: int
    imported: int
    status: str = Field(description="what imported readers are: active (consent) or pending")
    written: bool = Field(description="false for a dry run or a refused strict import")
    summary: str
    bad: list[RowIssueOut]
    skipped: list[RowIssueOut]


class ImportProblemOut(ProblemOut):
    """A refused strict import: the problem and the report of every row."""

    report: ImportReportOut | None = None


def _report(report: imports.ImportReport) -> ImportReportOut:
    return ImportReportOut.model_validate(report)


@router.get("/readers", response_model=Page[ReaderOut], responses=AUTH_ERRORS)
def list_readers(
    token: TokenDep,
    session: SessionDep,
    paging: PageDep,
    q: Annotated[str, Query(max_length=320, description="part of the address")] = "",
    status: Status | None = None,
    topic: Annotated[str | None, Query(max_length=64, description="a topic slug")] = None,
) -> Page[ReaderOut]:
    """Search readers by address (substring, any case), newest first."""
    rows, total = audit.search_readers(
        session=session,
        query=q,
        status=SubscriberStatus(status.value) if status else None,
        topic=topic,
        limit=paging.limit,
        offset=paging.offset,
    )
    return Page[ReaderOut](
        items=[ReaderOut.model_validate(r) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get(
    "/readers/export",
    response_class=StreamingResponse,
    responses={
        **ADMIN_ERRORS,
        200: {
            "description": "CSV, the import's columns plus status",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    },
)
def export_readers(
    token: AdminTokenDep,
    runtime: RuntimeDep,
    q: Annotated[str, Query(max_length=320)] = "",
    status: Status | None = None,
    topic: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """All matching readers as CSV, streamed (admin)."""
    return csv_response(runtime, q=q, status=status.value if status else None, topic=topic)


def csv_response(
    runtime: WebRuntime, *, q: str, status: str | None, topic: str | None
) -> StreamingResponse:
    """A streamed CSV export in a unit of work of its own (the request's session is gone by then)."""

    def chunks() -> Any:
        with runtime.unit() as uow:
            yield from readers_op.export_csv(uow, query=q, status=status, topic=topic)

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="readers.csv"'},
    )


@router.get("/readers/{reader_id}", response_model=ReaderDetailOut, responses=ONE_ERRORS)
def get_reader(reader_id: ReaderId, token: TokenDep, session: SessionDep) -> ReaderDetailOut:
    """One reader: status, zone, pause, subscriptions and consent records."""
    try:
        detail = audit.reader_detail(session=session, subscriber_id=reader_id)
    except NotFound as exc:
        raise problem_from(exc) from None
    return ReaderDetailOut.model_validate(detail)


@router.patch(
    "/readers/{reader_id}",
    response_model=ReaderDetailOut,
    responses={**ONE_ERRORS, 422: problem("invalid input")},
)
def change_reader(
    reader_id: ReaderId,
    body: ReaderChange,
    token: TokenDep,
    runtime: RuntimeDep,
) -> ReaderDetailOut:
    """Change a reader's language (emails and pages); only NEWSLETTER_LANGUAGES are accepted."""
    try:
        with runtime.unit() as uow:
            readers_op.set_language(
                uow, reader_id, language=body.language, offered=runtime.settings.language_list
            )
            detail = audit.reader_detail(session=uow.session, subscriber_id=reader_id)
    except (InvalidInput, NotFound) as exc:
        raise problem_from(exc) from None
    return ReaderDetailOut.model_validate(detail)


@router.get("/readers/{reader_id}/audit", response_model=AuditOut, responses=ONE_ERRORS)
def get_audit(
    reader_id: ReaderId,
    token: TokenDep,
    session: SessionDep,
    posts: Annotated[int, Query(ge=1, le=1000, description="how many recent posts")] = 100,
    since: Annotated[datetime | None, Query(description="posts stored at or after")] = None,
    until: Annotated[datetime | None, Query(description="posts stored before")] = None,
) -> AuditOut:
    """Every email planned for the reader, and for each recent post whether it reached them and
    why not."""
    for value in (since, until):
        if value is not None and value.tzinfo is None:
            raise Problem(
                422, "Unprocessable Content", "give times with a zone, e.g. 2026-01-01T00:00Z"
            )
    try:
        found = audit.audit_reader(
            session=session, subscriber_id=reader_id, posts=posts, since=since, until=until
        )
    except NotFound as exc:
        raise problem_from(exc) from None
    return AuditOut.model_validate(found)


@router.delete(
    "/readers/{reader_id}",
    status_code=204,
    response_class=Response,
    responses={**ADMIN_ERRORS, 404: problem("no such reader")},
)
def erase_reader(reader_id: ReaderId, token: AdminTokenDep, runtime: RuntimeDep) -> Response:
    """Erase a reader and everything tied to them; the address stays suppressed, as a hash (admin)."""
    try:
        with runtime.unit() as uow:
            readers_op.erase(uow, reader_id)
    except NotFound as exc:
        raise problem_from(exc) from None
    return Response(status_code=204)


IMPORT_BODY = {
    "required": True,
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


@router.post(
    "/readers/import",
    response_model=ImportReportOut,
    openapi_extra={"requestBody": IMPORT_BODY},
    responses={
        **ADMIN_ERRORS,
        413: problem("the file is too large"),
        415: problem("neither text/csv nor multipart/form-data"),
        422: {
            "description": "the file cannot be read (a problem), or with strict=true some rows are "
            "bad: a problem whose `report` lists them, nothing written",
            "model": ImportProblemOut,
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/ImportProblemOut"}
                }
            },
        },
    },
)
async def import_readers(
    request: Request,
    token: AdminTokenDep,
    runtime: RuntimeDep,
    consent: Annotated[
        bool, Query(description="the readers agreed to receive email: import them active")
    ] = False,
    strict: Annotated[bool, Query(description="write nothing when any row is bad (422)")] = False,
    dry_run: Annotated[bool, Query(description="check and report only")] = False,
) -> Response:
    """Import readers from CSV (admin): the body is the file (`text/csv`) or a multipart `file`.

    Every row is checked before anything is written; the valid rows are then written together.
    200 with the report (bad and skipped rows listed); with `strict=true` and any bad row, 422
    and nothing written.
    """
    data = await read_csv_upload(request)

    def run() -> imports.ImportReport:
        with runtime.unit() as uow:
            return readers_op.import_csv(
                uow,
                data,
                consent=consent,
                by=f"API token {token.name!r}",
                strict=strict,
                dry_run=dry_run,
            )

    try:
        report = await run_in_threadpool(run)
    except InvalidInput as exc:
        raise problem_from(exc) from None
    body = _report(report)
    if strict and report.bad:
        refused = ImportProblemOut(
            title="Unprocessable Content",
            status=422,
            detail=f"{len(report.bad)} bad rows: nothing imported",
            report=body,
        )
        return JSONResponse(
            refused.model_dump(mode="json", exclude_none=True),
            status_code=422,
            media_type="application/problem+json",
        )
    return JSONResponse(body.model_dump(mode="json"))


async def read_csv_upload(request: Request) -> bytes:
    """The CSV of an API import: the raw body, or the multipart part `file`, at most MAX_BYTES."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException as exc:
            raise Problem(400, "Bad Request", str(exc.detail)) from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise Problem(
                422,
                "Unprocessable Content",
                "send the CSV as the multipart part `file`",
                [{"field": "file", "message": "missing"}],
            )
        data = await upload.read(imports.MAX_BYTES + 1)
    elif kind in ("text/csv", "text/plain", "application/csv"):
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > imports.MAX_BYTES:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
    else:
        raise Problem(415, "Unsupported Media Type", "send text/csv or multipart/form-data")
    if len(data) > imports.MAX_BYTES:
        raise Problem(413, "Content Too Large", f"at most {imports.MAX_BYTES // 1024 // 1024} MB")
    return data
