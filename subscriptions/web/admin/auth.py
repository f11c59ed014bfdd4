"""Console sign-in: editor sessions in a signed cookie, roles, login rate limits, logout.

The cookie holds the editor's id, session version and a random session id, signed with the app's
secret and timed (`SESSION_HOURS`); every request re-reads the editor and its session row
(`editor_sessions`), so signing out ends that session wherever its cookie was copied, and locking
an account, a new password or "log out everywhere" (which raise the version) end all of them. The cookie is `HttpOnly`,
`SameSite=Lax`, and `Secure` when the base URL is https. Every console form carries the same
single-use CSRF token as the reader pages (`FormGuard`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from subscriptions.editors import EditorInfo
from subscriptions.errors import InvalidInput, NewsletterError, NotFound
from subscriptions.models import MAX_ID
from subscriptions.operations import team
from subscriptions.web.forms import FormRejected
from subscriptions.web.runtime import FormDep, RuntimeDep, WebRuntime, client_ip

router = APIRouter()

COOKIE = "nl_admin"
SESSION_HOURS = 12
#: Sign-in attempts per client IP in LOGIN_WINDOW_SECONDS (whatever the address). Failures per
#: address are slowed down per (address, IP) instead (subscriptions/throttle.py): a cap per
#: address would lock its owner out wherever they are.
LOGIN_PER_IP = 20
LOGIN_WINDOW_SECONDS = 900


class LoginRequired(Exception):
    """No valid editor session: pages redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Forbidden(Exception):
    """Signed in, but this needs the admin role."""


def _serializer(runtime: WebRuntime) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.settings.secret_key, salt="newsletter.admin-session")


def _next_path(request: Request) -> str:
    path = request.url.path
    return path + (f"?{request.url.query}" if request.url.query else "")


def current_editor(request: Request, runtime: RuntimeDep) -> EditorInfo:
    """The signed-in editor, or LoginRequired."""
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            payload = _serializer(runtime).loads(raw, max_age=SESSION_HOURS * 3600)
        except BadSignature:
            payload = None
        if (
            isinstance(payload, list)
            and len(payload) == 3
            and isinstance(payload[0], int)
            and 0 < payload[0] <= MAX_ID
            and isinstance(payload[2], str)
        ):
            editor_id, version, session_id = payload
            # Its own unit of work: on SQLite a read holds a lock, and the route has its own.
            with runtime.unit() as uow:
                found = team.signed_in(
                    uow, editor_id=editor_id, version=version, session_id=session_id
                )
            if found is not None:
                request.state.console_session = session_id
                request.state.editor = found  # for `refusal`, which runs outside the route
                return found
    raise LoginRequired(_next_path(request))


EditorDep = Annotated[EditorInfo, Depends(current_editor)]


def admin_editor(editor: EditorDep) -> EditorInfo:
    """The signed-in editor when an admin, else Forbidden."""
    if not editor.is_admin:
        raise Forbidden()
    return editor


AdminDep = Annotated[EditorInfo, Depends(admin_editor)]


@dataclass(frozen=True, slots=True)
class Flash:
    """A one-line outcome shown at the top of the next page."""

    kind: str  # "notice" or "error"
    text: str


