"""Operations on the team: editor accounts (add, role, lock, password, sign out everywhere) and
API tokens (create, revoke). The console, the API and the CLI call these (see
`subscriptions.operations`)."""

from __future__ import annotations

from subscriptions import editors as store
from subscriptions.editors import EditorInfo, TokenInfo
from subscriptions.errors import InvalidInput
from subscriptions.operations import UnitOfWork

#: What `change_editor` can do to an account.
ACTIONS = ("role", "lock", "unlock", "password", "sign-out")


def add_editor(
    uow: UnitOfWork, *, email: str, password: str, name: str = "", role: str = "editor"
) -> EditorInfo:
    """A new console account (address normalized, password stored as an Argon2 hash)."""
    return store.create_editor(
        session=uow.session, email=email, password=password, name=name, role=role
    )


def change_editor(
    uow: UnitOfWork,
    editor_id: int,
    *,
    action: str,
    role: str | None = None,
    password: str | None = None,
) -> str:
    """Change an editor: a new `role`, `lock` or `unlock`, a new `password`, or `sign-out` (end
    every session). Locking and a new password end the sessions too; the last admin stays one
    and stays unlocked. What was done, in a sentence."""
    session = uow.session
    if action == "role":
        done = store.update_editor(session=session, editor_id=editor_id, role=role or "")
        return f"{done.email} is now {done.role}."
    if action in ("lock", "unlock"):
        done = store.update_editor(session=session, editor_id=editor_id, disabled=action == "lock")
        return f"{done.email} is {'locked out' if done.disabled else 'unlocked'}."
    if action == "password":
        done = store.update_editor(session=session, editor_id=editor_id, password=password or "")
        return f"New password set for {done.email}; their sessions ended."
    if action == "sign-out":
        store.end_sessions(session=session, editor_id=editor_id)
        return "Every session of that editor has ended."
    raise InvalidInput(f"unknown action: use one of {', '.join(ACTIONS)}", field="action")


def create_token(uow: UnitOfWork, *, name: str, role: str = "editor") -> tuple[TokenInfo, str]:
    """A new API bearer token: its record, and its value (shown once, stored only as a hash)."""
    return store.create_token(session=uow.session, name=name, role=role)


def revoke_token(uow: UnitOfWork, token_id: int) -> TokenInfo:
    """Revoke a token at once; it stays listed as revoked (NotFound for an unknown one)."""
    return store.revoke_token(session=uow.session, token_id=token_id)


def sign_in(
    uow: UnitOfWork, *, email: str, password: str, max_age_seconds: int
) -> tuple[EditorInfo, str] | None:
    """A console session for the editor with this address and password: (the editor, the new
    session's id), or None when they do not match (the same None for an unknown address)."""
    editor = store.login(session=uow.session, email=email, password=password)
    if editor is None:
        return None
    session_id = store.start_session(
        session=uow.session, editor_id=editor.id, max_age_seconds=max_age_seconds
    )
    return editor, session_id


def sign_out(uow: UnitOfWork, *, editor_id: int, session_id: str, everywhere: bool) -> None:
    """End this console session (stored server-side, so every copy of its cookie stops working);
    with `everywhere`, every session of this editor."""
    store.end_session(session=uow.session, session_id=session_id)
    if everywhere:
        store.end_sessions(session=uow.session, editor_id=editor_id)


def authenticate(uow: UnitOfWork, token: str) -> TokenInfo | None:
    """The API token's editor role and name (its last use is recorded), or None."""
    return store.authenticate(session=uow.session, token=token)


def signed_in(
    uow: UnitOfWork, *, editor_id: int, version: int, session_id: str
) -> EditorInfo | None:
    """The editor a console cookie names, while that session is alive, the account unlocked and
    its session version current; else None."""
    found = store.get_editor(session=uow.session, editor_id=editor_id)
    if (
        found is not None
        and not found.disabled
        and found.session_version == version
        and store.session_alive(session=uow.session, editor_id=editor_id, session_id=session_id)
    ):
        return found
    return None
