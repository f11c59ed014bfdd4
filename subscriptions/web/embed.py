"""The subscribe box on a publisher's own pages: origin checks, the framed form and the snippets.

A form on another site posts straight to `POST /subscribe`. A cross-site POST cannot carry our
SameSite cookie, so instead of the cookie-bound token such a sign-up is let in when its `Origin`
(or, for browsers that send none, the origin of its `Referer`) is one of `NEWSLETTER_EMBED_ORIGINS`;
the honeypot, the Redis rate limits and the double opt-in guard it as they guard every sign-up. The
answer is our own "check your email" page with a link back to the page the reader came from (only
to an allowed origin), or, when the optional script asked for JSON, a short JSON answer with CORS
headers for that origin. `GET /embed/form` (in `reader.py`) is the same box as a page to put in an
`<iframe>`; `frame-ancestors` lets only the allowed origins frame it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from subscriptions.i18n import N_
from subscriptions.settings import Settings

#: The text above the box in the snippets (the README's policy-blog example).
BOX_LABEL = N_("To receive an email when a new post is available, please subscribe here.")


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL, lower case, or None."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def sender_origin(request: Request) -> str | None:
    """The origin the browser says the request came from: `Origin`, else the `Referer`'s."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin_of(origin)
    referer = request.headers.get("referer")
    return origin_of(referer) if referer else None


def own_origins(request: Request, settings: Settings) -> set[str]:
    """Our own origins: the public base URL's and the one this request was addressed to."""
    found = {origin_of(settings.base_url), origin_of(str(request.base_url))}
    return {o for o in found if o}


@dataclass(frozen=True, slots=True)
class CrossSite:
    """A POST from a page on another site."""

    origin: str
    allowed: bool


def cross_site(request: Request, settings: Settings) -> CrossSite | None:
    """The other site a POST came from, and whether it may embed the box; None when it came
    from our own pages (or the browser said nothing about where it came from)."""
    origin = sender_origin(request)
    if origin is None or origin in own_origins(request, settings):
        return None
    return CrossSite(origin, origin in settings.allowed_embed_origins)


def back_link(url: Any, settings: Settings) -> str | None:
    """`url` when it is a page of an allowed embedding origin (the link back after a sign-up)."""
    if not isinstance(url, str) or len(url) > 2000:
        return None
    origin = origin_of(url)
    if origin is None or origin not in settings.allowed_embed_origins:
        return None
    return url.strip()


def framing_policy(settings: Settings) -> str:
    """The page CSP of a page that allowed sites may frame (the rest of the policy unchanged)."""
    ancestors = " ".join(["'self'", *sorted(settings.allowed_embed_origins)])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; "
        f"frame-ancestors {ancestors}; base-uri 'none'"
    )


def allow_framing(response: Response, settings: Settings) -> Response:
    """Let the allowed origins frame this answer (no X-Frame-Options: DENY, frame-ancestors set)."""
    response.headers["Content-Security-Policy"] = framing_policy(settings)
    # The security middleware adds DENY only where a page sets no X-Frame-Options of its own;
    # SAMEORIGIN is ignored by browsers that apply frame-ancestors (every current one).
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def wants_json(request: Request) -> bool:
    """The embed script asks for JSON; a plain form post never does."""
    return "application/json" in request.headers.get("accept", "")


def json_answer(
    origin: str, status: int, *, ok: bool, title: str, message: str, **extra: Any
) -> JSONResponse:
    """The embed script's answer, readable by the allowed `origin` only (CORS)."""
    response = JSONResponse(
        {"ok": ok, "title": title, "message": message, **extra}, status_code=status
    )
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    return response


@dataclass(frozen=True, slots=True)
class Snippets:
    """What the console shows for one choice of topics."""

    form: str
    script: str
    frame: str
    link: str


def snippets(base_url: str, topics: list[str], frequency: str, consent_wording: str) -> Snippets:
    """The copy-paste snippets for a box that signs readers up to `topics` at `frequency`."""
    esc = html.escape
    hidden = "".join(
        f'\n  <input type="hidden" name="topics" value="{esc(slug)}">' for slug in topics
    )
    form = (
        f'<form method="post" action="{esc(base_url)}/subscribe" data-newsletter-box>\n'
        f'  <label for="nl-email">{esc(BOX_LABEL)}</label>\n'
        '  <input id="nl-email" type="email" name="email" autocomplete="email" required>'
        f"{hidden}\n"
        f'  <input type="hidden" name="frequency" value="{esc(frequency)}">\n'
        '  <input type="hidden" name="source" value="subscribe box">\n'
        '  <span style="position:absolute;left:-10000px" aria-hidden="true">'
        '<input name="website" tabindex="-1" autocomplete="off"></span>\n'
        f"  <small>{esc(consent_wording)}</small>\n"
        '  <button type="submit">Subscribe</button>\n'
        "</form>"
    )
    script = f'<script src="{esc(base_url)}/static/embed.js" defer></script>'
    query = f"topic={','.join(topics)}&frequency={frequency}"
    frame = (
        f'<iframe src="{esc(base_url)}/embed/form?{esc(query)}" title="{esc("Subscribe")}"'
        ' style="width:100%;max-width:40rem;height:22rem;border:0"></iframe>'
    )
    link = f"{base_url}/?topic={topics[0]}" if topics else f"{base_url}/"
    return Snippets(form, script, frame, link)