def page(
    runtime: WebRuntime,
    request: Request,
    editor: EditorInfo | None,
    name: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A console page: the editor for the navigation, a fresh CSRF token for its forms."""
    return runtime.form_page(request, name, status, editor=editor, **context)


def check_form(runtime: WebRuntime, request: Request, form: dict[str, Any]) -> str | None:
    """None when the posted console form's CSRF token is good, else the message to show."""
    try:
        runtime.forms.verify(request, form)
    except FormRejected as exc:
        return str(exc)
    return None


def require_form(runtime: WebRuntime, request: Request, form: dict[str, Any]) -> None:
    """Refuse (InvalidInput, shown by `refusal`) a posted console form whose CSRF token is bad."""
    error = check_form(runtime, request, form)
    if error is not None:
        raise InvalidInput(error)


#: A route's way to show its form again with the error (see `refill`).
Refill = Callable[[str], Response]


def refill(request: Request, again: Refill) -> None:
    """Say how this console route shows its form again when its input is refused: `again(error)`
    renders the page with the message (status 400). Without it a refusal is the console's error
    page. Call it before the operation; `refusal` (the app's handler) uses it."""
    request.state.refill = again


def refusal(runtime: WebRuntime, request: Request, exc: NewsletterError) -> Response | None:
    """The console's answer to an operation's error, or None when this is not a console request
    (no editor was signed in): the form again with the error where the route said how
    (`refill`), else the console's error page: 404 for NotFound, 400 for InvalidInput."""
    editor = getattr(request.state, "editor", None)
    if not isinstance(editor, EditorInfo):
        return None
    again: Refill | None = getattr(request.state, "refill", None)
    if isinstance(exc, InvalidInput) and again is not None:
        try:
            return again(str(exc))
        except NotFound as missing:  # the record went away while the form was out
            exc = missing
    status = 404 if isinstance(exc, NotFound) else 400
    return page(runtime, request, editor, "admin/error.html", status, message=str(exc))


def form_text(form: dict[str, Any], name: str, *, strip: bool = True) -> str:
    """A posted console field as text: a missing or repeated one is empty, NUL characters (which
    PostgreSQL cannot store) are dropped, and outer whitespace too unless `strip=False`."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    value = value.replace("\x00", "")
    return value.strip() if strip else value


def safe_next(value: Any) -> str:
    """Only a path inside the console (no open redirect)."""
    if isinstance(value, str) and value.startswith("/admin") and not value.startswith("//"):
        return value
    return "/admin"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, runtime: RuntimeDep, next: str = "/admin") -> HTMLResponse:
    """The sign-in form."""
    return page(runtime, request, None, "admin/login.html", next=safe_next(next))


@router.post("/login", response_model=None)
def login(request: Request, runtime: RuntimeDep, form: FormDep) -> HTMLResponse | RedirectResponse:
    """Sign in; a wrong address and a wrong password get the same answer."""
    target = safe_next(form.get("next"))
    error = check_form(runtime, request, form)
    if error is not None:
        return page(runtime, request, None, "admin/login.html", 400, next=target, error=error)
    email = form.get("email") if isinstance(form.get("email"), str) else ""
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    address, ip = str(email).strip().lower()[:320], client_ip(request)
    throttle = runtime.login_throttle
    retry = runtime.limiter.hit(
        "admin-login-ip", ip, limit=LOGIN_PER_IP, window_seconds=LOGIN_WINDOW_SECONDS
    )
    wait = throttle.wait_seconds(address, ip)
    if retry is None and wait > 0:
        retry = math.ceil(wait)
    if retry is not None:
        response = page(
            runtime,
            request,
            None,
            "admin/login.html",
            429,
            next=target,
            error="Too many sign-in attempts. Please try again later.",
        )
        response.headers["Retry-After"] = str(retry)
        return response
    with runtime.unit() as uow:
        signed_in = team.sign_in(
            uow, email=str(email), password=str(password), max_age_seconds=SESSION_HOURS * 3600
        )
    if signed_in is None:
        throttle.failed(address, ip)
        return page(
            runtime,
            request,
            None,
            "admin/login.html",
            400,
            next=target,
            email=str(email)[:320],
            error="That address and password do not match an editor.",
        )
    throttle.succeeded(address, ip)
    editor, session_id = signed_in
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(
        COOKIE,
        _serializer(runtime).dumps([editor.id, editor.session_version, session_id]),
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.base_url.startswith("https://"),
        path="/admin",
    )
    return redirect


@router.post("/logout", response_model=None)
def logout(
    request: Request,
    runtime: RuntimeDep,
    editor: EditorDep,
    form: FormDep,
) -> Response:
    """Sign out here; with `everywhere=yes`, end every session of this editor."""
    error = check_form(runtime, request, form)
    if error is not None:
        return page(runtime, request, editor, "admin/error.html", 400, message=error)
    with runtime.unit() as uow:
        team.sign_out(
            uow,
            editor_id=editor.id,
            session_id=request.state.console_session,
            everywhere=form.get("everywhere") == "yes",
        )
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response


def login_redirect(exc: LoginRequired) -> RedirectResponse:
    return RedirectResponse(f"/admin/login?next={quote(exc.next_path)}", status_code=303)
