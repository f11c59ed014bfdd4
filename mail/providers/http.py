"""The common part of HTTP-API providers: base URL (with `+http` for local stand-ins), one httpx client
per provider object, and the reading of rate-limit answers."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from email.headerregistry import Address
from email.utils import parsedate_to_datetime
from typing import ClassVar, Self

import httpx

from mail.emailurl import EmailURL
from mail.providers.base import EmailMessage, Outcome, Provider, SendResult, check_message
from subscriptions.errors import InvalidInput

USER_AGENT = "topic-newsletter/0.1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class HttpProvider(Provider):
    """A provider reached over HTTPS (or plain HTTP with `scheme+http://host:port` for tests).

    Subclasses set `default_host`, read their credentials in `from_url`, and implement `_send_batch`
    with `self.client`, a keep-alive httpx client. `transport` lets unit tests use httpx.MockTransport.
    """

    default_host: ClassVar[str]

    def __init__(self, *, base_url: str, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=DEFAULT_TIMEOUT,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    @classmethod
    def base_url_from(cls, url: EmailURL) -> str:
        """`https://host[:port]`, or `http://host:port` when the scheme had `+http`."""
        host = url.host or cls.default_host
        port = f":{url.port}" if url.port else ""
        return f"{'http' if url.plain_http else 'https'}://{host}{port}"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or a rate-limit reset header."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            pass
    for name in ("x-ratelimit-reset", "ratelimit-reset", "x-sib-ratelimit-reset"):
        value = headers.get(name)
        if value and value.strip().replace(".", "", 1).isdigit():
            number = float(value)
            # A Unix time (SendGrid) or a number of seconds (Resend, Brevo).
            return max(0.0, number - now) if number > 1_000_000_000 else number
    return None


def temporary(detail: str, headers: Mapping[str, str] | None = None) -> SendResult:
    """A retry-later result carrying the provider's wait hint."""
    return SendResult(
        Outcome.TEMPORARY, detail=detail[:500], retry_after=retry_after_seconds(headers or {})
    )


#: Failures that leave the provider without a whole request to act on: safe to send again.
NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)


def transport_failure(exc: httpx.HTTPError) -> SendResult:
    """No answer: TEMPORARY if the request cannot have reached the provider whole, else UNKNOWN."""
    what = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, NOT_SENT):
        return SendResult(Outcome.TEMPORARY, detail=f"request not sent: {what}")
    return SendResult(
        Outcome.UNKNOWN, detail=f"no answer, the request may have been accepted: {what}"
    )


def not_tried(cause: SendResult) -> SendResult:
    """The result of a request left unsent because an earlier one of the batch said stop."""
    detail = f"not sent, an earlier request of the batch failed: {cause.detail}"[:500]
    if cause.outcome is Outcome.UNKNOWN:
        return SendResult(Outcome.TEMPORARY, detail=detail)
    return SendResult(cause.outcome, detail=detail, retry_after=cause.retry_after)


#: After one of these, the rest of a batch's requests are not tried (they get not_tried()).
STOP_BATCH = (Outcome.TEMPORARY, Outcome.ACCOUNT_BLOCKED, Outcome.UNKNOWN)


def count_requests(
    messages: Sequence[EmailMessage], content_key: Callable[[EmailMessage], Hashable]
) -> int:
    """The requests send_by_content makes for `messages`: one per content, more where an address repeats."""
    groups: dict[Hashable, list[set[str]]] = {}
    count = 0
    for message in messages:
        email = message.to.lower()
        requests = groups.setdefault(content_key(message), [])
        request = next((r for r in requests if email not in r), None)
        if request is None:
            request = set()
            requests.append(request)
            count += 1
        request.add(email)
    return count


def send_by_content(
    messages: Sequence[EmailMessage],
    content_key: Callable[[EmailMessage], Hashable],
    post: Callable[[list[int], Mapping[int, tuple[Address, Address]]], SendResult],
) -> list[SendResult]:
    """Send a batch as one request per distinct content (never one address twice in a request).

    `post(indexes, addresses)` sends the messages at `indexes`, whose checked (to, sender) are in
    `addresses`, and answers for all of them. A malformed message fails alone; after a result in
    STOP_BATCH the remaining requests are not tried.
    """
    results: list[SendResult | None] = [None] * len(messages)
    addresses: dict[int, tuple[Address, Address]] = {}
    # content -> requests, each a list of message indexes and the addresses already in it
    groups: dict[Hashable, list[tuple[list[int], set[str]]]] = {}
    for index, message in enumerate(messages):
        try:
            addresses[index] = check_message(message)
        except (InvalidInput, ValueError) as exc:
            results[index] = SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
            continue
        email = addresses[index][0].addr_spec.lower()
        requests = groups.setdefault(content_key(message), [])
        request = next((r for r in requests if email not in r[1]), None)
        if request is None:
            request = ([], set())
            requests.append(request)
        request[0].append(index)
        request[1].add(email)
    stopped: SendResult | None = None
    for indexes, _ in (r for requests in groups.values() for r in requests):
        if stopped is None:
            result = post(indexes, addresses)
            stopped = result if result.outcome in STOP_BATCH else None
        else:
            result = not_tried(stopped)
        for index in indexes:
            results[index] = result
    return [r for r in results if r is not None]
