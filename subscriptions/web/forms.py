"""Form safety for reader pages: CSRF bound to a cookie, single use, a honeypot and a minimum fill time.

A form token is signed with the app's secret, names the visitor's CSRF cookie and a random nonce, and
carries the time the form was shown. On POST it must match the cookie, be younger than its age limit,
not have been used before (Redis remembers nonces), and not come back faster than a person types.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from starlette.exceptions import HTTPException

from subscriptions.errors import HeaderInjection, InvalidInput, TokenInvalid
from subscriptions.i18n import current_language, gettext_for
from subscriptions.ratelimit import RateLimiter
from subscriptions.web.sealed import Sealer

COOKIE = "nl_csrf"
FIELD = "csrf_token"
HONEYPOT = "website"
FORM_MAX_AGE_SECONDS = 4 * 3600
NONCE_SCOPE = "form"
#: The largest URL-encoded form body read (Starlette's limit for one field of a form).
MAX_URLENCODED_BYTES = 1024 * 1024
REPLAYED = "This form was already sent. Please try again."


class FormRejected(InvalidInput):
    """The form cannot be trusted (missing, forged, expired or replayed token); show a fresh one."""


@dataclass(frozen=True, slots=True)
class FormCheck:
    """A verified form: `is_bot` when the honeypot was filled, `too_fast` when it came back
    sooner than a person fills it in (a person may still have sent it: ask once more)."""

    is_bot: bool
    #: The token's random part: single use, marked in Redis under NONCE_SCOPE.
    nonce: str = ""
    too_fast: bool = False


class FormGuard:
    """Issues and checks form tokens."""

    def __init__(
        self, secret_key: str, limiter: RateLimiter, *, min_seconds: float, secure_cookie: bool
    ) -> None:
        self._sealer = Sealer(secret_key, "newsletter.csrf")
        self._limiter = limiter
        self._min_seconds = min_seconds
        self._secure = secure_cookie

    def issue(self, request: Request, *, timed: bool = True) -> tuple[str, str]:
        """A (cookie value, form token) pair; the cookie is reused when the visitor has one.

        `timed=False` makes a token that passes the minimum fill time at once: for the page that
        asks a too-fast sender to press one more button (a person does it in a second).
        """
        cookie = request.cookies.get(COOKIE) or ""
        if len(cookie) != 32:
            cookie = secrets.token_hex(16)
        shown = time.time() if timed else 0.0
        return cookie, self._sealer.seal([cookie, secrets.token_hex(8), shown])

    def issue_framed(self, *, timed: bool = True) -> str:
        """A token bound to no cookie, for the form framed on a publisher's page.

        A framed page is cross-site, so the browser withholds our SameSite cookie; the token is
        still signed, timed and single use, and other sites cannot read it out of the frame.
        """
        shown = time.time() if timed else 0.0
        return self._sealer.seal(["", secrets.token_hex(8), shown])

    def set_cookie(self, response: Response, cookie: str) -> None:
        response.set_cookie(
            COOKIE, cookie, httponly=True, samesite="lax", secure=self._secure, max_age=86400 * 30
        )

    def inspect(self, request: Request, form: dict[str, Any]) -> FormCheck:
        """Check a posted form's signature, cookie binding and age, but not yet its single use.

        The caller must then mark `nonce` as used (`verify` does it; the sign-up intake does it in
        the same Redis round trip as its other checks). Raises FormRejected.
        """
        token = form.get(FIELD)
        cookie = request.cookies.get(COOKIE) or ""
        if not isinstance(token, str) or not token:
            raise FormRejected("This form has expired. Please try again.")
        try:
            payload = self._sealer.open(token, max_age=FORM_MAX_AGE_SECONDS)
        except TokenInvalid:  # TokenExpired included
            raise FormRejected("This form has expired. Please try again.") from None
        if not isinstance(payload, list) or len(payload) != 3:
            raise FormRejected("This form has expired. Please try again.")
        bound, nonce, shown_at = payload
        # A framed form's token names no cookie (issue_framed); every other must match one.
        framed = bound == "" and form.get("embed") == "frame"
        if not framed and (not bound or bound != cookie):
            raise FormRejected("This form has expired. Please try again.")
        too_fast = time.time() - float(shown_at) < self._min_seconds
        return FormCheck(is_bot=bool(form.get(HONEYPOT)), nonce=str(nonce), too_fast=too_fast)

    def verify(self, request: Request, form: dict[str, Any]) -> FormCheck:
        """Check a posted form's token and use it up; raise FormRejected when it cannot be trusted."""
        check = self.inspect(request, form)
        if not self._limiter.first_use(NONCE_SCOPE, check.nonce, ttl_seconds=FORM_MAX_AGE_SECONDS):
            raise FormRejected(REPLAYED)
        return check


def refuse_line_breaks(form: dict[str, Any]) -> None:
    """CR or LF in any field could end up in a mail header: refuse the whole form."""
    for name, value in form.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and ("\r" in item or "\n" in item):
                raise HeaderInjection("Line breaks are not allowed in this form.", field=name)


async def read_form(request: Request, *, max_fields: int = 100) -> dict[str, Any]:
    """The posted fields: a repeated name becomes a list; file uploads are refused.

    URL-encoded bodies (what browsers send for these forms) are parsed here with the standard
    library, decoded as Starlette would (percent escapes as UTF-8), at a fraction of the cost of
    the streaming parser; anything else goes through Starlette's.
    """
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) > MAX_URLENCODED_BYTES:
            raise InvalidInput("This form is too large.")
        try:
            pairs = parse_qsl(
                body.decode("latin-1"), keep_blank_values=True, max_num_fields=max_fields
            )
        except ValueError:
            # In the page's language: the number makes it a message of its own, translated here.
            _ = gettext_for(current_language.get())
            raise InvalidInput(
                _("Too many fields. Maximum number of fields is %(count)d.") % {"count": max_fields}
            ) from None
        items: list[tuple[str, Any]] = list(pairs)
    else:
        try:
            data = await request.form(max_files=0, max_fields=max_fields)
        except HTTPException as exc:  # Starlette's limits, in our words where we have them
            detail = str(exc.detail)
            raise InvalidInput(
                "Uploads are not accepted here." if "files" in detail.lower() else detail
            ) from None
        items = list(data.multi_items())
    result: dict[str, Any] = {}
    for key, value in items:
        if not isinstance(value, str):
            raise InvalidInput("Uploads are not accepted here.")
        if key in result:
            existing = result[key]
            result[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            result[key] = value
    return result
