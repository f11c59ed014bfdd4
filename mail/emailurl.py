"""Parse NEWSLETTER_EMAIL_URL, the one setting that picks and configures the email provider.

The schemes it accepts are the keys of `mail.providers.PROVIDERS`, the one list of providers; the
settings validate with it, the providers build from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from subscriptions.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class EmailURL:
    """A parsed email URL: which provider, and the options it was given."""

    scheme: str
    plain_http: bool = False
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Host and path run together: the folder of `outbox://var/outbox` is `var/outbox`."""
        return f"{self.host or ''}{self.path}"

    def redacted(self) -> str:
        """The URL with any credential replaced, safe to log."""
        auth = "***@" if (self.username or self.password) else ""
        port = f":{self.port}" if self.port else ""
        scheme = f"{self.scheme}+http" if self.plain_http else self.scheme
        return f"{scheme}://{auth}{self.host or ''}{port}{self.path}"


def parse_email_url(value: str, *, variable: str = "NEWSLETTER_EMAIL_URL") -> EmailURL:
    """Split an email URL into an EmailURL, or raise a one-line ConfigurationError."""
    if not value or "://" not in value:
        raise ConfigurationError(
            f"{variable}: {value!r} is not a URL; expected e.g. outbox://var/outbox"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{variable}: malformed URL ({exc})") from None
    # Here, not at the top: the providers import this module for EmailURL.
    from mail.providers import PROVIDERS
    from mail.providers.http import HttpProvider

    scheme, _, suffix = parts.scheme.lower().partition("+")
    known = ", ".join(PROVIDERS)
    if scheme not in PROVIDERS:
        raise ConfigurationError(f"{variable}: unknown scheme {scheme!r} (known: {known})")
    if suffix and (suffix != "http" or not issubclass(PROVIDERS[scheme], HttpProvider)):
        raise ConfigurationError(
            f"{variable}: unknown scheme suffix '+{suffix}' for {scheme!r}"
            " (only HTTP-API providers take '+http')"
        )
    if scheme != "outbox" and not parts.hostname:
        raise ConfigurationError(f"{variable}: {scheme} URL needs a host")
    return EmailURL(
        scheme=scheme,
        plain_http=suffix == "http",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=parts.hostname if scheme != "outbox" else parts.netloc,
        port=port,
        path=unquote(parts.path),
        params=dict(parse_qsl(parts.query)),
    )
