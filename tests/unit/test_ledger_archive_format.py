"""The archive's block format (subscriptions/ledger_archive.py): what goes in comes out, per reader."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime

import pytest

from subscriptions import ledger_archive as archive


def entry(reader: int) -> dict[str, object]:
    return {
        "subscriber": reader,
        "delivery": 9_000_000_000 + reader,  # past 32 bits, as BIGINT ids get
        "status": "failed" if reader % 7 == 0 else "sent",
        "attempts": 1 + reader % 3,
        "planned": archive._micros(datetime(2026, 3, 1, 7, 0, 0, 123456, tzinfo=UTC)),
        "sent": None if reader % 7 == 0 else 1_772_348_400_000_001 + reader,
        "message_id": None if reader % 7 == 0 else f"id-{reader:08x}",
        "error": "550 5.1.1 no such user" if reader % 7 == 0 else "",
        "posts": [3, 5] if reader % 2 else [3],
        "events": [reader * 10] if reader % 5 == 0 else [],
    }


def test_every_reader_of_a_block_is_found_as_it_went_in_and_no_other() -> None:
    readers = [0, 1, 2, 7, 100, 511, 1023]
    blob = archive._pack([entry(r) for r in readers])
    assert archive._unpack(blob) == [entry(r) for r in readers]
    for reader in readers:
        assert archive._find(blob, reader) == entry(reader)
    for absent in (3, 99, 101, 1022, 5000):
        assert archive._find(blob, absent) is None
    email = archive._email(4, entry(7))
    assert email.planned_at == datetime(2026, 3, 1, 7, 0, 0, 123456, tzinfo=UTC)
    assert (email.status, email.sent_at, email.last_error) == (
        "failed",
        None,
        "550 5.1.1 no such user",
    )


def test_an_unknown_format_is_refused_not_misread() -> None:
    blob = zlib.compress(json.dumps({"v": 99, "subscriber": [1]}).encode())
    with pytest.raises(ValueError, match="unknown format 99"):
        archive._find(blob, 1)


def test_ages() -> None:
    assert archive.parse_age(" 90D ").days == 90
    assert archive.parse_age("30m").total_seconds() == 1800
    with pytest.raises(ValueError, match="90d, 12h or 30m"):
        archive.parse_age("ninety days")
