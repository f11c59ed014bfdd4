"""Console pages, admins only: editor accounts and API tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from subscriptions import editors
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.operations import UnitOfWork
from subscriptions.operations import team as team_op
from subscriptions.web.admin.auth import AdminDep, Flash, check_form, form_text, page
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime

router = APIRouter()


def _team(
    runtime: WebRuntime,
    request: Request,
    session: SessionDep,
    editor: editors.EditorInfo,
    status: int = 200,
    **context: object,
) -> HTMLResponse:
    return page(
        runtime,
        request,
        editor,
        "admin/team.html",
        status,
        editors=editors.list_editors(session=session),
        tokens=editors.list_tokens(session=session),
        roles=editors.ROLES,
        **context,
    )


@router.get("/team", response_class=HTMLResponse)
def team_page(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep
) -> HTMLResponse:
    """Editors and API tokens."""
    return _team(runtime, request, session, editor)


@router.post("/team/editors", response_class=HTMLResponse)
def add_editor(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep, form: FormDep
) -> HTMLResponse:
    """A new editor account with a first password (the editor changes it by asking an admin)."""

    def run(uow: UnitOfWork) -> dict[str, object]:
        made = team_op.add_editor(
            uow,
            email=form_text(form, "email"),
            name=form_text(form, "name"),
            role=form_text(form, "role") or "editor",
            password=_password(form),
        )
        return {"flash": Flash("notice", f"Editor {made.email} added as {made.role}.")}

    return _change(runtime, request, session, editor, form, run)


@router.post("/team/editors/{editor_id}", response_class=HTMLResponse)
def change_editor(
    editor_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: AdminDep,
    form: FormDep,
) -> HTMLResponse:
    """Change a role, lock or unlock, set a new password, or end an editor's sessions."""

    def run(uow: UnitOfWork) -> dict[str, object]:
        message = team_op.change_editor(
            uow,
            editor_id,
            action=form_text(form, "action"),
            role=form_text(form, "role"),
            password=_password(form),
        )
        return {"flash": Flash("notice", message)}

    return _change(runtime, request, session, editor, form, run)


@router.post("/team/tokens", response_class=HTMLResponse)
def add_token(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep, form: FormDep
) -> HTMLResponse:
    """A new API token, shown on this page once."""

    def run(uow: UnitOfWork) -> dict[str, object]:
        info, plain = team_op.create_token(
            uow, name=form_text(form, "name"), role=form_text(form, "role") or "editor"
        )
        return {"new_token": plain, "new_token_name": info.name}

    return _change(runtime, request, session, editor, form, run)


@router.post("/team/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke_token(
    token_id: int,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    editor: AdminDep,
    form: FormDep,
) -> HTMLResponse:
    """Revoke a token at once."""

    def run(uow: UnitOfWork) -> dict[str, object]:
        info = team_op.revoke_token(uow, token_id)
        return {"flash": Flash("notice", f"Token {info.name} revoked.")}

    return _change(runtime, request, session, editor, form, run)


def _password(form: dict[str, Any]) -> str:
    # A password is taken as typed: spaces at either end are part of it.
    password = form.get("password")
    return password if isinstance(password, str) else ""


def _change(
    runtime: WebRuntime,
    request: Request,
    session: SessionDep,
    editor: editors.EditorInfo,
    form: dict[str, Any],
    operation: Callable[[UnitOfWork], dict[str, object]],
) -> HTMLResponse:
    """Check the form, run the operation in a unit of work, and show the team page with what the
    operation gave it (a notice, a new token); or with the error, status 400."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            with runtime.unit() as uow:
                shown = operation(uow)
        except (InvalidInput, NotFound) as exc:
            error = str(exc)
        else:
            return _team(runtime, request, session, editor, 200, **shown)
    return _team(runtime, request, session, editor, 400, error=error)
