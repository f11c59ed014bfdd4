"""Operations on editors' digests: compose, change the audience, preview, test send, schedule, send
now, cancel, settle unknown outcomes, and pause or resume all sending.

The console, the API and the CLI call these and nothing else to change a digest (see
`subscriptions.operations`). A preview and a test send are rendered here, in the caller's
process: an editor waits for them. They use only the worker's pure parts (the renderer and the
provider that sends one message), imported lazily so that the reader pages never load them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscriptions import digests as store
from subscriptions import notices, unknowns
from subscriptions.digests import DigestSummary
from subscriptions.errors import InvalidInput, NotFound, RateLimited
from subscriptions.models import Editor, Subscriber, SubscriberStatus
from subscriptions.operations import UnitOfWork
from subscriptions.queue import SEND_DIGEST, SEND_EDITORIAL
from subscriptions.ratelimit import RateLimiter
from subscriptions.readers import normalize_email
from subscriptions.settings import Settings

if TYPE_CHECKING:
    from mail.bodies import DigestRenderer

#: Test copies per recipient, and in all, per hour: a test send is for looking, not for mailing.
TEST_SENDS_PER_ADDRESS = 10
TEST_SENDS_IN_ALL = 60
#: The longest reason kept for a pause of all sending.
MAX_PAUSE_REASON = 500


@dataclass(frozen=True, slots=True)
class Preview:
    """A digest as one reader gets it (links made inert)."""

    reader: str
    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class TestSent:
    """Where a test copy went, and as which reader it was rendered."""

    to: str
    as_reader: str


def compose(
    uow: UnitOfWork,
    *,
    subject: str,
    intro_markdown: str = "",
    post_ids: list[int] | None = None,
    topics: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    audience_topics: list[str] | None = None,
    everyone: bool = False,
    for_everyone: bool = False,
) -> DigestSummary:
    """A draft editor's digest (see `digests.create_editorial` for the audience rules)."""
    return store.create_editorial(
        session=uow.session,
        subject=subject,
        intro_markdown=intro_markdown.replace("\r\n", "\n"),
        post_ids=post_ids,
        topics=topics,
        since=since,
        until=until,
        audience_topics=audience_topics,
        everyone=everyone,
        for_everyone=for_everyone,
    )


def change_audience(
    uow: UnitOfWork,
    digest_id: int,
    *,
    audience_topics: list[str] | None = None,
    everyone: bool = False,
    for_everyone: bool = False,
) -> DigestSummary:
    """Change a draft's (or scheduled digest's) audience."""
    return store.change_audience(
        session=uow.session,
        digest_id=digest_id,
        audience_topics=audience_topics,
        everyone=everyone,
        for_everyone=for_everyone,
    )


def default_reader(*, session: Session) -> str | None:
    """The reader a preview or test copy is rendered as when the editor names nobody: the first
    active reader (the one definition the console, the API and the CLI share)."""
    return session.scalar(
        select(Subscriber.email)
        .where(Subscriber.status == SubscriberStatus.ACTIVE)
        .order_by(Subscriber.id)
        .limit(1)
    )


def _reader(session: Session, email: str | None) -> str:
    reader = (email or "").strip() or default_reader(session=session)
    if not reader:
        raise NotFound("there is no active reader to render as: give an address")
    return normalize_email(reader)


def preview(
    uow: UnitOfWork, settings: Settings, digest_id: int, *, email: str | None = None
) -> Preview:
    """Digest `digest_id` as reader `email` (default: `default_reader`) would get it; NotFound for
    an unknown digest or reader. Nothing changes."""
    from subscriptions.editorial import preview as render_preview

    address = _reader(uow.session, email)
    subject, rendered = render_preview(
        uow.session, _renderer(settings), settings, digest_id, address
    )
    return Preview(address, subject, rendered.html, rendered.text)


def send_test(
    uow: UnitOfWork,
    settings: Settings,
    digest_id: int,
    *,
    to: str,
    as_reader: str | None = None,
) -> TestSent:
    """Send the preview for `as_reader` (default: `default_reader`) to `to`, marked as a test.

    A test copy goes only to an editor's address or one in NEWSLETTER_TEST_SEND_ALLOWLIST
    (InvalidInput otherwise), at most TEST_SENDS_PER_ADDRESS an hour to each and
    TEST_SENDS_IN_ALL in all (RateLimited). InvalidInput when the provider does not take it (the
    provider's reason is in the message). Nothing is recorded.
    """
    from mail.providers import Outcome, provider_from_url
    from subscriptions.editorial import send_test as render_and_send

    address = normalize_email(to)
    reader = _reader(uow.session, as_reader)
    allowed = address in settings.test_send_allowed or uow.session.scalar(
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
            uow.session,
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
    return TestSent(to=address, as_reader=reader)


def schedule(
    uow: UnitOfWork, digest_id: int, *, at: datetime, expected_count: int
) -> DigestSummary:
    """Send a draft at `at`, for the `expected_count` recipients the editor confirmed
    (CountChanged, nothing changed, when that is no longer the count); beat plans it then."""
    return store.schedule(
        session=uow.session, digest_id=digest_id, at=at, expected_count=expected_count
    )


def send_now(uow: UnitOfWork, digest_id: int, *, expected_count: int) -> DigestSummary:
    """Send a draft now, for the `expected_count` recipients the editor confirmed: the digest is
    committed as due, then the worker is asked to plan and send it (SEND_EDITORIAL)."""
    summary = schedule(uow, digest_id, at=datetime.now(UTC), expected_count=expected_count)
    uow.later(SEND_EDITORIAL, digest_id)
    return summary


def cancel(uow: UnitOfWork, digest_id: int) -> DigestSummary:
    """Cancel a draft, scheduled or sending digest; what was sent stays sent."""
    return store.cancel(session=uow.session, digest_id=digest_id)


def settle_unknown(uow: UnitOfWork, digest_id: int, *, action: str) -> int:
    """Resend (`resend`: a reader may get two copies) or close (`close`) a digest's deliveries
    whose outcome is unknown; how many changed. A resend asks the worker to send them."""
    changed = unknowns.settle_unknown(session=uow.session, digest_id=digest_id, action=action)
    if action == "resend":
        uow.later(SEND_DIGEST, digest_id)
    return changed


def pause_reason(text: str | None, *, by: str) -> str:
    """The reason a pause of all sending is recorded with: the editor's words on one line, at
    most MAX_PAUSE_REASON characters, or "paused by <who>" when they gave none."""
    words = " ".join((text or "").split())[:MAX_PAUSE_REASON]
    return words or f"paused by {by}"


def pause_sending(uow: UnitOfWork, *, reason: str | None, by: str) -> str:
    """Stop all sending now (planned emails wait); the reason recorded (see `pause_reason`)."""
    message = pause_reason(reason, by=by)
    notices.raise_notice(session=uow.session, kind=notices.SENDING_PAUSED, message=message)
    return message


def resume_sending(uow: UnitOfWork) -> bool:
    """Resume sending; False when it was not paused."""
    return bool(notices.resolve(session=uow.session, kind=notices.SENDING_PAUSED))


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
