"""POST /webhooks/{provider} over HTTP, through the real app and a real database, for every provider.

Each provider's calls are signed here the provider's way (tests/webhooksigning.py): Postmark Basic
credentials, SendGrid ECDSA, Mailgun HMAC, Resend's Svix HMAC, and SES through SNS with an RSA key
whose self-signed certificate the route fetches from an httpx.MockTransport standing in for AWS.
A reader, a digest and a delivery are stored first, so every test can check the whole effect: the
Event row with its normalized type and its delivery, the reader's status, the Suppression row by
the address's hash; and that a forged, stale, malformed or unconfigured call changes nothing.
The database (SQLite, or PostgreSQL when NEWSLETTER_TEST_DATABASE_URL is set) is migrated once
per module and emptied before each test.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, Table, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.db import create_db_engine, session_factory
from subscriptions.events import SOFT_BOUNCE_THRESHOLD
from subscriptions.migrate import upgrade
from subscriptions.models import (
    Base,
    Delivery,
    DeliveryStatus,
    Digest,
    DigestKind,
    DigestStatus,
    Event,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from subscriptions.readers import email_hash
from subscriptions.web.app import create_app
from tests import webhooksigning as signing
from tests.factories import add_demo_topics, make_settings

pytestmark = pytest.mark.integration

PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend", "ses")
#: Providers whose calls carry a signed time, and what each answers when it is out of tolerance.
STALE_STATUS = {"sendgrid": 403, "mailgun": 403, "resend": 401, "ses": 401}
#: Providers with an unsubscribe event of their own (Resend and SES have none).
UNSUBSCRIBING = ("postmark", "sendgrid", "mailgun")

POSTMARK_CREDENTIALS = "hooks:s3cret pass"
MAILGUN_KEY = "mailgun-signing-key-0123456789abcdef"
TOPIC = "arn:aws:sns:us-east-1:123456789012:newsletter-ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
UNSUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"
    f"&SubscriptionArn={TOPIC}:7c2b3f44-0000-4000-8000-000000000001"
)
READER = "reader@example.org"
OTHER = "other.reader@example.org"


# --- keys and calls --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The configured secrets of every provider, and a forger's keys that look just as good."""

    sendgrid: ec.EllipticCurvePrivateKey
    sendgrid_public: str
    resend: str
    sns: rsa.RSAPrivateKey
    certificate: bytes
    forger_sendgrid: ec.EllipticCurvePrivateKey
    forger_resend: str
    forger_sns: rsa.RSAPrivateKey


@pytest.fixture(autouse=True)
def trusted_sns_test_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """SNS verification (in this process: the app runs in a TestClient) trusts the test PKI's root."""
    signing.trust_sns_test_root(monkeypatch)


@pytest.fixture(scope="module")
def keys() -> Keys:
    """Generated once per module: the RSA keys are the slow part."""
    sendgrid, sendgrid_public = signing.sendgrid_key()
    forger_sendgrid, _ = signing.sendgrid_key()
    sns, certificate = signing.sns_key()
    forger_sns, _ = signing.sns_key()
    return Keys(
        sendgrid=sendgrid,
        sendgrid_public=sendgrid_public,
        resend=signing.svix_secret(),
        sns=sns,
        certificate=certificate,
        forger_sendgrid=forger_sendgrid,
        forger_resend=signing.svix_secret(),
        forger_sns=forger_sns,
    )


@dataclass(frozen=True)
class Mail:
    """What an event is about: an address, the provider's message id, our delivery id."""

    email: str
    message_id: str | None = None
    delivery_id: int | None = None


@dataclass(frozen=True)
class Prepared:
    """One provider event before signing. `payload` is what the provider puts in its body (for
    Mailgun the `event-data`, for SES the SES event that SNS carries as its `Message`)."""

    provider: str
    number: int
    payload: Any


@dataclass(frozen=True)
class Call:
    """One HTTP call as the provider would make it."""

    headers: dict[str, str]
    body: bytes


_numbers = itertools.count(1)


