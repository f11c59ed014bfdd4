"""Pages that tell the reader where they stand, over HTTP against the real database and Redis.

Check-your-email names the address and resends (rate-limited, the same page for every address);
a complaint-suppressed address is told it cannot sign up and whom to write to; the unsubscribe page
offers a pause, and leaving can be undone for 30 days without a new opt-in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from subscriptions import readers, suppressions
from subscriptions.errors import NotFound
from subscriptions.models import Consent, Frequency, Subscriber, SubscriberStatus, Subscription
from subscriptions.tokens import Purpose
from tests import webforms
from tests.integration.test_reader_pages import Site, signer

RECEIPT = re.compile(r'name="receipt" value="([^"]+)"')


@pytest.fixture
def site(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Site]:
    s = Site(tmp_path, database_url, redis_url)
    yield s
    s.app.state.runtime.engine.dispose()
    s.worker.runtime.engine.dispose()


def _receipt(text: str) -> str:
    found = RECEIPT.search(text)
    assert found, "no receipt on the page"
    return found.group(1)


def test_check_your_email_names_the_address_and_sends_it_again_until_the_limit(
    site: Site,
) -> None:
    client = site.client()
    page = webforms.subscribe(client, "  Typed.Reader@Example.ORG ", ["mexico"])
    assert page.status_code == 200
    assert '<strong class="address">Typed.Reader@Example.ORG</strong>' in page.text
    assert "Send the email again" in page.text
    site.apply()
    assert [task for task, _ in site.mail_queued()] == ["newsletter.send_confirmation"]

    receipt = _receipt(page.text)
    again = client.post("/subscribe/resend", data={"receipt": receipt})
    assert again.status_code == 200 and "We sent the email again" in again.text
    assert "Typed.Reader@Example.ORG" in again.text
    site.apply()
    assert len(site.mail_queued()) == 2 and site.count(Consent) == 2
    # A receipt works once: pressed again (a double click), the same answer and nothing more ...
    twice = client.post("/subscribe/resend", data={"receipt": receipt})
    assert twice.status_code == 200 and "We sent the email again" in twice.text
    site.apply()
    assert len(site.mail_queued()) == 2 and site.count(Consent) == 2
    # ... and a forged one not at all.
    forged = client.post("/subscribe/resend", data={"receipt": receipt[:-2] + "xx"})
    assert forged.status_code == 400 and site.count(Consent) == 2
    # Each resend counts against the address's hourly limit (5): the 6th sign-up is refused.
    receipt = _receipt(again.text)
    for _ in range(3):
        answer = client.post("/subscribe/resend", data={"receipt": receipt})
        assert answer.status_code == 200
        receipt = _receipt(answer.text)
    over = client.post("/subscribe/resend", data={"receipt": receipt})
    assert over.status_code == 429 and "This address was signed up too many times" in over.text
    site.apply()
    # At most 3 confirmation emails a day to one address, however often it is asked.
    assert len(site.mail_queued()) == readers.CONFIRMATIONS_PER_DAY


def test_a_complaint_suppressed_address_is_told_whom_to_write_to(site: Site) -> None:
    with site.sessions.begin() as session:
        readers.suppress(session=session, email="angry@example.org", reason="complaint")
    answer = webforms.subscribe(site.client(), "Angry@Example.org", ["mexico"])
    assert answer.status_code == 403
    assert "cannot sign up this address" in answer.text
    assert 'href="mailto:news@example.org"' in answer.text
    site.apply()
    assert site.reader("angry@example.org") is None and site.mail_queued() == []


def _two_topic_reader(site: Site) -> int:
    reader_id = site.active_reader("leaver@example.org", ("mexico", "migration"))
    with site.sessions.begin() as session:
        readers.update_preferences(
            session=session,
            subscriber_id=reader_id,
            frequencies={"mexico": Frequency.IMMEDIATE, "migration": Frequency.WEEKLY},
        )
    return reader_id


def _frequencies(site: Site, reader_id: int) -> dict[int, str]:
    with site.sessions() as session:
        return {
            s.topic_id: s.frequency.value
            for s in session.scalars(
                select(Subscription).where(Subscription.subscriber_id == reader_id)
            )
        }


def test_unsubscribe_page_offers_a_pause_instead(site: Site) -> None:
    reader_id = _two_topic_reader(site)
    before = _frequencies(site, reader_id)
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    client = site.client()
    page = client.get(f"/unsubscribe/{token}")
    manage = re.search(r'href="(/manage/[^"]+)"', page.text)
    assert manage is not None and "Your preferences" in client.get(manage.group(1)).text
    bad = webforms.post_form(
        client, f"/unsubscribe/{token}", f"/unsubscribe/{token}/pause", {"weeks": "9"}
    )
    assert bad.status_code == 400 and "Choose how long to pause" in bad.text
    paused = webforms.post_form(
        client, f"/unsubscribe/{token}", f"/unsubscribe/{token}/pause", {"weeks": "2"}
    )
    assert paused.status_code == 200 and "Email is paused" in paused.text
    reader = site.reader("leaver@example.org")
    assert reader is not None and reader.status is SubscriberStatus.ACTIVE
    assert reader.paused_until is not None
    until = reader.paused_until
    left = (until if until.tzinfo else until.replace(tzinfo=UTC)) - readers.utcnow()
    assert timedelta(days=13, hours=23) < left <= timedelta(days=14)
    assert _frequencies(site, reader_id) == before


def test_leaving_can_be_undone_once_without_a_new_opt_in(site: Site) -> None:
    reader_id = _two_topic_reader(site)
    before = _frequencies(site, reader_id)
    other = site.active_reader("other@example.org")
    consents = site.count(Consent)
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=reader_id, version=1)
    client = site.client()
    gone = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert gone.status_code == 200 and "Within 30 days" in gone.text
    assert f'action="/unsubscribe/{token}/undo"' in gone.text
    assert _frequencies(site, reader_id) == {}
    # Days later, the same link from the email still offers the undo (it is kept in the database).
    later = site.client().get(f"/unsubscribe/{token}")
    assert "You are unsubscribed" in later.text and "Undo: subscribe me again" in later.text
    # Another reader's link undoes nothing of this one (they have nothing to undo).
    other_token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=other, version=1)
    assert client.post(f"/unsubscribe/{other_token}/undo").status_code == 400
    undone = site.client().post(f"/unsubscribe/{token}/undo")
    assert undone.status_code == 200 and "You are subscribed again" in undone.text
    assert "Mexico" in undone.text and "Migration" in undone.text
    reader = site.reader("leaver@example.org")
    assert reader is not None and reader.status is SubscriberStatus.ACTIVE
    assert reader.unsubscribed_at is None and reader.left_subscriptions is None
    assert _frequencies(site, reader_id) == before  # each topic at its own frequency
    assert site.count(Consent) == consents and site.mail_queued() == []  # no new opt-in
    # Once only.
    twice = client.post(f"/unsubscribe/{token}/undo")
    assert twice.status_code == 400 and "can no longer be undone" in twice.text
    assert _frequencies(site, reader_id) == before
    # A forged link undoes nothing.
    assert client.post(f"/unsubscribe/{token[:-3]}abc/undo").status_code == 400


def test_undo_ends_after_30_days_with_a_suppression_and_with_a_new_confirmation(
    site: Site,
) -> None:
    reader_id = _two_topic_reader(site)
    with site.sessions.begin() as session:
        removed = readers.unsubscribe(session=session, subscriber_id=reader_id)
    assert len(removed) == 2
    reader = site.reader("leaver@example.org")
    assert reader is not None and reader.unsubscribed_at is not None
    left_at = reader.unsubscribed_at.replace(tzinfo=UTC)
    with site.sessions.begin() as session:
        assert readers.can_undo_unsubscribe(reader, now=left_at + timedelta(days=29))
        assert not readers.can_undo_unsubscribe(reader, now=left_at + timedelta(days=30, minutes=1))
        with pytest.raises(NotFound):
            readers.undo_unsubscribe(
                session=session,
                subscriber_id=reader_id,
                now=left_at + timedelta(days=30, minutes=1),
            )
    # Signing up again and confirming is a new opt-in: the old choice is no longer kept.
    with site.sessions.begin() as session:
        signup = readers.subscribe(
            session=session,
            email="leaver@example.org",
            topics=["refugees"],
            frequency=Frequency.DAILY,
            timezone="UTC",
        )
        assert signup.consent_id is not None
        readers.confirm(
            session=session, consent_id=signup.consent_id, subscriber_id=reader_id, token_version=1
        )
    reader = site.reader("leaver@example.org")
    assert reader is not None and reader.left_subscriptions is None
    with site.sessions.begin() as session:
        readers.unsubscribe(session=session, subscriber_id=reader_id)
        readers.suppress(session=session, email="leaver@example.org", reason="complaint")
    with site.sessions.begin() as session, pytest.raises(NotFound):
        readers.undo_unsubscribe(session=session, subscriber_id=reader_id)
    assert _frequencies(site, reader_id) == {}
    with site.sessions() as session:
        found = session.scalar(select(Subscriber).where(Subscriber.id == reader_id))
        assert found is not None and found.status is SubscriberStatus.SUPPRESSED


def test_a_lifted_suppression_no_longer_blocks_though_the_web_still_remembers_it(
    site: Site,
) -> None:
    with site.sessions.begin() as session:
        readers.suppress(session=session, email="bounced@example.org", reason="hard_bounce")
    client = site.client()
    assert webforms.subscribe(client, "bounced@example.org", ["mexico"]).status_code == 403
    with site.sessions.begin() as session:
        [entry] = suppressions.list_suppressions(session=session).items
        suppressions.remove_suppression(session=session, suppression_id=entry.id)
    # The web process's copy still holds the key (until its next full read); the database says no.
    runtime = site.app.state.runtime
    assert runtime.suppressed.may_be_blocked("bounced@example.org")
    answer = webforms.subscribe(client, "bounced@example.org", ["mexico"])
    assert answer.status_code == 200 and "Check your email" in answer.text
    site.apply()
    assert [task for task, _ in site.mail_queued()] == ["newsletter.send_confirmation"]
