"""Small signed, timed values for reader pages: form tokens and resend receipts.

`base64url(JSON [issued at, *items]) "." base64url(HMAC-SHA256, first 20 bytes)` under a key derived
from the app's secret for one purpose, so a value made for one purpose is refused by every other.
Every sign-up makes or reads two of them, so they cost one HMAC and orjson (itsdangerous, used
before, derived its key and tried zlib on every call: about a tenth of a sign-up's CPU; issue #12).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

import orjson

from subscriptions.errors import TokenExpired, TokenInvalid

#: Values longer than this are refused unread (form fields, not documents).
MAX_LENGTH = 4096
#: Clocks of two web servers may differ this much (seconds) before a value counts as from the future.
SKEW_SECONDS = 60


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


class Sealer:
    """Seals lists of JSON values for one purpose, and opens them within an age."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._key = hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:20]

    def seal(self, items: list[Any], *, now: float | None = None) -> str:
        """The sealed value of `items`, stamped with `now` (default: the time)."""
        body = _b64(orjson.dumps([int(time.time() if now is None else now), *items]))
        return (body + b"." + _b64(self._mac(body))).decode()

    def open(self, value: str, *, max_age: int, now: float | None = None) -> list[Any]:
        """The items sealed in `value`; TokenExpired past `max_age` seconds, TokenInvalid when
        forged, for another purpose, malformed or too long."""
        if not value or len(value) > MAX_LENGTH or not value.isascii():
            raise TokenInvalid("this value is not valid")
        body, _, mac = value.encode().rpartition(b".")
        try:
            if not body or not hmac.compare_digest(_unb64(mac), self._mac(body)):
                raise TokenInvalid("this value is not valid")
            issued, *items = orjson.loads(_unb64(body))
            age = (time.time() if now is None else now) - int(issued)
        except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
            raise TokenInvalid("this value is not valid") from None
        if age < -SKEW_SECONDS:
            raise TokenInvalid("this value is not valid")
        if age > max_age:
            raise TokenExpired("this value is too old")
        return items
