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
        # Without Redis (one process, e.g. tests), single-use markers are kept in memory.
        self._local: dict[str, float] = {}
        self._local_values: dict[str, tuple[str, float]] = {}

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> redis.Redis | None:
        """The Redis connection pool, shared with the sign-up intake."""
        return self._client

    def counter_key(self, scope: str, key: str, *, window_seconds: int = 3600) -> tuple[str, int]:
        """The Redis key `hit` counts in for this window, and the seconds until the window ends."""
        now = time.time()
        window = int(now // window_seconds)
        name = f"{self._prefix}:rl:{scope}:{_digest(key)}:{window}"
        return name, max(1, (window + 1) * window_seconds - int(now))

    def once_key(self, scope: str, key: str) -> str:
        """The Redis key `first_use` sets for `key`."""
        return f"{self._prefix}:once:{scope}:{_digest(key)}"

    def hit(self, scope: str, key: str, *, limit: int, window_seconds: int = 3600) -> int | None:
        """Count one hit; None while under `limit`, else seconds until the window resets."""
        if self._client is None:
            return None
        name, retry_after = self.counter_key(scope, key, window_seconds=window_seconds)
        try:
            pipe = self._client.pipeline()
            pipe.incr(name)
            pipe.expire(name, window_seconds + 60)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("rate limiter unavailable: %s", type(exc).__name__)
            return None
        if count > limit:
            return retry_after
        return None

    def first_use(self, scope: str, key: str, *, ttl_seconds: int) -> bool:
        """True the first time `key` is seen within `ttl_seconds`, False on every repeat."""
        if self._client is None:
            now = time.monotonic()
            if len(self._local) > 10_000:
                self._local = {k: t for k, t in self._local.items() if t > now}
            name = f"{scope}:{_digest(key)}"
            if self._local.get(name, 0.0) > now:
                return False
            self._local[name] = now + ttl_seconds
            return True
        try:
            return bool(self._client.set(self.once_key(scope, key), 1, nx=True, ex=ttl_seconds))
        except redis.RedisError as exc:
            log.warning("replay check unavailable: %s", type(exc).__name__)
            return True

    def bind_once(self, scope: str, key: str, value: str, *, ttl_seconds: int) -> bool:
        """Bind `key` to `value` for `ttl_seconds`: True when new or bound to the same value.

        A provider may retry the identical call (same key, same value); the same key with another
        value is a signature lifted onto a different message.
        """
        digest = hashlib.sha256(value.encode()).hexdigest()
        if self._client is None:
            now = time.monotonic()
            name = f"bind:{scope}:{_digest(key)}"
            held = self._local_values.get(name)
            if held is not None and held[1] > now:
                return held[0] == digest
            self._local_values[name] = (digest, now + ttl_seconds)
            return True
        name = f"{self._prefix}:bind:{scope}:{_digest(key)}"
        try:
            if self._client.set(name, digest, nx=True, ex=ttl_seconds):
                return True
            held_value = self._client.get(name)
        except redis.RedisError as exc:
            log.warning("replay check unavailable: %s", type(exc).__name__)
            return True
        return held_value is None or held_value.decode() == digest

    def is_bound(self, scope: str, key: str, value: str) -> bool:
        """True when `bind_once` bound `key` to `value` (and it has not expired); binds nothing."""
        digest = hashlib.sha256(value.encode()).hexdigest()
        if self._client is None:
            held = self._local_values.get(f"bind:{scope}:{_digest(key)}")
            return held is not None and held[1] > time.monotonic() and held[0] == digest
        try:
            held_value = self._client.get(f"{self._prefix}:bind:{scope}:{_digest(key)}")
        except redis.RedisError as exc:
            log.warning("replay check unavailable: %s", type(exc).__name__)
            return False
        return held_value is not None and held_value.decode() == digest


def _digest(key: str) -> str:
    # Keys hold addresses and IPs: store a digest, not the personal data.
    return hashlib.sha256(key.encode()).hexdigest()[:32]
