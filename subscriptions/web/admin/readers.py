"""Console pages: readers (see subscriptions/web/admin/__init__.py).

Search, a reader's record and audit: every editor. CSV import and export and erasure handle many
readers' personal data or destroy it: admins only (as in the API).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from subscriptions import audit, imports
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.i18n import language_names, reader_language
from subscriptions.models import MAX_ID, SubscriberStatus
from subscriptions.operations import readers as readers_op
from subscriptions.topics import list_topics
from subscriptions.web.admin.auth import AdminDep, EditorDep, Flash, check_form, page
from subscriptions.web.apiv1.readers import csv_response
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep

router = APIRouter()

ReaderId = Annotated[int, Path(ge=1, le=MAX_ID)]

PER_PAGE = 50
STATUSES = [s.value for s in SubscriberStatus]


def _status(value: str) -> SubscriberStatus | None:
    return SubscriberStatus(value) if value in STATUSES else None


@router.get("/readers", response_class=HTMLResponse)
def readers_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    q: Annotated[str, Query(max_length=320)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    topic: Annotated[str, Query(max_length=64)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    erased: Annotated[str, Query(max_length=5)] = "",
) -> HTMLResponse:
    """Search readers by address, by status and topic; 50 a page."""
    rows, total = audit.search_readers(
        session=session,
        query=q,
        status=_status(status),
        topic=topic or None,
        limit=PER_PAGE,
        offset=(page_number - 1) * PER_PAGE,
    )
    filters = {k: v for k, v in (("q", q), ("status", status), ("topic", topic)) if v}
    pages = max(1, -(-total // PER_PAGE))
    return page(
        runtime,
        request,
        editor,
        "admin/readers.html",
        rows=rows,
        total=total,
        q=q,
        status_filter=status,
        topic=topic,
        statuses=STATUSES,
        topics=list_topics(session=session, include_archived=True),
        page_number=page_number,
        pages=pages,
        query_for=lambda n: "?" + urlencode({**filters, "page": n}),
        export_query=urlencode(filters),
        flash=Flash("notice", "The reader was erased.") if erased else None,
    )


@router.get("/readers/import", response_class=HTMLResponse)
def import_page(request: Request, runtime: RuntimeDep, editor: AdminDep) -> HTMLResponse:
    """The import form (admins)."""
    return page(runtime, request, editor, "admin/readers_import.html", columns=imports.COLUMNS)


@router.post("/readers/import", response_class=HTMLResponse)
async def import_file(request: Request, runtime: RuntimeDep, editor: AdminDep) -> HTMLResponse:
    """Check a CSV file and import its valid rows (or none, when asked to be strict)."""

    def again(status: int, error: str) -> HTMLResponse:
        return page(
            runtime,
            request,
            editor,
            "admin/readers_import.html",
            status,
            columns=imports.COLUMNS,
            error=error,
        )

    try:
        form = await request.form(max_files=1, max_fields=10)
    except HTTPException as exc:
        return again(400, str(exc.detail))
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    error = await run_in_threadpool(check_form, runtime, request, fields)
    if error is not None:
        return again(400, error)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return again(400, "Choose a CSV file to import.")
    data = await upload.read(imports.MAX_BYTES + 1)
    consent, strict = fields.get("consent") == "yes", fields.get("strict") == "yes"
    dry_run = fields.get("dry_run") == "yes"

    def run() -> imports.ImportReport:
        with runtime.unit() as uow:
            return readers_op.import_csv(
                uow,
                data,
                consent=consent,
                by=f"{editor.email} (console)",
                strict=strict,
                dry_run=dry_run,
            )

    try:
        report = await run_in_threadpool(run)
    except InvalidInput as exc:
        return again(422, str(exc))
    return page(
        runtime,
        request,
        editor,
        "admin/readers_import.html",
        422 if strict and report.bad else 200,
        columns=imports.COLUMNS,
        report=report,
        dry_run=dry_run,
        strict=strict,
    )


@router.get("/readers/export", response_class=StreamingResponse)
def export_file(
    runtime: RuntimeDep,
    editor: AdminDep,
    q: Annotated[str, Query(max_length=320)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    topic: Annotated[str, Query(max_length=64)] = "",
) -> StreamingResponse:
    """The matching readers as CSV (admins); an unknown status is no filter, as on the search."""
    chosen = _status(status)
    return csv_response(runtime, q=q, status=chosen.value if chosen else None, topic=topic or None)


@router.get("/readers/{reader_id}", response_class=HTMLResponse)
def reader_page(
    reader_id: ReaderId,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
) -> HTMLResponse:
    """One reader: status, zone, pause, subscriptions, consent records."""
    try:
        reader = audit.reader_detail(session=session, subscriber_id=reader_id)
    except NotFound:
        return page(runtime, request, editor, "admin/error.html", 404, message="No such reader.")
    # The language the reader's emails go out in: their own, or the fallback when none is set
    # (or it is no longer offered).
    language = reader_language(runtime.settings.language_list, reader.language)
    return page(
        runtime,
        request,
        editor,
        "admin/readers_detail.html",
        reader=reader,
        language=language,
        language_name=language_names([language])[language],
    )


@router.get("/readers/{reader_id}/audit", response_class=HTMLResponse)
def audit_page(
    reader_id: ReaderId,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    posts: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HTMLResponse:
    """Every email planned for the reader, and why each recent post did or did not reach them."""
    try:
        found = audit.audit_reader(session=session, subscriber_id=reader_id, posts=posts)
    except NotFound:
        return page(runtime, request, editor, "admin/error.html", 404, message="No such reader.")
    return page(runtime, request, editor, "admin/readers_audit.html", audit=found, posts=posts)


@router.get("/readers/{reader_id}/erase", response_class=HTMLResponse)
def erase_page(
    reader_id: ReaderId,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: AdminDep,
) -> HTMLResponse:
    """Ask before erasing (admins)."""
    try:
        reader = audit.reader_detail(session=session, subscriber_id=reader_id)
    except NotFound:
        return page(runtime, request, editor, "admin/error.html", 404, message="No such reader.")
    return page(runtime, request, editor, "admin/readers_erase.html", reader=reader)


@router.post("/readers/{reader_id}/erase", response_model=None)
def erase(
    reader_id: ReaderId,
    request: Request,
    runtime: RuntimeDep,
    editor: AdminDep,
    form: FormDep,
) -> Response:
    """Erase the reader; only a hash of the address stays, on the suppression list."""
    error = check_form(runtime, request, form)
    if error is not None:
        return page(runtime, request, editor, "admin/error.html", 400, message=error)
    if form.get("confirm") != "erase":
        return page(
            runtime,
            request,
            editor,
            "admin/error.html",
            400,
            message="Tick the box to confirm the erasure.",
        )
    try:
        with runtime.unit() as uow:
            readers_op.erase(uow, reader_id)
    except NotFound:
        return page(runtime, request, editor, "admin/error.html", 404, message="No such reader.")
    return RedirectResponse("/admin/readers?erased=1", status_code=303)
