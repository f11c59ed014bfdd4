"""Console page, admins only: the running configuration (secrets never shown), sending pause and
resume, and the notices editors must act on."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from subscriptions import notices
from subscriptions.editors import EditorInfo
from subscriptions.operations import digests as digests_op
from subscriptions.settings import Settings
from subscriptions.web.admin.auth import AdminDep, Flash, check_form, form_text, page
from subscriptions.web.runtime import FormDep, RuntimeDep, SessionDep, WebRuntime

router = APIRouter()

#: Settings whose values are secrets: the app's key, webhook secrets and credentials.
_SECRET_NAMES = re.compile(r"^secret_key$|_secret$|_token$|^webhook_|password")
#: Query parameters whose values are credentials (`?password=`, `?api_key=`, `?token=` ...).
_SECRET_PARAMS = re.compile(r"pass|secret|token|key|auth|credential", re.IGNORECASE)


def mask_url(value: str) -> str:
    """`value` with the credentials of a URL masked: the password (or a lone user part, which for
    e.g. `postmark://TOKEN@host` is the token) and secret-looking query values.

    Parsed, not matched: a password may hold `/`, `@` or `:` unescaped, as operators write them
    (`postgresql://news:S3cr/tPass@db/x`, `redis://:p@ssw0rd@host`). The user information runs
    up to the LAST `@` before the query, which is where every URL parser that accepts such a
    password ends it.
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    head, qmark, query = rest.partition("?")
    at = head.rfind("@")
    if at >= 0:
        userinfo, location = head[:at], head[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        head = f"{user}:***@{location}" if colon else f"***@{location}"
    if qmark:
        query = "&".join(
            f"{name}=***" if eq and _SECRET_PARAMS.search(name) else f"{name}{eq}{item}"
            for name, eq, item in (pair.partition("=") for pair in query.split("&"))
        )
    return f"{scheme}://{head}{qmark}{query}"


def shown_settings(settings: Settings) -> list[tuple[str, str, str]]:
    """(environment variable, value as shown, description) for every setting; secret values are
    only said to be set or not, and credentials in URLs are masked."""
    rows = []
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if _SECRET_NAMES.search(name):
            shown = "set (hidden)" if value else "not set"
        elif value is None:
            shown = "not set"
        else:
            shown = mask_url(str(value))
        # The variable's name as README gives it: an alias (NEWSLETTER_FROM) where there is one.
        alias = field.validation_alias
        variable = alias if isinstance(alias, str) else f"NEWSLETTER_{name.upper()}"
        rows.append((variable, shown, field.description or ""))
    return rows


def _page(
    runtime: WebRuntime,
    request: Request,
    session: SessionDep,
    editor: EditorInfo,
    status: int = 200,
    **context: object,
) -> HTMLResponse:
    return page(
        runtime,
        request,
        editor,
        "admin/settings.html",
        status,
        settings=shown_settings(runtime.settings),
        paused=notices.sending_paused(session=session),
        notices=notices.open_notices(session=session),
        **context,
    )


@router.get("/settings", response_class=HTMLResponse)
def settings_page(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep
) -> HTMLResponse:
    """What this installation runs with (set in the environment; read-only here)."""
    return _page(runtime, request, session, editor)


@router.post("/settings/sending", response_class=HTMLResponse)
def pause_or_resume(
    request: Request, runtime: RuntimeDep, session: SessionDep, editor: AdminDep, form: FormDep
) -> HTMLResponse:
    """Pause all sending (with a reason) or resume it."""
    error = check_form(runtime, request, form)
    if error is not None:
        return _page(runtime, request, session, editor, 400, error=error)
    if form.get("action") == "pause":
        with runtime.unit() as uow:
            digests_op.pause_sending(uow, reason=form_text(form, "reason"), by=editor.email)
        flash = Flash("notice", "Sending is paused; planned emails wait.")
    elif form.get("action") == "resume":
        with runtime.unit() as uow:
            closed = digests_op.resume_sending(uow)
        flash = Flash("notice", "Sending resumed." if closed else "Sending was not paused.")
    else:
        return _page(runtime, request, session, editor, 400, error="Choose pause or resume.")
    return _page(runtime, request, session, editor, flash=flash)
