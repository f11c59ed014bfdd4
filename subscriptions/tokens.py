"""Signed, purpose-bound tokens for reader links (confirm, manage, unsubscribe).

Each purpose has its own salt, so a token made for one purpose fails for every other. A token carries the
reader's id and token version: raising the version revokes every link issued before.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from subscriptions.errors import TokenExpired, TokenInvalid


class Purpose(StrEnum):
    CONFIRM = "confirm"
    MANAGE = "manage"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says."""

    purpose: Purpose
    subscriber_id: int
    version: int
    consent_id: int | None = None


#: Purposes whose links expire carry a timestamp; the others are deterministic, so the same email
#: renders to the same bytes every time (an idempotent provider may then see a retry as the same request).
TIMED = frozenset({Purpose.CONFIRM})


class TokenSigner:
    """Makes and checks reader tokens with one secret key."""

    def __init__(self, secret_key: str) -> None:
        self._serializers: dict[Purpose, URLSafeSerializer | URLSafeTimedSerializer] = {
            purpose: (URLSafeTimedSerializer if purpose in TIMED else URLSafeSerializer)(
                secret_key, salt=f"newsletter.{purpose.value}"
            )
            for purpose in Purpose
        }

    def make(
        self, purpose: Purpose, *, subscriber_id: int, version: int, consent_id: int | None = None
    ) -> str:
        """A URL-safe token for one reader and one purpose."""
        payload: list[Any] = [subscriber_id, version]
        if consent_id is not None:
            payload.append(consent_id)
        return str(self._serializers[purpose].dumps(payload))

    def verify(self, purpose: Purpose, token: str, *, max_age_seconds: int | None) -> TokenClaims:
        """The claims of a valid token, or TokenInvalid / TokenExpired."""
        if len(token) > 512:
            raise TokenInvalid("this link is not valid")
        serializer = self._serializers[purpose]
        try:
            if isinstance(serializer, URLSafeTimedSerializer):
                payload = serializer.loads(token, max_age=max_age_seconds)
            else:
                payload = serializer.loads(token)
        except SignatureExpired as exc:
            claims = _claims(purpose, exc.payload and serializer.load_payload(exc.payload))
            raise TokenExpired("this link has expired", claims) from None
        except BadSignature:
            raise TokenInvalid("this link is not valid") from None
        return _claims(purpose, payload)


def _claims(purpose: Purpose, payload: Any) -> TokenClaims:
    if (
        not isinstance(payload, list)
        or len(payload) not in (2, 3)
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in payload)
    ):
        raise TokenInvalid("this link is not valid")
    consent_id = payload[2] if len(payload) == 3 else None
    return TokenClaims(purpose, payload[0], payload[1], consent_id)
