"""The provider interface: one message type, one outcome vocabulary, one batch `send`."""

from __future__ import annotations

import email.policy
import email.utils
import functools
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage as MIMEMessage
from enum import StrEnum
from types import TracebackType
from typing import ClassVar, Self

import idna

from mail.emailurl import EmailURL
from mail.providers.webhooks import WebhookConfig, WebhookEvent, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError, HeaderInjection, InvalidInput

#: Headers build_mime writes itself; `EmailMessage.headers` may not set them.
RESERVED_HEADERS: frozenset[str] = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
METADATA_HEADER_PREFIX = "X-Newsletter-"

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'
_METADATA_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# cte_type 7bit makes bodies quoted-printable or base64 when they are not ASCII, because smtplib
# does not ask for 8BITMIME unless the message is internationalized.
# Long header values (a reader's List-Unsubscribe URL) stay on one line up to RFC 5322's hard limit of
# 998 characters: folding them before the URL makes some readers of the header see a leading space.
_POLICY = email.policy.default.clone(cte_type="7bit", max_line_length=998)
_POLICY_UTF8 = email.policy.default.clone(utf8=True, max_line_length=998)
#: Bodies are encoded under this line length instead: Python's content manager takes the policy's
#: max_line_length for quoted-printable and base64 lines, and RFC 2045 (6.7, 6.8) allows encoded
#: lines of at most 76 characters. A 7bit/8bit body with a longer line becomes quoted-printable.
BODY_LINE_LENGTH = 76


class Outcome(StrEnum):
    """What became of one message, in the same words for every provider."""

    SENT = "sent"
    TEMPORARY = "temporary"
    RECIPIENT_PERMANENT = "recipient_permanent"
    REQUEST_WRONG = "request_wrong"
    ACCOUNT_BLOCKED = "account_blocked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, eq=False)
class SharedBody:
    """A body many readers share, cut at its per-reader slots: piece, slot, piece, … (text and HTML).

    One object per rendered variant, referenced by every message of that variant. Providers that
    merge per-recipient values themselves (SendGrid substitutions, Mailgun recipient-variables) send
    it once per request with a tag in each slot, and each reader's `EmailMessage.slot_values`.
    `key` is random and goes into every tag, so the text of a post cannot contain one. Compared by
    identity (`eq=False`): grouping by it costs nothing per message.
    """

    key: str
    text_pieces: tuple[str, ...]
    text_slots: tuple[str, ...]
    html_pieces: tuple[str, ...] | None = None
    html_slots: tuple[str, ...] = ()

    def template(self, tag: Callable[[str], str]) -> tuple[str, str | None]:
        """Text and HTML with slot `S` written as `tag(S + ".t")` in the text, `tag(S + ".h")` in HTML."""
        text = _join(self.text_pieces, [tag(f"{s}.t") for s in self.text_slots])
        if self.html_pieces is None:
            return text, None
        return text, _join(self.html_pieces, [tag(f"{s}.h") for s in self.html_slots])

    def variables(self) -> list[str]:
        """The variable names a reader's `slot_values` must hold (`MANAGE.t`, `MANAGE.h`, …)."""
        names = dict.fromkeys(f"{s}.t" for s in self.text_slots)
        names.update(dict.fromkeys(f"{s}.h" for s in self.html_slots))
        return list(names)


def _join(pieces: Sequence[str], values: Sequence[str]) -> str:
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        out.append(value)
        out.append(piece)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One email to one recipient, as the worker hands it to a provider.

    `text` and `html` are always the reader's complete email. When `shared` is set, they equal
    `shared` with each slot filled from `slot_values` (`MANAGE.t` -> value in the text, `MANAGE.h`
    -> value as written in HTML); providers may send the shared form instead (see SharedBody).
    """

    to: str
    sender: str
    subject: str
    text: str
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    shared: SharedBody | None = None
    slot_values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider's answer for one message."""

    outcome: Outcome
    provider_message_id: str | None = None
    detail: str = ""
    retry_after: float | None = None


