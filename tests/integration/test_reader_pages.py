"""Every reader route over HTTP, with each bad input, against the real database and a real Redis.

The app runs in-process (Starlette's TestClient speaks HTTP to it); Redis holds the rate limits, the
used-form nonces and the queue, so "an email was queued" is read off the broker itself.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mail.links import list_headers, reader_links
from subscriptions import readers
from subscriptions.models import (
    Consent,
    Frequency,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
)
from subscriptions.queue import APPLY_SIGNUPS, QUEUE, SEND_CONFIRMATION
from subscriptions.tokens import Purpose, TokenSigner
from subscriptions.web.app import create_app
from tests import webforms
from tests.factories import SECRET, add_demo_topics, make_settings, migrated_sessions
from worker.app import create_celery

signer = TokenSigner(SECRET)
RECEIPT = re.compile(r'name="receipt" value="[^"]+"')


class Site:
    """The app under test, its database and its broker."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, **settings: Any) -> None:
        self.sessions: sessionmaker[Session] = migrated_sessions(database_url)
        with self.sessions.begin() as session:
            add_demo_topics(session)
        values: dict[str, Any] = {
            "broker_url": redis_url,
            "form_min_seconds": 0,
            "rate_limit_per_ip": 1000,
        }
        values.update(settings)
        self.settings = make_settings(tmp_path, database_url=database_url, **values)
        self.app = create_app(self.settings)
        self.redis = redis.Redis.from_url(redis_url)
        self.worker = create_celery(self.settings)

    def apply(self) -> dict[str, int]:
        """What a worker does when kicked: apply the queued sign-ups (the real task, run here)."""
        result: dict[str, int] = self.worker.tasks[APPLY_SIGNUPS]()
        return result

    def mail_queued(self) -> list[tuple[str, list[Any]]]:
        """The queued tasks that send email (the sign-up intake's kicks left out)."""
        return [q for q in self.queued() if q[0] != APPLY_SIGNUPS]

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://127.0.0.1:8000", follow_redirects=False)

    def queued(self) -> list[tuple[str, list[Any]]]:
        """(task name, args) of every message waiting on the broker."""
        out = []
        for raw in self.redis.lrange(QUEUE, 0, -1):
            message = json.loads(raw)
            args = json.loads(__import__("base64").b64decode(message["body"]))[0]
            out.append((message["headers"]["task"], args))
        return out

    def count(self, model: Any) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def active_reader(
        self, email: str = "reader@example.org", topics: tuple[str, ...] = ("mexico", "migration")
    ) -> int:
        with self.sessions.begin() as session:
            signup = readers.subscribe(
                session=session,
                email=email,
                topics=list(topics),
                frequency=Frequency.DAILY,
                timezone="UTC",
            )
            assert signup.subscriber_id and signup.consent_id
            readers.confirm(
                session=session,
                consent_id=signup.consent_id,
                subscriber_id=signup.subscriber_id,
                token_version=1,
            )
            return signup.subscriber_id

    def reader(self, email: str) -> Subscriber | None:
        with self.sessions() as session:
            return session.scalar(select(Subscriber).where(Subscriber.email == email))


@pytest.fixture
def site(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Site]:
    s = Site(tmp_path, database_url, redis_url)
    yield s
    s.app.state.runtime.engine.dispose()
    s.worker.runtime.engine.dispose()


# --- subscribe ---------------------------------------------------------------------------------


def test_form_lists_topics_with_descriptions_and_the_hidden_fields(site: Site) -> None:
    page = site.client().get("/?topic=mexico")
    assert page.status_code == 200
    assert "Border Security" in page.text and "U.S.-Mexico relations." in page.text
    assert re.search(r'value="mexico"\s+checked', page.text)
    assert 'name="timezone"' in page.text and 'value="UTC"' in page.text
    assert 'name="website"' in page.text and 'name="csrf_token"' in page.text
    assert "I agree to receive email" in page.text
    assert "nl_csrf" in page.headers["set-cookie"] and "HttpOnly" in page.headers["set-cookie"]
    for value in ("immediate", "daily", "weekly"):
        assert f'value="{value}"' in page.text


