"""JSON API: the calling token, and API tokens (admins only)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from subscriptions import editors
from subscriptions.errors import InvalidInput, NotFound
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
from subscriptions.web.runtime import SessionDep

router = APIRouter(tags=["tokens"])


class TokenOut(BaseModel):
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
    return TokenOut(
        id=info.id,
        name=info.name,
        role=info.role,
        created_at=info.created_at,
        last_used_at=info.last_used_at,
        revoked=info.revoked,
    )


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
def create_token(body: TokenIn, token: AdminTokenDep, session: SessionDep) -> NewTokenOut:
    """A new token (admins); its value is in this answer and nowhere else, ever."""
    try:
        info, plain = editors.create_token(session=session, name=body.name, role=body.role)
    except InvalidInput as exc:
        session.rollback()
        raise problem_from(exc) from None
    session.commit()
    return NewTokenOut(**_out(info).model_dump(), token=plain)


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenOut,
    responses={**AUTH_RESPONSES, 404: problem("no such token")},
)
def revoke_token(token_id: IdPath, token: AdminTokenDep, session: SessionDep) -> TokenOut:
    """Revoke a token at once (admins); it stays listed as revoked."""
    try:
        info = editors.revoke_token(session=session, token_id=token_id)
    except NotFound as exc:
        session.rollback()
        raise problem_from(exc) from None
    session.commit()
    return _out(info)
