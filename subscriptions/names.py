"""Names that editors type (topics, feed categories, editors, tokens, digest subjects): one line of
printable text.

A name ends up in mail headers (a digest's Subject, an alert's "[Topic] title") and on pages. A
CR, LF or Unicode line separator in it injects nothing (the mail layer refuses such headers), but
every email built from it is then refused, one "request_wrong" notice at a time: refuse it where
it is typed instead. Bidirectional overrides are refused too; they make a name read differently
from what it is.
"""

from __future__ import annotations

import unicodedata

from subscriptions.errors import InvalidInput

#: Unicode categories never allowed in a name: controls (C0, C1, DEL), line and paragraph separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
#: Bidirectional embedding, override and isolate controls (category Cf, but unsafe in a name).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def forbidden_character(value: str) -> str | None:
    """The first character a name may not hold, or None."""
    for char in value:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES or char in BIDI_CONTROLS:
            return char
    return None


def check_name(value: str, *, what: str, field: str, max_length: int = 200) -> str:
    """`value` without outer spaces when it is 1 to `max_length` printable characters on one line;
    else InvalidInput naming `what` and the character refused."""
    value = value.strip()
    bad = forbidden_character(value)
    if bad is not None:
        raise InvalidInput(
            f"{what}: control characters and line breaks are not allowed (found U+{ord(bad):04X})",
            field=field,
        )
    if not value or len(value) > max_length:
        raise InvalidInput(f"{what}: give 1 to {max_length} characters", field=field)
    return value
