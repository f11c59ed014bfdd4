"""Fixed-window counters and single-use markers in Redis, shared by every web process."""

from __future__ import annotations

import hashlib
import logging
import time

import redis

log = logging.getLogger(__name__)


class RateLimiter:
    """Counts hits per key per window; with no Redis configured, every check passes.

    A Redis outage lets requests through (and logs it): sign-ups stay open, and the per-address cap
    on confirmation emails, kept in the database, still holds.
    """

    def __init__(self, url: str | None, *, prefix: str = "nl") -> None:
        self._client = (
            redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            if url and url.startswith(("redis://", "rediss://", "unix://"))
            else None
        )
        self._prefix = prefix

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def hit(self, scope: str, key: str, *, limit: int, window_seconds: int = 3600) -> int | None:
        """Count one hit; None while under `limit`, else seconds until the window resets."""
        if self._client is None:
            return None
        window = int(time.time() // window_seconds)
        name = f"{self._prefix}:rl:{scope}:{_digest(key)}:{window}"
        try:
            pipe = self._client.pipeline()
            pipe.incr(name)
            pipe.expire(name, window_seconds + 60)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable: %s", type(exc).__name__)
            return None
        if count > limit:
            return (window + 1) * window_seconds - int(time.time())
        return None

    def first_use(self, scope: str, key: str, *, ttl_seconds: int) -> bool:
        """True the first time `key` is seen within `ttl_seconds`, False on every repeat."""
        if self._client is None:
            return True
        try:
            return bool(
                self._client.set(
                    f"{self._prefix}:once:{scope}:{_digest(key)}", 1, nx=True, ex=ttl_seconds
                )
            )
        except redis.RedisError as exc:
            log.warning("replay check unavailable: %s", type(exc).__name__)
            return True


def _digest(key: str) -> str:
    # Keys hold addresses and IPs: store a digest, not the personal data.
    return hashlib.sha256(key.encode()).hexdigest()[:32]
