"""Preview an editor's digest as a given reader, and send a test copy to an editor.

Previews and tests carry inert links (the generic preferences page) instead of the reader's own
signed links, so an editor who clicks around a test email cannot unsubscribe the reader.
"""

from __future__ import annotations

from email.utils import make_msgid
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from mail.bodies import DigestRenderer, ReaderParts, reasons_line
from mail.providers import EmailMessage, Provider, SendResult
from mail.rendering import RenderedEmail
from subscriptions.settings import Settings
from worker.digests.jobs import preview_job


def preview(
    session: Session, renderer: DigestRenderer, settings: Settings, digest_id: int, email: str
) -> tuple[str, RenderedEmail]:
    """Subject and bodies of digest `digest_id` as reader `email` would get it (links made inert)."""
    info, job = preview_job(session, digest_id, email)
    body = renderer.body(
        info.kind, job.groups, intro_markdown=info.intro_markdown, editorial_subject=info.subject
    )
    inert = f"{settings.base_url}/manage"
    parts = ReaderParts(inert, inert, reasons_line(job.subscriptions))
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
