"""What every /api/v1 endpoint shares: the bearer token, RFC 9457 problems, and how an operation's
error becomes one (`problem_for`, used by the app's one exception handler for `NewsletterError`).

The routes themselves are in `subscriptions/web/apiv1/`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from subscriptions import editors
from subscriptions.errors import (
    CountChanged,
    InvalidInput,
    NewsletterError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenInvalid,
)
from subscriptions.operations import team
from subscriptions.web.guards import TOKEN_STATE, bearer_token
from subscriptions.web.runtime import RuntimeDep


class Problem(Exception):
    """An RFC 9457 problem: status, title, detail (and field errors)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = self.errors
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        headers.update(self.headers)
        return JSONResponse(
            body, status_code=self.status, media_type="application/problem+json", headers=headers
        )


class FieldError(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


def problem(description: str) -> dict[str, Any]:
    """A documented error answer for `responses=`: a ProblemOut as `application/problem+json`.

    Use it for every error status an endpoint can answer, so the OpenAPI document says what the
    API does (schemathesis checks it). Documenting 422 this way also replaces FastAPI's default
    validation-error schema, which this API does not use.
    """
    return {
        "model": ProblemOut,
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}
        },
    }


def bearer(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> editors.TokenInfo:
    """The editor token in `Authorization: Bearer …`, or a 401 problem.

    `guards.BearerFirst` has normally checked it already, before the body was read, and left it in
    the request's state; it is looked up here only when the app runs without that middleware.
    """
    checked = getattr(request.state, TOKEN_STATE, None)
    if isinstance(checked, editors.TokenInfo):
        return checked
    token = bearer_token(authorization)
    info = None
    if token:
        with runtime.unit() as uow:
            info = team.authenticate(uow, token)
    if info is None:
        raise Problem(
            401, "Unauthorized", "a valid editor token is required (Authorization: Bearer …)"
        )
    return info


EditorDep = Annotated[editors.TokenInfo, Depends(bearer)]


def problem_for(exc: NewsletterError) -> Problem:
    """The problem an operation's error is answered with, the same on every /api/v1 route.

    NotFound 404; a send confirmed for a stale count (CountChanged), or a record whose status does
    not allow the change (InvalidInput on field `status`), 409; other InvalidInput 422 with the
    field named; RateLimited 429 with Retry-After; TokenInvalid 401; ServiceUnavailable 503.
    """
    if isinstance(exc, NotFound):
        return Problem(404, "Not Found", str(exc))
    if isinstance(exc, CountChanged) or (isinstance(exc, InvalidInput) and exc.field == "status"):
        return Problem(409, "Conflict", str(exc))
    if isinstance(exc, InvalidInput):
        errors = [{"field": exc.field or "", "message": str(exc)}]
        return Problem(422, "Unprocessable Content", str(exc), errors)
    if isinstance(exc, RateLimited):
        retry = {"Retry-After": str(max(1, exc.retry_after))}
        return Problem(429, "Too Many Requests", str(exc), headers=retry)
    if isinstance(exc, TokenInvalid):
        return Problem(401, "Unauthorized", str(exc))
    if isinstance(exc, ServiceUnavailable):
        return Problem(503, "Service Unavailable", str(exc))
    return Problem(500, "Internal Server Error", "something went wrong on our side")
