"""Console pages: digests — the list, compose, preview as a reader (HTML and text side by side),
test send, send now, schedule, cancel, and live progress (a JSON endpoint polled by
/static/admin-progress.js) with the final report."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from subscriptions import digests as digest_ops
from subscriptions import posts as post_ops
from subscriptions import topics as topic_ops
from subscriptions import unknowns as unknown_ops
from subscriptions.editors import EditorInfo
from subscriptions.errors import InvalidInput, NotFound, RateLimited
from subscriptions.models import MAX_ID, PostStatus
from subscriptions.operations import UnitOfWork
from subscriptions.operations import digests as operations
from subscriptions.web.admin.auth import (
    AdminDep,
    EditorDep,
    Flash,
    check_form,
    form_text,
    page,
)
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime

router = APIRouter()

PER_PAGE = 25
#: Posts offered in the composer, newest first.
COMPOSE_POSTS = 100
DigestId = Path(ge=1, le=MAX_ID)

#: One-line outcomes shown on the digest page after a redirect (`?done=`).
DONE = {
    "created": "Draft saved.",
    "test": "Test copy sent.",
    "sent": "Sending started: the worker plans and sends it now.",
    "scheduled": "Scheduled.",
    "cancelled": "Cancelled. Anything already sent stays sent.",
    "unknown-resend": "Deliveries of unknown outcome queued again.",
    "unknown-close": "Deliveries of unknown outcome closed: not resent.",
    "audience": "Audience changed: check the new count.",
}


@router.get("/digests", response_class=HTMLResponse)
def digest_list(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    page_number: int = Query(1, alias="page", ge=1, le=100_000),
) -> HTMLResponse:
    """Digests of every kind, newest first, with delivery counts."""
    found, total = digest_ops.list_digests(
        session=session, limit=PER_PAGE, offset=(page_number - 1) * PER_PAGE
    )
    return page(
        runtime,
        request,
        editor,
        "admin/digests.html",
        digests=found,
        total=total,
        page_number=page_number,
        pages=max(1, -(-total // PER_PAGE)),
    )


@router.get("/digests/new", response_class=HTMLResponse)
def compose_page(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: EditorDep
) -> HTMLResponse:
    """The composer: posts, or topics and a window; subject; intro in Markdown."""
    return _composer(runtime, request, session, editor, 200, {})


@router.post("/digests/new", response_model=None)
def compose(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
) -> Response:
    """Save a draft and show it."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            with runtime.unit() as uow:
                summary = operations.compose(
                    uow,
                    subject=form_text(form, "subject"),
                    intro_markdown=form_text(form, "intro"),
                    post_ids=_ids(form, "posts"),
                    topics=_many(form, "topics"),
                    since=_moment(form, "since"),
                    until=_moment(form, "until"),
                    audience_topics=_many(form, "audience"),
                    everyone=bool(form_text(form, "everyone")),
                    for_everyone=bool(form_text(form, "for_everyone")),
                )
        except InvalidInput as exc:
            error = str(exc)
        else:
            return _done(summary.id, "created")
    return _composer(runtime, request, session, editor, 400, form, error=error)


@router.get("/digests/{digest_id}", response_class=HTMLResponse)
def digest_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    digest_id: int = DigestId,
    done: str = "",
) -> HTMLResponse:
    """One digest: what it carries, its actions, live progress and the final report."""
    flash = Flash("notice", DONE[done]) if done in DONE else None
    return _digest_page(runtime, request, session, editor, digest_id, 200, flash=flash)


