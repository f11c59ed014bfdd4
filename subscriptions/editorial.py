"""Preview an editor's digest as a given reader, and send a test copy to an editor.

Previews and tests carry inert links (the generic preferences page) instead of the reader's own
signed links, so an editor who clicks around a test email cannot unsubscribe the reader. The store
reads the digest and the reader; `mail` renders and sends: the console, the API and the CLI call
these in their own process (an editor waits for the answer), never through the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import make_msgid
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from mail.bodies import DigestRenderer, Group, ReaderParts, group_posts, reasons_line
from mail.providers import EmailMessage, Provider, SendResult
from mail.rendering import RenderedEmail
from subscriptions.digests import every_post_to_each
from subscriptions.errors import NotFound
from subscriptions.models import (
    Digest,
    DigestKind,
    Post,
    Subscriber,
    Subscription,
    Topic,
    post_topics,
)
from subscriptions.settings import Settings


@dataclass(frozen=True, slots=True)
class ReaderCopy:
    """What digest `digest_id` would give one reader, as plain data for the renderer."""

    kind: str
    subject: str
    intro_markdown: str
    groups: tuple[Group, ...]
    subscriptions: tuple[tuple[str, str], ...]


def reader_copy(session: Session, digest_id: int, email: str) -> ReaderCopy:
    """The posts an editorial digest would give reader `email` (who need not be in its audience)."""
    digest = session.get(Digest, digest_id)
    if digest is None:
        raise NotFound(f"no digest {digest_id}")
    reader = session.scalar(select(Subscriber).where(Subscriber.email == email))
    if reader is None:
        raise NotFound(f"no reader {email}")
    post_ids = [int(p) for p in digest.options.get("post_ids", [])]
    rows: list[tuple[int, str, str, str, str]] = [
        (row[0], row[1], row[2], row[3], row[4])
        for row in session.execute(
            select(Post.id, Post.title, Post.link, Post.summary, Topic.name)
            .join(post_topics, post_topics.c.post_id == Post.id)
            .join(Topic, Topic.id == post_topics.c.topic_id)
            .where(Post.id.in_(post_ids))
            .order_by(Post.published_at.desc(), Post.id, Topic.name)
        )
    ]
    subscriptions = [
        (name, frequency.value)
        for name, frequency in session.execute(
            select(Topic.name, Subscription.frequency)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == reader.id)
        )
    ]
    if digest.kind is DigestKind.EDITORIAL and not every_post_to_each(digest.options):
        # As the planner plans it: only the posts of the reader's own topics.
        followed = {name for name, _ in subscriptions}
        kept = {row[0] for row in rows if row[4] in followed}
        rows = [row for row in rows if row[0] in kept]
    kind = digest.kind.value
    return ReaderCopy(
        kind=kind,
        subject=digest.subject,
        intro_markdown=digest.intro_markdown,
        groups=group_posts(kind, rows, subscriptions),
        subscriptions=tuple(sorted(subscriptions)),
    )


def preview(
    session: Session, renderer: DigestRenderer, settings: Settings, digest_id: int, email: str
) -> tuple[str, RenderedEmail]:
    """Subject and bodies of digest `digest_id` as reader `email` would get it (links made inert)."""
    copy = reader_copy(session, digest_id, email)
    body = renderer.body(
        copy.kind, copy.groups, intro_markdown=copy.intro_markdown, editorial_subject=copy.subject
    )
    inert = f"{settings.base_url}/manage"
    parts = ReaderParts(inert, inert, reasons_line(copy.subscriptions))
    return body.subject, renderer.personalize(body, parts)


def send_test(
    session: Session,
    renderer: DigestRenderer,
    settings: Settings,
    provider: Provider,
    digest_id: int,
    *,
    as_reader: str,
    to: str,
) -> SendResult:
    """Send the preview for `as_reader` to the editor at `to`, marked as a test; nothing is recorded."""
    subject, email = preview(session, renderer, settings, digest_id, as_reader)
    domain = urlsplit(settings.base_url).hostname or "localhost"
    message = EmailMessage(
        to=to,
        sender=settings.from_address,
        subject=f"[TEST] {subject}",
        text=email.text,
        html=email.html,
        message_id=make_msgid(idstring=f"test{digest_id}", domain=domain),
        metadata={"kind": "test"},
    )
    return provider.send([message])[0]
