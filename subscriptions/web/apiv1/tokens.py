"""JSON API: the calling token, and API tokens (admins only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from subscriptions import editors
from subscriptions.errors import InvalidInput, NotFound
from subscriptions.operations import team as team_op
from subscriptions.web.apiv1.common import (
    AUTH_RESPONSES,
    AdminTokenDep,
    IdPath,
    Page,
    PageDep,
    TokenDep,
    problem,
    problem_from,
)
from subscriptions.web.runtime import RuntimeDep, SessionDep

router = APIRouter(tags=["tokens"])


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: str = Field("editor", pattern="^(editor|admin)$")


class NewTokenOut(TokenOut):
    token: str = Field(description="the bearer token; shown in this answer only")


def _out(info: editors.TokenInfo) -> TokenOut:
    return TokenOut.model_validate(info)


@router.get("/me", response_model=TokenOut, responses={401: AUTH_RESPONSES[401]})
def who_am_i(token: TokenDep) -> TokenOut:
    """The token this request was made with: its name and role."""
    return _out(token)


@router.get("/tokens", response_model=Page[TokenOut], responses=AUTH_RESPONSES)
def list_tokens(token: AdminTokenDep, session: SessionDep, paging: PageDep) -> Page[TokenOut]:
    """Every token, revoked ones included (admins)."""
    rows = editors.list_tokens(session=session)
    window = rows[paging.offset : paging.offset + paging.limit]
    return Page[TokenOut](
        items=[_out(t) for t in window], total=len(rows), limit=paging.limit, offset=paging.offset
    )


@router.post(
    "/tokens",
    response_model=NewTokenOut,
    status_code=201,
    responses=AUTH_RESPONSES,
)
def create_token(body: TokenIn, token: AdminTokenDep, runtime: RuntimeDep) -> NewTokenOut:
    """A new token (admins); its value is in this answer and nowhere else, ever."""
    try:
        with runtime.unit() as uow:
            info, plain = team_op.create_token(uow, name=body.name, role=body.role)
    except InvalidInput as exc:
        raise problem_from(exc) from None
    return NewTokenOut.model_validate({**_out(info).model_dump(), "token": plain})


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenOut,
    responses={**AUTH_RESPONSES, 404: problem("no such token")},
)
def revoke_token(token_id: IdPath, token: AdminTokenDep, runtime: RuntimeDep) -> TokenOut:
    """Revoke a token at once (admins); it stays listed as revoked."""
    try:
        with runtime.unit() as uow:
            info = team_op.revoke_token(uow, token_id)
    except NotFound as exc:
        raise problem_from(exc) from None
    return _out(info)
