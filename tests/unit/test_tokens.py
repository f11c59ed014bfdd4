"""Signed tokens: bound to purpose and reader, expiring, tamper-evident."""

from __future__ import annotations

import random
import time

import pytest
from itsdangerous import URLSafeSerializer

from subscriptions.errors import TokenExpired, TokenInvalid
from subscriptions.tokens import Purpose, TokenSigner

signer = TokenSigner("test-secret-key-0123456789abcdef")


def test_round_trip_carries_reader_version_and_consent() -> None:
    token = signer.make(Purpose.CONFIRM, subscriber_id=7, version=2, consent_id=11)
    claims = signer.verify(Purpose.CONFIRM, token, max_age_seconds=60)
    assert (claims.subscriber_id, claims.version, claims.consent_id) == (7, 2, 11)


def test_wrong_purpose_is_refused() -> None:
    token = signer.make(Purpose.UNSUBSCRIBE, subscriber_id=7, version=1)
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.CONFIRM, token, max_age_seconds=None)
    with pytest.raises(TokenInvalid):
        signer.verify(Purpose.MANAGE, token, max_age_seconds=None)


def test_tampered_and_foreign_tokens_are_refused() -> None:
    token = signer.make(Purpose.MANAGE, subscriber_id=7, version=1)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (
        flipped,
        token + "x",
        "",
        "x" * 600,
        TokenSigner("another-key-0123456789").make(Purpose.MANAGE, subscriber_id=7, version=1),
    ):
        with pytest.raises(TokenInvalid):
            signer.verify(Purpose.MANAGE, bad, max_age_seconds=None)


def test_expired_token_says_whose_it_was() -> None:
    token = signer.make(Purpose.CONFIRM, subscriber_id=9, version=1, consent_id=3)
    time.sleep(2.1)  # itsdangerous counts whole seconds
    with pytest.raises(TokenExpired) as caught:
        signer.verify(Purpose.CONFIRM, token, max_age_seconds=1)
    assert caught.value.claims is not None


def test_untimed_tokens_are_the_bytes_itsdangerous_makes() -> None:
    """Signing with a key derived once gives exactly URLSafeSerializer's tokens, for every size of
    payload (long ones are compressed by itsdangerous)."""
    secret = "s" * 40
    signer = TokenSigner(secret)
    for purpose in (Purpose.MANAGE, Purpose.UNSUBSCRIBE):
        reference = URLSafeSerializer(secret, salt=f"newsletter.{purpose.value}")
        rng = random.Random(6)
        cases = [(1, 0, None), (10**12, 7, 3), (1111111111, 1111111111, 11111)]
        cases += [
            (rng.randint(1, 10 ** rng.randint(1, 12)), rng.randint(0, 12), None)
            for _ in range(2000)
        ]
        cases += [
            (int("1" * rng.randint(1, 12)), int("1" * rng.randint(1, 3)), None) for _ in range(500)
        ]
        for subscriber_id, version, consent in cases:
            payload = [subscriber_id, version] + ([consent] if consent is not None else [])
            token = signer.make(
                purpose, subscriber_id=subscriber_id, version=version, consent_id=consent
            )
            assert token == reference.dumps(payload)
            assert (
                signer.verify(purpose, token, max_age_seconds=None).subscriber_id == subscriber_id
            )