def iso(at: float) -> str:
    """An ISO 8601 UTC time with milliseconds and a Z, as most providers write it."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def message_id(provider: str) -> str:
    """A message id shaped like the one the provider answers a send with."""
    if provider == "sendgrid":  # X-Message-Id: no dots (events append ".filter…")
        return secrets.token_urlsafe(16).replace(".", "x")[:22]
    if provider == "mailgun":
        return f"20240102030405.{secrets.token_hex(8)}@mg.example.org"
    if provider == "ses":
        return f"0100018c{secrets.token_hex(8)}-{uuid.uuid4()}-000000"
    return str(uuid.uuid4())


def prepare(provider: str, kind: str, mail: Mail, *, at: float | None = None) -> Prepared:
    """An event of `kind` (bounce, soft_bounce, complaint, unsubscribe, delivered, temporary)."""
    at = time.time() if at is None else at
    number = next(_numbers)
    builders: dict[str, Callable[[str, Mail, int, float], Any]] = {
        "postmark": _postmark,
        "sendgrid": _sendgrid,
        "mailgun": _mailgun,
        "resend": _resend,
        "ses": _ses,
    }
    return Prepared(provider, number, builders[provider](kind, mail, number, at))


def _postmark(kind: str, mail: Mail, number: int, at: float) -> dict[str, Any]:
    record: dict[str, Any] = {"MessageStream": "broadcast", "ServerID": 23, "Tag": "daily"}
    if mail.message_id:
        record["MessageID"] = mail.message_id
    if mail.delivery_id is not None:
        record["Metadata"] = {"delivery_id": str(mail.delivery_id), "kind": "daily"}
    if kind in ("bounce", "soft_bounce", "complaint"):
        record.update(
            RecordType="SpamComplaint" if kind == "complaint" else "Bounce",
            ID=number,
            Type={"bounce": "HardBounce", "soft_bounce": "SoftBounce"}.get(kind, "SpamComplaint"),
            Email=mail.email,
            BouncedAt=iso(at),
            Description="The server was unable to deliver your message.",
            Details="smtp;550 5.1.1 unknown user",
            Content="<Full dump of bounce>",
        )
    elif kind == "unsubscribe":
        record.update(
            RecordType="SubscriptionChange",
            ChangedAt=iso(at),
            Recipient=mail.email,
            Origin="Recipient",
            SuppressSending=True,
            SuppressionReason="ManualSuppression",
        )
    elif kind == "delivered":
        record.update(
            RecordType="Delivery", Recipient=mail.email, DeliveredAt=iso(at), Details="250 OK"
        )
    else:
        raise ValueError(f"postmark has no {kind} event here")
    return record


def _sendgrid(kind: str, mail: Mail, number: int, at: float) -> list[dict[str, Any]]:
    names = {
        "bounce": "bounce",
        "soft_bounce": "bounce",
        "complaint": "spamreport",
        "unsubscribe": "unsubscribe",
        "delivered": "delivered",
    }
    event: dict[str, Any] = {
        "email": mail.email,
        "event": names[kind],
        "timestamp": int(at),
        "sg_event_id": f"sg-event-{number}",
        "category": ["daily"],
    }
    if mail.message_id:
        event["sg_message_id"] = f"{mail.message_id}.filter0001.16648.5515E0B88.0"
    if mail.delivery_id is not None:
        event["delivery_id"] = str(mail.delivery_id)  # custom_args come back top-level
    if kind == "bounce":
        event.update(type="bounce", reason="550 5.1.1 unknown recipient", status="5.1.1")
    elif kind == "soft_bounce":
        event.update(type="blocked", reason="421 try again later", status="4.0.0")
    elif kind == "delivered":
        event["response"] = "250 OK"
    return [event]


def _mailgun(kind: str, mail: Mail, number: int, at: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"mgEvent{number:08d}",
        "timestamp": round(at, 6),
        "recipient": mail.email,
        "recipient-domain": mail.email.rpartition("@")[2],
        "tags": ["daily"],
        "message": {"headers": {"to": mail.email, "subject": "Daily digest"}},
    }
    if mail.message_id:
        data["message"]["headers"]["message-id"] = mail.message_id
    if mail.delivery_id is not None:
        data["user-variables"] = {"delivery_id": str(mail.delivery_id)}
    failures = {
        "bounce": ("permanent", "bounce", 550, "No Such User Here"),
        # Mailgun gave up after retrying temporary failures for hours: a soft bounce.
        "soft_bounce": ("permanent", "old", 452, "Mailbox full"),
        "temporary": ("temporary", "generic", 452, "Mailbox full, try later"),
    }
    if kind in failures:
        severity, reason, code, said = failures[kind]
        data.update(
            event="failed",
            severity=severity,
            reason=reason,
            **{"log-level": "error", "delivery-status": {"code": code, "message": said}},
        )
    else:
        data["event"] = {
            "complaint": "complained",
            "unsubscribe": "unsubscribed",
            "delivered": "delivered",
        }[kind]
    return data


def _resend(kind: str, mail: Mail, number: int, at: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "created_at": iso(at),
        "from": "Institute Updates <news@example.org>",
        "to": [mail.email],
        "subject": "Daily digest",
    }
    if mail.message_id:
        data["email_id"] = mail.message_id
    if mail.delivery_id is not None:
        data["tags"] = {"delivery_id": str(mail.delivery_id)}
    if kind in ("bounce", "soft_bounce"):
        permanent = kind == "bounce"
        data["bounce"] = {
            "type": "Permanent" if permanent else "Transient",
            "subType": "General" if permanent else "MailboxFull",
            "message": "The recipient's mailbox does not exist.",
        }
    types = {
        "bounce": "email.bounced",
        "soft_bounce": "email.bounced",
        "complaint": "email.complained",
        "delivered": "email.delivered",
    }
    return {"type": types[kind], "created_at": iso(at), "data": data}


def _ses(kind: str, mail: Mail, number: int, at: float) -> dict[str, Any]:
    sent: dict[str, Any] = {
        "timestamp": iso(at - 60),
        "source": "Institute Updates <news@example.org>",
        "sendingAccountId": "123456789012",
        "destination": [mail.email],
        "tags": {"ses:configuration-set": ["newsletter"]},
    }
    if mail.message_id:
        sent["messageId"] = mail.message_id
    if mail.delivery_id is not None:
        sent["tags"] = {**sent["tags"], "delivery_id": [str(mail.delivery_id)]}
    event: dict[str, Any] = {"mail": sent}
    if kind in ("bounce", "soft_bounce"):
        permanent = kind == "bounce"
        event["eventType"] = "Bounce"
        event["bounce"] = {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {"emailAddress": mail.email, "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
            ],
            "timestamp": iso(at),
            "feedbackId": f"feedback-{number}",
        }
    elif kind == "complaint":
        event["eventType"] = "Complaint"
        event["complaint"] = {
            "complainedRecipients": [{"emailAddress": mail.email}],
            "complaintFeedbackType": "abuse",
            "timestamp": iso(at),
            "feedbackId": f"feedback-{number}",
        }
    elif kind == "delivered":
        event["eventType"] = "Delivery"
        event["delivery"] = {
            "timestamp": iso(at),
            "recipients": [mail.email],
            "smtpResponse": "250 2.6.0 Message received",
        }
    else:
        raise ValueError(f"ses has no {kind} event here")
    return event


def sns_envelope(
    message: str, number: int, at: float, *, topic: str = TOPIC, cert_url: str = CERT_URL
) -> dict[str, Any]:
    """An unsigned SNS Notification carrying `message`."""
    return {
        "Type": "Notification",
        "MessageId": f"5f1b0a5e-0000-4000-8000-{number:012d}",
        "TopicArn": topic,
        "Message": message,
        "Timestamp": signing.sns_timestamp(at),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": UNSUBSCRIBE_URL,
    }


def sign(
    keys: Keys,
    prepared: Prepared,
    *,
    sent_at: float | None = None,
    forged: bool = False,
    **sns: str,
) -> Call:
    """The call the provider makes for `prepared`, signed at `sent_at` (now) with the configured
    secret, or with a forger's that looks just as good."""
    at = int(time.time() if sent_at is None else sent_at)
    json_headers = {"Content-Type": "application/json"}
    provider, payload = prepared.provider, prepared.payload
    if provider == "postmark":
        body = json.dumps(payload).encode()
        auth = "hooks:guessed" if forged else POSTMARK_CREDENTIALS
        return Call({**json_headers, **signing.basic_auth(auth)}, body)
    if provider == "sendgrid":
        body = json.dumps(payload).encode()
        key = keys.forger_sendgrid if forged else keys.sendgrid
        return Call({**json_headers, **signing.sendgrid_headers(key, body, at)}, body)
    if provider == "mailgun":
        signing_key = "a-forgers-guess-at-the-key" if forged else MAILGUN_KEY
        signature = signing.mailgun_signature(signing_key, at)
        body = json.dumps({"signature": signature, "event-data": payload}).encode()
        return Call(json_headers, body)
    if provider == "resend":
        body = json.dumps(payload).encode()
        secret = keys.forger_resend if forged else keys.resend
        svix_id = f"msg_{prepared.number:08d}"
        return Call({**json_headers, **signing.svix_headers(secret, svix_id, at, body)}, body)
    envelope = sns_envelope(json.dumps(payload), prepared.number, at, **sns)
    body = signing.sns_body(keys.forger_sns if forged else keys.sns, envelope)
    return Call({"Content-Type": "text/plain; charset=UTF-8", **sns_headers(envelope)}, body)


