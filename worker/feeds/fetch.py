"""Fetch a feed over HTTP without letting it reach the host's own network or eat its memory."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

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
    """Refuse non-http(s) URLs and hosts that resolve to private, loopback or link-local addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedFetchError(f"not an http or https URL: {url[:200]}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FeedFetchError(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise FeedFetchError(
                f"{parts.hostname} resolves to {address}, a private, loopback or link-local address"
                " (set NEWSLETTER_FEEDS_ALLOW_PRIVATE_ADDRESSES=true to allow it)"
            )


def fetch_feed(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    allow_private: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    transport: httpx.BaseTransport | None = None,
) -> FetchResult:
    """A conditional GET that follows at most a few redirects, each checked, and stops at `max_bytes`."""
    headers = {
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
        verify=_ssl_context(),
    )
    watchdog = threading.Timer(timeout, client.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        return _fetch(client, url, etag, last_modified, allow_private, max_bytes, timeout, deadline)
    except FeedFetchError:
        raise
    except Exception as exc:  # the watchdog closed the client under a read
        if time.monotonic() >= deadline:
            raise FeedFetchError(f"timed out after {timeout:g} s") from None
        raise FeedFetchError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        watchdog.cancel()
        client.close()


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
) -> FetchResult:
    for _ in range(MAX_REDIRECTS + 1):
        check_address(url, allow_private=allow_private)
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
                body = bytearray()
                # iter_bytes yields decoded (gunzipped) bytes: the cap holds against compression bombs.
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise FeedFetchError(f"feed is larger than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FeedFetchError(f"timed out after {timeout:g} s")
                return FetchResult(
                    False,
                    body=bytes(body),
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
