"""Unknown outcomes are reported and settled by an admin (issue #11, point 5).

A Postmark stand-in accepts a batch and drops the connection before answering: the deliveries are
`unknown` (Postmark has no idempotency key, so they are not resent by themselves). A notice per
digest gives the count and the reason; `newsletter digest status`, the console's digest report and
the API show them; an admin resends them (the readers may then get two copies) or closes them,
through one store operation (subscriptions/unknowns.py: settle_unknown).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import DigestRenderer
from subscriptions.models import Delivery, Notice
from subscriptions.notices import open_notices
from subscriptions.settings import Settings
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from subscriptions.unknowns import CLOSED, UNKNOWN_OUTCOMES
from tests import webforms
from tests.consoles import Console
from tests.factories import SECRET
from tests.integration.conftest import newsletter
from tests.integration.test_delivery import add_readers, plan_alert, postmark
from tests.providerserver import Fault, ProviderServer
from worker.digests.sender import Sender

READERS = 4


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer(token="test-token") as s:
        yield s


@pytest.fixture
def console(tmp_path: Path, database_url: str, redis_url: str) -> Console:
    return Console(tmp_path, database_url, redis_url)


def sender_for(
    sessions: sessionmaker[Session], settings: Settings, server: ProviderServer
) -> Sender:
    renderer = DigestRenderer(template_environment(settings, "email"))
    return Sender(sessions, postmark(server), renderer, settings, TokenSigner(SECRET))


def unknown_digest(console: Console, server: ProviderServer) -> tuple[int, Sender]:
    """A planned alert whose one batch reached Postmark and lost its answer."""
    with console.sessions.begin() as session:
        add_readers(session, READERS)
    digest_id = plan_alert(console.sessions)
    sender = sender_for(console.sessions, console.settings, server)
    server.faults.append(Fault(drop_after_accepting=True))
    report = sender.send_batch(digest_id)
    assert report.counts == {"unknown": READERS}
    return digest_id, sender


def statuses(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return {status.value: int(n) for status, n in rows}


def test_a_notice_per_digest_and_the_cli_shows_and_closes_them(
    console: Console, server: ProviderServer, service_env: dict[str, str]
) -> None:
    digest_id, sender = unknown_digest(console, server)
    with console.sessions() as session:
        [notice] = open_notices(session=session)
    assert notice.kind == UNKNOWN_OUTCOMES
    assert notice.message.startswith(f"Digest {digest_id}: {READERS} deliveries have an unknown")
    assert "no answer, the request may have been accepted" in notice.message  # the reason
    env = {**service_env, "NEWSLETTER_DATABASE_URL": console.settings.database_url}
    status = newsletter("digest", "status", str(digest_id), env=env).stdout
    assert f"unknown={READERS}" in status
    assert f"unknown\t{READERS}\t" in status and "--resend" in status
    assert "unknown_outcomes" in newsletter("notices", env=env).stdout
    refused = newsletter("digest", "unknown", str(digest_id), env=env, check=False)
    assert refused.returncode != 0 and "--resend or --close" in refused.stderr
    closed = newsletter("digest", "unknown", str(digest_id), "--close", env=env).stdout
    assert f"{READERS} deliveries closed" in closed
    assert statuses(console.sessions) == {"unknown": READERS}  # still truthfully unknown
    with console.sessions() as session:
        assert open_notices(session=session) == []
        errors = set(session.scalars(select(Delivery.last_error)))
    assert errors == {CLOSED}
    assert sender.send_batch(digest_id).claimed == 0
    assert len(server.accepted) == READERS  # nothing resent


def test_the_api_resends_for_admins_only_stating_the_risk(
    console: Console, server: ProviderServer
) -> None:
    digest_id, sender = unknown_digest(console, server)
    path = f"/api/v1/digests/{digest_id}/unknown"
    answer = console.api("editor").post(path, json={"action": "resend"})
    assert answer.status_code == 403
    assert console.api().post(path, json={"action": "later"}).status_code == 422
    assert statuses(console.sessions) == {"unknown": READERS}
    answer = console.api().post(path, json={"action": "resend"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] == READERS and answer.json()["unknown"] == 0
    assert statuses(console.sessions) == {"pending": READERS}
    with console.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Notice).where(
            Notice.kind == UNKNOWN_OUTCOMES, Notice.resolved_at.is_(None))) == 0  # fmt: skip
    assert sender.send_batch(digest_id).counts == {"sent": READERS}
    # What the admin was told: the provider had sent them, so each reader now has two.
    assert {server.delivered_to(a.to) for a in server.accepted} == {2}


def test_the_console_report_shows_them_and_an_admin_closes_them(
    console: Console, server: ProviderServer
) -> None:
    digest_id, _ = unknown_digest(console, server)
    page = f"/admin/digests/{digest_id}"
    editor = console.signed_in("editor@example.org", "editor")
    shown = editor.get(page).text
    assert f"Outcome unknown: {READERS}" in shown and "Resend" not in shown  # admins only
    refused = editor.post(f"{page}/unknown", data={"action": "close"})
    assert refused.status_code == 403
    admin = console.signed_in()
    assert "a reader may get two copies" in admin.get(page).text
    bad = webforms.post_form(admin, page, f"{page}/unknown", {"action": "maybe"})
    assert bad.status_code == 400 and "resend" in bad.text
    done = webforms.post_form(admin, page, f"{page}/unknown", {"action": "close"})
    assert done.status_code == 303
    after = admin.get(done.headers["location"]).text
    assert "closed: not resent" in after and CLOSED in after
    assert statuses(console.sessions) == {"unknown": READERS}