def test_embed_entry_prefills_the_form_and_stores_nothing(site: Site) -> None:
    page = site.client().post("/embed", data={"email": "visitor@example.org", "topic": "refugees"})
    assert page.status_code == 200
    assert 'value="visitor@example.org"' in page.text
    assert site.count(Subscriber) == 0


def test_subscribe_stores_a_pending_reader_and_queues_the_confirmation(site: Site) -> None:
    client = site.client()
    answer = webforms.subscribe(
        client, "josé@exämple.org", ["mexico", "refugees"], "weekly", timezone="Asia/Tokyo"
    )
    assert answer.status_code == 200 and "Check your email" in answer.text
    # The answer does not wait for the database: the sign-up is queued and a worker kicked.
    assert site.reader("josé@exämple.org") is None
    assert site.queued() == [(APPLY_SIGNUPS, [])]
    assert site.apply() == {"applied": 1, "skipped": 0, "dropped": 0}
    reader = site.reader("josé@exämple.org")
    assert (
        reader is not None
        and reader.status is SubscriberStatus.PENDING
        and reader.timezone == "Asia/Tokyo"
    )
    with site.sessions() as session:
        consent = session.scalar(select(Consent))
        assert consent is not None
        assert consent.topics == ["mexico", "refugees"] and consent.ip and consent.wording
    assert site.mail_queued() == [("newsletter.send_confirmation", [consent.id])]
    assert site.apply() == {"applied": 0, "skipped": 0, "dropped": 0}  # nothing applied twice


def test_unknown_time_zone_falls_back_to_the_default(site: Site) -> None:
    webforms.subscribe(site.client(), "a@example.org", ["mexico"], timezone="Mars/Olympus")
    site.apply()
    reader = site.reader("a@example.org")
    assert reader is not None and reader.timezone == "UTC"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not-an-address"}, "not valid"),
        ({"email": "x" * 10_000 + "@example.org"}, "too long"),
        ({"email": ""}, "enter your email"),
        ({"topics": []}, "at least one topic"),
        ({"topics": ["mexico", "atlantis"]}, "unknown topic"),
        ({"frequency": "hourly"}, "how often"),
        ({"email": "a@example.org\r\nBcc: victim@example.org"}, "Line breaks"),
        ({"timezone": "UTC\nX-Evil: 1"}, "Line breaks"),
        ({"source": "form\r\n"}, "Line breaks"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    site: Site, fields: dict[str, Any], message: str
) -> None:
    data: dict[str, Any] = {
        "email": "reader@example.org",
        "topics": ["mexico"],
        "frequency": "daily",
    }
    data.update(fields)
    answer = webforms.post_form(site.client(), "/", "/subscribe", data)
    assert answer.status_code == 400
    assert message.lower() in answer.text.lower()
    assert "Traceback" not in answer.text
    assert site.count(Subscriber) == 0 and site.count(Consent) == 0 and site.queued() == []


def test_missing_wrong_foreign_and_replayed_form_tokens_are_refused(site: Site) -> None:
    data = {"email": "reader@example.org", "topics": ["mexico"], "frequency": "daily"}
    client = site.client()
    client.get("/")
    assert client.post("/subscribe", data=data).status_code == 400
    assert client.post("/subscribe", data={**data, "csrf_token": "forged"}).status_code == 400
    # A token fetched by someone else (another cookie) does not work with this visitor's cookie.
    other_token = webforms.form_token(site.client(), "/")
    assert client.post("/subscribe", data={**data, "csrf_token": other_token}).status_code == 400
    # No cookie at all.
    bare = site.client()
    assert bare.post("/subscribe", data={**data, "csrf_token": other_token}).status_code == 400
    assert site.count(Consent) == 0
    # The genuine form works once; replaying it for another sign-up is refused.
    token = webforms.form_token(client, "/")
    assert client.post("/subscribe", data={**data, "csrf_token": token}).status_code == 200
    other = {**data, "email": "someone.else@example.org", "csrf_token": token}
    replay = client.post("/subscribe", data=other)
    assert replay.status_code == 400 and "already sent" in replay.text
    changed = client.post("/subscribe", data={**data, "frequency": "weekly", "csrf_token": token})
    assert changed.status_code == 400 and "already sent" in changed.text
    site.apply()
    assert site.count(Consent) == 1


