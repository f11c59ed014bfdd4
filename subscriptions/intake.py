"""The sign-up intake: a sign-up is checked at the door in one Redis round trip, applied later in bulk.

`POST /subscribe` answers the same page whatever the database holds for an address (nothing may reveal
whether it is known), so the answer need not wait for the database at all. The web process validates
the form and the address, then one Lua script in Redis, atomically:

1. marks the form's nonce as used (a replayed form is refused),
2. counts the hit against the client IP's and the address's hourly limits (over either: refused),
3. appends the sign-up to the stream ``<prefix>:signups``,
4. sets a short-lived "kick" key and reports whether it was already set.

When the kick key was not set, the web process enqueues one `newsletter.apply_signups` task, so under
load the broker sees one message per batch, not one per sign-up. The worker (`apply_pending`) reads
the stream through a consumer group, applies each entry with `readers.subscribe` — the same code the
synchronous path runs — in one transaction per batch, then acknowledges and deletes the entries and
queues the confirmation emails. Exactly once: each consent row stores its entry id (`intake_key`,
unique), so an entry redelivered after a crash (claimed from a dead consumer after
`RECLAIM_IDLE_MS`) is skipped. Beat runs the same task every few seconds as a backstop.

Doing the database work after the answer also removes a timing difference between known and unknown
addresses. Without Redis (a single process, tests) the web applies sign-ups synchronously instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, cast

import orjson
import redis
import redis.asyncio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import readers
from subscriptions.models import Consent, Frequency, Topic

log = logging.getLogger(__name__)

#: A stream entry delivered to a consumer but not acknowledged for this long is taken over.
RECLAIM_IDLE_MS = 60_000
#: Entries applied per transaction.
BATCH = 500
#: While this key lives, sign-ups do not enqueue another apply task (one is already on its way).
KICK_SECONDS = 5
GROUP = "appliers"

# KEYS: nonce marker, IP counter, address counter, stream, kick key.
# ARGV: nonce ttl, IP limit, address limit, counter ttl, entry JSON, kick ttl, entry fingerprint.
# Returns {status, kick}: status 0 accepted, 1 replayed form, 2 IP over its limit, 3 address over
# its limit, 4 the same sign-up sent again with the same form (a double click, or Back and send):
# it was admitted the first time, so the answer is the same and nothing more is queued.
_DOOR = """
if not redis.call('SET', KEYS[1], '-', 'NX', 'EX', ARGV[1]) then
  if redis.call('GET', KEYS[1]) == ARGV[7] then return {4, 0} end
  return {1, 0}
