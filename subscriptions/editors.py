"""Editors: console accounts (Argon2 password hashes, two roles) and API bearer tokens (made once and
shown once, stored as a SHA-256, revocable)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, NotFound
from subscriptions.models import Editor, EditorSession, EditorToken, utcnow
from subscriptions.names import check_name

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
    name = check_name(name, what="token name", field="name")
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


# --- editor accounts (the console) -------------------------------------------------------------

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a login takes as long either way."""
    return _hasher.hash(secrets.token_hex(16))


MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True, slots=True)
class EditorInfo:
    id: int
    email: str
    name: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    disabled: bool
    session_version: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _editor_info(row: Editor) -> EditorInfo:
    return EditorInfo(
        row.id,
        row.email,
        row.name,
        row.role,
        row.created_at,
        row.last_login_at,
        row.disabled_at is not None,
        row.session_version,
    )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"the password needs at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if len(password) > 1000:
        raise InvalidInput("the password is too long", field="password")


def create_editor(
    *, session: Session, email: str, password: str, name: str = "", role: str = "editor"
) -> EditorInfo:
    """A new console account; the address is normalized, the password stored as an Argon2 hash."""
    from subscriptions.readers import normalize_email

    address = normalize_email(email)
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}", field="role")
    _check_password(password)
    if session.scalar(select(Editor.id).where(Editor.email == address)) is not None:
        raise InvalidInput(f"there is already an editor {address}", field="email")
    row = Editor(
        email=address,
        name=check_name(name, what="editor name", field="name") if name.strip() else "",
        role=role,
        password_hash=_hasher.hash(password),
    )
    session.add(row)
    session.flush()
    return _editor_info(row)


def login(*, session: Session, email: str, password: str) -> EditorInfo | None:
    """The enabled editor with this address and password, or None (same work either way)."""
    address = email.strip().lower()[:320]
    row = session.scalar(select(Editor).where(Editor.email == address))
    try:
        _hasher.verify(row.password_hash if row is not None else _dummy_hash(), password[:1000])
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    row.last_login_at = utcnow()
    session.flush()
    return _editor_info(row)


def get_editor(*, session: Session, editor_id: int) -> EditorInfo | None:
    row = session.get(Editor, editor_id)
    return _editor_info(row) if row is not None else None


def list_editors(*, session: Session) -> list[EditorInfo]:
    return [_editor_info(r) for r in session.scalars(select(Editor).order_by(Editor.email))]


def update_editor(
    *,
    session: Session,
    editor_id: int,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> EditorInfo:
    """Change an editor's role, lock or unlock the account, or set a new password.

    Locking and a new password end the editor's sessions at once.
    """
    row = session.get(Editor, editor_id)
    if row is None:
        raise NotFound(f"no editor {editor_id}")
    if role is not None:
        if role not in ROLES:
            raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}", field="role")
        if row.role == "admin" and role != "admin" and _last_admin(session, row.id):
            raise InvalidInput("the last admin cannot stop being one", field="role")
        row.role = role
    if disabled is not None:
        if disabled and row.role == "admin" and _last_admin(session, row.id):
            raise InvalidInput("the last admin cannot be locked out", field="disabled")
        if disabled and row.disabled_at is None:
            row.disabled_at = utcnow()
            row.session_version += 1
        elif not disabled:
            row.disabled_at = None
    if password is not None:
        _check_password(password)
        row.password_hash = _hasher.hash(password)
        row.session_version += 1
    session.flush()
    return _editor_info(row)


def end_sessions(*, session: Session, editor_id: int) -> None:
    """Log an editor out everywhere."""
    row = session.get(Editor, editor_id)
    if row is None:
        raise NotFound(f"no editor {editor_id}")
    row.session_version += 1
    session.flush()


def start_session(*, session: Session, editor_id: int, max_age_seconds: int) -> str:
    """A new console session of this editor: the random id its cookie carries (only its hash is
    kept). Sessions of this editor older than `max_age_seconds` are cleared on the way."""
    now = utcnow()
    session.execute(
        delete(EditorSession).where(
            EditorSession.editor_id == editor_id,
            EditorSession.created_at < now - timedelta(seconds=max_age_seconds),
        )
    )
    plain = secrets.token_urlsafe(24)
    session.add(EditorSession(id_hash=_hash(plain), editor_id=editor_id, created_at=now))
    session.flush()
    return plain


def session_alive(*, session: Session, editor_id: int, session_id: str) -> bool:
    """True while the console session `session_id` of this editor has not been ended."""
    if not session_id.isascii() or len(session_id) > 64:
        return False
    ended = session.execute(
        select(EditorSession.ended_at).where(
            EditorSession.id_hash == _hash(session_id), EditorSession.editor_id == editor_id
        )
    ).first()
    return ended is not None and ended[0] is None


def end_session(*, session: Session, session_id: str) -> None:
    """Sign one console session out, wherever its cookie was copied to."""
    row = session.get(EditorSession, _hash(session_id)) if session_id.isascii() else None
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
        session.flush()


def _last_admin(session: Session, editor_id: int) -> bool:
    others = session.scalar(
        select(func.count(Editor.id)).where(
            Editor.role == "admin", Editor.disabled_at.is_(None), Editor.id != editor_id
        )
    )
    return not others
