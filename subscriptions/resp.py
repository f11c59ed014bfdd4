"""A minimal asyncio Redis client for one hot call: running a Lua script (EVALSHA) per sign-up.

redis-py's asyncio client spends about 100-190 µs of CPU per command here (connection pool, retry
wrapper, parser classes), where writing the command and reading a short reply on an asyncio stream
costs about 25 µs. On `POST /subscribe`, whose own work is a few dozen microseconds, that
difference is a third of the request. This client speaks just enough RESP2 for `EVALSHA`/`EVAL`
with an array-of-integers reply: AUTH and SELECT from the URL, a small pool of connections, errors
raised as redis-py's exception types so callers handle one family. TLS (`rediss://`) and anything
else is left to redis-py (`ScriptRunner.for_url` returns None for those).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

#: Idle connections kept per pool; more are opened under load and closed when returned to a full pool.
POOL_SIZE = 16
TIMEOUT_SECONDS = 2.0


def _command(*parts: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _reply(reader: asyncio.StreamReader) -> Any:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise redis.ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        message = rest.decode(errors="replace")
        if message.startswith("NOSCRIPT"):
            raise redis.exceptions.NoScriptError(message)
        raise redis.ResponseError(message)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await _reply(reader) for _ in range(count)]
    raise redis.ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def call(self, command: bytes) -> Any:
        self.writer.write(command)
        return await _reply(self.reader)

    def close(self) -> None:
        self.writer.close()


class ScriptRunner:
    """Runs one Lua script on the Redis at a `redis://` or `unix://` URL, from one event loop."""

    def __init__(
        self,
        script: str,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._script = script.encode()
        # SHA-1 is what Redis names scripts by (EVALSHA), not a security measure.
        self._sha = hashlib.sha1(self._script, usedforsecurity=False).hexdigest().encode()
        self._host, self._port, self._path = host, port, path
        self._db, self._username, self._password = db, username, password
        self._idle: list[_Connection] = []

    @classmethod
    def for_url(cls, url: str, script: str) -> ScriptRunner | None:
        """A runner for `url`, or None when the URL needs more than this client speaks (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "unix"):
            return None
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        try:
            if parts.scheme == "unix":
                db = int(query.get("db", "0"))
            else:
                db = int(parts.path.lstrip("/") or query.get("db", "0"))
            port = parts.port or 6379
        except ValueError:
            return None
        return cls(
            script,
            host=parts.hostname or "127.0.0.1",
            port=port,
            path=parts.path if parts.scheme == "unix" else None,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    async def _connect(self) -> _Connection:
        if self._path is not None:
            reader, writer = await asyncio.open_unix_connection(self._path)
        else:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        connection = _Connection(reader, writer)
        if self._password is not None:
            auth = (self._username, self._password) if self._username else (self._password,)
            await connection.call(_command("AUTH", *auth))
        if self._db:
            await connection.call(_command("SELECT", self._db))
        return connection

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply; raises redis.RedisError (ConnectionError, TimeoutError, ...)."""
        connection = self._idle.pop() if self._idle else None
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                if connection is None:
                    connection = await self._connect()
                try:
                    reply = await connection.call(
                        _command(b"EVALSHA", self._sha, len(keys), *keys, *args)
                    )
                except redis.exceptions.NoScriptError:
                    reply = await connection.call(
                        _command(b"EVAL", self._script, len(keys), *keys, *args)
                    )
        except TimeoutError:
            if connection is not None:
                connection.close()
            raise redis.TimeoutError("Redis did not answer in time") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            if connection is not None:
                connection.close()
            raise redis.ConnectionError(f"Redis connection failed: {type(exc).__name__}") from None
        except redis.ResponseError:
            self._release(connection)
            raise
        except BaseException:
            if connection is not None:  # cancelled mid-reply: the stream is out of step
                connection.close()
            raise
        self._release(connection)
        return reply

    def _release(self, connection: _Connection | None) -> None:
        if connection is None:
            return
        if len(self._idle) < POOL_SIZE:
            self._idle.append(connection)
        else:
            connection.close()
