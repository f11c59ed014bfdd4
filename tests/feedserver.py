"""A real HTTP server on 127.0.0.1 for feed tests, and small builders of RSS 2.0, RSS 1.0 and Atom documents.

Each path is scripted with a `Route`: the body, status and headers, gzip, a delay before answering (for
timeouts), a slow body or slow headers (bytes dripped out), a redirect, and an ETag / Last-Modified pair that makes it
answer 304 to a matching conditional GET. The server records every request it gets (path and headers), so
tests can check what the fetcher sent: the User-Agent, If-None-Match, If-Modified-Since, Accept-Encoding.

    with FeedServer() as server:
        server.route("/feed.xml", body=rss2([Item("Hello", link="http://example.org/1")]))
        poll(server.url("/feed.xml"))
        assert server.requests_for("/feed.xml")[0].headers["user-agent"].startswith("topic-newsletter/")
"""

from __future__ import annotations

import gzip as gzip_module
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape, quoteattr

# --------------------------------------------------------------------------------------- server


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    #: Compress the body with gzip (when the client accepts it) and say so in Content-Encoding.
    gzip: bool = False
    #: Seconds to wait before the status line (a server that does not answer in time).
    delay: float = 0.0
    #: Seconds to wait between chunks of the body (a server that answers, but slowly).
    drip: float = 0.0
    #: Seconds to wait between header lines (a server that dribbles out even its headers).
    header_drip: float = 0.0
    chunk_size: int = 16 * 1024
    #: Send Content-Length; without it the body ends when the connection closes (HTTP/1.0).
    send_length: bool = True
    #: Answer with a redirect to this Location (status 302 unless `status` is a 3xx).
    location: str | None = None
    #: Validators sent with a 200; a request carrying the same one back is answered 304.
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Request:
    """One request the server got: its path, its headers (names in lower case), when, what it answered."""

    path: str
    headers: dict[str, str]
    at: float
    status: int
    gzipped: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        route = self.server.owner.routes.get(self.path.split("?", 1)[0])
        headers = {k.lower(): v for k, v in self.headers.items()}
        if route is None:
            self._record(headers, 404)
            self._answer(404, {"Content-Type": "text/plain"}, b"not found", route=None)
            return
        if route.delay:
            time.sleep(route.delay)
        if route.location is not None:
            status = route.status if 300 <= route.status < 400 else 302
            self._record(headers, status)
            self._answer(status, {"Location": route.location}, b"", route=None)
            return
        if _not_modified(route, headers):
            self._record(headers, 304)
            self._answer(304, {"ETag": route.etag} if route.etag else {}, b"", route=None)
            return
        body = route.body
        out = {"Content-Type": route.content_type, **route.headers}
        gzipped = route.gzip and "gzip" in headers.get("accept-encoding", "")
        if gzipped:
            body = gzip_module.compress(body, compresslevel=9)
            out["Content-Encoding"] = "gzip"
        if route.etag:
            out["ETag"] = route.etag
        if route.last_modified:
            out["Last-Modified"] = route.last_modified
        self._record(headers, route.status, gzipped)
        self._answer(route.status, out, body, route=route)

    def _record(self, headers: dict[str, str], status: int, gzipped: bool = False) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(
                Request(self.path, headers, time.monotonic(), status, gzipped=gzipped)
            )

    def _answer(
        self, status: int, headers: dict[str, str], body: bytes, *, route: Route | None
    ) -> None:
        try:
            self.send_response(status)
            slow_headers = route is not None and route.header_drip > 0
            for name, value in headers.items():
                self.send_header(name, value)
                if slow_headers:
                    assert route is not None
                    self.flush_headers()
                    time.sleep(route.header_drip)
            if route is None or route.send_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if route is None or not route.drip:
                self.wfile.write(body)
                return
            for start in range(0, len(body), route.chunk_size):
                self.wfile.write(body[start : start + route.chunk_size])
                self.wfile.flush()
                time.sleep(route.drip)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, a size cap): that is what some tests want

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read `FeedServer.requests` instead."""


def _not_modified(route: Route, headers: dict[str, str]) -> bool:
    """RFC 9110: If-None-Match decides when present; otherwise If-Modified-Since (exact match here)."""
    if "if-none-match" in headers:
        tags = [t.strip() for t in headers["if-none-match"].split(",")]
        return route.etag is not None and (route.etag in tags or "*" in tags)
    return (
        route.last_modified is not None and headers.get("if-modified-since") == route.last_modified
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FeedServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer is expected here; nothing to print."""


