"""Email providers: one module per provider around `base.Provider`, chosen by NEWSLETTER_EMAIL_URL."""

from __future__ import annotations

from mail.emailurl import EmailURL, parse_email_url
from mail.providers.base import (
    EmailMessage,
    Outcome,
    Provider,
    SendResult,
    build_mime,
)
from mail.providers.mailgun import MailgunProvider
from mail.providers.outbox import OutboxProvider, read_outbox
from mail.providers.postmark import PostmarkProvider
from mail.providers.resend import ResendProvider
from mail.providers.sendgrid import SendgridProvider
from mail.providers.ses import SesProvider
from mail.providers.smtp import SmtpProvider
from subscriptions.errors import ConfigurationError

#: One row per provider; the keys are the URL schemes, and the only list of them (parse_email_url
#: accepts exactly these).
PROVIDERS: dict[str, type[Provider]] = {
    "outbox": OutboxProvider,
    "smtp": SmtpProvider,
    "postmark": PostmarkProvider,
    "sendgrid": SendgridProvider,
    "mailgun": MailgunProvider,
    "resend": ResendProvider,
    "ses": SesProvider,
}


def provider_from_url(url: str | EmailURL) -> Provider:
    """Build the provider an email URL names."""
    parsed = parse_email_url(url) if isinstance(url, str) else url
    try:
        provider_class = PROVIDERS[parsed.scheme]
    except KeyError:
        known = ", ".join(PROVIDERS)
        raise ConfigurationError(
            f"NEWSLETTER_EMAIL_URL: no provider for scheme {parsed.scheme!r} (known: {known})"
        ) from None
    return provider_class.from_url(parsed)


__all__ = [
    "PROVIDERS",
    "EmailMessage",
    "MailgunProvider",
    "OutboxProvider",
    "Outcome",
    "PostmarkProvider",
    "Provider",
    "ResendProvider",
    "SendResult",
    "SendgridProvider",
    "SesProvider",
    "SmtpProvider",
    "build_mime",
    "provider_from_url",
    "read_outbox",
]