class Provider(ABC):
    """Base of every provider: `send` checks the batch, `_send_batch` does the provider's part."""

    name: ClassVar[str]
    batch_limit: ClassVar[int]
    supports_idempotency: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Build the provider from a parsed NEWSLETTER_EMAIL_URL."""

    def send(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Send a batch; one result per message, in the same order."""
        if len(messages) > self.batch_limit:
            raise ValueError(
                f"{self.name}: batch of {len(messages)} messages is over the limit of"
                f" {self.batch_limit}; split it before calling send()"
            )
        if not messages:
            return []
        results = self._send_batch(messages)
        if len(results) != len(messages):
            raise RuntimeError(f"{self.name}: {len(results)} results for {len(messages)} messages")
        return results

    @abstractmethod
    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Send a batch that is known to be within the limit."""

    def requests_for(self, messages: Sequence[EmailMessage]) -> int:
        """API requests one batch costs (for the global requests-per-second limit)."""
        return 1

    #: Whether this provider posts events to /webhooks/{name}.
    has_webhooks: ClassVar[bool] = False

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Check the call is genuine and fresh; raise WebhookRejected otherwise (changes nothing)."""
        raise WebhookRejected(f"{cls.name} sends no webhooks", status=404)

    @classmethod
    def replay_key(cls, request: WebhookRequest) -> str | None:
        """A value that must never be accepted twice (for signatures that do not cover the body)."""
        return None

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """The normalized events of a verified call; WebhookRejected(status=400) if malformed."""
        raise WebhookRejected(f"{cls.name} sends no webhooks", status=404)

    @classmethod
    def acknowledge(
        cls, events: Sequence[WebhookEvent], config: WebhookConfig
    ) -> list[WebhookEvent]:
        """Answer the set-up messages among a verified call's `events` the provider's way (SNS's
        subscription confirmation) and return the events left for the store; by default, all."""
        return list(events)

    def close(self) -> None:  # noqa: B027  # optional hook: most providers hold nothing
        """Release connections or other resources; the default has none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_url_options(url: EmailURL, *known: str) -> None:
    """Refuse query options the provider does not understand, rather than ignore a typo."""
    unknown = sorted(set(url.params) - set(known))
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(
            f"{url.scheme} email URL: unknown option {unknown[0]!r} (known: {names})"
        )


def refuse_line_breaks(value: str, what: str) -> None:
    """Raise HeaderInjection if a header value holds CR or LF."""
    if "\r" in value or "\n" in value:
        raise HeaderInjection(f"{what} must not contain a line break", field=what)


def metadata_header_name(key: str) -> str:
    """The header that carries one metadata key: `delivery_id` -> `X-Newsletter-Delivery-Id`."""
    refuse_line_breaks(key, "metadata key")
    if not _METADATA_KEY.fullmatch(key):
        raise InvalidInput(f"metadata key {key!r} must be letters, digits, '_' or '-'")
    words = re.split(r"[_-]+", key)
    return METADATA_HEADER_PREFIX + "-".join(w.capitalize() for w in words if w)


#: A plain address: a dot-atom local part of common characters, a domain of letters, digits and
#: hyphens. Nearly every reader's address is one, and getaddresses() returns it unchanged (a test
#: holds this), so it skips the parser; anything else takes the parser's path.
_PLAIN_ADDRESS = re.compile(
    r"([A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
)


def parse_address(value: str, what: str) -> Address:
    """One mailbox from `a@b.org` or `Name <a@b.org>`, with its domain in ASCII (IDNA)."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain is not None:
        display_name = ""
        username, domain = plain.groups()
    else:
        refuse_line_breaks(value, what)
        pairs = email.utils.getaddresses([value])
        if len(pairs) != 1 or "@" not in pairs[0][1]:
            raise InvalidInput(
                f"{what} must be exactly one email address, got {value!r}", field=what
            )
        display_name, addr_spec = pairs[0]
        username, _, domain = addr_spec.rpartition("@")
    try:
        # An A-label domain needs no SMTPUTF8; only a non-ASCII local part does.
        return Address(display_name=display_name, username=username, domain=_ascii(domain))
    except (idna.IDNAError, ValueError) as exc:
        raise InvalidInput(f"{what} {value!r} is not a valid address: {exc}", field=what) from None


