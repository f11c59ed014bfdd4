"""Sending progress (subscriptions/digests.py Progress): it moves with the first outcome and says
in words what is happening, for the page's aria-live status line."""

from __future__ import annotations

from subscriptions.digests import Progress


def test_the_first_outcome_moves_the_bar_off_zero() -> None:
    waiting = Progress.from_counts("sending", {"planned": 3000, "pending": 2500, "claimed": 500})
    assert waiting.percent == 0 and waiting.claimed == 500 and waiting.waiting == 2500
    assert waiting.phase == "sending a batch of 500"
    first = Progress.from_counts("sending", {"planned": 3000, "sent": 1, "pending": 2999})
    assert first.percent == 1 and first.done == 1
    half = Progress.from_counts("sending", {"planned": 3000, "sent": 1500, "pending": 1500})
    assert half.percent == 50 and half.phase == "sending"


def test_phases_in_words() -> None:
    assert Progress.from_counts("sending", {"planned": 0}).phase == "planning"
    assert Progress.from_counts("scheduled", {"planned": 0}).phase == "scheduled"
    done = Progress.from_counts("sent", {"planned": 2, "sent": 2})
    assert done.percent == 100 and done.phase == "sent" and done.finished
