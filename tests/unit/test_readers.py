"""Reader operations on a migrated SQLite store: subscribe, confirm, preferences, unsubscribe, suppress."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import readers
from subscriptions.errors import HeaderInjection, InvalidInput, NotFound, TokenUsed
from subscriptions.models import (
    Consent,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from tests.factories import add_demo_topics, migrated_sessions


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    factory = migrated_sessions(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with factory.begin() as session:
        add_demo_topics(session)
    return factory


def _subscribe(session: Session, email: str = "reader@example.org", **kw: object) -> readers.SignUp:
    args: dict[str, object] = {
        "topics": ["mexico", "migration"],
        "frequency": Frequency.DAILY,
        "timezone": "America/Mexico_City",
        "ip": "192.0.2.1",
        "source": "test",
    }
    args.update(kw)
    return readers.subscribe(session=session, email=email, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Reader@Example.ORG ", "reader@example.org"),
        ("josé@exämple.org", "josé@exämple.org"),
        ("用户@例子.广告", "用户@例子.广告"),
    ],
)
def test_normalize_accepts_internationalized_addresses(raw: str, normal: str) -> None:
    assert readers.normalize_email(raw) == normal


@pytest.mark.parametrize(
    "bad", ["", "nope", "a@b", "a@@example.org", "x" * 10_000 + "@example.org"]
)
def test_normalize_refuses_malformed(bad: str) -> None:
    with pytest.raises(InvalidInput):
        readers.normalize_email(bad)


def test_normalize_refuses_line_breaks() -> None:
    with pytest.raises(HeaderInjection):
        readers.normalize_email("a@example.org\r\nBcc: victim@example.org")


def test_subscribe_stores_pending_reader_and_consent(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        signup = _subscribe(session)
    assert signup.consent_id is not None
    with sessions() as session:
        reader = session.get(Subscriber, signup.subscriber_id)
        assert reader is not None and reader.status is SubscriberStatus.PENDING
        consent = session.get(Consent, signup.consent_id)
        assert consent is not None
        assert consent.topics == ["mexico", "migration"] and consent.ip == "192.0.2.1"
        # Nothing is subscribed before the reader confirms.
        assert session.scalar(select(func.count(Subscription.id))) == 0


def test_confirm_applies_the_sign_up_once(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        signup = _subscribe(session)
    assert signup.subscriber_id and signup.consent_id
    with sessions.begin() as session:
        result = readers.confirm(
            session=session,
            consent_id=signup.consent_id,
            subscriber_id=signup.subscriber_id,
            token_version=1,
        )
    assert result.topics == ["mexico", "migration"]
    with sessions() as session:
        reader = session.get(Subscriber, signup.subscriber_id)
        assert reader is not None
        assert reader.status is SubscriberStatus.ACTIVE
        assert reader.timezone == "America/Mexico_City"
        assert {s.frequency for s in reader.subscriptions} == {Frequency.DAILY}
    with sessions.begin() as session, pytest.raises(TokenUsed):
        readers.confirm(
            session=session,
            consent_id=signup.consent_id,
            subscriber_id=signup.subscriber_id,
            token_version=1,
        )


def test_confirm_refuses_another_readers_consent_and_old_versions(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        a = _subscribe(session, "a@example.org")
        b = _subscribe(session, "b@example.org")
    assert a.consent_id and b.subscriber_id
    with sessions.begin() as session, pytest.raises(NotFound):
        readers.confirm(
            session=session, consent_id=a.consent_id, subscriber_id=b.subscriber_id, token_version=1
        )
    with sessions.begin() as session:
        readers.revoke_links(session=session, subscriber_id=a.subscriber_id or 0)
    with sessions.begin() as session, pytest.raises(NotFound):
        readers.confirm(
            session=session,
            consent_id=a.consent_id,
            subscriber_id=a.subscriber_id or 0,
            token_version=1,
        )


def test_unknown_or_missing_topic_changes_nothing(sessions: sessionmaker[Session]) -> None:
    for topics in ([], ["mexico", "atlantis"]):
        with sessions.begin() as session, pytest.raises(InvalidInput):
            _subscribe(session, topics=topics)
    with sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0


def test_suppressed_address_gets_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        assert readers.suppress(session=session, email="gone@example.org", reason="hard_bounce")
        assert not readers.suppress(session=session, email="gone@example.org", reason="complaint")
        signup = _subscribe(session, "gone@example.org")
    assert signup == readers.SignUp(None, None)
    with sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0


def test_suppress_marks_a_known_reader(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        signup = _subscribe(session)
        readers.suppress(session=session, email="reader@example.org", reason="complaint")
    with sessions() as session:
        reader = session.get(Subscriber, signup.subscriber_id)
        assert reader is not None and reader.status is SubscriberStatus.SUPPRESSED
        assert readers.is_suppressed(session=session, email="reader@example.org")


def test_confirmation_emails_are_capped_per_day(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        results = [_subscribe(session) for _ in range(readers.CONFIRMATIONS_PER_DAY + 2)]
    assert [r.consent_id is not None for r in results] == [True] * readers.CONFIRMATIONS_PER_DAY + [
        False
    ] * 2
    with sessions.begin() as session:
        later = _subscribe(session, now=utcnow() + timedelta(days=1, minutes=1))
    assert later.consent_id is not None


def test_preferences_and_unsubscribe(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        signup = _subscribe(session)
    sid, cid = signup.subscriber_id or 0, signup.consent_id or 0
    with sessions.begin() as session:
        readers.confirm(session=session, consent_id=cid, subscriber_id=sid, token_version=1)
        readers.update_preferences(
            session=session,
            subscriber_id=sid,
            frequencies={
                "mexico": Frequency.WEEKLY,
                "migration": None,
                "border-security": Frequency.IMMEDIATE,
            },
            timezone="Europe/Paris",
        )
    with sessions() as session:
        reader = session.get(Subscriber, sid)
        assert reader is not None and reader.timezone == "Europe/Paris"
        rows = session.execute(
            select(Subscription.topic_id, Subscription.frequency).where(
                Subscription.subscriber_id == sid
            )
        ).all()
        assert sorted(f.value for _, f in rows) == ["immediate", "weekly"]
    with sessions.begin() as session:
        readers.unsubscribe(session=session, subscriber_id=sid)
    with sessions() as session:
        reader = session.get(Subscriber, sid)
        assert reader is not None and reader.status is SubscriberStatus.UNSUBSCRIBED
        assert session.scalar(select(func.count(Subscription.id))) == 0
    # Coming back means confirming again.
    with sessions.begin() as session:
        again = _subscribe(session)
    with sessions() as session:
        reader = session.get(Subscriber, sid)
        assert (
            again.consent_id
            and reader is not None
            and reader.status is SubscriberStatus.UNSUBSCRIBED
        )
