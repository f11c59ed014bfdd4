"""The outbox provider: every message becomes an `.eml` file in a folder, for development and tests."""

from __future__ import annotations

import email.parser
import email.policy
import os
import tempfile
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage as MIMEMessage
from pathlib import Path
from typing import Self

from mail.emailurl import EmailURL
from mail.providers.base import (
    EmailMessage,
    Outcome,
    Provider,
    SendResult,
    build_mime,
    check_url_options,
)
from subscriptions.errors import ConfigurationError, InvalidInput

_stamp_lock = threading.Lock()
_last_stamp = datetime.min.replace(tzinfo=UTC)


class OutboxProvider(Provider):
    """Writes each message atomically to `<folder>/<UTC timestamp>-<short uuid>.eml`."""

    name = "outbox"
    batch_limit = 500

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"OutboxProvider({str(self.folder)!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """`outbox://var/outbox` is relative to the current directory, `outbox:///srv/out` absolute."""
        check_url_options(url)
        location = url.location
        if not location:
            raise ConfigurationError(
                "outbox email URL needs a folder, e.g. outbox://var/outbox or outbox:///srv/outbox"
            )
        if location.startswith("/"):
            # `outbox:////abs` leaves `//abs`, which POSIX paths would keep as a distinct root.
            location = "/" + location.lstrip("/")
        return cls(Path(location).absolute())

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failed = SendResult(Outcome.TEMPORARY, detail=f"cannot create {self.folder}: {exc}")
            return [failed] * len(messages)
        return [self._write(message) for message in messages]

    def _write(self, message: EmailMessage) -> SendResult:
        try:
            data = build_mime(message).as_bytes()
        except (InvalidInput, ValueError) as exc:
            return SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
        name = f"{_next_stamp():%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.eml"
        # A dotted temp name in the same folder keeps readers (read_outbox, `*.eml` globs) from
        # seeing a half-written file, and lets os.replace be an atomic rename. No fsync: the
        # outbox is a development tool, not a store that must survive a power cut.
        temp: str | None = None
        try:
            fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temp, self.folder / name)
        except OSError as exc:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)
            return SendResult(Outcome.TEMPORARY, detail=f"cannot write {name}: {exc}")
        return SendResult(Outcome.SENT, provider_message_id=name)


def _next_stamp() -> datetime:
    """Now in UTC, strictly later than the last stamp this process handed out, so names sort."""
    global _last_stamp
    with _stamp_lock:
        stamp = max(datetime.now(UTC), _last_stamp + timedelta(microseconds=1))
        _last_stamp = stamp
        return stamp


def read_outbox(folder: str | os.PathLike[str]) -> list[MIMEMessage]:
    """Every message in an outbox folder, oldest first; empty when the folder does not exist."""
    parser = email.parser.BytesParser(_class=MIMEMessage, policy=email.policy.default)
    paths = sorted(Path(folder).glob("[!.]*.eml"))
    messages = []
    for path in paths:
        with path.open("rb") as file:
            messages.append(parser.parse(file))
    return messages
