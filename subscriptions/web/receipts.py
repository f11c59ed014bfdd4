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
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from subscriptions.errors import TokenInvalid
from subscriptions.intake import Entry

#: A resend receipt works for this long after the "check your email" page was shown.
RESEND_SECONDS = 86400
#: Receipts longer than this are refused unread (a form field, not a document).
MAX_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class Resend:
    """A verified resend receipt: the sign-up to admit again (None for a bot's), single use."""

    entry: Entry | None
    nonce: str
    email_as_typed: str


class Receipts:
    """Makes and reads resend receipts with one secret key."""

    def __init__(self, secret_key: str) -> None:
        self._resend = URLSafeTimedSerializer(secret_key, salt="newsletter.resend")

    def resend(self, entry: Entry | None, *, email_as_typed: str) -> str:
        """A receipt to send the confirmation of `entry` again (None: a bot's, resends nothing)."""
        payload: dict[str, Any] = {"n": secrets.token_hex(8), "t": email_as_typed[:320]}
        if entry is not None:
            payload["e"] = entry.dumps()
        return str(self._resend.dumps(payload))

    def read_resend(self, receipt: str) -> Resend:
        """The receipt's sign-up, or TokenInvalid (forged, older than a day, malformed)."""
        payload = self._load(self._resend, receipt, RESEND_SECONDS)
        try:
            entry = Entry.loads(payload["e"]) if "e" in payload else None
            return Resend(entry, str(payload["n"]), str(payload["t"]))
        except (KeyError, TypeError, ValueError):
            raise TokenInvalid("this link is not valid") from None

    @staticmethod
    def _load(serializer: URLSafeTimedSerializer, receipt: str, max_age: int) -> dict[str, Any]:
        if not receipt or len(receipt) > MAX_LENGTH:
            raise TokenInvalid("this link is not valid")
        try:
            payload = serializer.loads(receipt, max_age=max_age)
        except BadSignature:  # SignatureExpired included
            raise TokenInvalid("this link is not valid") from None
        if not isinstance(payload, dict):
            raise TokenInvalid("this link is not valid")
        return payload


@lru_cache(maxsize=4)
def receipts_for(secret_key: str) -> Receipts:
    """The Receipts of an app's secret key, made once (its serializers derive keys)."""
    return Receipts(secret_key)