def sns_headers(envelope: dict[str, Any]) -> dict[str, str]:
    """The x-amz-sns-* headers SNS adds (the route does not need them; SNS sends them)."""
    return {
        "x-amz-sns-message-type": envelope["Type"],
        "x-amz-sns-message-id": envelope["MessageId"],
        "x-amz-sns-topic-arn": envelope["TopicArn"],
    }


def sign_body(keys: Keys, provider: str, body: bytes, *, number: int = 0) -> Call:
    """Arbitrary bytes with valid credentials where the provider's scheme allows it (Mailgun and
    SES sign inside the body, so their bytes go as they are)."""
    at = int(time.time())
    if provider == "postmark":
        return Call(signing.basic_auth(POSTMARK_CREDENTIALS), body)
    if provider == "sendgrid":
        return Call(signing.sendgrid_headers(keys.sendgrid, body, at), body)
    if provider == "resend":
        return Call(signing.svix_headers(keys.resend, f"msg_raw_{number}", at, body), body)
    return Call({}, body)


# --- the site --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A reader stored as active, with one delivery the provider knows by `message_id`."""

    email: str
    subscriber_id: int
    delivery_id: int
    message_id: str | None

    def mail(self, *, message_id: bool = True, delivery_id: bool = True) -> Mail:
        """The event's view of this reader's message, with either link left out on request."""
        return Mail(
            self.email,
            self.message_id if message_id else None,
            self.delivery_id if delivery_id else None,
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything a webhook call may change: events, suppressions, readers' statuses."""

    events: tuple[tuple[str, str, str, int | None], ...]
    suppressions: tuple[tuple[str, str], ...]
    statuses: tuple[tuple[str, SubscriberStatus], ...]


class AwsStandIn:
    """The httpx.MockTransport handler standing in for SNS: serves the signing certificate and
    answers ConfirmSubscription, logging every request; `fail` makes the certificate unreachable."""

    def __init__(self, certificate: bytes) -> None:
        self.certificate = certificate
        self.requests: list[httpx.Request] = []
        self.fail = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail:
            raise httpx.ConnectError("network is unreachable", request=request)
        if request.url.path.endswith(".pem"):
            return httpx.Response(200, content=self.certificate)
        if request.url.params.get("Action") == "ConfirmSubscription":
            return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")
        return httpx.Response(404)

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


class Site:
    """The app under test (every provider configured unless told otherwise) and its database."""

    def __init__(self, tmp_path: Path, database_url: str, keys: Keys, **settings: Any) -> None:
        self.sessions: sessionmaker[Session] = session_factory(create_db_engine(database_url))
        values: dict[str, Any] = {
            "webhook_postmark": POSTMARK_CREDENTIALS,
            "webhook_sendgrid": keys.sendgrid_public,
            "webhook_mailgun": MAILGUN_KEY,
            "webhook_resend": keys.resend,
            "webhook_ses": TOPIC,
        }
        values.update(settings)
        self.app = create_app(make_settings(tmp_path, database_url=database_url, **values))
        self.aws = AwsStandIn(keys.certificate)
        self.app.state.runtime.http_transport = httpx.MockTransport(self.aws)
        self.client = TestClient(self.app, base_url="https://news.example.org")
        self._digest_id: int | None = None

    def close(self) -> None:
        self.client.close()
        self.app.state.runtime.engine.dispose()
        bind = self.sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()

    def post(self, provider: str, call: Call) -> httpx.Response:
        return self.client.post(f"/webhooks/{provider}", content=call.body, headers=call.headers)

    def add_reader(self, email: str, message_id: str | None) -> Reader:
        """An active reader of two topics, and a sent delivery of one digest to them."""
        with self.sessions.begin() as session:
            subscriber = Subscriber(
                email=email, status=SubscriberStatus.ACTIVE, confirmed_at=utcnow()
            )
            session.add(subscriber)
            session.flush()
            topics = session.scalars(
                select(Topic.id).where(Topic.slug.in_(("mexico", "migration")))
            ).all()
            for topic_id in topics:
                session.add(
                    Subscription(
                        subscriber_id=subscriber.id, topic_id=topic_id, frequency=Frequency.DAILY
                    )
                )
            if self._digest_id is None:
                digest = Digest(
                    kind=DigestKind.DAILY,
                    status=DigestStatus.SENT,
                    run_key="daily:2024-01-02",
                    subject="Daily digest",
                )
                session.add(digest)
                session.flush()
                self._digest_id = digest.id
            delivery = Delivery(
                digest_id=self._digest_id,
                subscriber_id=subscriber.id,
                status=DeliveryStatus.SENT,
                attempts=1,
                sent_at=utcnow(),
                provider_message_id=message_id,
            )
            session.add(delivery)
            session.flush()
            return Reader(email, subscriber.id, delivery.id, message_id)

    def snapshot(self) -> Snapshot:
        with self.sessions() as session:
            events = session.execute(
                select(
                    Event.provider, Event.provider_event_id, Event.type, Event.delivery_id
                ).order_by(Event.id)
            ).all()
            suppressions = session.execute(
                select(Suppression.email_hash, Suppression.reason).order_by(Suppression.id)
            ).all()
            statuses = session.execute(
                select(Subscriber.email, Subscriber.status).order_by(Subscriber.id)
            ).all()
        return Snapshot(
            tuple((p, e, t, d) for p, e, t, d in events),
            tuple((h, r) for h, r in suppressions),
            tuple((e, s) for e, s in statuses),
        )

    def events(self) -> list[Event]:
        with self.sessions() as session:
            return list(session.scalars(select(Event).order_by(Event.id)))

    def status(self, email: str) -> SubscriberStatus:
        with self.sessions() as session:
            status = session.scalar(select(Subscriber.status).where(Subscriber.email == email))
        assert status is not None
        return status

    def suppression(self, email: str) -> str | None:
        """The reason the address is suppressed (looked up by its hash), or None."""
        with self.sessions() as session:
            return session.scalar(
                select(Suppression.reason).where(Suppression.email_hash == email_hash(email))
            )

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database for the whole module, migrated once: the same choice as the integration
    conftest's `database_url` (a SQLite file, or a new PostgreSQL database on the server that
    NEWSLETTER_TEST_DATABASE_URL names, dropped afterwards). Creating and migrating a PostgreSQL
    database per test cost ~0.5 s of CPU each, well over this module's 20 s budget, so each test
    gets this one emptied instead (see `empty_database`)."""
    base = os.environ.get("NEWSLETTER_TEST_DATABASE_URL")
    if not base:
        url = f"sqlite:///{tmp_path_factory.mktemp('webhooks') / 'newsletter.db'}"
        upgrade(url)
        yield url
        return
    server = make_url(base)
    name = f"nl_webhooks_{uuid.uuid4().hex[:10]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_database(url: str) -> None:
    """Delete every row but the migration version, then add the demo topics: a fresh start."""
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            known = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in tables]
            ordered = known + sorted(tables - set(known))
            if engine.dialect.name == "postgresql":
                quoted = ", ".join(f'"{name}"' for name in ordered)
                conn.exec_driver_sql(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
            else:
                for name in ordered:
                    table = Base.metadata.tables.get(name)
                    if table is None:  # a table the models do not know: read it from the database
                        table = Table(name, MetaData(), autoload_with=conn)
                    conn.execute(table.delete())
        with session_factory(engine).begin() as session:
            add_demo_topics(session)
    finally:
        engine.dispose()


@pytest.fixture
def make_site(tmp_path: Path, migrated_database: str, keys: Keys) -> Iterator[Callable[..., Site]]:
    """`make_site(**settings)`: the app on the emptied database, closed after the test."""
    empty_database(migrated_database)
    sites: list[Site] = []

    def _make(**settings: Any) -> Site:
        site = Site(tmp_path, migrated_database, keys, **settings)
        sites.append(site)
        return site

    yield _make
    for site in sites:
        site.close()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    """The app with every provider's webhooks configured."""
    return make_site()


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert "detail" in response.json()


