"""A per-process copy of the suppression list's keys, so that a sign-up need not ask the database.

`POST /subscribe` tells an address suppressed by a complaint, a bounce or an editor that it cannot sign
up, but its answer otherwise never waits for the database (`subscriptions.intake`). So each web process
keeps the SHA-256 keys of the blocking suppressions (not the `erased` ones) in a set: new entries are read
every REFRESH_SECONDS (by id), the whole list again every RELOAD_SECONDS (to forget removed entries). A
key found in the set is confirmed with the database before the reader is told, so a stale entry never
refuses anyone. An entry missed for a moment (committed out of id order, or in the last second) only
means the old behaviour for that sign-up: it is stored as usual and nothing is sent to the address.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.models import Suppression
from subscriptions.readers import ERASED, email_hash

log = logging.getLogger(__name__)


class SuppressedAddresses:
    """The keys of blocking suppressions, refreshed from the database now and then."""

    REFRESH_SECONDS = 1.0
    RELOAD_SECONDS = 600.0

    def __init__(self) -> None:
        self._keys: frozenset[str] = frozenset()
        self._last_id = 0
        self._read_at = float("-inf")
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def stale(self) -> bool:
        """Whether `refresh` is due (then call it off the event loop)."""
        return time.monotonic() - self._read_at > self.REFRESH_SECONDS

    def refresh(self, sessions: sessionmaker[Session]) -> None:
        """Read the entries added since the last read, or all of them when a reload is due."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at <= self.REFRESH_SECONDS:
                return  # another thread just did it
            full = now - self._loaded_at > self.RELOAD_SECONDS
            query = select(Suppression.id, Suppression.email_hash).where(
                Suppression.reason != ERASED
            )
            if not full:
                query = query.where(Suppression.id > self._last_id)
            try:
                with sessions() as session:
                    rows = session.execute(query).all()
            except SQLAlchemyError as exc:
                # Sign-ups go on without the database (the worker applies them later, and skips
                # suppressed addresses): keep what we have and try again after the interval.
                log.warning("suppression list unavailable: %s", type(exc).__name__)
                self._read_at = now
                return
            keys = set() if full else set(self._keys)
            keys.update(key for _, key in rows)
            self._keys = frozenset(keys)
            self._last_id = max([self._last_id if not full else 0, *(i for i, _ in rows)])
            self._read_at = now
            if full:
                self._loaded_at = now

    def may_be_blocked(self, email: str) -> bool:
        """False when the normalized address is surely not on the list (as of the last read)."""
        return bool(self._keys) and email_hash(email) in self._keys
