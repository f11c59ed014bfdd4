"""Fetch a feed over HTTP without letting it reach the host's own network or eat its memory."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from worker.feeds.addresses import AddressRefused, PinnedBackend, Resolver, system_resolver, vet

MAX_REDIRECTS = 3
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
USER_AGENT = "topic-newsletter/0.1 (feed watcher; +https://github.com/topic-newsletter)"


class FeedFetchError(Exception):
    """The feed could not be fetched; the message says why, in one line for an editor."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    not_modified: bool
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    url: str = ""
    content_type: str = ""


def check_address(url: str, *, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and hosts that resolve to private, loopback or link-local addresses.

    With the default transport this is only a first check: the connection itself resolves once
    more and connects to the address it vetted (`addresses.PinnedBackend`).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedFetchError(f"not an http or https URL: {url[:200]}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FeedFetchError(f"cannot resolve {parts.hostname}: {exc}") from None
    try:
        vet(parts.hostname, [str(info[4][0]) for info in infos])
    except AddressRefused as exc:
        raise FeedFetchError(str(exc)) from None


class PinnedTransport(httpx.HTTPTransport):
    """An httpx transport whose connections go to an address vetted from one resolution, and
    whose every network read, write and connect ends by the time limit of the fetch under way on
    the calling thread (`fetch_deadline`), so that one transport and its pool serve every fetch of
    a worker process."""

    def __init__(self, backend: PinnedBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # httpx takes no network backend of its own: its pool is rebuilt with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(), network_backend=DeadlineBackend(backend)
        )


_deadline = threading.local()


@contextlib.contextmanager
def fetch_deadline(deadline: float) -> Iterator[None]:
    """Network operations on this thread end by `deadline` (time.monotonic()) inside the block."""
    previous = getattr(_deadline, "at", None)
    _deadline.at = deadline
    try:
        yield
    finally:
        _deadline.at = previous


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to what is left of the fetch under way on this thread (if any)."""
    deadline: float | None = getattr(_deadline, "at", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the time limit of the fetch has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until the current fetch's deadline:
    a server dripping headers or body bytes cannot hold a worker past its time limit, even on a
    kept-alive connection another fetch opened."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self.inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """The pinned backend, its connections wrapped in DeadlineStream."""

    def __init__(self, inner: PinnedBackend) -> None:
        self.inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self.inner.connect_tcp(host, port, bounded, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("feeds are fetched over TCP only")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def pinned_transport(
    *, allow_private: bool, resolve: Resolver = system_resolver
) -> PinnedTransport:
    """The default transport of `fetch_feed` and of a process's FeedFetcher."""
    return PinnedTransport(PinnedBackend(allow_private=allow_private, resolve=resolve))


HEADERS = {
    "User-Agent": USER_AGENT,
    "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
}


class FeedFetcher:
    """One HTTP client, and its connection pool, for many fetches (a worker process keeps one:
    `shared_fetcher`): a 304 then costs a request on a kept-alive connection, not a new client,
    pool, transport and watchdog thread.

    With a PinnedTransport (the default) each fetch's time limit is enforced by the connections
    themselves (`fetch_deadline`), so fetches on several threads share the client safely. With
    another transport (tests and benchmarks give one) a watchdog closes the whole client when a
    fetch runs out of time: such a fetcher serves one fetch at a time (`fetch_feed` makes one per
    call).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        transport: httpx.BaseTransport | None = None,
        resolve: Resolver = system_resolver,
    ) -> None:
        if transport is None:
            transport = pinned_transport(allow_private=allow_private, resolve=resolve)
        self.allow_private = allow_private
        self.pinned = isinstance(transport, PinnedTransport)
        self.client = httpx.Client(
            follow_redirects=False,
            transport=transport,
            headers={**HEADERS, "Accept-Encoding": ", ".join(DECODERS)},
            trust_env=False,  # a proxy from the environment would connect where we did not vet
        )

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> FetchResult:
        """A conditional GET that follows at most a few redirects, each checked, and stops at
        `max_bytes` of decoded body and after `timeout` seconds in all."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        # `timeout` bounds the whole fetch, not only each read, so a server dripping headers or
        # body bytes cannot hold a worker: the pinned connections stop at the deadline, another
        # transport's client is closed by a watchdog.
        deadline = time.monotonic() + timeout
        watchdog = None
        if not self.pinned:
            watchdog = threading.Timer(timeout, self.client.close)
            watchdog.daemon = True
            watchdog.start()
        try:
            with fetch_deadline(deadline):
                return _fetch(
                    self.client,
                    url,
                    headers,
                    etag,
                    last_modified,
                    self.allow_private,
                    max_bytes,
                    timeout,
                    deadline,
                    self.pinned,
                )
        except FeedFetchError:
            raise
        except AddressRefused as exc:  # from the pinned connection: the name's answer changed
            raise FeedFetchError(str(exc)) from None
        except Exception as exc:  # the watchdog closed the client under a read
            if time.monotonic() >= deadline:
                raise FeedFetchError(f"timed out after {timeout:g} s") from None
            raise FeedFetchError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def close(self) -> None:
        self.client.close()


_shared: dict[tuple[int, bool], FeedFetcher] = {}
_shared_lock = threading.Lock()


def shared_fetcher(*, allow_private: bool) -> FeedFetcher:
    """This process's FeedFetcher with the default (pinned) transport, made on first use.

    Keyed by process id too: a forked worker child never uses a pool (and its sockets) that it
    inherited from its parent.
    """
    key = (os.getpid(), allow_private)
    fetcher = _shared.get(key)
    if fetcher is None:
        with _shared_lock:
            fetcher = _shared.get(key)
            if fetcher is None:
                fetcher = _shared[key] = FeedFetcher(allow_private=allow_private)
    return fetcher


def fetch_feed(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    allow_private: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    transport: httpx.BaseTransport | None = None,
    resolve: Resolver = system_resolver,
) -> FetchResult:
    """One fetch with a client of its own (FeedFetcher.fetch).

    Without a `transport`, or with a PinnedTransport, every connection, redirects included, goes
    to an address vetted from one resolution; with another transport (tests and benchmarks give
    one), each hop's host is checked with `check_address` before the request. `max_bytes` caps
    the decoded body, not the bytes on the wire.
    """
    fetcher = FeedFetcher(allow_private=allow_private, transport=transport, resolve=resolve)
    try:
        return fetcher.fetch(
            url, etag=etag, last_modified=last_modified, max_bytes=max_bytes, timeout=timeout
        )
    finally:
        fetcher.close()


#: Content codings a feed may come in, each at most once: anything else (br, zstd, or "gzip, gzip",
#: a bomb's favourite) is refused rather than decoded.
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Decoder:
    """Decodes a body as it arrives and refuses it as soon as the decoded bytes pass `max_bytes`.

    zlib is asked for at most what is left of the cap on every call (`max_length`), so a few
    compressed bytes can never decode into more than the cap in memory: httpx's own decoders
    inflate each network chunk whole before anyone can count it.
    """

    def __init__(self, content_encoding: str, max_bytes: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise FeedFetchError(f"stacked content encodings are refused: {content_encoding[:80]}")
        if codings and codings[0] not in DECODERS:
            raise FeedFetchError(f"unknown content encoding: {codings[0][:40]}")
        self.coding = codings[0] if codings else ""
        self.max_bytes = max_bytes
        self.body = bytearray()
        self._zlib = zlib.decompressobj(DECODERS[self.coding]) if self.coding else None
        self._raw_deflate = False

    def feed(self, data: bytes) -> None:
        """Decode `data` and add it to the body, or raise FeedFetchError past the cap."""
        if self._zlib is None:
            self._add(data)
            return
        try:
            while data:
                room = self.max_bytes + 1 - len(self.body)
                self._add(self._zlib.decompress(data, room))
                data = self._zlib.unconsumed_tail
                if self._zlib.eof:
                    break  # trailing bytes after the stream are ignored, as browsers do
        except zlib.error:
            if self.coding == "deflate" and not self._raw_deflate and not self.body:
                # "deflate" is sometimes sent without its zlib header (raw DEFLATE): try that once.
                self._raw_deflate = True
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self.feed(data)
                return
            raise FeedFetchError(f"the {self.coding} body is corrupt") from None

    def finish(self) -> bytes:
        if self._zlib is not None and not self._zlib.eof and self.coding != "deflate":
            raise FeedFetchError(f"the {self.coding} body is truncated")
        return bytes(self.body)

    def _add(self, data: bytes) -> None:
        self.body.extend(data)
        if len(self.body) > self.max_bytes:
            raise FeedFetchError(f"feed is larger than {self.max_bytes} bytes")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the certificate bundle costs ~20 ms: once per process, not once per fetch.
    return httpx.create_ssl_context()


def _fetch(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    etag: str | None,
    last_modified: str | None,
    allow_private: bool,
    max_bytes: int,
    timeout: float,
    deadline: float,
    pinned: bool,
) -> FetchResult:
    for _ in range(MAX_REDIRECTS + 1):
        # The pinned transport vets at connect time; a given transport is checked here, per hop.
        check_address(url, allow_private=allow_private or pinned)
        if time.monotonic() > deadline:
            raise FeedFetchError(f"timed out after {timeout:g} s")
        try:
            with client.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code == 304:
                    # A 304 has no body; reading its end lets the connection go back to the pool.
                    response.read()
                    return FetchResult(True, url=url, etag=etag, last_modified=last_modified)
                if response.status_code in (301, 302, 303, 307, 308):
                    location = response.headers.get("location", "")
                    if not location:
                        raise FeedFetchError(f"HTTP {response.status_code} without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise FeedFetchError(
                        f"HTTP {response.status_code} from {urlsplit(url).hostname}"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FeedFetchError(f"feed is larger than {max_bytes} bytes")
                decoder = Decoder(response.headers.get("content-encoding", ""), max_bytes)
                # A response built in memory (httpx.MockTransport) is already read: its bytes.
                raw = [response.content] if response.is_stream_consumed else response.iter_raw()
                for chunk in raw:
                    decoder.feed(chunk)
                    if time.monotonic() > deadline:
                        raise FeedFetchError(f"timed out after {timeout:g} s")
                body = decoder.finish()
                return FetchResult(
                    False,
                    body=body,
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                    url=url,
                    content_type=response.headers.get("content-type", ""),
                )
        except httpx.TimeoutException:
            raise FeedFetchError(f"timed out after {timeout:g} s") from None
        except httpx.HTTPError as exc:
            if time.monotonic() >= deadline:  # the watchdog closed the connection
                raise FeedFetchError(f"timed out after {timeout:g} s") from None
            raise FeedFetchError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    raise FeedFetchError(f"more than {MAX_REDIRECTS} redirects")
