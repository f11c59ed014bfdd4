"""What every request needs, built once per app from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.queue import TaskQueue
from subscriptions.ratelimit import RateLimiter
from subscriptions.settings import Settings
from subscriptions.tokens import TokenSigner
from subscriptions.web.forms import FormGuard, read_form


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
    #: Outbound HTTP (SNS certificates and confirmations); tests put an httpx.MockTransport here.
    http_transport: httpx.BaseTransport | None = None

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A rendered page without a form."""
        return HTMLResponse(self.pages.get_template(name).render(**context), status_code=status)

    def form_page(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A rendered page whose forms carry a fresh CSRF token (and the cookie it is bound to)."""
        cookie, token = self.forms.issue(request)
        response = self.page(name, status, csrf_token=token, **context)
        self.forms.set_cookie(response, cookie)
        return response


def get_runtime(request: Request) -> WebRuntime:
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
