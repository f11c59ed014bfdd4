"""Signed receipts that reader pages hand back to the reader: "send it again".

A receipt is what the page knows and the next request needs, signed with the app's secret for one
purpose (its own salt) and timed, so nothing has to be stored for a page the reader may never use. A
**resend** receipt carries a sign-up as it was admitted (or marked as a bot's, so that a bot's "check
your email" page looks the same and resends nothing); it works once and for a day.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import lru_cache

from subscriptions.errors import TokenInvalid
from subscriptions.intake import Entry
from subscriptions.web.sealed import Sealer

#: A resend receipt works for this long after the "check your email" page was shown.
RESEND_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class Resend:
    """A verified resend receipt: the sign-up to admit again (None for a bot's), single use."""

    entry: Entry | None
    nonce: str
    email_as_typed: str


class Receipts:
    """Makes and reads resend receipts with one secret key (sealed for this purpose only)."""

    def __init__(self, secret_key: str) -> None:
        self._sealer = Sealer(secret_key, "newsletter.resend")

    def resend(self, entry: Entry | None, *, email_as_typed: str, now: float | None = None) -> str:
        """A receipt to send the confirmation of `entry` again (None: a bot's, resends nothing)."""
        fields = entry.fields() if entry is not None else None
        return self._sealer.seal([secrets.token_hex(8), email_as_typed[:320], fields], now=now)

    def read_resend(self, receipt: str, *, now: float | None = None) -> Resend:
        """The receipt's sign-up, or TokenInvalid (forged, older than a day, malformed)."""
        try:
            nonce, typed, fields = self._sealer.open(receipt, max_age=RESEND_SECONDS, now=now)
            entry = Entry(**fields) if fields is not None else None
        except TokenInvalid:
            raise TokenInvalid("this link is not valid") from None
        except (TypeError, ValueError):
            raise TokenInvalid("this link is not valid") from None
        return Resend(entry, str(nonce), str(typed))


@lru_cache(maxsize=4)
def receipts_for(secret_key: str) -> Receipts:
    """The Receipts of an app's secret key, made once (its key is derived once)."""
    return Receipts(secret_key)
