"""Plain factory functions shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from subscriptions.db import create_db_engine, session_factory
from subscriptions.migrate import upgrade
from subscriptions.settings import Settings, load_settings
from subscriptions.topics import add_topic

SECRET = "test-secret-key-0123456789abcdef"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: a database and outbox in tmp_path, a fixed secret."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'newsletter.db'}",
        "email_url": f"outbox://{tmp_path / 'outbox'}",
        "secret_key": SECRET,
        "environment": "test",
        "broker_url": None,
        "from_address": "Institute Updates <news@example.org>",
        "site_name": "Institute Updates",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


def migrated_sessions(database_url: str) -> sessionmaker[Session]:
    """Sessions on a database brought to the latest migration."""
    upgrade(database_url)
    return session_factory(create_db_engine(database_url))


def add_demo_topics(session: Session) -> None:
    """Border Security, Mexico, Migration and Refugees."""
    add_topic(
        session=session, slug="border-security", name="Border Security", description="Borders."
    )
    add_topic(session=session, slug="mexico", name="Mexico", description="U.S.-Mexico relations.")
    add_topic(session=session, slug="migration", name="Migration")
    add_topic(session=session, slug="refugees", name="Refugees", description="Resettlement.")
