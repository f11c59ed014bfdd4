"""Console pages, admins only: editor accounts and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from subscriptions import editors
from subscriptions.errors import InvalidInput, NotFound
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
    error = check_form(runtime, request, form)
    password = form.get("password")
    if error is None:
        try:
            made = editors.create_editor(
                session=session,
                email=form_text(form, "email"),
                name=form_text(form, "name"),
                role=form_text(form, "role") or "editor",
                password=password if isinstance(password, str) else "",
            )
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            flash = Flash("notice", f"Editor {made.email} added as {made.role}.")
            return _team(runtime, request, session, editor, flash=flash)
    return _team(runtime, request, session, editor, 400, error=error)


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
    error = check_form(runtime, request, form)
    if error is None:
        action = form_text(form, "action")
        try:
            if action == "role":
                done = editors.update_editor(
                    session=session, editor_id=editor_id, role=form_text(form, "role")
                )
                message = f"{done.email} is now {done.role}."
            elif action in ("lock", "unlock"):
                done = editors.update_editor(
                    session=session, editor_id=editor_id, disabled=action == "lock"
                )
                message = f"{done.email} is {'locked out' if done.disabled else 'unlocked'}."
            elif action == "password":
                password = form.get("password")
                done = editors.update_editor(
                    session=session,
                    editor_id=editor_id,
                    password=password if isinstance(password, str) else "",
                )
                message = f"New password set for {done.email}; their sessions ended."
            elif action == "sign-out":
                editors.end_sessions(session=session, editor_id=editor_id)
                message = "Every session of that editor has ended."
            else:
                raise InvalidInput("unknown action")
        except (InvalidInput, NotFound) as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _team(runtime, request, session, editor, flash=Flash("notice", message))
    return _team(runtime, request, session, editor, 400, error=error)


@router.post("/team/tokens", response_class=HTMLResponse)
def add_token(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep, form: FormDep
) -> HTMLResponse:
    """A new API token, shown on this page once."""
    error = check_form(runtime, request, form)
    if error is None:
        try:
            info, plain = editors.create_token(
                session=session,
                name=form_text(form, "name"),
                role=form_text(form, "role") or "editor",
            )
        except InvalidInput as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            return _team(
                runtime, request, session, editor, new_token=plain, new_token_name=info.name
            )
    return _team(runtime, request, session, editor, 400, error=error)


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
    error = check_form(runtime, request, form)
    if error is None:
        try:
            info = editors.revoke_token(session=session, token_id=token_id)
        except NotFound as exc:
            session.rollback()
            error = str(exc)
        else:
            session.commit()
            flash = Flash("notice", f"Token {info.name} revoked.")
            return _team(runtime, request, session, editor, flash=flash)
    return _team(runtime, request, session, editor, 400, error=error)
