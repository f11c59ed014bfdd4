"""The one exception tree of the project.

NewsletterError
├── ConfigurationError      a setting is missing or wrong; the message names the variable
├── InvalidInput            bad input from a reader, an editor or a feed; nothing was changed
│   ├── HeaderInjection     CR or LF where a mail header value goes
│   └── CountChanged        a send was confirmed for a recipient count that is no longer true
├── NotFound                the thing asked for does not exist
├── TokenInvalid            a signed token was tampered with, is for another purpose, or was revoked
│   ├── TokenExpired        ... or is past its age
│   └── TokenUsed           ... or was already used
├── RateLimited             too many requests; try again later
└── ServiceUnavailable      the database or the broker cannot be reached
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(NewsletterError):
    """A setting is missing or malformed; the message is one line naming the variable."""


class InvalidInput(NewsletterError):
    """Input was refused; the message is fit to show to the person who sent it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class HeaderInjection(InvalidInput):
    """A value meant for a mail header holds a line break."""


class CountChanged(InvalidInput):
    """A send was confirmed for `expected` recipients, but the audience is `count` now."""

    def __init__(self, message: str, *, count: int) -> None:
        super().__init__(message, field="expected_count")
        self.count = count


class NotFound(NewsletterError):
    """The requested record does not exist."""


class TokenInvalid(NewsletterError):
    """A signed token is malformed, tampered with, revoked or for another purpose."""


class TokenExpired(TokenInvalid):
    """A signed token is older than its purpose allows; `claims` says whose it was."""

    def __init__(self, message: str, claims: object | None = None) -> None:
        super().__init__(message)
        self.claims = claims


class TokenUsed(TokenInvalid):
    """A single-use token was already used."""


class RateLimited(NewsletterError):
    """Too many requests from one address or client."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(NewsletterError):
    """A backing service (database, broker) cannot be reached."""
