"""Editor API tokens: made once and shown once, stored as a SHA-256, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import EditorToken, utcnow

ROLES = ("editor", "admin")
PREFIX = "nl_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: EditorToken) -> TokenInfo:
    return TokenInfo(
        row.id, row.name, row.role, row.created_at, row.last_used_at, row.revoked_at is not None
    )


def create_token(*, session: Session, name: str, role: str = "editor") -> tuple[TokenInfo, str]:
    """A new bearer token; the plain value is returned here and never again."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("token name: give 1 to 200 characters", field="name")
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}", field="role")
    plain = PREFIX + secrets.token_urlsafe(32)
    row = EditorToken(name=name, token_hash=_hash(plain), role=role)
    session.add(row)
    session.flush()
    return _info(row), plain


def authenticate(*, session: Session, token: str) -> TokenInfo | None:
    """The live token matching `token`, or None; records when it was last used."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = _hash(token)
    row = session.scalar(select(EditorToken).where(EditorToken.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    row.last_used_at = utcnow()
    return _info(row)


def revoke_token(*, session: Session, token_id: int) -> TokenInfo:
    """Revoke a token at once; it is kept, marked revoked, for the record."""
    row = session.get(EditorToken, token_id)
    if row is None:
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return _info(row)


def list_tokens(*, session: Session) -> list[TokenInfo]:
    return [_info(r) for r in session.scalars(select(EditorToken).order_by(EditorToken.id))]
