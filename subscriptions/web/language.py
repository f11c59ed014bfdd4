"""The language of each reader page: a `lang` switch, else the remembered choice, else the browser's
`Accept-Language`, among NEWSLETTER_LANGUAGES (the first is the fallback)."""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from subscriptions.i18n import N_, choose_language, current_language, negotiate

#: Remembers a reader's choice made with the switch (`?lang=es`) for the next pages.
COOKIE = "newsletter_lang"
COOKIE_SECONDS = 365 * 24 * 3600


def request_language(
    *, query_lang: str | None, cookie_lang: str | None, accept: str | None, offered: tuple[str, ...]
) -> str:
    """The language of a page: the switch, the remembered choice, the browser's preference, the fallback."""
    return (
        choose_language(query_lang, offered)
        or choose_language(cookie_lang, offered)
        or negotiate(accept, offered)
    )


def _remembered(cookie_header: str) -> str | None:
    """The language cookie's value; the header is parsed only when it names that cookie (every
    request crosses this middleware)."""
    if COOKIE not in cookie_header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except Exception:
        return None
    return cookies[COOKIE].value if COOKIE in cookies else None


class ReaderLanguage:
    """Sets `subscriptions.i18n.current_language` for the request (a plain ASGI middleware); a
    valid `?lang=` is remembered in a cookie. Routes that know the reader (links from an email)
    set the reader's own language instead."""

    def __init__(self, app: ASGIApp, *, offered: tuple[str, ...], secure: bool = False) -> None:
        self.app = app
        self.offered = offered
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        switched = choose_language((query.get("lang") or [None])[0], self.offered)
        remembered = _remembered(headers.get("cookie", ""))
        current_language.set(
            request_language(
                query_lang=switched,
                cookie_lang=remembered,
                accept=headers.get("accept-language"),
                offered=self.offered,
            )
        )
        if switched is None or switched == remembered:
            await self.app(scope, receive, send)
            return
        cookie = f"{COOKIE}={switched}; Path=/; Max-Age={COOKIE_SECONDS}; SameSite=Lax"
        if self.secure:
            cookie += "; Secure"

        async def remember(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())],
                }
            await send(message)

        await self.app(scope, receive, remember)


#: Messages that subscriptions/web/forms.py raises and reader pages show (through `translate`), marked
#: here for the catalog so that forms.py itself stays as it is.
FORM_MESSAGES = (
    N_("This form was already sent. Please try again."),
    N_("This form has expired. Please try again."),
    N_("Line breaks are not allowed in this form."),
    N_("This form is too large."),
    N_("Uploads are not accepted here."),
)