@pytest.mark.parametrize("door", ["intake", "in the request"])
def test_a_double_click_answers_check_your_email_twice_and_signs_up_once(
    site: Site, door: str
) -> None:
    """The browser shows the second answer of a double click (or of Back and send again): it
    must say what the first one did, while only one sign-up and one confirmation happen."""
    if door == "in the request":
        site.app.state.runtime.intake = None  # the path without Redis streams: applied here
    data = {"email": "Hurried@Example.org", "topics": ["mexico"], "frequency": "daily"}
    client = site.client()
    token = webforms.form_token(client, "/")
    first = client.post("/subscribe", data={**data, "csrf_token": token})
    second = client.post("/subscribe", data={**data, "csrf_token": token})
    for answer in (first, second):
        assert answer.status_code == 200, answer.text
        assert "Check your email" in answer.text and "already sent" not in answer.text
    third = client.post("/subscribe", data={**data, "csrf_token": token})
    assert third.status_code == 200 and "Check your email" in third.text
    if door == "intake":
        site.apply()
    assert site.count(Subscriber) == 1 and site.count(Consent) == 1
    confirmations = [q for q in site.mail_queued() if q[0] == SEND_CONFIRMATION]
    assert len(confirmations) == 1


def test_answers_for_known_and_unknown_addresses_are_identical(site: Site) -> None:
    site.active_reader("active@example.org")
    with site.sessions.begin() as session:
        readers.subscribe(
            session=session,
            email="pending@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
        gone = readers.subscribe(
            session=session,
            email="gone@example.org",
            topics=["mexico"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
        readers.unsubscribe(session=session, subscriber_id=gone.subscriber_id or 0)
        readers.suppress(session=session, email="bounced@example.org", reason="hard_bounce")
    bodies = {}
    for address in [
        "new@example.org",
        "pending@example.org",
        "active@example.org",
        "gone@example.org",
    ]:
        answer = webforms.subscribe(site.client(), address, ["mexico"])
        # The page names the address as typed and carries a fresh resend receipt: take them out.
        body = answer.text.replace(address, "ADDRESS")
        bodies[address] = (
            answer.status_code,
            RECEIPT.sub("RECEIPT", body),
            tuple(sorted(k for k in answer.headers if k != "content-length")),
        )
        assert f'<strong class="address">{address}</strong>' in answer.text
    assert len(set(bodies.values())) == 1, "the answer reveals whether an address is known"
    # A suppressed address is told that it cannot sign up (never a "check your email" for an
    # email that will not come), and gets no email.
    bounced = webforms.subscribe(site.client(), "bounced@example.org", ["mexico"])
    assert bounced.status_code == 403 and "cannot sign up this address" in bounced.text
    assert "news@example.org" in bounced.text  # how to reach the editors
    site.apply()
    queued_for = [args[0] for _, args in site.mail_queued()]
    with site.sessions() as session:
        emails = set(
            session.scalars(
                select(Subscriber.email).join(Consent).where(Consent.id.in_(queued_for))
            )
        )
    assert "bounced@example.org" not in emails and "new@example.org" in emails


def test_manage_request_answers_the_same_for_any_address(site: Site) -> None:
    reader_id = site.active_reader("active@example.org")
    known = webforms.post_form(site.client(), "/manage", "/manage", {"email": "active@example.org"})
    unknown = webforms.post_form(
        site.client(), "/manage", "/manage", {"email": "nobody@example.org"}
    )
    assert known.status_code == unknown.status_code == 200
    assert known.content == unknown.content
    # Both are queued, so that both take the same time; the worker drops the unknown one.
    assert sorted(site.queued()) == [
        ("newsletter.send_manage_link_to", ["active@example.org"]),
        ("newsletter.send_manage_link_to", ["nobody@example.org"]),
    ]
    assert reader_id


def test_a_too_fast_form_gets_one_more_button_and_then_signs_up(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    slow = Site(tmp_path, database_url, redis_url, form_min_seconds=3)
    client = slow.client()
    fast = webforms.subscribe(client, "Quick@Example.org", ["mexico", "migration"], "weekly")
    assert fast.status_code == 200 and "One more step" in fast.text
    assert "Check your email" not in fast.text  # never the success page while nothing happens
    assert fast.text.count("<button") == 1 and "Quick@Example.org" in fast.text
    slow.apply()
    assert slow.count(Subscriber) == 0 and slow.mail_queued() == []
    # The person presses the one button at once (well under the 3 s): that is enough.
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', fast.text)
    data: dict[str, Any] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    assert data["topics"] == ["mexico", "migration"] and data["frequency"] == ["weekly"]
    done = client.post("/subscribe", data=data)
    assert done.status_code == 200 and "Check your email" in done.text
    slow.apply()
    reader = slow.reader("quick@example.org")
    assert reader is not None and reader.status is SubscriberStatus.PENDING
    assert [task for task, _ in slow.mail_queued()] == ["newsletter.send_confirmation"]
    # The one-more-step form works once, like every form: pressed again, the same answer and
    # nothing more; sent for another address, refused.
    again = client.post("/subscribe", data=data)
    assert again.status_code == 200 and "Check your email" in again.text
    other = client.post("/subscribe", data={**data, "email": ["other@example.org"]})
    assert other.status_code == 400
    slow.apply()
    assert [task for task, _ in slow.mail_queued()] == ["newsletter.send_confirmation"]


def test_honeypot_gets_the_usual_answer_and_stores_nothing(site: Site) -> None:
    client = site.client()
    human = webforms.subscribe(client, "human@example.org", ["mexico"])
    trapped = webforms.subscribe(client, "bot@example.org", ["mexico"], website="http://spam")
    assert trapped.status_code == human.status_code == 200
    normalized = {
        RECEIPT.sub("R", answer.text.replace(address, "A"))
        for answer, address in ((human, "human@example.org"), (trapped, "bot@example.org"))
    }
    assert len(normalized) == 1
    site.apply()
    assert site.reader("bot@example.org") is None
    assert site.reader("human@example.org") is not None
    # The bot's "send it again" button sends nothing either, and answers the same page.
    receipt = RECEIPT.search(trapped.text)
    assert receipt is not None
    again = client.post(
        "/subscribe/resend", data={"receipt": receipt.group(0).split('value="')[1][:-1]}
    )
    assert again.status_code == 200 and "We sent the email again" in again.text
    site.apply()
    assert site.reader("bot@example.org") is None and len(site.mail_queued()) == 1


def test_rate_limit_per_address(site: Site) -> None:
    client = site.client()
    for _ in range(site.settings.rate_limit_per_address):
        assert webforms.subscribe(client, "same@example.org", ["mexico"]).status_code == 200
    over = webforms.subscribe(client, "Same@Example.org", ["mexico"])
    assert over.status_code == 429 and int(over.headers["retry-after"]) > 0
    # Which limit, and when to try again.
    assert "This address was signed up too many times in the last hour" in over.text
    assert "(the limit is 5 an hour)" in over.text
    assert re.search(
        r"Please try again in (about \d+ minutes|\d+ seconds) \(after \d\d:\d\d UTC\)", over.text
    )
    # At most a few confirmation emails per address per day, whatever the limits say.
    site.apply()
    assert site.count(Consent) == site.settings.rate_limit_per_address
    assert len(site.mail_queued()) == readers.CONFIRMATIONS_PER_DAY
    assert webforms.subscribe(client, "other@example.org", ["mexico"]).status_code == 200


def test_rate_limit_per_ip(tmp_path: Path, database_url: str, redis_url: str) -> None:
    strict = Site(tmp_path, database_url, redis_url, rate_limit_per_ip=3)
    client = strict.client()
    for n in range(3):
        assert webforms.subscribe(client, f"r{n}@example.org", ["mexico"]).status_code == 200
    over = webforms.subscribe(client, "r9@example.org", ["mexico"])
    assert over.status_code == 429 and "from your network" in over.text
    strict.apply()
    assert strict.reader("r9@example.org") is None and strict.count(Subscriber) == 3


# --- confirm ------------------------------------------------------------------------------------


def _pending(site: Site, email: str = "reader@example.org") -> tuple[int, int]:
    with site.sessions.begin() as session:
        signup = readers.subscribe(
            session=session,
            email=email,
            topics=["mexico"],
            frequency=Frequency.WEEKLY,
            timezone="UTC",
        )
    assert signup.subscriber_id and signup.consent_id
    return signup.subscriber_id, signup.consent_id


def test_confirm_page_has_one_button_and_only_the_post_confirms(site: Site) -> None:
    reader_id, consent_id = _pending(site)
    token = signer.make(Purpose.CONFIRM, subscriber_id=reader_id, version=1, consent_id=consent_id)
    client = site.client()
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 200 and page.text.count("<button") == 1
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.PENDING
    done = webforms.post_form(client, f"/confirm/{token}", f"/confirm/{token}", {})
    assert done.status_code == 200 and "You are subscribed" in done.text
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.ACTIVE
    assert ("newsletter.send_welcome", [consent_id]) in site.queued()
    # The link used again: the reader is told they are subscribed, with a way to preferences.
    reused = webforms.post_form(client, "/", f"/confirm/{token}", {})
    assert reused.status_code == 200 and "already confirmed" in reused.text
    again = client.get(f"/confirm/{token}")
    assert again.status_code == 200 and "already confirmed" in again.text
    assert again.text.count("<button") == 0
    manage = re.search(r'href="(/manage/[^"]+)"', again.text)
    assert manage is not None and client.get(manage.group(1)).status_code == 200
    assert re.search(r'href="/manage/[^"]+"', done.text), "the confirmed page links to preferences"


def test_confirm_without_form_token_changes_nothing(site: Site) -> None:
    reader_id, consent_id = _pending(site)
    token = signer.make(Purpose.CONFIRM, subscriber_id=reader_id, version=1, consent_id=consent_id)
    assert site.client().post(f"/confirm/{token}").status_code == 400
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.PENDING


def test_tampered_and_wrong_purpose_confirm_tokens(site: Site) -> None:
    reader_id, consent_id = _pending(site)
    good = signer.make(Purpose.CONFIRM, subscriber_id=reader_id, version=1, consent_id=consent_id)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    wrong_purpose = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    other_key = TokenSigner("another-secret-key-123456").make(
        Purpose.CONFIRM, subscriber_id=reader_id, version=1, consent_id=consent_id
    )
    for token in (tampered, wrong_purpose, other_key, "x" * 5000):
        client = site.client()
        assert client.get(f"/confirm/{token}").status_code == 400
        assert webforms.post_form(client, "/", f"/confirm/{token}", {}).status_code == 400
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.PENDING


class _EightDaysAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 8 * 86400


def test_expired_confirm_link_offers_a_fresh_one(site: Site) -> None:
    reader_id, consent_id = _pending(site)
    expired = URLSafeTimedSerializer(SECRET, salt="newsletter.confirm", signer=_EightDaysAgo).dumps(
        [reader_id, 1, consent_id]
    )
    client = site.client()
    page = client.get(f"/confirm/{expired}")
    assert page.status_code == 410 and "expired" in page.text
    assert (
        webforms.post_form(client, f"/confirm/{expired}", f"/confirm/{expired}", {}).status_code
        == 410
    )
    renewed = webforms.post_form(client, f"/confirm/{expired}", f"/confirm/{expired}/renew", {})
    assert renewed.status_code == 200 and "Check your email" in renewed.text
    with site.sessions() as session:
        newest = session.scalar(select(Consent.id).order_by(Consent.id.desc()))
    assert newest != consent_id
    assert site.queued() == [("newsletter.send_confirmation", [newest])]


# --- preference centre --------------------------------------------------------------------------


def _manage_token(reader_id: int, version: int = 1) -> str:
    return signer.make(Purpose.MANAGE, subscriber_id=reader_id, version=version)


def test_preference_centre_changes_frequency_pause_and_time_zone(site: Site) -> None:
    reader_id = site.active_reader()
    token = _manage_token(reader_id)
    client = site.client()
    page = client.get(f"/manage/{token}")
    assert page.status_code == 200 and "reader@example.org" in page.text
    data = {"frequency-mexico": "weekly", "frequency-migration": "off", "frequency-border-security": "immediate",
            "pause": "2", "timezone": "Europe/Berlin"}  # fmt: skip
    saved = webforms.post_form(client, f"/manage/{token}", f"/manage/{token}", data)
    assert saved.status_code == 200 and "saved" in saved.text
    with site.sessions() as session:
        reader = session.get(Subscriber, reader_id)
        assert reader is not None and reader.timezone == "Europe/Berlin"
        assert (
            reader.paused_until is not None
            and 13 <= (reader.paused_until - reader.created_at).days <= 14
        )
        rows = session.execute(
            select(Subscription.frequency).where(Subscription.subscriber_id == reader_id)
        ).scalars()
        assert sorted(f.value for f in rows) == ["immediate", "weekly"]


@pytest.mark.parametrize(
    "data",
    [
        {"frequency-mexico": "hourly"},
        {"frequency-mexico": "off", "frequency-migration": "off"},
        {"frequency-mexico": "daily", "timezone": "Mars/Olympus"},
        {"frequency-mexico": "daily", "pause": "52"},
        {"frequency-mexico": "daily\r\n"},
    ],
)
def test_preference_centre_refuses_bad_input(site: Site, data: dict[str, str]) -> None:
    reader_id = site.active_reader()
    token = _manage_token(reader_id)
    answer = webforms.post_form(
        site.client(),
        f"/manage/{token}",
        f"/manage/{token}",
        {"frequency-migration": "daily", **data} if "frequency-migration" not in data else data,
    )
    assert answer.status_code == 400
    with site.sessions() as session:
        rows = session.execute(
            select(Subscription.frequency).where(Subscription.subscriber_id == reader_id)
        ).scalars()
        assert sorted(f.value for f in rows) == ["daily", "daily"]


def test_preference_centre_needs_its_own_token_and_a_form_token(site: Site) -> None:
    reader_id = site.active_reader()
    unsubscribe_token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    assert site.client().get(f"/manage/{unsubscribe_token}").status_code == 400
    token = _manage_token(reader_id)
    assert (
        site.client().post(f"/manage/{token}", data={"frequency-mexico": "weekly"}).status_code
        == 400
    )


def test_revoking_links_kills_every_old_link(site: Site) -> None:
    reader_id = site.active_reader()
    token = _manage_token(reader_id)
    old_unsubscribe = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    client = site.client()
    revoked = webforms.post_form(client, f"/manage/{token}", f"/manage/{token}/revoke", {})
    assert revoked.status_code == 200
    assert site.client().get(f"/manage/{token}").status_code == 400
    assert site.client().post(f"/unsubscribe/{old_unsubscribe}").status_code == 400
    assert site.client().get(f"/manage/{_manage_token(reader_id, 2)}").status_code == 200
    assert ("newsletter.send_manage_link", [reader_id]) in site.queued()


# --- unsubscribe --------------------------------------------------------------------------------


def test_unsubscribe_get_never_unsubscribes(site: Site) -> None:
    reader_id = site.active_reader()
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    page = site.client().get(f"/unsubscribe/{token}")
    assert page.status_code == 200 and "Take a break" in page.text and "Fewer topics" in page.text
    assert page.text.count(">Unsubscribe</button>") == 1
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.ACTIVE


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart", "empty"])
def test_one_click_post_unsubscribes_without_cookie_or_csrf(site: Site, encoding: str) -> None:
    reader_id = site.active_reader()
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    client = site.client()
    if encoding == "urlencoded":
        answer = client.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    elif encoding == "multipart":
        answer = client.post(
            f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")}
        )
    else:
        answer = client.post(f"/unsubscribe/{token}")
    assert answer.status_code == 200 and "location" not in answer.headers
    assert "set-cookie" not in answer.headers
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.UNSUBSCRIBED
    assert site.count(Subscription) == 0
    # Twice is fine too (mail clients retry).
    assert client.post(f"/unsubscribe/{token}").status_code == 200


def test_forged_unsubscribe_token_changes_nothing(site: Site) -> None:
    reader_id = site.active_reader()
    forged = TokenSigner("another-secret-key-123456").make(
        Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1
    )
    assert site.client().post(f"/unsubscribe/{forged}").status_code == 400
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.ACTIVE


# --- privacy ------------------------------------------------------------------------------------


def test_download_my_data(site: Site) -> None:
    reader_id = site.active_reader()
    token = _manage_token(reader_id)
    answer = webforms.post_form(site.client(), f"/manage/{token}", f"/manage/{token}/export", {})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert "attachment" in answer.headers["content-disposition"]
    data = answer.json()
    assert data["reader"]["email"] == "reader@example.org"
    assert {s["topic"] for s in data["subscriptions"]} == {"mexico", "migration"}
    assert data["consents"][0]["topics"] == ["mexico", "migration"]
    assert data["emails"] == []


def test_erase_me_leaves_only_a_hashed_suppression(site: Site) -> None:
    reader_id = site.active_reader()
    token = _manage_token(reader_id)
    client = site.client()
    refused = webforms.post_form(client, f"/manage/{token}", f"/manage/{token}/erase", {})
    assert refused.status_code == 400 and site.count(Subscriber) == 1
    erased = webforms.post_form(
        client, f"/manage/{token}", f"/manage/{token}/erase", {"confirm": "yes"}
    )
    assert erased.status_code == 200 and "erased" in erased.text
    assert (
        site.count(Subscriber) == 0 and site.count(Consent) == 0 and site.count(Subscription) == 0
    )
    with site.sessions() as session:
        [entry] = session.scalars(select(Suppression)).all()
        assert entry.email_hash == readers.email_hash("reader@example.org")
        assert "reader@example.org" not in (entry.detail or "")
    # Erasure forgets the person, it does not blacklist the address: signing up again works
    # like a first sign-up, with its confirmation email.
    again = webforms.subscribe(site.client(), "reader@example.org", ["mexico"])
    assert again.status_code == 200 and "Check your email" in again.text
    site.apply()
    assert site.count(Subscriber) == 1 and site.count(Suppression) == 0
    [(task, _)] = site.mail_queued()
    assert task == "newsletter.send_confirmation"


def test_security_headers_on_pages(site: Site) -> None:
    page = site.client().get("/")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_publisher_templates_and_stylesheet_override_the_built_in_ones(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    override = tmp_path / "publisher"
    (override / "web").mkdir(parents=True)
    (override / "static").mkdir()
    (override / "web" / "check_email.html").write_text(
        '{% extends "base.html" %}{% block content %}Look in your inbox, friend.{% endblock %}'
    )
    (override / "static" / "style.css").write_text("body { background: papayawhip; }")
    custom = Site(
        tmp_path,
        database_url,
        redis_url,
        templates_dir=override,
        site_name="Wilson Updates",
        brand_color="#aa0000",
    )
    client = custom.client()
    assert "papayawhip" in client.get("/static/style.css").text
    assert "timezone" in client.get("/static/timezone.js").text  # not overridden: the built-in one
    page = client.get("/")
    assert "Wilson Updates" in page.text and "#aa0000" in page.text
    assert (
        "Look in your inbox, friend."
        in webforms.subscribe(client, "a@example.org", ["mexico"]).text
    )


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"a=1&" * 150, "application/x-www-form-urlencoded", "too many fields"),
        (b"email=" + b"x" * (1024 * 1024 + 1), "application/x-www-form-urlencoded", "too large"),
        (
            b'--B\r\nContent-Disposition: form-data; name="email"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n",
            "multipart/form-data; boundary=B",
            "uploads are not accepted",
        ),
    ],
)
def test_a_body_no_form_could_send_gets_a_clear_400(
    site: Site, body: bytes, content_type: str, message: str
) -> None:
    client = site.client()
    client.get("/")
    answer = client.post("/subscribe", content=body, headers={"Content-Type": content_type})
    # A body past the forms' limit is refused before it is read (413, issue #12).
    assert answer.status_code == (413 if message == "too large" else 400)
    assert message in answer.text.lower()
    assert "Traceback" not in answer.text and site.queued() == [] and site.count(Consent) == 0


def test_the_mailto_unsubscribe_token_unsubscribes_by_the_documented_operator_step(
    site: Site,
) -> None:
    """An email sent to the List-Unsubscribe mailto carries `unsubscribe-TOKEN` in its subject; the
    operator (README, "Unsubscribing by email") posts that TOKEN to /unsubscribe/TOKEN."""

    reader_id = site.active_reader()
    settings = site.settings.model_copy(update={"list_unsubscribe_mailto": "unsub@example.org"})
    links = reader_links(settings, signer, subscriber_id=reader_id, version=1)
    header = list_headers(settings, links)["List-Unsubscribe"]
    match = re.search(r"<mailto:unsub@example\.org\?subject=unsubscribe-([\w.-]+)>", header)
    assert match is not None and str(reader_id) != match[1]
    answer = site.client().post(
        f"/unsubscribe/{match[1]}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    reader = site.reader("reader@example.org")
    assert reader is not None and reader.status is SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_kept_answer_page_is_byte_for_byte_the_rendered_one(site: Site, language: str) -> None:
    """`page_with` keeps the "check your email" page's shape and puts each sign-up's values in:
    what it answers must be exactly what rendering the page would, escaping included."""
    from subscriptions.i18n import current_language

    runtime = site.app.state.runtime
    token = current_language.set(language)
    try:
        for email, back in [
            ("Tricky<b>&\"'@Example.org", None),
            ("plain@example.org", "https://blog.example.org/post?a=1&b=2"),
            ("plain@example.org", None),  # the kept shape, a second time
        ]:
            context = {
                "back": back,
                "back_host": "blog.example.org" if back else None,
                "framed": back is not None,
                "notice": None,
            }
            kept = runtime.page_with(
                "check_email.html", {"email": email, "receipt": "r.e-c_eipt"}, **context
            )
            rendered = runtime.page(
                "check_email.html", email=email, receipt="r.e-c_eipt", **context
            )
            assert kept.body == rendered.body
            assert (
                b"Tricky&lt;b&gt;&amp;&#34;&#39;@Example.org" in kept.body or "Tricky" not in email
            )
    finally:
        current_language.reset(token)