def address_text(value: str, what: str) -> str:
    """`str(parse_address(value, what))`, without building an Address for a plain address (nearly
    every reader's): `local@domain` with the domain in IDNA A-labels. A test holds the two equal."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain is None:
        return str(parse_address(value, what))
    username, domain = plain.groups()
    try:
        return f"{username}@{_ascii(domain)}"
    except (idna.IDNAError, ValueError) as exc:
        raise InvalidInput(f"{what} {value!r} is not a valid address: {exc}", field=what) from None


@functools.lru_cache(maxsize=16)
def _sender_text(value: str) -> str:
    return str(_sender(value))


@functools.lru_cache(maxsize=4096)
def _ascii(domain: str) -> str:
    """The domain in IDNA A-labels; cached, as readers share a few thousand domains at most."""
    return idna.encode(domain, uts46=True).decode("ascii")


@functools.lru_cache(maxsize=16)
def _sender(value: str) -> Address:
    """The From address, parsed once per worker (every message of a newsletter has the same)."""
    return parse_address(value, "sender")


def check_message(message: EmailMessage) -> tuple[Address, Address]:
    """The checks every provider makes before sending, without building MIME: (to, sender).

    Raises HeaderInjection for a line break in any header value, InvalidInput for a malformed
    address, header name or metadata key, or an extra header that would override a reserved one.
    """
    to = parse_address(message.to, "to")
    sender = _sender(message.sender)
    _check_fields(message)
    return to, sender


def check_message_text(message: EmailMessage) -> tuple[str, str]:
    """check_message, with (to, sender) as the strings a JSON API takes (cheaper: no Address)."""
    to = address_text(message.to, "to")
    sender = _sender_text(message.sender)
    _check_fields(message)
    return to, sender


def _check_fields(message: EmailMessage) -> None:
    refuse_line_breaks(message.subject, "subject")
    for name, value in message.headers.items():
        refuse_line_breaks(name, "header name")
        refuse_line_breaks(value, f"header {name}")
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a valid header name", field="headers")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(
                f"header {name!r} is set from the message's own fields, not from headers",
                field="headers",
            )
    for key, value in message.metadata.items():
        metadata_header_name(key)  # refuses a malformed key
        refuse_line_breaks(value, f"metadata {key}")
    if message.message_id is not None:
        refuse_line_breaks(message.message_id, "message_id")


def build_mime(message: EmailMessage) -> MIMEMessage:
    """Build the RFC 5322 message: headers, metadata headers, text then html alternatives."""
    to, sender = check_message(message)
    extra = list(message.headers.items())
    extra += [(metadata_header_name(key), value) for key, value in message.metadata.items()]
    international = not (to.username.isascii() and sender.username.isascii())
    mime = MIMEMessage(policy=_POLICY_UTF8 if international else _POLICY)
    mime["From"] = sender
    mime["To"] = to
    mime["Subject"] = message.subject
    mime["Date"] = datetime.now(UTC)
    mime["Message-ID"] = message.message_id or email.utils.make_msgid(domain=sender.domain)
    for name, value in extra:
        mime[name] = value
    # Encode the bodies under the 76-character policy, then fold the headers under the long one.
    header_policy = mime.policy
    mime.policy = header_policy.clone(max_line_length=BODY_LINE_LENGTH)
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    mime.policy = header_policy
    for part in mime.walk():
        part.policy = header_policy
    return mime
