"""Feed fetching against hostile servers: compression bombs, DNS rebinding, redirects inward.

Real HTTP servers on 127.0.0.1 (tests/feedserver.py). "The internet" is a stand-in: the connection
backend under test (`PinnedBackend`) is real, except that a connection it makes to the public
address PUBLIC is routed to the `public` server; connections to anything else are real.
"""

from __future__ import annotations

import gzip
import ipaddress
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest

from tests.feedserver import FeedServer, Item, rss2
from worker.feeds.addresses import AddressRefused, PinnedBackend, is_public, system_resolver, vet
from worker.feeds.fetch import FeedFetchError, PinnedTransport, fetch_feed

PUBLIC_HOST = "feeds.public.example"
PUBLIC = "93.184.216.34"
FEED = "/feed.xml"
CAP = 1024 * 1024


@pytest.fixture
def public() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def inner() -> Iterator[FeedServer]:
    """A server on loopback that no feed may reach."""
    with FeedServer() as server:
        server.route(FEED, body=rss2([Item("Inner secret", link="http://inner/1")]))
        yield server


class StandInBackend(PinnedBackend):
    """Routes connections to PUBLIC to the `public` server; records every address connected to."""

    def __init__(self, public: FeedServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.public_port = public.port
        self.connected: list[str] = []

    def open(self, address: str, port: int, *args: Any) -> httpcore.NetworkStream:
        self.connected.append(address)
        if address == PUBLIC:
            return super().open("127.0.0.1", self.public_port, *args)
        return super().open(address, port, *args)


class RebindingResolver:
    """Answers PUBLIC for PUBLIC_HOST the first time and 127.0.0.1 every time after."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        if host != PUBLIC_HOST:
            return system_resolver(host, port)
        self.calls += 1
        return [PUBLIC] if self.calls == 1 else ["127.0.0.1"]


def fetch(url: str, public: FeedServer, resolve: Any = None, **kwargs: Any) -> Any:
    backend = StandInBackend(public, allow_private=False, resolve=resolve or RebindingResolver())
    result = fetch_feed(url, transport=PinnedTransport(backend), timeout=5, **kwargs)
    return result, backend


# ------------------------------------------------------------------------------- content codings


def test_a_stacked_gzip_body_is_refused_without_decoding_it(public: FeedServer) -> None:
    bomb = gzip.compress(gzip.compress(b"\0" * (50 * CAP)))
    public.route(FEED, body=bomb, headers={"Content-Encoding": "gzip, gzip"})
    with pytest.raises(FeedFetchError, match="stacked content encodings"):
        fetch(f"http://{PUBLIC_HOST}{FEED}", public, max_bytes=CAP)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip;q=1"])
def test_an_unknown_content_encoding_is_refused(public: FeedServer, coding: str) -> None:
    public.route(FEED, body=b"whatever", headers={"Content-Encoding": coding})
    with pytest.raises(FeedFetchError, match="unknown content encoding"):
        fetch(f"http://{PUBLIC_HOST}{FEED}", public)


def test_a_gzip_bomb_is_stopped_at_the_cap_of_decoded_bytes_with_memory_to_match(
    public: FeedServer,
) -> None:
    """50 MB of zeros in ~50 KB of gzip, capped at 1 MB: refused, and the fetch never held much
    more than the cap (httpx's own decoder inflates each network chunk whole: tens of MB)."""
    bomb = gzip.compress(b"\0" * (50 * CAP), compresslevel=9)
    public.route(FEED, body=bomb, headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        with pytest.raises(FeedFetchError, match=f"larger than {CAP} bytes"):
            fetch(f"http://{PUBLIC_HOST}{FEED}", public, max_bytes=CAP)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * CAP, peak


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "identity", "gzip, identity"])
def test_a_feed_in_one_known_coding_is_decoded(public: FeedServer, coding: str) -> None:
    document = rss2([Item("Hello", link="http://example.org/1")])
    body = {
        "deflate": zlib.compress(document),
        "identity": document,
    }.get(coding, gzip.compress(document))
    public.route(FEED, body=body, headers={"Content-Encoding": coding})
    result, _ = fetch(f"http://{PUBLIC_HOST}{FEED}", public)
    assert result.body == document


# ------------------------------------------------------------------------------- where it connects


def test_a_rebinding_name_is_resolved_once_and_the_vetted_address_is_the_one_connected(
    public: FeedServer, inner: FeedServer
) -> None:
    """The name answers a public address, then 127.0.0.1: the fetch connects to the first answer
    (the public stand-in), never to the loopback server, and keeps the name in the Host header."""
    public.route(FEED, body=rss2([Item("Public post", link="http://example.org/1")]))
    resolver = RebindingResolver()
    url = f"http://{PUBLIC_HOST}:{inner.port}{FEED}"
    result, backend = fetch(url, public, resolve=resolver)
    assert b"Public post" in result.body
    assert resolver.calls == 1
    assert backend.connected == [PUBLIC]
    assert inner.requests == []
    assert public.requests[0].headers["host"] == f"{PUBLIC_HOST}:{inner.port}"


def test_a_name_that_answers_a_private_address_among_public_ones_is_refused(
    public: FeedServer, inner: FeedServer
) -> None:
    def mixed(host: str, port: int) -> list[str]:
        return [PUBLIC, "127.0.0.1"]

    with pytest.raises(FeedFetchError, match="private, loopback or link-local"):
        fetch(f"http://{PUBLIC_HOST}:{inner.port}{FEED}", public, resolve=mixed)
    assert inner.requests == [] and public.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/feed.xml",
        "http://localhost:{port}/feed.xml",
        "http://2130706433:{port}/feed.xml",
        "http://0x7f.1:{port}/feed.xml",
        "http://[::1]:{port}/feed.xml",
        "http://[::ffff:127.0.0.1]:{port}/feed.xml",
        "http://[::ffff:7f00:1]:{port}/feed.xml",
        "http://[64:ff9b::7f00:1]:{port}/feed.xml",
        "http://[2002:7f00:1::]:{port}/feed.xml",
    ],
)
def test_a_redirect_to_a_private_address_in_any_form_is_refused_before_connecting(
    public: FeedServer, inner: FeedServer, target: str
) -> None:
    public.route("/start", location=target.format(port=inner.port))
    with pytest.raises(FeedFetchError, match=r"private, loopback or link-local|cannot resolve"):
        fetch(f"http://{PUBLIC_HOST}/start", public)
    assert inner.requests == []
    assert [r.path for r in public.requests] == ["/start"]


