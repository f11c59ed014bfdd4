"""Per-reader links and the list headers every subscription email carries (RFC 2369, RFC 8058)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from subscriptions.settings import Settings
from subscriptions.tokens import Purpose, TokenSigner


@dataclass(frozen=True, slots=True)
class ReaderLinks:
    manage: str
    unsubscribe: str
    #: The signed unsubscribe token of `unsubscribe` (also the mailto: subject's token).
    unsubscribe_token: str = ""


def reader_links(
    settings: Settings, signer: TokenSigner, *, subscriber_id: int, version: int
) -> ReaderLinks:
    """The reader's own preference-centre and one-click unsubscribe URLs."""
    manage = signer.make(Purpose.MANAGE, subscriber_id=subscriber_id, version=version)
    unsubscribe = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=subscriber_id, version=version)
    return ReaderLinks(
        manage=f"{settings.base_url}/manage/{manage}",
        unsubscribe=f"{settings.base_url}/unsubscribe/{unsubscribe}",
        unsubscribe_token=unsubscribe,
    )


def list_id(settings: Settings) -> str:
    """`List-Id` of this newsletter: the site name and a stable id under the public host."""
    return _list_id(settings.base_url, settings.site_name)


@functools.lru_cache(maxsize=16)
def _list_id(base_url: str, site_name: str) -> str:
    # Cached: every email of a send carries the same, and parsing the URL each time is not free.
    host = urlsplit(base_url).hostname or "localhost"
    name = site_name.replace('"', "")
    return f'"{name}" <newsletter.{host}>'


def list_headers(settings: Settings, links: ReaderLinks) -> dict[str, str]:
    """List-Unsubscribe with the reader's one-click URL, List-Unsubscribe-Post, and List-Id.

    With NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO set, List-Unsubscribe also offers (RFC 2369, after the
    https URL) `mailto:ADDRESS?subject=unsubscribe-TOKEN`, TOKEN being the reader's signed
    unsubscribe token: opaque, unforgeable, and the same one `POST /unsubscribe/{TOKEN}` accepts, which
    is how an operator acts on a mail that arrives there (see README, "Unsubscribing by email").
    """
    unsubscribe = f"<{links.unsubscribe}>"
    if settings.list_unsubscribe_mailto and links.unsubscribe_token:
        mailto = settings.list_unsubscribe_mailto
        unsubscribe += f", <mailto:{mailto}?subject=unsubscribe-{links.unsubscribe_token}>"
    return {
        "List-Unsubscribe": unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id(settings),
    }
