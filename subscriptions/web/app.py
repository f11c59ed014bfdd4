"""The FastAPI app factory."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from subscriptions.db import create_db_engine, session_factory
from subscriptions.errors import InvalidInput, NewsletterError, NotFound
from subscriptions.i18n import N_
from subscriptions.intake import Intake
from subscriptions.queue import TaskQueue
from subscriptions.ratelimit import RateLimiter
from subscriptions.settings import Settings, load_settings
from subscriptions.templating import builtin_templates, template_environment
from subscriptions.throttle import LoginThrottle
from subscriptions.tokens import TokenSigner
from subscriptions.web import admin, api, apiv1, demo, health, preferences, reader, webhooks
from subscriptions.web.admin.auth import Forbidden, LoginRequired, login_redirect, refusal
from subscriptions.web.forms import FormGuard
from subscriptions.web.guards import BearerFirst, BodyLimit
from subscriptions.web.language import ReaderLanguage
from subscriptions.web.runtime import WebRuntime

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app; `settings` defaults to the environment's, read here once."""
    settings = settings or load_settings()
    engine = create_db_engine(settings.database_url)
    limiter = RateLimiter(settings.broker_url)
    runtime = WebRuntime(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        pages=template_environment(settings, "web"),
        signer=TokenSigner(settings.secret_key),
        queue=TaskQueue(settings.broker_url),
        limiter=limiter,
        forms=FormGuard(
            settings.secret_key,
            limiter,
            min_seconds=settings.form_min_seconds,
            secure_cookie=settings.base_url.startswith("https://"),
        ),
        intake=Intake.from_url(settings.broker_url),
        login_throttle=LoginThrottle(limiter.client),
    )
    app = FastAPI(title=settings.site_name, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    # Every sign-up takes this route: a plain Starlette route, first in line, so that it skips
    # matching every included router and FastAPI's dependency solving (issue #12: ~10 % of its CPU).
    app.router.routes.append(Route("/subscribe", reader.subscribe, methods=["POST"]))
    app.include_router(health.router, include_in_schema=False)
    app.include_router(reader.router, include_in_schema=False)
    app.include_router(demo.router, include_in_schema=False)
    app.include_router(preferences.router, include_in_schema=False)
    app.include_router(webhooks.router, include_in_schema=False)
    app.include_router(apiv1.router)
    app.include_router(admin.router)
    static = StaticFiles(directory=builtin_templates() / "static")
    override = settings.templates_dir / "static" if settings.templates_dir else None
    if override is not None and override.is_dir():
        # A publisher's static folder wins file by file (e.g. their own style.css).
        static.all_directories = [override, *static.all_directories]
    app.mount("/static", static, name="static")
    _install_error_pages(app, runtime)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        ReaderLanguage,
        offered=settings.language_list,
        secure=settings.base_url.startswith("https://"),
    )
    # Added last, so run first: no body is read before its size and its credentials are checked.
    app.add_middleware(
        BodyLimit,
        page=lambda status, message: runtime.pages.get_template("error.html").render(
            code=status, message=message
        ),
    )
    app.add_middleware(BearerFirst, sessions=runtime.sessions)
    if settings.trusted_proxy_list:
        # Only these peers may say who the client is (X-Forwarded-For/-Proto); see the README.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)
    return app


#: Pages carry reader tokens in their URLs: no Referer may leak them, no other site may frame them.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


_RAW_SECURITY_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer that does not set them itself.

    A plain ASGI middleware: it only touches the `http.response.start` message, where Starlette's
    `BaseHTTPMiddleware` would wrap every request and its body in extra tasks and streams.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _RAW_SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _install_error_pages(app: FastAPI, runtime: WebRuntime) -> None:
    """Every error is a page (or JSON under /api), never a traceback."""

    def render(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return api.Problem(status, HTTPStatus(status).phrase, message).response()
        if request.url.path.startswith(("/healthz", "/webhooks/")):
            return JSONResponse({"detail": message}, status_code=status)
        return runtime.page("error.html", status, code=status, message=message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        messages = {
            404: N_("This page does not exist."),
            405: N_("This page does not accept that."),
        }
        message = exc.detail if isinstance(exc.detail, str) else messages.get(exc.status_code, "")
        response = render(request, exc.status_code, message or N_("Something went wrong."))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return render(request, 403, "This needs the admin role.")

    @app.exception_handler(NewsletterError)
    def newsletter_error(request: Request, exc: NewsletterError) -> Response:
        # The one place an operation's error meets each medium: a problem under /api (see
        # api.problem_for), the console's page (its form again where the route said how), and a
        # page for anything else: a body no form could have produced (too large, a file) is 400.
        if request.url.path.startswith("/api/"):
            return api.problem_for(exc).response()
        if request.url.path.startswith("/admin/"):
            shown = refusal(runtime, request, exc)
            if shown is not None:
                return shown
        if isinstance(exc, InvalidInput):
            return render(request, 400, str(exc))
        if isinstance(exc, NotFound):
            return render(request, 404, N_("This page does not exist."))
        log.error("unhandled %s on %s: %s", type(exc).__name__, request.url.path, exc)
        return render(request, 500, N_("Something went wrong on our side. Please try again later."))

    @app.exception_handler(api.Problem)
    async def problem(request: Request, exc: api.Problem) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            return api.Problem(
                422, "Unprocessable Content", "the request is not valid", errors
            ).response()
        return render(request, 400, N_("The form was incomplete or malformed. Please try again."))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return render(request, 500, N_("Something went wrong on our side. Please try again later."))