def test_a_redirect_to_another_public_url_is_followed_and_vetted_again(
    public: FeedServer,
) -> None:
    """Control for the refusals above: the same harness follows a public redirect, resolving the
    new host on its own connection."""
    public.route("/start", location=f"http://other.{PUBLIC_HOST}{FEED}")
    public.route(FEED, body=rss2([Item("Moved", link="http://example.org/1")]))
    seen: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        seen.append(host)
        return [PUBLIC]

    result, _ = fetch(f"http://{PUBLIC_HOST}/start", public, resolve=resolve)
    assert b"Moved" in result.body
    assert seen == [PUBLIC_HOST, f"other.{PUBLIC_HOST}"]


def test_the_default_transport_connects_to_what_it_resolved_with_the_setting_on(
    inner: FeedServer,
) -> None:
    """With private addresses allowed, a made-up name resolved to 127.0.0.1 by the resolver is
    fetched over a real connection to that address, the name staying in the Host header."""
    result = fetch_feed(
        f"http://feeds.internal.example:{inner.port}{FEED}",
        allow_private=True,
        resolve=lambda host, port: ["127.0.0.1"],
        timeout=5,
    )
    assert b"Inner secret" in result.body
    assert inner.requests[0].headers["host"] == f"feeds.internal.example:{inner.port}"


def test_the_default_transport_refuses_loopback_with_the_setting_off(inner: FeedServer) -> None:
    with pytest.raises(FeedFetchError, match="private, loopback or link-local"):
        fetch_feed(inner.url(FEED), timeout=5)
    assert inner.requests == []


@pytest.mark.parametrize(
    ("address", "public_"),
    [
        ("93.184.216.34", True),
        ("::ffff:93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("ff02::1", False),
    ],
)
def test_ipv6_forms_are_judged_by_the_ipv4_address_inside(address: str, public_: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public_
    if public_:
        assert vet("h", [address]) == [address]
    else:
        with pytest.raises(AddressRefused):
            vet("h", [address])
