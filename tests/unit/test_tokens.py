"""Signed tokens: bound to purpose and reader, expiring, tamper-evident."""

from __future__ import annotations

import time

import pytest

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
