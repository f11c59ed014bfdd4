"""Plain factory functions shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import readers
from subscriptions.db import create_db_engine, session_factory
from subscriptions.migrate import upgrade
from subscriptions.models import Frequency, Subscription
from subscriptions.settings import Settings, load_settings
from subscriptions.topics import add_topic

SECRET = "test-secret-key-0123456789abcdef"

#: Before every simulated clock in the tests (2024): readers made "now" but meant to have been
#: subscribed all along are moved here, since new readers get new posts only.
LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)


def subscribed_since(session: Session, subscriber_id: int, when: datetime = LONG_AGO) -> None:
    """Make the reader's subscriptions begin at `when` (as if they had subscribed then)."""
    session.execute(
        update(Subscription)
        .where(Subscription.subscriber_id == subscriber_id)
        .values(created_at=when)
    )


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


def active_reader(
    session: Session,
    email: str,
    topics: list[str],
    frequency: Frequency = Frequency.DAILY,
    timezone: str = "UTC",
) -> int:
    """A reader who signed up for `topics` and confirmed, through the reader operations; their id."""
    signup = readers.subscribe(
        session=session, email=email, topics=topics, frequency=frequency, timezone=timezone
    )
    assert signup.subscriber_id is not None and signup.consent_id is not None
    readers.confirm(
        session=session,
        consent_id=signup.consent_id,
        subscriber_id=signup.subscriber_id,
        token_version=1,
    )
    return signup.subscriber_id