class FeedServer:
    """A threaded HTTP server on 127.0.0.1 and a free port, serving scripted routes; a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, **answer: Any) -> Route:
        """Script (or re-script) how `path` is answered; the keywords are `Route`'s fields."""
        route = Route(**answer)
        with self.lock:
            self.routes[path] = route
        return route

    def requests_for(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------ documents


class Raw(str):
    """Text that goes into a document as it is (markup, entities, CDATA), not escaped."""

    __slots__ = ()


def _text(value: str) -> str:
    return value if isinstance(value, Raw) else escape(value)


@dataclass
class Item:
    """One feed entry; None leaves the element out. Text is escaped unless wrapped in `Raw`."""

    title: str | None = "A post"
    link: str | None = None
    guid: str | None = None
    summary: str | None = None
    published: datetime | None = None
    categories: Sequence[str] = ()
    author: str | None = None
    #: RSS 2.0 only: say isPermaLink="false" on the GUID (it is an id, not a URL).
    guid_is_permalink: bool = False


def rss2(items: Iterable[Item], *, title: str = "Institute blog", encoding: str = "utf-8") -> bytes:
    """An RSS 2.0 document, encoded in `encoding` (declared in the XML prolog)."""
    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>',
        '<rss version="2.0"><channel>',
        f"<title>{_text(title)}</title><link>http://example.org/</link>",
        "<description>Posts</description>",
    ]
    for item in items:
        parts.append("<item>")
        if item.title is not None:
            parts.append(f"<title>{_text(item.title)}</title>")
        if item.link is not None:
            parts.append(f"<link>{_text(item.link)}</link>")
        if item.guid is not None:
            permalink = "true" if item.guid_is_permalink else "false"
            parts.append(f'<guid isPermaLink="{permalink}">{_text(item.guid)}</guid>')
        if item.summary is not None:
            parts.append(f"<description>{_text(item.summary)}</description>")
        if item.author is not None:
            parts.append(f"<author>{_text(item.author)}</author>")
        if item.published is not None:
            parts.append(f"<pubDate>{format_datetime(item.published)}</pubDate>")
        parts.extend(f"<category>{_text(c)}</category>" for c in item.categories)
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode(encoding)


def rss1(items: Iterable[Item], *, title: str = "Institute blog") -> bytes:
    """An RSS 1.0 (RDF) document; the GUID is the item's rdf:about, categories are dc:subject."""
    items = list(items)
    about = [item.guid or item.link or f"urn:item:{n}" for n, item in enumerate(items)]
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">',
        '<channel rdf:about="http://example.org/">',
        f"<title>{_text(title)}</title><link>http://example.org/</link>",
        "<description>Posts</description><items><rdf:Seq>",
        *(f"<rdf:li rdf:resource={quoteattr(a)}/>" for a in about),
        "</rdf:Seq></items></channel>",
    ]
    for item, ref in zip(items, about, strict=True):
        parts.append(f"<item rdf:about={quoteattr(ref)}>")
        if item.title is not None:
            parts.append(f"<title>{_text(item.title)}</title>")
        if item.link is not None:
            parts.append(f"<link>{_text(item.link)}</link>")
        if item.summary is not None:
            parts.append(f"<description>{_text(item.summary)}</description>")
        if item.author is not None:
            parts.append(f"<dc:creator>{_text(item.author)}</dc:creator>")
        if item.published is not None:
            parts.append(f"<dc:date>{item.published.isoformat()}</dc:date>")
        parts.extend(f"<dc:subject>{_text(c)}</dc:subject>" for c in item.categories)
        parts.append("</item>")
    parts.append("</rdf:RDF>")
    return "\n".join(parts).encode()


def atom(items: Iterable[Item], *, title: str = "Institute blog") -> bytes:
    """An Atom 1.0 document; summaries go in <summary type="html">."""
    updated = datetime(2024, 1, 1, tzinfo=UTC).isoformat()
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"<title>{_text(title)}</title><id>urn:feed:institute</id><updated>{updated}</updated>",
    ]
    for item in items:
        parts.append("<entry>")
        if item.title is not None:
            parts.append(f'<title type="html">{_text(item.title)}</title>')
        if item.link is not None:
            parts.append(f'<link rel="alternate" href={quoteattr(item.link)}/>')
        if item.guid is not None:
            parts.append(f"<id>{_text(item.guid)}</id>")
        if item.summary is not None:
            parts.append(f'<summary type="html">{_text(item.summary)}</summary>')
        if item.author is not None:
            parts.append(f"<author><name>{_text(item.author)}</name></author>")
        if item.published is not None:
            stamp = item.published.isoformat()
            parts.append(f"<published>{stamp}</published><updated>{stamp}</updated>")
        parts.extend(f"<category term={quoteattr(c)}/>" for c in item.categories)
        parts.append("</entry>")
    parts.append("</feed>")
    return "\n".join(parts).encode()


__all__ = ["FeedServer", "Item", "Raw", "Request", "Route", "atom", "rss1", "rss2"]