# --- a genuine call, and the same call again -------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_genuine_hard_bounce_is_stored_linked_and_suppresses_the_reader(
    site: Site, keys: Keys, provider: str
) -> None:
    """200; one `bounced` Event linked to the reader's delivery; the reader suppressed on every
    topic, a Suppression by the address's hash; another reader of the same digest untouched.
    The same call again, and the provider's retry signed afresh, store nothing more."""
    reader = site.add_reader(READER, message_id(provider))
    bystander = site.add_reader(OTHER, message_id(provider))
    bounce = prepare(provider, "bounce", reader.mail())
    call = sign(keys, bounce)

    response = site.post(provider, call)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "stored": 1}
    (event,) = site.events()
    assert (event.provider, event.type) == (provider, "bounced")
    assert event.delivery_id == reader.delivery_id
    assert event.email_hash == email_hash(READER)
    assert event.occurred_at.tzinfo is not None
    assert event.payload  # the provider's own record, kept
    assert site.status(READER) is SubscriberStatus.SUPPRESSED
    assert site.suppression(READER) == "hard_bounce"
    assert site.status(bystander.email) is SubscriberStatus.ACTIVE
    assert site.suppression(bystander.email) is None
    after_first = site.snapshot()

    replay = site.post(provider, call)
    retry = site.post(provider, sign(keys, bounce, sent_at=time.time() + 30))

    for again in (replay, retry):
        assert again.status_code == 200, again.text
        assert again.json() == {"received": 1, "stored": 0}
    assert site.snapshot() == after_first
    assert site.count(Event) == 1 and site.count(Suppression) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_delivered_complaint_and_unsubscribe_are_stored_linked_and_applied(
    site: Site, keys: Keys, provider: str
) -> None:
    """`delivered` is stored, linked, and changes nothing else. A complaint carrying only the
    provider's message id is linked through Delivery.provider_message_id and suppresses for
    `complaint`; a provider unsubscribe (where the provider has one) carrying only our
    delivery_id is linked by it and suppresses for `provider_unsubscribe`."""
    delivered = site.add_reader("delivered@example.org", message_id(provider))
    complainer = site.add_reader("complainer@example.org", message_id(provider))
    leaver = site.add_reader("leaver@example.org", message_id(provider))

    response = site.post(provider, sign(keys, prepare(provider, "delivered", delivered.mail())))

    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "stored": 1}
    (event,) = site.events()
    assert (event.provider, event.type) == (provider, "delivered")
    assert event.delivery_id == delivered.delivery_id
    assert site.count(Suppression) == 0
    assert {status for _, status in site.snapshot().statuses} == {SubscriberStatus.ACTIVE}

    complaint = prepare(provider, "complaint", complainer.mail(delivery_id=False))
    assert site.post(provider, sign(keys, complaint)).status_code == 200

    event = site.events()[-1]
    assert (event.type, event.delivery_id) == ("complained", complainer.delivery_id)
    assert site.status(complainer.email) is SubscriberStatus.SUPPRESSED
    assert site.suppression(complainer.email) == "complaint"
    assert site.status(delivered.email) is SubscriberStatus.ACTIVE

    if provider not in UNSUBSCRIBING:
        return
    unsubscribe = prepare(provider, "unsubscribe", leaver.mail(message_id=False))
    assert site.post(provider, sign(keys, unsubscribe)).status_code == 200

    event = site.events()[-1]
    assert (event.type, event.delivery_id) == ("unsubscribed", leaver.delivery_id)
    assert site.status(leaver.email) is SubscriberStatus.SUPPRESSED
    assert site.suppression(leaver.email) == "provider_unsubscribe"
    assert site.count(Event) == 3


