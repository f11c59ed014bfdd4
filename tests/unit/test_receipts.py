"""Resend receipts: signed for their one purpose, timed, and refused when anything is off."""

from __future__ import annotations

import time

import pytest

from subscriptions.errors import TokenExpired, TokenInvalid
from subscriptions.intake import Entry
from subscriptions.web.receipts import RESEND_SECONDS, Receipts
from subscriptions.web.sealed import Sealer

ENTRY = Entry(
    email="lectora@ejemplo.es",
    topics=["mexico", "refugees"],
    frequency="weekly",
    timezone="America/Mexico_City",
    ip="203.0.113.9",
    source="subscribe form",
    user_agent="Mozilla/5.0 (\u00e9)",
    wording="I agree",
    at="2026-12-05T00:00:00+00:00",
    language="es",
)


def test_a_receipt_gives_back_the_entry_the_address_as_typed_and_a_nonce() -> None:
    receipts = Receipts("s" * 32)
    read = receipts.read_resend(receipts.resend(ENTRY, email_as_typed="Lectora@Ejemplo.es"))
    assert read.entry == ENTRY and read.email_as_typed == "Lectora@Ejemplo.es"
    other = receipts.read_resend(receipts.resend(ENTRY, email_as_typed="x"))
    assert len(read.nonce) == 16 and read.nonce != other.nonce  # each page's receipt is its own
    bot = receipts.read_resend(receipts.resend(None, email_as_typed="bot@example.org"))
    assert bot.entry is None


def test_a_receipt_works_for_a_day_only() -> None:
    receipts = Receipts("s" * 32)
    made = time.time() - RESEND_SECONDS - 5
    stale = receipts.resend(ENTRY, email_as_typed="a@b.org", now=made)
    assert receipts.read_resend(stale, now=made + RESEND_SECONDS - 1).entry == ENTRY
    with pytest.raises(TokenInvalid):
        receipts.read_resend(stale)
    future = receipts.resend(ENTRY, email_as_typed="a@b.org", now=time.time() + 3600)
    with pytest.raises(TokenInvalid):
        receipts.read_resend(future)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r[:-2] + ("AA" if not r.endswith("AA") else "BB"),  # the signature
        lambda r: "x" + r[1:] if r[0] != "x" else "y" + r[1:],  # the body
        lambda r: r.replace(".", ""),  # no separator
        lambda r: "",
        lambda r: "\u00e9" + r,  # not ASCII
        lambda r: r + "A" * 5000,  # too long
        lambda r: "bm90IGpzb24." + r.rpartition(".")[2],  # another body under this signature
    ],
)
def test_a_changed_or_malformed_receipt_is_refused(change: object) -> None:
    receipts = Receipts("s" * 32)
    receipt = receipts.resend(ENTRY, email_as_typed="a@b.org")
    with pytest.raises(TokenInvalid):
        receipts.read_resend(change(receipt))  # type: ignore[operator]


def test_a_receipt_of_another_secret_is_refused() -> None:
    receipt = Receipts("a" * 32).resend(ENTRY, email_as_typed="a@b.org")
    with pytest.raises(TokenInvalid):
        Receipts("b" * 32).read_resend(receipt)


def test_a_value_sealed_for_another_purpose_is_refused() -> None:
    """A form token (same secret, purpose "newsletter.csrf") is no resend receipt, nor the reverse."""
    form_token = Sealer("s" * 32, "newsletter.csrf").seal(["cookie", "nonce", 0.0])
    with pytest.raises(TokenInvalid):
        Receipts("s" * 32).read_resend(form_token)
    receipt = Receipts("s" * 32).resend(ENTRY, email_as_typed="a@b.org")
    with pytest.raises(TokenInvalid):
        Sealer("s" * 32, "newsletter.csrf").open(receipt, max_age=60)


def test_a_sealed_value_past_its_age_is_expired_not_just_invalid() -> None:
    sealer = Sealer("s" * 32, "newsletter.csrf")
    value = sealer.seal(["x"], now=1_000_000)
    assert sealer.open(value, max_age=60, now=1_000_059) == ["x"]
    with pytest.raises(TokenExpired):
        sealer.open(value, max_age=60, now=1_000_061)