@router.get("/digests/{digest_id}/progress")
def digest_progress(
    session: SessionDep, editor: EditorDep, digest_id: int = DigestId
) -> JSONResponse:
    """Counts for the progress bar, polled while a digest sends; the final report with them."""
    try:
        summary = digest_ops.summarize(session=session, digest_id=digest_id)
        report = digest_ops.outcomes(session=session, digest_id=digest_id)
    except NotFound as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    p = summary.progress
    return JSONResponse(
        {
            "status": summary.status,
            "planned": p.planned,
            "sent": p.sent,
            "failed": p.failed,
            "suppressed": p.suppressed,
            "unknown": p.unknown,
            "pending": p.pending,
            "claimed": p.claimed,
            "waiting": p.waiting,
            "done": p.done,
            "phase": p.phase,
            "percent": p.percent,
            "finished": p.finished,
            "report": {
                "sent": report.sent,
                "failed": report.failed,
                "bounced": report.bounced,
                "complained": report.complained,
                "unsubscribed": report.unsubscribed,
            },
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/digests/{digest_id}/audience")
def audience_count(
    session: SessionDep,
    editor: EditorDep,
    digest_id: int = DigestId,
    audience: list[str] = Query([], max_length=50),
    everyone: bool = False,
    for_everyone: bool = False,
) -> JSONResponse:
    """The recipient count the audience form would give, as the editor ticks (nothing changes)."""
    try:
        count = digest_ops.count_another_audience(
            session=session,
            digest_id=digest_id,
            audience_topics=[a for a in audience if a],
            everyone=everyone,
            for_everyone=for_everyone,
        )
    except NotFound as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    except InvalidInput as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return JSONResponse(
        {
            "total": count.total,
            "by_topic": dict(count.by_topic),
            "by_frequency": count.by_frequency,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/digests/{digest_id}/preview", response_class=HTMLResponse)
def preview_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    digest_id: int = DigestId,
    email: str = Query("", max_length=320),
    scheme: str = Query("light", pattern="^(light|dark)$"),
) -> HTMLResponse:
    """The digest as a reader gets it: the HTML at a phone's width (375 px) beside a desktop's,
    each frame as tall as the email, in the light or dark colour scheme; the text below."""
    try:
        with runtime.unit() as uow:
            shown = operations.preview(uow, runtime.settings, digest_id, email=email)
    except (InvalidInput, NotFound) as exc:
        return _digest_page(
            runtime, request, session, editor, digest_id, 400, error=str(exc), reader=email.strip()
        )
    summary = digest_ops.summarize(session=session, digest_id=digest_id)
    return page(
        runtime,
        request,
        editor,
        "admin/digest_preview.html",
        digest=summary,
        preview=shown,
        html=dark_variant(shown.html) if scheme == "dark" else shown.html,
        scheme=scheme,
    )


DARK_QUERY = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.I)


def dark_variant(html: str) -> str:
    """The email as a mail client in dark mode shows it: its dark-scheme rules always apply.

    A frame does not take its colour scheme from the console (Chromium keeps the browser's), so
    the preview turns the email's own `prefers-color-scheme: dark` rules on instead."""
    return DARK_QUERY.sub("@media all", html).replace(
        "<head>", '<head><meta name="color-scheme" content="dark">', 1
    )


@dataclass(frozen=True, slots=True)
class Action:
    """A form posted on a digest's page: what every action route needs, in one dependency."""

    request: Request
    runtime: WebRuntime
    session: Session
    editor: EditorInfo
    form: dict[str, Any]
    digest_id: int

    def text(self, name: str) -> str:
        return form_text(self.form, name)

    def run(self, done: str, operation: Callable[[UnitOfWork], object]) -> Response:
        """Check the form, run the operation in a unit of work (committed, then its tasks handed
        to the worker), and show the digest with `done`; or show it again with the error."""
        error = check_form(self.runtime, self.request, self.form)
        if error is None:
            try:
                with self.runtime.unit() as uow:
                    operation(uow)
            except (InvalidInput, NotFound, RateLimited) as exc:
                error = str(exc)
            else:
                return _done(self.digest_id, done)
        return self.again(error)

    def again(self, error: str) -> HTMLResponse:
        return _digest_page(
            self.runtime, self.request, self.session, self.editor, self.digest_id, 400, error=error
        )


def posted_action(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: EditorDep,
    form: FormDep,
    digest_id: int = DigestId,
) -> Action:
    return Action(request, runtime, session, editor, form, digest_id)


ActionDep = Annotated[Action, Depends(posted_action)]


@router.post("/digests/{digest_id}/test", response_model=None)
def test_send(action: ActionDep) -> Response:
    """Send a test copy to an address (the editor's own by default), rendered as a reader."""
    return action.run(
        "test",
        lambda uow: operations.send_test(
            uow,
            action.runtime.settings,
            action.digest_id,
            to=action.text("to") or action.editor.email,
            as_reader=action.text("as_reader"),
        ),
    )


@router.post("/digests/{digest_id}/audience", response_model=None)
def change_audience(action: ActionDep) -> Response:
    """Change a draft's audience; the page then shows the new recipient count."""
    return action.run(
        "audience",
        lambda uow: operations.change_audience(
            uow,
            action.digest_id,
            audience_topics=_many(action.form, "audience"),
            everyone=bool(action.text("everyone")),
            for_everyone=bool(action.text("for_everyone")),
        ),
    )


@router.post("/digests/{digest_id}/send", response_model=None)
def send_now(action: ActionDep) -> Response:
    """Send now: first a confirmation page repeating subject and count; once confirmed (for the
    count shown), committed as due, then the worker is asked to plan and send it."""
    if action.text("confirm") != "yes":
        return _confirmation(action, "send")
    return action.run(
        "sent",
        lambda uow: operations.send_now(uow, action.digest_id, expected_count=_count(action.form)),
    )


@router.post("/digests/{digest_id}/schedule", response_model=None)
def schedule(action: ActionDep) -> Response:
    """Send at a given time (UTC), after the same confirmation as "Send now"."""

    def run(uow: UnitOfWork) -> object:
        at = _moment(action.form, "at")
        if at is None:
            raise InvalidInput("Give the time to send it.", field="at")
        return operations.schedule(uow, action.digest_id, at=at, expected_count=_count(action.form))

    if action.text("confirm") != "yes":
        return _confirmation(action, "schedule")
    return action.run("scheduled", run)


def _count(form: dict[str, Any]) -> int:
    value = form_text(form, "expected_count")
    if not value.isdigit() or int(value) > MAX_ID:
        raise InvalidInput("Confirm the recipient count first.", field="expected_count")
    return int(value)


def _confirmation(action: Action, what: str) -> HTMLResponse:
    """ "Send "subject" to N readers?": the step between the button and the send."""
    runtime, request, editor = action.runtime, action.request, action.editor
    error = check_form(runtime, request, action.form)
    at = None
    if error is None and what == "schedule":
        try:
            at = _moment(action.form, "at")
        except InvalidInput as exc:
            error = str(exc)
        if at is None and error is None:
            error = "Give the time to send it."
    if error is not None:
        return action.again(error)
    try:
        summary = digest_ops.summarize(session=action.session, digest_id=action.digest_id)
        count = digest_ops.count_audience(session=action.session, digest_id=action.digest_id)
    except NotFound:
        return page(
            runtime,
            request,
            editor,
            "admin/error.html",
            404,
            message=f"No digest {action.digest_id}.",
        )
    return page(
        runtime,
        request,
        editor,
        "admin/digest_confirm.html",
        digest=summary,
        count=count,
        action=what,
        at=at,
        at_value=action.text("at"),
    )


@router.post("/digests/{digest_id}/cancel", response_model=None)
def cancel(action: ActionDep) -> Response:
    """Cancel a draft, scheduled or sending digest."""
    return action.run("cancelled", lambda uow: operations.cancel(uow, action.digest_id))


@router.post("/digests/{digest_id}/unknown", response_model=None)
def settle_unknown(action: ActionDep, admin: AdminDep) -> Response:
    """Admins: resend (a reader may get two copies) or close the deliveries whose outcome is unknown."""
    what = action.text("action")
    return action.run(
        f"unknown-{what}" if what in ("resend", "close") else "unknown",
        lambda uow: operations.settle_unknown(uow, action.digest_id, action=what),
    )


def _digest_page(
    runtime: WebRuntime,
    request: Request,
    session: Session,
    editor: EditorInfo,
    digest_id: int,
    status: int,
    **context: Any,
) -> HTMLResponse:
    try:
        summary = digest_ops.summarize(session=session, digest_id=digest_id)
    except NotFound:
        return page(
            runtime, request, editor, "admin/error.html", 404, message=f"No digest {digest_id}."
        )
    report = digest_ops.outcomes(session=session, digest_id=digest_id)
    carried = digest_ops.carried_posts(session=session, digest_id=digest_id)
    context.setdefault("unknowns", unknown_ops.unknown_report(session=session, digest_id=digest_id))
    context.setdefault("reader", "")
    if summary.kind == "editorial" and summary.status in ("draft", "scheduled"):
        context["count"] = digest_ops.count_audience(session=session, digest_id=digest_id)
        context["topics"] = topic_ops.list_topics(session=session)
    return page(
        runtime,
        request,
        editor,
        "admin/digest.html",
        status,
        digest=summary,
        progress=summary.progress,
        report=report,
        posts=carried,
        **context,
    )


def _composer(
    runtime: WebRuntime,
    request: Request,
    session: Session,
    editor: EditorInfo,
    status: int,
    form: dict[str, Any],
    **context: Any,
) -> HTMLResponse:
    return page(
        runtime,
        request,
        editor,
        "admin/digest_new.html",
        status,
        posts=post_ops.list_posts(
            session=session, limit=COMPOSE_POSTS, status=PostStatus.PUBLISHED
        ),
        topics=topic_ops.list_topics(session=session),
        values={
            "subject": form_text(form, "subject"),
            "intro": form_text(form, "intro"),
            "posts": set(_many(form, "posts")),
            "topics": set(_many(form, "topics")),
            "audience": set(_many(form, "audience")),
            "everyone": bool(form_text(form, "everyone")),
            "for_everyone": bool(form_text(form, "for_everyone")),
            "since": form_text(form, "since"),
            "until": form_text(form, "until"),
        },
        **context,
    )


def _done(digest_id: int, what: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/digests/{digest_id}?done={quote(what)}", status_code=303)


def _many(form: dict[str, Any], name: str) -> list[str]:
    value = form.get(name, [])
    values = value if isinstance(value, list) else [value]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def _ids(form: dict[str, Any], name: str) -> list[int]:
    ids = []
    for value in _many(form, name):
        if not value.isdigit() or int(value) > MAX_ID:
            raise InvalidInput(f"{value!r} is not a post id", field=name)
        ids.append(int(value))
    return ids


def _moment(form: dict[str, Any], name: str) -> datetime | None:
    """A `datetime-local` field, read as UTC (the form says so); an offset may be given."""
    value = form_text(form, name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name}: {value[:40]!r} is not a date and time (e.g. 2026-12-01T09:00)", field=name
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
