"""Crash points for tests: SIGKILL this worker's process group at a named step of the send pipeline.

Only tests set NEWSLETTER_TEST_CRASH_AT (it is not a setting: no deployment has a reason to use it,
so it is read here, once, and nowhere else). `step` or `step:N` kills the worker the Nth time
(default 1) it reaches `step`; an unset variable makes every crash point a no-op. Steps:

- `claimed`: the claim is committed, nothing rendered or handed over.
- `rate_limit`: while waiting for the rate limiter (before the hand-over).
- `request_left`: the request has left; the kill comes `NEWSLETTER_TEST_CRASH_DELAY` seconds
  (default 0.5) after the provider was called, while a test stand-in holds back its answer.
- `answered`: the provider's answer is in, the record not yet written.
- `recording`: the record is written but not committed.

The whole process group goes (`os.killpg`), as an operator's `kill -9` of a worker and its pool
would: tests start workers in a session of their own.
"""

from __future__ import annotations

import os
import signal
import threading

STEPS = ("claimed", "rate_limit", "request_left", "answered", "recording")

_raw = os.environ.get("NEWSLETTER_TEST_CRASH_AT", "")
_step, _, _count = _raw.partition(":")
_at = int(_count) if _count else 1
_seen = 0
_delay = float(os.environ.get("NEWSLETTER_TEST_CRASH_DELAY", "0.5")) if _raw else 0.0
if _step and _step not in STEPS:
    raise RuntimeError(
        f"NEWSLETTER_TEST_CRASH_AT: unknown step {_step!r} (known: {', '.join(STEPS)})"
    )


def _kill() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def crash_point(step: str) -> None:
    """Kill the worker here if a test asked for `step` (and this is its Nth arrival)."""
    global _seen
    if step != _step:
        return
    _seen += 1
    if _seen != _at:
        return
    if step == "request_left":
        # Called just before the provider: the request leaves while this timer runs.
        threading.Timer(_delay, _kill).start()
        return
    _kill()
