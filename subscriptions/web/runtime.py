"""What every request needs, built once per app from the settings."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment
from markupsafe import escape
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.i18n import current_language, jinja_callables
from subscriptions.intake import Intake
from subscriptions.operations import UnitOfWork
from subscriptions.queue import TaskQueue
from subscriptions.ratelimit import RateLimiter
from subscriptions.settings import Settings
from subscriptions.throttle import LoginThrottle
from subscriptions.tokens import TokenSigner
from subscriptions.topics import live_topic_slugs
from subscriptions.web.forms import FormGuard, read_form
from subscriptions.web.suppressed import SuppressedAddresses


@dataclass
class WebRuntime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    pages: Environment
    signer: TokenSigner
    queue: TaskQueue
    limiter: RateLimiter
    forms: FormGuard
    #: Where sign-ups are queued for the worker; None without Redis (sign-ups are then applied
    #: synchronously).
    intake: Intake | None = None
    #: Outbound HTTP (SNS certificates and confirmations); tests put an httpx.MockTransport here.
    http_transport: httpx.BaseTransport | None = None
    #: The suppression list's keys, so that a sign-up need not ask the database.
    suppressed: SuppressedAddresses = field(default_factory=SuppressedAddresses)
    #: Console sign-in delays per (address, client IP); in memory unless the app gives Redis.
    login_throttle: LoginThrottle = field(default_factory=lambda: LoginThrottle(None))
    _slugs: tuple[float, frozenset[str]] = (0.0, frozenset())
    _static: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Rendered pages with markers where per-request values go (`page_with`), by their context.
    _shapes: dict[tuple[Any, ...], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def unit(self) -> UnitOfWork:
        """A unit of work for one operation: commits, then hands its recorded tasks to the queue."""
        return UnitOfWork(self.sessions, self.queue)

    #: How long the live topic slugs are reused before they are read again.
    SLUGS_SECONDS = 5.0

    def cached_topics(self) -> frozenset[str] | None:
        """The live topic slugs read less than SLUGS_SECONDS ago, or None (then `live_topics`)."""
        read_at, slugs = self._slugs
        return slugs if time.monotonic() - read_at <= self.SLUGS_SECONDS else None

    def live_topics(self, *, fresh: bool = False) -> frozenset[str]:
        """Slugs of the live topics, read from the database at most every SLUGS_SECONDS."""
        read_at, slugs = self._slugs
        now = time.monotonic()
        if fresh or now - read_at > self.SLUGS_SECONDS:
            with self.sessions() as session:
                slugs = frozenset(live_topic_slugs(session=session))
            self._slugs = (now, slugs)
        return slugs

    def static_page(self, name: str, status: int = 200) -> HTMLResponse:
        """A page that depends on nothing but the settings, rendered once per process."""
        language = current_language.get()
        body = self._static.get((name, language))
        if body is None:
            with self._lock:
                body = self.pages.get_template(name).render(**jinja_callables(language)).encode()
                self._static[(name, language)] = body
        return HTMLResponse(body, status_code=status)

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A rendered page without a form, in the request's language (`current_language`)."""
        context = {**jinja_callables(current_language.get()), **context}
        return HTMLResponse(self.pages.get_template(name).render(**context), status_code=status)

    def page_with(
        self, name: str, values: dict[str, str], *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """`page(name, **context, **values)`, rendered once per context and language: the page's
        shape is kept with a random marker in place of each of `values`, which are escaped as the
        template would and put in. For the answer every sign-up gets (issue #12: a render was a
        tenth of its CPU); `values` must only be printed by the template, never tested or filtered.
        """
        key = (name, current_language.get(), *sorted(context.items()))
        shape = self._shapes.get(key)
        if shape is None:
            marked = {name: f"{_MARK}{name}{_MARK}" for name in values}
            context = {**jinja_callables(current_language.get()), **context, **marked}
            shape = self.pages.get_template(name).render(**context)
            if len(self._shapes) >= 512:
                self._shapes.clear()
            self._shapes[key] = shape
        for value_name, value in values.items():
            shape = shape.replace(f"{_MARK}{value_name}{_MARK}", str(escape(value)))
        return HTMLResponse(shape, status_code=status)

    def form_page(
        self, request: Request, name: str, status: int = 200, *, timed: bool = True, **context: Any
    ) -> HTMLResponse:
        """A rendered page whose forms carry a fresh CSRF token (and the cookie it is bound to);
        `timed=False`: a token exempt from the minimum fill time (`FormGuard.issue`)."""
        cookie, token = self.forms.issue(request, timed=timed)
        response = self.page(name, status, csrf_token=token, **context)
        self.forms.set_cookie(response, cookie)
        return response


#: Stands in for a value in a kept page shape: random per process, so no input can forge it.
_MARK = "m" + secrets.token_hex(12)


async def get_runtime(request: Request) -> WebRuntime:
    # async: a plain function would cost every request a hop through the thread pool.
    runtime: WebRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[WebRuntime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """A session per request. Routes that write commit before they answer (so the answer never
    runs ahead of the data); anything left is committed afterwards, or rolled back on error."""
    with runtime.sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


async def get_form(request: Request) -> dict[str, Any]:
    return await read_form(request)


FormDep = Annotated[dict[str, Any], Depends(get_form)]


def client_ip(request: Request) -> str:
    """The client's address as the server sees it (uvicorn applies trusted proxy headers)."""
    return request.client.host if request.client else "unknown"
