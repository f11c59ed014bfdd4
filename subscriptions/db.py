"""Engines and sessions: SQLite in WAL mode with a busy timeout and foreign keys, PostgreSQL via psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 5000


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`, with the SQLite pragmas this project relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so that
        # writers take the lock at BEGIN IMMEDIATE and never fail half-way on upgrade.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", ""):
            raise ConfigurationError(
                "NEWSLETTER_DATABASE_URL: use the psycopg 3 driver (postgresql+psycopg://...)"
            )
        # Keep the URL object: str() of a URL masks its password as "***".
        return create_engine(
            parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True, **kwargs
        )
    raise ConfigurationError(f"NEWSLETTER_DATABASE_URL: unsupported database {url!r}")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, since results leave as plain data."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session


#: Taken by every digest planner and by every transaction that releases posts, on PostgreSQL
#: (SQLite serializes writers anyway): a planner then sees every post released before it started,
#: and a post released after it has a release time after everything that planner covered.
PLANNING_LOCK = 7_260_001


def lock_planning(session: Session) -> None:
    """Take the planning lock until the end of this transaction (PostgreSQL; a no-op on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLANNING_LOCK})
