"""GET /metrics with real processes: a prefork worker's counters and the state read at scrape time."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from subscriptions.db import transaction
from tests import webforms
from tests.factories import active_reader, add_demo_topics, migrated_sessions
from tests.integration.conftest import free_port, newsletter, wait_for_files, wait_until_serving

pytestmark = pytest.mark.timeout(120)

TOKEN = "metrics-token-for-tests-0123456789"


def _value(text: str, sample: str) -> float:
    """The value of one sample line, e.g. 'newsletter_deliveries{state="sent"}'."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    assert match, f"{sample} not in:\n{text}"
    return float(match.group(1))


def test_metrics_need_the_token_and_count_across_worker_processes(
    tmp_path: Path, service_env: dict[str, str], start: Any
) -> None:
    env = {
        **service_env,
        "NEWSLETTER_METRICS_TOKEN": TOKEN,
        "NEWSLETTER_METRICS_DIR": str(tmp_path / "metrics"),
        "NEWSLETTER_LOG_FORMAT": "json",
    }
    sessions = migrated_sessions(env["NEWSLETTER_DATABASE_URL"])
    with transaction(sessions) as session:
        add_demo_topics(session)
        active_reader(session, "one@example.org", ["mexico"])
        active_reader(session, "two@example.org", ["mexico"])
    newsletter(
        "posts", "add", "Counted", "--link", "https://example.org/p/1", "--topic", "mexico", env=env
    )
    port = free_port()
    web = start(["web", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{base}/healthz", web)

    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "newsletter_" not in wrong.text
        # A sign-up answered and waiting in Redis: the intake backlog.
        answer = webforms.subscribe(client, "waiting@example.org", ["mexico"], "daily")
        assert answer.status_code == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        before = client.get("/metrics", headers=auth)
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        assert _value(before.text, "newsletter_intake_backlog") == 1
        assert _value(before.text, "newsletter_broker_up") == 1

        created = newsletter(
            "digest", "create", "--subject", "Counted digest", "--topic", "mexico",
            "--since", "2000-01-01T00:00+00:00", env=env,
        ).stdout  # fmt: skip
        newsletter(
            "digest", "send", created.split("\t", 1)[0], "--yes", "--expect-count", "2", env=env
        )
        # Prefork with two pool processes: the counts of each reach the web's /metrics.
        worker = start(["worker", "--concurrency", "2"], env)
        wait_for_files(tmp_path / "outbox", 3)  # two digest emails and one confirmation
        deadline = time.monotonic() + 30
        while True:
            text = client.get("/metrics", headers=auth).text
            # The counter (two digest emails and the confirmation) moves when the provider answers,
            # the ledger when the batch is recorded.
            if (
                'newsletter_emails_total{outcome="sent",provider="outbox"} 3.0' in text
                and 'newsletter_deliveries{state="sent"} 2.0' in text
            ):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
    assert _value(text, 'newsletter_deliveries{state="sent"}') == 2
    assert _value(text, "newsletter_intake_backlog") == 0
    assert _value(text, 'newsletter_queue_length{queue="newsletter"}') >= 0
    assert list((tmp_path / "metrics").glob("counter_*.db")), "no multiprocess files written"
    # NEWSLETTER_LOG_FORMAT=json: web and worker log records are JSON objects, one a line.
    for process in (web, worker):
        records = [
            json.loads(line) for line in process.output().splitlines() if line.startswith("{")
        ]
        assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