def test_the_address_is_matched_whatever_its_case(site: Site, keys: Keys) -> None:
    """A provider that reports `Reader@Example.ORG` suppresses the reader stored in lower case."""
    reader = site.add_reader(READER, message_id("postmark"))
    shouting = replace(reader.mail(), email="Reader@Example.ORG")

    response = site.post("postmark", sign(keys, prepare("postmark", "bounce", shouting)))

    assert response.status_code == 200, response.text
    assert site.status(READER) is SubscriberStatus.SUPPRESSED
    assert site.suppression(READER) == "hard_bounce"
    assert site.events()[0].email_hash == email_hash(READER)


def test_an_ses_bounce_for_two_recipients_suppresses_both(site: Site, keys: Keys) -> None:
    """One SNS notification about two recipients: two Events (ids kept apart), two suppressions."""
    first = site.add_reader(READER, message_id("ses"))
    second = site.add_reader(OTHER, None)
    bounce = prepare("ses", "bounce", first.mail())
    bounce.payload["mail"]["destination"].append(second.email)
    bounce.payload["bounce"]["bouncedRecipients"].append({"emailAddress": second.email})
    call = sign(keys, bounce)

    response = site.post("ses", call)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": 2, "stored": 2}
    events = site.events()
    assert [e.type for e in events] == ["bounced", "bounced"]
    assert len({e.provider_event_id for e in events}) == 2
    assert {e.email_hash for e in events} == {email_hash(READER), email_hash(OTHER)}
    assert site.status(READER) is site.status(OTHER) is SubscriberStatus.SUPPRESSED
    assert site.post("ses", call).json() == {"received": 2, "stored": 0}


# --- soft bounces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_soft_bounces_suppress_only_at_the_threshold(site: Site, keys: Keys, provider: str) -> None:
    """Each provider's soft bounce (Postmark SoftBounce, SendGrid `blocked`, Mailgun permanent
    `old`, Resend and SES Transient) is counted; a retry of one is not counted twice; the
    SOFT_BOUNCE_THRESHOLD-th suppresses the address for `soft_bounces`."""
    reader = site.add_reader(READER, message_id(provider))
    calls = [
        sign(keys, prepare(provider, "soft_bounce", reader.mail()))
        for _ in range(SOFT_BOUNCE_THRESHOLD)
    ]

    for call in calls[:-1]:
        assert site.post(provider, call).status_code == 200
    assert site.post(provider, calls[-2]).json()["stored"] == 0  # a retry, not another bounce

    events = site.events()
    assert [e.type for e in events] == ["soft_bounced"] * (SOFT_BOUNCE_THRESHOLD - 1)
    assert all(e.delivery_id == reader.delivery_id for e in events)
    assert site.status(READER) is SubscriberStatus.ACTIVE
    assert site.count(Suppression) == 0

    assert site.post(provider, calls[-1]).status_code == 200

    assert site.count(Event) == SOFT_BOUNCE_THRESHOLD
    assert site.status(READER) is SubscriberStatus.SUPPRESSED
    assert site.suppression(READER) == "soft_bounces"


def test_mailgun_temporary_failures_are_deferred_and_never_suppress(site: Site, keys: Keys) -> None:
    """Mailgun reports every retry of a temporary failure: stored as `deferred`, not counted."""
    reader = site.add_reader(READER, message_id("mailgun"))

    for _ in range(SOFT_BOUNCE_THRESHOLD + 1):
        call = sign(keys, prepare("mailgun", "temporary", reader.mail()))
        assert site.post("mailgun", call).status_code == 200

    assert [e.type for e in site.events()] == ["deferred"] * (SOFT_BOUNCE_THRESHOLD + 1)
    assert site.status(READER) is SubscriberStatus.ACTIVE
    assert site.count(Suppression) == 0


