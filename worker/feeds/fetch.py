"""Fetch a feed over HTTP without letting it reach the host's own network or eat its memory."""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
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
    """An httpx transport whose connections go to an address vetted from one resolution."""

    def __init__(self, backend: PinnedBackend) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # httpx takes no network backend of its own: its pool is rebuilt with ours.
        self._pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=backend)


def pinned_transport(
    *, allow_private: bool, resolve: Resolver = system_resolver
) -> PinnedTransport:
    """The default transport of `fetch_feed`."""
    return PinnedTransport(PinnedBackend(allow_private=allow_private, resolve=resolve))


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
    """A conditional GET that follows at most a few redirects, each checked, and stops at `max_bytes`.

    Without a `transport`, or with a PinnedTransport, every connection, redirects included, goes
    to an address vetted from one resolution; with another transport (tests and benchmarks give
    one), each hop's host is checked with `check_address` before the request. `max_bytes` caps
    the decoded body, not the bytes on the wire.
    """
    if transport is None:
        transport = pinned_transport(allow_private=allow_private, resolve=resolve)
    pinned = isinstance(transport, PinnedTransport)
    headers = {
        "Accept-Encoding": ", ".join(DECODERS),
        "User-Agent": USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    # `timeout` bounds the whole fetch, not only each read: a watchdog closes the connection when
    # it runs out, so a server dripping headers or body bytes cannot hold a worker.
    deadline = time.monotonic() + timeout
    client = httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        headers=headers,
        trust_env=False,  # a proxy from the environment would connect where we did not vet
    )
    watchdog = threading.Timer(timeout, client.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        return _fetch(
            client, url, etag, last_modified, allow_private, max_bytes, timeout, deadline, pinned
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
        watchdog.cancel()
        client.close()


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
            with client.stream("GET", url) as response:
                if response.status_code == 304:
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
