"""Signed receipts that reader pages hand back to the reader: "send it again".

A receipt is what the page knows and the next request needs, signed with the app's secret for one
purpose (its own salt) and timed, so nothing has to be stored for a page the reader may never use. A
**resend** receipt carries a sign-up as it was admitted (or marked as a bot's, so that a bot's "check
your email" page looks the same and resends nothing); it works once and for a day.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import orjson

from subscriptions.errors import TokenInvalid
from subscriptions.intake import Entry

#: A resend receipt works for this long after the "check your email" page was shown.
RESEND_SECONDS = 86400
#: Receipts longer than this are refused unread (a form field, not a document).
MAX_LENGTH = 4096
#: What the receipt's key is derived for: a receipt is no token of any other purpose.
PURPOSE = b"newsletter.resend"


@dataclass(frozen=True, slots=True)
class Resend:
    """A verified resend receipt: the sign-up to admit again (None for a bot's), single use."""

    entry: Entry | None
    nonce: str
    email_as_typed: str


class Receipts:
    """Makes and reads resend receipts with one secret key.

    A receipt is `base64url(JSON [issued at, nonce, address as typed, entry or null]) "." base64url(
    HMAC-SHA256 of that, first 20 bytes)`, under a key derived from the secret for this purpose
    only. Every sign-up's answer page carries one, so it is made with orjson and one HMAC (about a
    tenth of itsdangerous' cost, which derived its key and compressed on every call; issue #12).
    """

    def __init__(self, secret_key: str) -> None:
        self._key = hmac.new(secret_key.encode(), PURPOSE, hashlib.sha256).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:20]

    def resend(self, entry: Entry | None, *, email_as_typed: str, now: float | None = None) -> str:
        """A receipt to send the confirmation of `entry` again (None: a bot's, resends nothing)."""
        issued = int(time.time() if now is None else now)
        payload = [
            issued,
            secrets.token_hex(8),
            email_as_typed[:320],
            entry.fields() if entry else None,
        ]
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
        mac = base64.urlsafe_b64encode(self._mac(body)).rstrip(b"=")
        return (body + b"." + mac).decode()

    def read_resend(self, receipt: str, *, now: float | None = None) -> Resend:
        """The receipt's sign-up, or TokenInvalid (forged, older than a day, malformed)."""
        if not receipt or len(receipt) > MAX_LENGTH or not receipt.isascii():
            raise TokenInvalid("this link is not valid")
        body, _, mac = receipt.encode().rpartition(b".")
        try:
            given = base64.urlsafe_b64decode(mac + b"=" * (-len(mac) % 4))
            if not body or not hmac.compare_digest(given, self._mac(body)):
                raise TokenInvalid("this link is not valid")
            issued, nonce, typed, fields = orjson.loads(
                base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
            )
            entry = Entry(**fields) if fields is not None else None
        except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
            raise TokenInvalid("this link is not valid") from None
        age = (time.time() if now is None else now) - int(issued)
        if not -60 <= age <= RESEND_SECONDS:
            raise TokenInvalid("this link is not valid")
        return Resend(entry, str(nonce), str(typed))


@lru_cache(maxsize=4)
def receipts_for(secret_key: str) -> Receipts:
    """The Receipts of an app's secret key, made once (its key is derived once)."""
    return Receipts(secret_key)
