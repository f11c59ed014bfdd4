"""Digest previews and test sends for the console and the API, rendered in the web process.

An editor waits for these answers, so they run here rather than through the broker. They use the
store's `subscriptions.editorial` and the `mail` package (the renderer and the provider that sends
one test message), never the worker. Imported lazily, so the reader pages never load them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions.errors import InvalidInput, RateLimited
from subscriptions.models import Editor, Subscriber, SubscriberStatus
from subscriptions.ratelimit import RateLimiter
from subscriptions.readers import normalize_email
from subscriptions.settings import Settings

if TYPE_CHECKING:
    from mail.bodies import DigestRenderer

#: Test copies per recipient, and in all, per hour: a test send is for looking, not for mailing.
TEST_SENDS_PER_ADDRESS = 10
TEST_SENDS_IN_ALL = 60


@dataclass(frozen=True, slots=True)
class Preview:
    """A digest as one reader gets it (links made inert)."""

    reader: str
    subject: str
    html: str
    text: str


def default_reader(*, session: Session) -> str | None:
    """The first active reader, to preview as when the editor names nobody."""
    return session.scalar(
        select(Subscriber.email)
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .order_by(Subscriber.id)
        .limit(1)
    )


def preview(*, session: Session, settings: Settings, digest_id: int, email: str) -> Preview:
    """Digest `digest_id` as reader `email` would get it; NotFound for an unknown digest or reader."""
    from subscriptions.editorial import preview as render_preview

    address = normalize_email(email)
    subject, rendered = render_preview(session, _renderer(settings), settings, digest_id, address)
    return Preview(address, subject, rendered.html, rendered.text)


def send_test(
    *, session: Session, settings: Settings, digest_id: int, as_reader: str, to: str
) -> str:
    """Send the preview for `as_reader` to `to`, marked as a test; the address it went to.

    A test copy goes only to an editor's address or one in NEWSLETTER_TEST_SEND_ALLOWLIST
    (InvalidInput otherwise), at most TEST_SENDS_PER_ADDRESS an hour to each and
    TEST_SENDS_IN_ALL in all (RateLimited). InvalidInput when the provider does not take it (the
    provider's reason is in the message).
    """
    from mail.providers import Outcome, provider_from_url
    from subscriptions.editorial import send_test as render_and_send

    address = normalize_email(to)
    reader = normalize_email(as_reader)
    allowed = address in settings.test_send_allowed or session.scalar(
        select(Editor.id).where(Editor.email == address, Editor.disabled_at.is_(None))
    )
    if not allowed:
        raise InvalidInput(
            "a test copy goes only to an editor's address"
            " or to one listed in NEWSLETTER_TEST_SEND_ALLOWLIST",
            field="to",
        )
    _count_test_send(settings, address)
    with provider_from_url(settings.email) as provider:
        result = render_and_send(
            session,
            _renderer(settings),
            settings,
            provider,
            digest_id,
            as_reader=reader,
            to=address,
        )
    if result.outcome is not Outcome.SENT:
        raise InvalidInput(
            f"the test send failed: {result.outcome.value}: {result.detail}", field="to"
        )
    return address


def _count_test_send(settings: Settings, address: str) -> None:
    limiter = RateLimiter(settings.broker_url)
    try:
        retry = limiter.hit("test-send", address, limit=TEST_SENDS_PER_ADDRESS) or limiter.hit(
            "test-send-all", "", limit=TEST_SENDS_IN_ALL
        )
    finally:
        if limiter.client is not None:
            limiter.client.close()
    if retry is not None:
        raise RateLimited(
            f"too many test sends; try again in {retry // 60 + 1} minutes", retry_after=retry
        )


def _renderer(settings: Settings) -> DigestRenderer:
    from mail.bodies import DigestRenderer
    from subscriptions.templating import template_environment

    return DigestRenderer(template_environment(settings, "email"))
