"""What every /api/v1 endpoint shares: token roles, pagination, problems."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from subscriptions.editors import TokenInfo
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.web.api import EditorDep, FieldError, Problem, ProblemOut, problem
from subscriptions.web.params import IdPath

__all__ = ["FieldError", "IdPath", "Problem", "ProblemOut", "problem"]

T = TypeVar("T")

MAX_LIMIT = 200


def admin_token(token: EditorDep) -> TokenInfo:
    """The bearer token when it has the admin role, else a 403 problem."""
    if token.role != "admin":
        raise Problem(403, "Forbidden", "this needs a token with the admin role")
    return token


TokenDep = EditorDep
AdminTokenDep = Annotated[TokenInfo, Depends(admin_token)]


class PageParams(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    """One page of a list: `items`, the `total` matching, and where this page starts."""

    items: list[T]
    total: int = Field(ge=0)
    limit: int = Field(ge=1)
    offset: int = Field(ge=0)


#: The error answers every authenticated endpoint can give: `responses={**AUTH_RESPONSES, 404: ...}`.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem("the body could not be parsed"),
    401: problem("no valid bearer token"),
    403: problem("the token's role may not do this"),
    422: problem("invalid input"),
}


def problem_from(exc: InvalidInput | NotFound) -> Problem:
    """The problem for an operation's error: 404 for NotFound, 422 with the field otherwise."""
    if isinstance(exc, NotFound):
        return Problem(404, "Not Found", str(exc))
    return Problem(
        422, "Unprocessable Content", str(exc), [{"field": exc.field or "", "message": str(exc)}]
    )