def test_soft_bounces_older_than_the_window_are_not_counted(site: Site, keys: Keys) -> None:
    """Postmark (no signed time) may report old bounces: only those in the window count."""
    reader = site.add_reader(READER, message_id("postmark"))
    long_ago = time.time() - 40 * 86400
    old = [
        prepare("postmark", "soft_bounce", reader.mail(), at=long_ago)
        for _ in range(SOFT_BOUNCE_THRESHOLD - 1)
    ]

    for prepared in [*old, prepare("postmark", "soft_bounce", reader.mail())]:
        assert site.post("postmark", sign(keys, prepared)).status_code == 200

    assert site.count(Event) == SOFT_BOUNCE_THRESHOLD
    assert site.status(READER) is SubscriberStatus.ACTIVE
    assert site.count(Suppression) == 0


# --- forged, stale, malformed, unconfigured --------------------------------------------------------


def forgeries(keys: Keys, prepared: Prepared, victim: str) -> list[tuple[str, Call, int]]:
    """(what, call, expected status) for calls that must not be believed."""
    provider = prepared.provider
    genuine = sign(keys, prepared)
    # The genuine call's signature with the body changed to be about someone else.
    tampered = Call(genuine.headers, genuine.body.replace(READER.encode(), victim.encode()))
    forged = [("signed with a forger's key", sign(keys, prepared, forged=True), 401)]
    if provider == "postmark":
        return [
            *forged,
            ("no credentials", Call({}, genuine.body), 401),
            (
                "a bearer token",
                Call({"Authorization": "Bearer " + POSTMARK_CREDENTIALS}, genuine.body),
                401,
            ),
            ("credentials not base64", Call({"Authorization": "Basic !!!"}, genuine.body), 401),
            ("right user, no password", Call(signing.basic_auth("hooks:"), genuine.body), 401),
        ]
    if provider == "sendgrid":
        headers = dict(genuine.headers)
        del headers[signing.SENDGRID_SIGNATURE]
        moved = {**genuine.headers, signing.SENDGRID_TIMESTAMP: str(int(time.time()) + 1)}
        return [
            *forged,
            ("body changed after signing", tampered, 401),
            ("no signature header", Call(headers, genuine.body), 401),
            ("timestamp changed after signing", Call(moved, genuine.body), 401),
        ]
    if provider == "mailgun":
        body = json.loads(genuine.body)
        unsigned = {"event-data": body["event-data"]}
        swapped = {**body, "signature": {**body["signature"], "token": "0" * 50}}
        return [
            *forged,
            ("no signature", Call(genuine.headers, json.dumps(unsigned).encode()), 401),
            (
                "token changed after signing",
                Call(genuine.headers, json.dumps(swapped).encode()),
                401,
            ),
        ]
    if provider == "resend":
        bare = {"Content-Type": "application/json"}
        other_id = {**genuine.headers, "svix-id": "msg_someone_else"}
        return [
            *forged,
            ("body changed after signing", tampered, 401),
            ("svix-id changed after signing", Call(other_id, genuine.body), 401),
            ("no svix headers", Call(bare, genuine.body), 400),
        ]
    envelope = json.loads(genuine.body)
    unsigned = {k: v for k, v in envelope.items() if k != "Signature"}
    return [
        *forged,
        ("Message changed after signing", tampered, 401),
        ("no Signature", Call(genuine.headers, json.dumps(unsigned).encode()), 400),
        (
            "Signature not base64",
            Call(genuine.headers, json.dumps({**envelope, "Signature": "%%"}).encode()),
            400,
        ),
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_forged_or_stale_calls_are_refused_and_change_nothing(
    site: Site, keys: Keys, provider: str
) -> None:
    """A forger's key, a body changed after signing, missing or mangled credentials; and, where
    the provider signs a time, a genuine signature made outside the tolerance (past or future;
    SNS allows an hour of retries): 4xx, and no Event, no Suppression, both readers still
    active. A genuine call just inside the tolerance is then accepted."""
    reader = site.add_reader(READER, message_id(provider))
    site.add_reader(OTHER, message_id(provider))
    before = site.snapshot()
    cases = forgeries(keys, prepare(provider, "bounce", reader.mail()), OTHER)
    tolerance = 3600 if provider == "ses" else 300
    now = time.time()
    if provider in STALE_STATUS:  # Postmark signs no time: its replays are stopped by event id
        for what, sent_at in (("stale", now - tolerance - 120), ("from the future", now + 420)):
            stale = sign(keys, prepare(provider, "bounce", reader.mail()), sent_at=sent_at)
            cases.append((what, stale, STALE_STATUS[provider]))

    for what, call, status in cases:
        response = site.post(provider, call)
        assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
        assert "detail" in response.json(), what
        assert site.snapshot() == before, what

    assert site.count(Event) == 0 and site.count(Suppression) == 0
    assert site.status(READER) is site.status(OTHER) is SubscriberStatus.ACTIVE
    late = sign(keys, prepare(provider, "bounce", reader.mail()), sent_at=now - tolerance + 60)
    assert site.post(provider, late).status_code == 200
    assert site.status(READER) is SubscriberStatus.SUPPRESSED


def malformed(keys: Keys, prepared: Prepared) -> list[tuple[str, Call]]:
    """(what, call) for authenticated calls whose body the provider would never send."""
    provider = prepared.provider
    payload = prepared.payload
    broken = [("not JSON", sign_body(keys, provider, b'{"RecordType": "Bounce", ', number=1))]
    if provider == "postmark":
        timeless = {k: v for k, v in payload.items() if k != "BouncedAt"}
        return [
            *broken,
            ("an array", sign_body(keys, provider, b"[]", number=2)),
            ("no time", sign_body(keys, provider, json.dumps(timeless).encode(), number=3)),
            ("a bad time", sign(keys, replace(prepared, payload={**payload, "BouncedAt": "soon"}))),
        ]
    if provider == "sendgrid":
        good = payload[0]
        timeless = {k: v for k, v in good.items() if k != "timestamp"}
        return [
            *broken,
            ("an object", sign_body(keys, provider, json.dumps(good).encode(), number=2)),
            # One good event and one broken: the call is refused whole, the good one not stored.
            (
                "one event of two has no time",
                sign(keys, replace(prepared, payload=[good, timeless])),
            ),
        ]
    if provider == "mailgun":
        genuine = json.loads(sign(keys, prepared).body)
        no_data = {"signature": genuine["signature"]}
        bad_time = {**genuine, "event-data": {**payload, "timestamp": "yesterday"}}
        return [
            *broken,
            ("no event-data", Call({}, json.dumps(no_data).encode())),
            ("a bad time", Call({}, json.dumps(bad_time).encode())),
        ]
    if provider == "resend":
        return [
            *broken,
            ("no type", sign_body(keys, provider, json.dumps({"data": {}}).encode(), number=2)),
            (
                "a bad time",
                sign(keys, replace(prepared, payload={**payload, "created_at": "soon"})),
            ),
        ]
    at = time.time()
    not_ses = sns_envelope("Hello world!", prepared.number, at)
    no_id = {k: v for k, v in sns_envelope("{}", prepared.number, at).items() if k != "MessageId"}
    unknown = {**sns_envelope("{}", prepared.number, at), "Type": "Notice"}
    return [
        *broken,
        ("Message is not an SES event", Call({}, signing.sns_body(keys.sns, not_ses))),
        ("no MessageId", Call({}, signing.sns_body(keys.sns, no_id))),
        ("unknown Type", Call({}, json.dumps({**unknown, "Signature": "AAAA"}).encode())),
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_calls_get_400_and_change_nothing(site: Site, keys: Keys, provider: str) -> None:
    """Bodies that are not JSON, not the provider's shape, or lack a usable time: 400, nothing
    stored, even when the call is correctly authenticated."""
    reader = site.add_reader(READER, message_id(provider))
    before = site.snapshot()

    for what, call in malformed(keys, prepare(provider, "bounce", reader.mail())):
        response = site.post(provider, call)
        assert response.status_code == 400, f"{what}: {response.status_code} {response.text}"
        assert site.snapshot() == before, what

    assert site.status(READER) is SubscriberStatus.ACTIVE


def test_providers_without_their_secret_get_403(make_site: Callable[..., Site], keys: Keys) -> None:
    """With NEWSLETTER_WEBHOOK_<PROVIDER> unset, even a genuine call is refused with 403."""
    unset = ("postmark", "sendgrid", "mailgun", "resend")
    site = make_site(**{f"webhook_{provider}": None for provider in unset})
    readers = {p: site.add_reader(f"{p}@example.org", message_id(p)) for p in unset}
    before = site.snapshot()

    for provider, reader in readers.items():
        response = site.post(provider, sign(keys, prepare(provider, "bounce", reader.mail())))
        assert_refused(response, 403)

    assert site.snapshot() == before


def test_ses_without_a_topic_allowlist_gets_403(make_site: Callable[..., Site], keys: Keys) -> None:
    """Unset NEWSLETTER_WEBHOOK_SES should refuse like every other provider's unset secret."""
    site = make_site(webhook_ses=None)
    reader = site.add_reader(READER, message_id("ses"))
    before = site.snapshot()
    anyones_topic = "arn:aws:sns:us-east-1:666666666666:not-ours"

    call = sign(keys, prepare("ses", "bounce", reader.mail()), topic=anyones_topic)
    response = site.post("ses", call)

    assert response.status_code == 403, response.text
    assert site.snapshot() == before


# --- routing ---------------------------------------------------------------------------------------


def test_unknown_providers_get_404_and_oversized_bodies_413(site: Site, keys: Keys) -> None:
    """No route for a made-up provider, nor for outbox and smtp, which have no webhooks; a body
    over a mebibyte is refused before it is parsed. Neither changes anything."""
    reader = site.add_reader(READER, message_id("sendgrid"))
    before = site.snapshot()
    for provider in ("nosuchprovider", "outbox", "smtp", "POSTMARK"):
        response = site.post(provider, Call(signing.basic_auth(POSTMARK_CREDENTIALS), b"{}"))
        assert response.status_code == 404, provider
    assert site.client.get("/webhooks/postmark").status_code == 405

    events = prepare("sendgrid", "bounce", reader.mail()).payload
    padded = replace(
        prepare("sendgrid", "bounce", reader.mail()),
        payload=[*events, {**events[0], "padding": "x" * (1024 * 1024)}],
    )
    assert_refused(site.post("sendgrid", sign(keys, padded)), 413)
    assert site.snapshot() == before


# --- SES through SNS -------------------------------------------------------------------------------


def confirmation(kind: str, number: int, subscribe_url: str | None = None) -> dict[str, Any]:
    """An unsigned SNS SubscriptionConfirmation or UnsubscribeConfirmation for TOPIC."""
    token = secrets.token_hex(32)
    url = subscribe_url or (
        f"https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}"
        f"&Token={token}"
    )
    return {
        "Type": kind,
        "MessageId": f"165545c9-0000-4000-8000-{number:012d}",
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": url,
        "Timestamp": signing.sns_timestamp(time.time()),
        "SigningCertURL": CERT_URL,
    }


def test_ses_subscription_confirmation_gets_the_subscribe_url(site: Site, keys: Keys) -> None:
    """The route verifies the confirmation (fetching the certificate from the SNS host), then
    GETs its SubscribeURL; an UnsubscribeConfirmation is verified but not followed. No Event."""
    subscribe = confirmation("SubscriptionConfirmation", 1)

    response = site.post("ses", Call({}, signing.sns_body(keys.sns, subscribe)))

    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 0
    assert site.aws.urls == [CERT_URL, subscribe["SubscribeURL"]]
    assert all(r.method == "GET" for r in site.aws.requests)

    site.aws.requests.clear()
    unsubscribe = confirmation("UnsubscribeConfirmation", 2)
    response = site.post("ses", Call({}, signing.sns_body(keys.sns, unsubscribe)))

    assert response.status_code == 200, response.text
    assert unsubscribe["SubscribeURL"] not in site.aws.urls
    assert site.count(Event) == 0


#: Certificate and confirmation URLs that are not plain https on an SNS host.
OFF_SNS = (
    "https://evil.example/SimpleNotificationService-0123456789abcdef.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-x.pem",
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-x.pem",
    "https://s3.amazonaws.com/SimpleNotificationService-x.pem",
)


def test_urls_off_the_sns_hosts_get_403_without_any_fetch(site: Site, keys: Keys) -> None:
    """A SigningCertURL, or a confirmation's SubscribeURL, that is not https on an SNS host is
    refused before anything is fetched: a forger's own certificate, however well it matches
    the signature, is never even downloaded, and no confirmation link is followed."""
    reader = site.add_reader(READER, message_id("ses"))
    before = site.snapshot()

    for url in OFF_SNS:
        forged = sign(keys, prepare("ses", "bounce", reader.mail()), forged=True, cert_url=url)
        assert_refused(site.post("ses", forged), 403)
        subscribe = confirmation("SubscriptionConfirmation", 3, url)
        assert_refused(site.post("ses", Call({}, signing.sns_body(keys.sns, subscribe))), 403)

    assert site.aws.requests == []
    assert site.snapshot() == before


def test_ses_messages_only_from_allowed_topics(make_site: Callable[..., Site], keys: Keys) -> None:
    """NEWSLETTER_WEBHOOK_SES lists the allowed topics (comma-separated, spaces allowed): a
    genuinely signed message or confirmation from any other topic gets 403, with nothing fetched
    and nothing changed; one from the second listed topic is applied."""
    second = "arn:aws:sns:eu-west-1:123456789012:newsletter-eu"
    site = make_site(webhook_ses=f"{TOPIC}, {second}")
    reader = site.add_reader(READER, message_id("ses"))
    before = site.snapshot()
    elsewhere = "arn:aws:sns:us-east-1:123456789012:someone-elses-topic"

    call = sign(keys, prepare("ses", "bounce", reader.mail()), topic=elsewhere)
    subscribe = {**confirmation("SubscriptionConfirmation", 4), "TopicArn": elsewhere}

    assert_refused(site.post("ses", call), 403)
    assert_refused(site.post("ses", Call({}, signing.sns_body(keys.sns, subscribe))), 403)
    assert site.aws.requests == []
    assert site.snapshot() == before

    allowed = sign(keys, prepare("ses", "bounce", reader.mail()), topic=second)
    assert site.post("ses", allowed).status_code == 200
    assert site.status(READER) is SubscriberStatus.SUPPRESSED


def test_an_unreachable_signing_certificate_is_a_503_so_sns_retries(site: Site, keys: Keys) -> None:
    """Our failure to reach AWS is not the caller's fault: answer 5xx, change nothing."""
    reader = site.add_reader(READER, message_id("ses"))
    site.aws.fail = True
    before = site.snapshot()

    response = site.post("ses", sign(keys, prepare("ses", "bounce", reader.mail())))

    assert site.aws.urls == [CERT_URL]
    assert site.snapshot() == before
    assert response.status_code == 503, response.text


# --- linking and replays, where the provider's design makes them harder ---------------------------


def test_a_message_id_shared_by_a_batch_links_the_event_to_the_right_reader(
    site: Site, keys: Keys
) -> None:
    """Two readers sent in one SendGrid request share its X-Message-Id; an event about the second,
    carrying only sg_message_id, must be linked to the second reader's delivery."""
    shared = message_id("sendgrid")
    site.add_reader(OTHER, shared)
    reader = site.add_reader(READER, shared)

    call = sign(keys, prepare("sendgrid", "complaint", reader.mail(delivery_id=False)))

    assert site.post("sendgrid", call).status_code == 200
    (event,) = site.events()
    assert event.delivery_id == reader.delivery_id


def test_a_mailgun_signature_cannot_be_reused_for_another_event(site: Site, keys: Keys) -> None:
    """A genuine Mailgun signature block, lifted onto an event about another reader: 401."""
    reader = site.add_reader(READER, message_id("mailgun"))
    victim = site.add_reader(OTHER, message_id("mailgun"))
    genuine = sign(keys, prepare("mailgun", "bounce", reader.mail()))
    assert site.post("mailgun", genuine).status_code == 200
    lifted = {
        "signature": json.loads(genuine.body)["signature"],
        "event-data": prepare("mailgun", "bounce", victim.mail()).payload,
    }

    response = site.post("mailgun", Call({}, json.dumps(lifted).encode()))

    assert response.status_code == 401, response.text
    assert site.status(OTHER) is SubscriberStatus.ACTIVE


# --- found on the way ------------------------------------------------------------------------------


def test_a_postgresql_password_reaches_the_engine() -> None:
    """The engine the web app (and so the webhook route) uses must keep the URL's password."""
    engine = create_db_engine("postgresql+psycopg://newsletter:s3cret@db.example.org/newsletter")
    try:
        assert engine.url.password == "s3cret"
    finally:
        engine.dispose()
