"""The sending pipeline against local stand-ins for Postmark and Resend, with their failures injected.

Each test plans a real digest in the real database, sends it with the real Sender through a real HTTP
provider module, and checks both sides: what the stand-in accepted, and what the ledger says.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import DigestRenderer
from mail.providers import PostmarkProvider, Provider, ResendProvider
from subscriptions import posts
from subscriptions.models import (
    Delivery,
    DeliveryStatus,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from subscriptions.notices import SENDING_PAUSED, open_notices, resolve
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from tests.factories import SECRET, add_demo_topics, make_settings, migrated_sessions
from tests.providerserver import Fault, ProviderServer
from worker.digests import planner
from worker.digests.sender import Sender, claim, hand_over, reap


def add_readers(
    session: Session, count: int, *, frequency: Frequency = Frequency.IMMEDIATE
) -> list[str]:
    """`count` active readers of Mexico, inserted in bulk; returns their addresses."""
    topic_id = session.scalar(select(Topic.id).where(Topic.slug == "mexico"))
    emails = [f"reader{n}@example.org" for n in range(count)]
    now = utcnow()
    session.execute(
        insert(Subscriber),
        [
            {
                "email": e,
                "status": SubscriberStatus.ACTIVE,
                "timezone": "UTC",
                "token_version": 1,
                "created_at": now,
                "confirmed_at": now,
            }
            for e in emails
        ],
    )
    ids = session.scalars(select(Subscriber.id).where(Subscriber.email.in_(emails))).all()
    session.execute(
        insert(Subscription),
        [
            {
                "subscriber_id": i,
                "topic_id": topic_id,
                "frequency": frequency,
                "created_at": now,
                "updated_at": now,
            }
            for i in ids
        ],
    )
    return emails


def plan_alert(sessions: sessionmaker[Session]) -> int:
    """A new Mexico post and its immediate alerts; returns the digest id."""
    with sessions.begin() as session:
        post = posts.add_post(
            session=session,
            title="Mexico & the border",
            link="https://example.org/p/1",
            topics=["mexico"],
        )
        result = planner.plan_post_alerts(session, post.id)
    assert result is not None
    return result.digest_id


class Rig:
    """A database with readers, a planned alert, and a sender wired to a stand-in provider."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        server: ProviderServer,
        provider: Provider,
        readers: int,
    ) -> None:
        self.sessions = migrated_sessions(database_url)
        with self.sessions.begin() as session:
            add_demo_topics(session)
            self.emails = add_readers(session, readers)
        self.settings = make_settings(
            tmp_path,
            database_url=database_url,
            base_url="https://news.example.org",
            max_delivery_attempts=3,
        )
        self.provider = provider
        self.server = server
        self.sender = Sender(
            self.sessions,
            provider,
            DigestRenderer(template_environment(self.settings, "email")),
            self.settings,
            TokenSigner(SECRET),
        )
        self.digest_id = plan_alert(self.sessions)

    def statuses(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.digest_id == self.digest_id)
                .group_by(Delivery.status)
            ).all()
        return {status.value: n for status, n in rows}

    def send_all(self, *, rounds: int = 20, later: timedelta = timedelta(0)) -> None:
        """Send until nothing is due, `later` after now (to pass retry back-offs)."""
        for _ in range(rounds):
            if self.sender.send_batch(self.digest_id, now=utcnow() + later).claimed == 0:
                return


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer(token="test-token") as s:
        yield s


def postmark(server: ProviderServer, *, timeout: float = 5.0) -> PostmarkProvider:
    provider = PostmarkProvider("test-token", base_url=f"http://127.0.0.1:{server.port}")
    provider.client.timeout = httpx.Timeout(timeout)
    return provider


def resend(server: ProviderServer) -> ResendProvider:
    provider = ResendProvider("test-token", base_url=f"http://127.0.0.1:{server.port}")
    provider.client.timeout = httpx.Timeout(5.0)
    return provider


def test_every_reader_gets_one_email_with_their_own_headers(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=1200)
    rig.send_all()
    assert rig.statuses() == {"sent": 1200}
    assert len(server.accepted) == 1200 and len({a.to for a in server.accepted}) == 1200
    assert [n for _, _, n in server.requests] == [500, 500, 200]  # Postmark's batch limit
    sample = server.accepted[0]
    assert sample.subject == "Mexico: Mexico & the border"
    assert sample.headers["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
    assert sample.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sample.metadata["delivery_id"].isdigit()
    assert len({a.headers["List-Unsubscribe"] for a in server.accepted}) == 1200


@pytest.mark.parametrize(
    "fault",
    [
        Fault(
            status=429,
            headers={"Retry-After": "30"},
            body={"ErrorCode": 429, "Message": "Rate limit exceeded"},
        ),
        Fault(status=500, body={"ErrorCode": 0, "Message": "Internal Server Error"}),
        Fault(status=503, body={"ErrorCode": 100, "Message": "Maintenance"}),
    ],
    ids=["429", "500", "503"],
)
def test_temporary_failures_are_retried_later_and_sent_once(
    tmp_path: Path, database_url: str, server: ProviderServer, fault: Fault
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=20)
    server.faults.append(fault)
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"pending": 20} and server.accepted == []
    with rig.sessions() as session:
        waits = session.scalars(
            select(Delivery.next_attempt_at).where(Delivery.digest_id == rig.digest_id)
        ).all()
    assert all(w is not None and w > utcnow() + timedelta(seconds=20) for w in waits)
    if fault.status == 429:  # Retry-After is honoured
        assert all(w is not None and w >= utcnow() + timedelta(seconds=29) for w in waits)
    rig.send_all()  # not due yet: nothing happens
    assert server.accepted == []
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"sent": 20}
    assert all(server.delivered_to(e) == 1 for e in rig.emails)


