"""README's backup commands, run for real: back up, restore into a fresh database, upgrade, send a digest.

On PostgreSQL: `pg_dump -Fc` then `pg_restore --no-owner` into a new database. On SQLite: SQLite's online
backup (what `sqlite3 var/newsletter.db ".backup backup.db"` does). Then `newsletter db upgrade` and an
editorial digest sent by a real worker to the reader who was in the backup.
"""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from subscriptions.db import create_db_engine, session_factory, transaction
from subscriptions.models import Delivery
from tests.factories import active_reader, add_demo_topics, migrated_sessions
from tests.integration.conftest import newsletter, wait_for_files

pytestmark = pytest.mark.timeout(120)


def _backup_and_restore(source: str, tmp_path: Path) -> str:
    """Back up `source` as README says and restore it into a new, empty database; its URL."""
    url = make_url(source)
    if url.drivername.startswith("sqlite"):
        restored = tmp_path / "restored.db"
        with sqlite3.connect(str(url.database)) as src, sqlite3.connect(restored) as dst:
            src.backup(dst)
        return f"sqlite:///{restored}"
    dump = tmp_path / "newsletter.dump"
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), libpq], check=True, timeout=60)
    name = f"nl_restored_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    fresh = url.set(database=name)
    target = fresh.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", "-d", target, str(dump)],
        check=True,
        timeout=60,
    )
    return fresh.render_as_string(hide_password=False)


def test_a_restored_backup_upgrades_and_sends_a_digest(
    tmp_path: Path, service_env: dict[str, str], start: Any
) -> None:
    source = service_env["NEWSLETTER_DATABASE_URL"]
    sessions = migrated_sessions(source)
    with transaction(sessions) as session:
        add_demo_topics(session)
        active_reader(session, "kept@example.org", ["mexico"])
    newsletter(
        "posts", "add", "Before the backup", "--link", "https://example.org/p/1",
        "--topic", "mexico", env=service_env,
    )  # fmt: skip

    restored = _backup_and_restore(source, tmp_path)
    env = {**service_env, "NEWSLETTER_DATABASE_URL": restored}
    newsletter("db", "upgrade", env=env)
    created = newsletter(
        "digest", "create", "--subject", "After the restore", "--topic", "mexico",
        "--since", "2000-01-01T00:00+00:00", env=env,
    ).stdout  # fmt: skip
    digest_id = created.split("\t", 1)[0]
    newsletter("digest", "send", digest_id, "--yes", "--expect-count", "1", env=env)
    start(["worker", "--concurrency", "1"], env)
    [eml] = wait_for_files(tmp_path / "outbox", 1)
    message = eml.read_bytes()
    assert b"kept@example.org" in message and b"After the restore" in message
    assert b"Before the backup" in message
    engine = create_db_engine(restored)
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 1
    engine.dispose()
    if not restored.startswith("sqlite"):
        admin = make_url(restored).set(drivername="postgresql", database="postgres")
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{make_url(restored).database}" WITH (FORCE)')