end
local by_ip = redis.call('INCR', KEYS[2])
if by_ip == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if by_ip > tonumber(ARGV[2]) then return {2, 0} end
local by_address = redis.call('INCR', KEYS[3])
if by_address == 1 then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
if by_address > tonumber(ARGV[3]) then return {3, 0} end
redis.call('XADD', KEYS[4], '*', 'p', ARGV[5])
redis.call('SET', KEYS[1], ARGV[7], 'EX', ARGV[1])
if redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[6]) then return {0, 1} end
return {0, 0}
"""


class Door(Enum):
    """What the door decided about one sign-up."""

    ACCEPTED = 0
    REPLAYED = 1
    IP_LIMITED = 2
    ADDRESS_LIMITED = 3
    #: The form was spent on this very sign-up before: answer as then, queue nothing.
    ADMITTED_BEFORE = 4


@dataclass(frozen=True, slots=True)
class Entry:
    """One sign-up as queued: everything `readers.subscribe` needs, already validated."""

    email: str
    topics: list[str]
    frequency: str
    timezone: str
    ip: str | None
    source: str
    user_agent: str
    wording: str
    at: str  # ISO 8601, UTC: when the reader sent the form
    #: The language of the page the reader signed up on (None in entries queued before it existed).
    language: str | None = None

    def fields(self) -> dict[str, Any]:
        """The entry as a plain dict (what `Entry(**fields)` takes back); cheaper than asdict."""
        return {name: getattr(self, name) for name in _ENTRY_FIELDS}

    def dumps(self) -> str:
        return orjson.dumps(self.fields()).decode()

    def fingerprint(self) -> str:
        """What the person asked for (address, topics, frequency), as a digest: a form sent twice
        with the same fingerprint is one sign-up sent twice, not a replay of the form."""
        chosen = "\0".join([self.email, ",".join(self.topics), self.frequency])
        return hashlib.sha256(chosen.encode()).hexdigest()[:32]

    @classmethod
    def loads(cls, raw: str | bytes) -> Entry:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("entry is not an object")
        return cls(**data)


_ENTRY_FIELDS = tuple(Entry.__slots__)


@dataclass(frozen=True, slots=True)
class Admission:
    door: Door
    #: True when the caller should enqueue an apply task (no kick was pending).
    kick: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    """What one `apply_pending` call did."""

    applied: int
    skipped: int
    dropped: int
    confirmations: list[int]


class Intake:
    """Both ends of the sign-up stream, on one Redis database.

    The door is asynchronous (it runs on the web server's event loop, with its own connection
    pool made on first use); the applier is synchronous (a worker task).
    """

    def __init__(self, url: str, *, prefix: str = "nl") -> None:
        self._url = url
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix
        self.stream = f"{prefix}:signups"
        self.kick_key = f"{prefix}:signups:kick"
        self.dead_stream = f"{prefix}:signups:dead"
        self._door = self._client.register_script(_DOOR)
        self._async_door: Any = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, url: str | None, *, prefix: str = "nl") -> Intake | None:
        """An intake on the Redis at `url`, or None when `url` is not a Redis URL."""
        if not url or not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        return cls(url, prefix=prefix)

    # --- the door (web) ------------------------------------------------------------------------

    def _door_args(
        self,
        entry: Entry,
        *,
        nonce_key: str,
        nonce_ttl: int,
        ip_key: str,
        ip_limit: int,
        address_key: str,
        address_limit: int,
        window_seconds: int,
    ) -> dict[str, list[Any]]:
        return {
            "keys": [nonce_key, ip_key, address_key, self.stream, self.kick_key],
            "args": [
                nonce_ttl,
                ip_limit,
                address_limit,
                window_seconds + 60,
                entry.dumps(),
                KICK_SECONDS,
                entry.fingerprint(),
            ],
        }

    async def admit_async(self, entry: Entry, **limits: Any) -> Admission:
        """`admit` on the caller's event loop; raises `redis.RedisError` when Redis fails."""
        loop = asyncio.get_running_loop()
        if self._async_door is None or self._async_loop is not loop:
            # Connections belong to one event loop: uvicorn keeps one per process, test clients
            # may start a new one per request.
            # One pool per loop, and the script registered once (EVALSHA, EVAL when Redis lost it).
            # redis.asyncio with hiredis was as fast as the hand-written client it replaced (which
            # was 3 % and 15 % slower in two runs, bench/README.md): the project keeps one client.
            script = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=2, socket_connect_timeout=2
            ).register_script(_DOOR)
            self._async_door = lambda keys, args: script(keys=keys, args=args)
            self._async_loop = loop
        status, kick = await self._async_door(**self._door_args(entry, **limits))
        return Admission(Door(int(status)), bool(kick))

    def admit(self, entry: Entry, **limits: Any) -> Admission:
        """Run the door script (`limits`: the keywords of `_door_args`); raises
        `redis.RedisError` when Redis cannot be reached."""
        status, kick = cast("list[int]", self._door(**self._door_args(entry, **limits)))
        return Admission(Door(int(status)), bool(kick))

    # --- the applier (worker) --------------------------------------------------------------------

    def _ensure_group(self) -> None:
        try:
            self._client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(
        self, consumer: str, count: int, reclaim_idle_ms: int
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """Entries of dead consumers first, then new ones; at most `count`."""
        claimed = self._client.xautoclaim(
            self.stream, GROUP, consumer, min_idle_time=reclaim_idle_ms, start_id="0", count=count
        )
        entries = [(_text(i), f) for i, f in claimed[1] if f]
        if len(entries) < count:
            fresh = self._client.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count - len(entries)
            )
            for _, items in fresh or []:
                entries.extend((_text(i), f) for i, f in items)
        return entries

    def backlog(self) -> int:
        """Entries waiting in the stream (applied ones are deleted)."""
        return int(self._client.xlen(self.stream))

    def apply_pending(
        self,
        sessions: sessionmaker[Session],
        *,
        consumer: str | None = None,
        batch: int = BATCH,
        max_batches: int | None = None,
        reclaim_idle_ms: int = RECLAIM_IDLE_MS,
        on_confirmation: Callable[[int], object] | None = None,
    ) -> Applied:
        """Apply queued sign-ups until the stream has none left (or `max_batches` ran).

        Each batch is one transaction; its entries are acknowledged only after the commit, and
        `on_confirmation(consent_id)` is called for each confirmation email that is due.
        """
        consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._ensure_group()
        total = Applied(0, 0, 0, [])
        batches = 0
        while max_batches is None or batches < max_batches:
            # Clear the kick before reading: a sign-up admitted from now on kicks a new task,
            # and one admitted before is found by the read below.
            self._client.delete(self.kick_key)
            entries = self._read(consumer, batch, reclaim_idle_ms)
            if not entries:
                break
            batches += 1
            done = self._apply_batch(sessions, entries)
            self._client.xack(self.stream, GROUP, *[i for i, _ in entries])
            self._client.xdel(self.stream, *[i for i, _ in entries])
            if on_confirmation is not None:
                for consent_id in done.confirmations:
                    on_confirmation(consent_id)
            total = Applied(
                total.applied + done.applied,
                total.skipped + done.skipped,
                total.dropped + done.dropped,
                total.confirmations + done.confirmations,
            )
        return total

    def _apply_batch(
        self, sessions: sessionmaker[Session], entries: list[tuple[str, dict[bytes, bytes]]]
    ) -> Applied:
        parsed: list[tuple[str, Entry]] = []
        dropped = 0
        for entry_id, fields in entries:
            try:
                parsed.append((entry_id, Entry.loads(fields[b"p"])))
            except (KeyError, TypeError, ValueError) as exc:
                self._dead(entry_id, fields, f"unreadable entry: {type(exc).__name__}")
                dropped += 1
        try:
            with sessions() as session, session.begin():
                done = apply_entries(session, parsed)
            return Applied(done.applied, done.skipped, done.dropped + dropped, done.confirmations)
        except Exception:
            log.exception("a batch of %d sign-ups failed; applying them one by one", len(parsed))
        # One bad entry must not hold the others back: each alone, the failures set aside.
        result = Applied(0, 0, dropped, [])
        for entry_id, entry in parsed:
            try:
                with sessions() as session, session.begin():
                    one = apply_entries(session, [(entry_id, entry)])
            except Exception as exc:
                log.exception("sign-up %s could not be applied", entry_id)
                self._dead(entry_id, {b"p": entry.dumps().encode()}, type(exc).__name__)
                one = Applied(0, 0, 1, [])
            result = Applied(
                result.applied + one.applied,
                result.skipped + one.skipped,
                result.dropped + one.dropped,
                result.confirmations + one.confirmations,
            )
        return result

    def _dead(self, entry_id: str, fields: dict[bytes, bytes], reason: str) -> None:
        """Keep an entry that cannot be applied, with the reason, for an operator to look at."""
        self._client.xadd(
            self.dead_stream,
            {"id": entry_id, "p": fields.get(b"p", b""), "reason": reason},
            maxlen=10_000,
        )