def test_a_timeout_after_sending_is_unknown_and_never_resent_without_idempotency(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=10)
    server.faults.append(Fault(drop_after_accepting=True))
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"unknown": 10}
    rig.send_all(later=timedelta(hours=2))
    assert len(server.accepted) == 10  # accepted once; the unknown outcome was not resent


@pytest.mark.parametrize("fault", [Fault(delay=1.5), Fault(reset=True)], ids=["timeout", "reset"])
def test_a_timeout_or_a_reset_connection_is_unknown(
    tmp_path: Path, database_url: str, server: ProviderServer, fault: Fault
) -> None:
    """The request was written; whether Postmark acted on it cannot be known, so it is not resent."""
    rig = Rig(tmp_path, database_url, server, postmark(server, timeout=0.5), readers=3)
    server.faults.append(fault)
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"unknown": 3}
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"unknown": 3}


def test_an_unknown_outcome_is_resent_under_the_same_key_with_idempotency(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, resend(server), readers=250)
    server.faults.append(Fault(drop_after_accepting=True))
    rig.sender.send_batch(rig.digest_id)  # the first 100 were accepted, but the answer was lost
    assert rig.statuses() == {"pending": 250}
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"sent": 250}
    assert all(server.delivered_to(e) == 1 for e in rig.emails), "an email went twice"
    assert len(server.requests) == 3  # the retried batch was answered from the idempotency cache


def test_per_message_errors_inside_a_batch(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=5)
    server.faults.append(
        Fault(
            message_errors={
                1: (406, "You tried to send to a recipient that has been marked as inactive.")
            }
        )
    )
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"sent": 4, "failed": 1}
    with rig.sessions() as session:
        failed = session.scalar(
            select(Subscriber.email)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.status == DeliveryStatus.FAILED)
        )
        status = session.scalar(select(Subscriber.status).where(Subscriber.email == failed))
        assert session.scalar(select(func.count(Suppression.id))) == 1
    assert status is SubscriberStatus.SUPPRESSED


def test_account_blocked_pauses_all_sending_and_tells_editors(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=30)
    server.faults.append(
        Fault(
            status=422, body={"ErrorCode": 405, "Message": "Your account is not allowed to send."}
        )
    )
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"pending": 30}
    with rig.sessions() as session:
        [notice] = open_notices(session=session)
    assert notice.kind == SENDING_PAUSED and "postmark" in notice.message
    assert rig.sender.send_batch(rig.digest_id).paused  # nothing goes while paused
    assert server.accepted == []
    with rig.sessions.begin() as session:
        resolve(session=session, kind=SENDING_PAUSED)
    rig.send_all()
    assert rig.statuses() == {"sent": 30}


def test_a_request_the_provider_calls_malformed_fails_loudly(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=4)
    server.faults.append(
        Fault(status=422, body={"ErrorCode": 402, "Message": "Received invalid JSON input."})
    )
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"failed": 4}
    with rig.sessions() as session:
        assert [n.kind for n in open_notices(session=session)] == ["request_wrong"]


def test_retries_are_bounded(tmp_path: Path, database_url: str, server: ProviderServer) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=2)
    for _ in range(3):
        server.faults.append(Fault(status=503, body={"ErrorCode": 100, "Message": "Maintenance"}))
    for hours in (0, 3, 6):
        rig.sender.send_batch(rig.digest_id, now=utcnow() + timedelta(hours=hours))
    assert rig.statuses() == {"failed": 2}
    with rig.sessions() as session:
        errors = session.scalars(select(Delivery.last_error)).all()
    assert all(e.startswith("gave up after 3 tries") for e in errors)


def test_the_reaper_takes_back_abandoned_claims(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=6)
    with rig.sessions.begin() as session:
        # A worker died after claiming three (never handed over) and after handing over three.
        an_hour_ago = utcnow() - timedelta(hours=1)
        kept = claim(session, rig.digest_id, 3, now=an_hour_ago)
        handed = claim(session, rig.digest_id, 3, now=an_hour_ago)
        assert kept is not None and handed is not None
        assert hand_over(session, handed, now=an_hour_ago)
    with rig.sessions.begin() as session:
        assert reap(session, supports_idempotency=False) == 3
    rig.send_all()
    assert rig.statuses() == {"sent": 3, "unknown": 3}
    assert len(server.accepted) == 3


def test_a_sender_signature_error_pauses_touches_no_reader_and_resume_sends_what_waited(
    tmp_path: Path, database_url: str, server: ProviderServer
) -> None:
    """Postmark ErrorCode 400 (the From is not a sender signature): the operator's mistake. Sending
    pauses with a notice naming the fix; no delivery fails, no reader is suppressed, no try is
    counted; after `sending resume` every reader gets one email."""
    rig = Rig(tmp_path, database_url, server, postmark(server), readers=5)
    server.faults.append(
        Fault(status=422, body={"ErrorCode": 400, "Message": "Sender signature not found."})
    )
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"pending": 5}
    with rig.sessions() as session:
        [notice] = open_notices(session=session)
        attempts = set(session.scalars(select(Delivery.attempts)))
        suppressed = session.scalar(
            select(func.count()).where(Subscriber.status == SubscriberStatus.SUPPRESSED)
        )
    assert notice.kind == SENDING_PAUSED
    assert "Sender Signature" in notice.message and "newsletter sending resume" in notice.message
    assert attempts == {0} and suppressed == 0
    assert rig.sender.send_batch(rig.digest_id).paused
    with rig.sessions.begin() as session:
        resolve(session=session, kind=SENDING_PAUSED)
    rig.send_all()
    assert rig.statuses() == {"sent": 5}
    assert sorted(a.to for a in server.accepted) == sorted(rig.emails)
