"""Each place that bumps a counter, driven for real, then read back through `GET /metrics`.

The call sites: webhook events by type (web/webhooks.py), feed polls by result (the poll task in
worker/tasks.py), rate-limiter waits (worker/ratelimit.py) and transactional emails by provider and
outcome (worker/reader_mail.py). The app and the code under test run in this process, so the scrape
adds up this process's counters (prometheus-client's single-process mode); each test compares the
sample before and after, so counts left by other tests in the same process do not matter.
tests/integration/test_metrics.py covers the multiprocess folder with real web and worker processes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import readers
from subscriptions.db import create_db_engine, session_factory, transaction
from subscriptions.feeds import add_feed
from subscriptions.metrics import MULTIPROC_ENV
from subscriptions.migrate import upgrade
from subscriptions.queue import POLL_FEED
from subscriptions.settings import Settings
from subscriptions.web.app import create_app
from tests import webhooksigning as signing
from tests.factories import add_demo_topics, make_settings
from tests.feedserver import FeedServer, Item, rss2
from worker import reader_mail
from worker.ratelimit import GlobalRateLimiter, Rate
from worker.runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "metrics-token-for-call-sites-0123456789"
POSTMARK_CREDENTIALS = "hooks:metrics pass"


@dataclass
class Site:
    settings: Settings
    sessions: sessionmaker[Session]
    client: TestClient

    def scrape(self) -> str:
        """The exposition, read the way Prometheus does: GET /metrics with the bearer token."""
        answer = self.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        return answer.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels in any order), 0.0 when the series does not exist yet."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


@pytest.fixture
def site(
    tmp_path: Path, database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    # This process's own counters are what the scrape must show (no multiprocess folder here).
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        broker_url=redis_url,
        metrics_token=TOKEN,
        metrics_dir=tmp_path / "metrics",
        webhook_postmark=POSTMARK_CREDENTIALS,
        feeds_allow_private_addresses=True,
    )
    upgrade(database_url)
    sessions = session_factory(create_db_engine(database_url))
    with transaction(sessions) as session:
        add_demo_topics(session)
    app = create_app(settings)
    with TestClient(app, base_url="https://news.example.org") as client:
        assert client.get("/metrics").status_code == 401  # the token is required
        yield Site(settings, sessions, client)
    app.state.runtime.engine.dispose()
    bind = sessions.kw.get("bind")
    if bind is not None:
        bind.dispose()


def test_a_verified_postmark_bounce_is_counted_by_type(site: Site) -> None:
    name = "newsletter_webhook_events_total"
    before = site.scrape()
    bounce = {
        "RecordType": "Bounce",
        "ID": 4242,
        "Type": "HardBounce",
        "MessageStream": "broadcast",
        "MessageID": "00000000-0000-4000-8000-00000000b0c5",
        "Email": "gone@example.org",
        "BouncedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 unknown user",
    }
    headers = {"Content-Type": "application/json", **signing.basic_auth(POSTMARK_CREDENTIALS)}
    # A call with the wrong credentials is refused and not counted.
    forged = {"Content-Type": "application/json", **signing.basic_auth("hooks:guessed")}
    refused = site.client.post("/webhooks/postmark", content=json.dumps(bounce), headers=forged)
    assert refused.status_code in (401, 403)
    answer = site.client.post("/webhooks/postmark", content=json.dumps(bounce), headers=headers)
    assert answer.status_code == 200 and answer.json()["received"] == 1, answer.text
    after = site.scrape()
    assert sample(after, name, provider="postmark", type="bounced") == (
        sample(before, name, provider="postmark", type="bounced") + 1
    )


def test_feed_polls_are_counted_ok_and_failed(site: Site) -> None:
    from worker.app import create_celery

    name = "newsletter_feed_polls_total"
    with FeedServer() as server:
        server.route("/ok.xml", body=rss2([Item("Counted post", link="https://example.org/p/1")]))
        server.route("/broken.xml", status=500, body=b"down")
        with transaction(site.sessions) as session:
            ok = add_feed(session=session, url=server.url("/ok.xml"), topic="mexico")
            broken = add_feed(session=session, url=server.url("/broken.xml"), topic="mexico")
        celery = create_celery(site.settings)
        try:
            poll = celery.tasks[POLL_FEED]
            before = site.scrape()
            poll(ok.id)
            between = site.scrape()
            poll(broken.id)
            after = site.scrape()
        finally:
            celery.runtime.close()
            celery.close()
        assert server.requests_for("/ok.xml") and server.requests_for("/broken.xml")
    assert sample(between, name, result="ok") == sample(before, name, result="ok") + 1
    assert sample(between, name, result="error") == sample(before, name, result="error")
    assert sample(after, name, result="error") == sample(between, name, result="error") + 1
    assert sample(after, name, result="ok") == sample(between, name, result="ok")


def test_a_rate_limiter_wait_on_redis_is_counted(site: Site) -> None:
    client = redis.Redis.from_url(site.settings.broker_url or "")
    try:
        # 5 requests/s (3 after the safety share): a second request right away must wait ~0.33 s.
        limiter = GlobalRateLimiter(
            client, "metrics-test", messages=Rate(1000.0), requests=Rate(5.0)
        )
        before = site.scrape()
        assert limiter.acquire(1) == 0.0
        between = site.scrape()
        started = time.monotonic()
        waited = limiter.acquire(1)
        assert waited > 0 and time.monotonic() - started >= waited * 0.9
        after = site.scrape()
    finally:
        client.close()
    waits, seconds = "newsletter_rate_limit_waits_total", "newsletter_rate_limit_wait_seconds_total"
    assert sample(between, waits) == sample(before, waits)  # no wait: not counted
    assert sample(after, waits) == sample(between, waits) + 1
    assert sample(after, seconds) == pytest.approx(sample(between, seconds) + waited)


def test_a_confirmation_email_is_counted_by_provider_and_outcome(
    site: Site, tmp_path: Path
) -> None:
    name = "newsletter_emails_total"
    with transaction(site.sessions) as session:
        signup = readers.subscribe(
            session=session,
            email="new.reader@example.org",
            topics=["mexico"],
            frequency=readers.Frequency.DAILY,
            timezone="UTC",
        )
    runtime = WorkerRuntime(site.settings)
    try:
        before = site.scrape()
        assert reader_mail.send_confirmation(runtime, signup.consent_id or 0).sent
        after = site.scrape()
    finally:
        runtime.close()
    assert len(list((tmp_path / "outbox").iterdir())) == 1
    assert sample(after, name, provider="outbox", outcome="sent") == (
        sample(before, name, provider="outbox", outcome="sent") + 1
    )