def apply_entries(session: Session, batch: list[tuple[str, Entry]]) -> Applied:
    """Apply (entry id, entry) pairs in the caller's transaction, in a fixed number of statements
    (`readers.subscribe_many`); entries applied before are skipped."""
    keys = [entry_id for entry_id, _ in batch]
    seen = set(session.scalars(select(Consent.intake_key).where(Consent.intake_key.in_(keys))))
    live = set(session.scalars(select(Topic.slug).where(Topic.archived_at.is_(None))))
    requests: list[readers.SignUpRequest] = []
    dropped = 0
    for entry_id, entry in batch:
        if entry_id in seen:
            continue
        # A topic archived since the form was sent is left out; with none left, nothing to do.
        topics = [slug for slug in entry.topics if slug in live]
        if not topics:
            dropped += 1
            continue
        requests.append(
            readers.SignUpRequest(
                email=entry.email,
                topics=topics,
                frequency=Frequency(entry.frequency),
                timezone=entry.timezone,
                ip=entry.ip,
                source=entry.source,
                user_agent=entry.user_agent,
                wording=entry.wording,
                at=datetime.fromisoformat(entry.at),
                intake_key=entry_id,
                language=entry.language,
            )
        )
    signups = readers.subscribe_many(session=session, requests=requests)
    confirmations = [s.consent_id for s in signups if s.consent_id is not None]
    return Applied(len(requests), len(seen), dropped, confirmations)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
