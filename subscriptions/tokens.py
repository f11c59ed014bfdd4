"""Signed, purpose-bound tokens for reader links (confirm, manage, unsubscribe).

Each purpose has its own salt, so a token made for one purpose fails for every other. A token carries the
reader's id and token version: raising the version revokes every link issued before.
"""

from __future__ import annotations

import hmac
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.signer import HMACAlgorithm

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
        # Untimed tokens are signed with one HMAC per purpose whose key is derived once; itsdangerous
        # derives it again for every token, a third of the cost of a digest email's two links. The
        # bytes are the same as URLSafeSerializer.dumps (a test holds it).
        self._macs: dict[Purpose, tuple[Any, bytes]] = {}
        for purpose, serializer in self._serializers.items():
            signer = serializer.make_signer()
            if purpose not in TIMED and isinstance(signer.algorithm, HMACAlgorithm):
                mac = hmac.new(signer.derive_key(), digestmod=signer.algorithm.digest_method)
                self._macs[purpose] = (mac, signer.sep)

    def make(
        self, purpose: Purpose, *, subscriber_id: int, version: int, consent_id: int | None = None
    ) -> str:
        """A URL-safe token for one reader and one purpose."""
        payload: list[Any] = [subscriber_id, version]
        if consent_id is not None:
            payload.append(consent_id)
        cached = self._macs.get(purpose)
        if cached is None:
            return str(self._serializers[purpose].dumps(payload))
        base, sep = cached
        value = _payload(payload)
        mac = base.copy()
        mac.update(value)
        return (value + sep + base64_encode(mac.digest())).decode("ascii")

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


def _payload(numbers: list[int]) -> bytes:
    """URLSafeSerializer's payload of a list of integers: compact JSON, compressed if that is
    shorter, in URL-safe base64 (itsdangerous's dump_payload, without its generic JSON encoder)."""
    data = ("[" + ",".join(str(int(n)) for n in numbers) + "]").encode("ascii")
    # zlib adds 6 bytes, and "[", ",", "]" and the first digit are literals of 8 bits, plus 10 bits
    # of block header and end: never shorter than 12 bytes, so up to 13 it cannot win (and zlib's
    # set-up costs more than the rest of the token).
    if len(data) > 13:
        compressed = zlib.compress(data)
        if len(compressed) < len(data) - 1:
            return b"." + base64_encode(compressed)
    return base64_encode(data)


def _claims(purpose: Purpose, payload: Any) -> TokenClaims:
    if (
        not isinstance(payload, list)
        or len(payload) not in (2, 3)
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in payload)
    ):
        raise TokenInvalid("this link is not valid")
    consent_id = payload[2] if len(payload) == 3 else None
    return TokenClaims(purpose, payload[0], payload[1], consent_id)
