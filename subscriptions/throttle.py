"""Sign-in throttling: growing delays per (address, client IP), and a short one per address.

A fixed cap on failures per address locks its owner out too: ten wrong passwords from anywhere
and the admin could not sign in for 15 minutes, even with the right one. Here failures are
counted per (address, client IP): the attacker's own pair waits 1, 2, 4 ... seconds (up to
PAIR_CAP) between tries, and nobody else is affected by it. Failures from everywhere together
only slow an address down by at most ADDRESS_CAP seconds, which bounds a spread-out attack
without keeping the right password out: it works from any other place after that short wait.

The counts live in Redis (shared by every web process), or in memory without one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

#: Failures of one (address, IP) pair allowed without delay, then 1, 2, 4 ... seconds up to the cap.
PAIR_FREE = 3
PAIR_CAP = 15 * 60.0
#: Failures of one address (from anywhere) allowed without delay; then at most ADDRESS_CAP seconds.
ADDRESS_FREE = 10
ADDRESS_CAP = 10.0
#: How long failures are remembered after the last one.
MEMORY_SECONDS = 24 * 3600


def delay(failures: int, *, free: int, cap: float) -> float:
    """Seconds to wait after `failures` failures in a row."""
    return 0.0 if failures < free else min(cap, 2.0 ** (failures - free))


class LoginThrottle:
    """How long a sign-in for (address, IP) must wait, and the record of its failures."""

    def __init__(
        self, client: redis.Redis | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._clock = clock
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, address: str, ip: str) -> float:
        """0 when a sign-in may be tried now, else the seconds left to wait."""
        now = self._clock()
        pair = self._read(_key("pair", address, ip))
        whole = self._read(_key("address", address))
        ready = max(
            pair[1] + delay(pair[0], free=PAIR_FREE, cap=PAIR_CAP),
            whole[1] + delay(whole[0], free=ADDRESS_FREE, cap=ADDRESS_CAP),
        )
        return max(0.0, ready - now)

    def failed(self, address: str, ip: str) -> None:
        """Count a wrong password (or unknown address) for the pair and for the address."""
        for key in (_key("pair", address, ip), _key("address", address)):
            self._bump(key)

    def succeeded(self, address: str, ip: str) -> None:
        """A right password clears the pair's and the address's failures."""
        keys = [_key("pair", address, ip), _key("address", address)]
        if self._client is None:
            with self._lock:
                for key in keys:
                    self._local.pop(key, None)
            return
        try:
            self._client.delete(*keys)
        except redis.RedisError as exc:
            log.warning("sign-in throttle unavailable: %s", type(exc).__name__)

    def _read(self, key: str) -> tuple[int, float]:
        if self._client is None:
            with self._lock:
                return self._local.get(key, (0, 0.0))
        try:
            failures, last = self._client.hmget(key, ["failures", "last"])
        except redis.RedisError as exc:
            log.warning("sign-in throttle unavailable: %s", type(exc).__name__)
            return 0, 0.0
        return int(failures or 0), float(last or 0.0)

    def _bump(self, key: str) -> None:
        now = self._clock()
        if self._client is None:
            with self._lock:
                if len(self._local) > 10_000:
                    self._local.clear()
                failures, _ = self._local.get(key, (0, 0.0))
                self._local[key] = (failures + 1, now)
            return
        try:
            pipe = self._client.pipeline()
            pipe.hincrby(key, "failures", 1)
            pipe.hset(key, "last", repr(now))
            pipe.expire(key, MEMORY_SECONDS)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("sign-in throttle unavailable: %s", type(exc).__name__)


def _key(kind: str, *parts: str) -> str:
    # Addresses and IPs are personal data: keep a digest.
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]
    return f"nl:signin:{kind}:{digest}"
