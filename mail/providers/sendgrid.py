"""SendGrid v3: `POST /v3/mail/send` with one content and many `personalizations`, signed event webhook.

A request carries one subject and body and up to 1000 personalizations, each with its own `to`,
`headers` (the reader's List-Unsubscribe…), `custom_args` (`delivery_id`) and `substitutions`. A
digest's readers of one variant share one body (`EmailMessage.shared`): it is sent once per request
with a tag such as `%nl3f9a….MANAGE.h%` in each per-reader slot, and each personalization carries
the reader's values for those tags. SendGrid replaces the tags in the subject and content of each
reader's copy ("substitutions", docs.sendgrid.com …/substitution-tags), so every reader receives
exactly the email rendered for them; a test expands requests that way and compares. The
documented limits are kept: ≤1000 personalizations a request and ≤10,000 bytes of substitutions
a personalization (a reader whose values are larger is sent their complete email in a request of
its own content). Messages without a shared body are grouped by their complete content (sender,
subject, text, html, tag). A group is split only where an address would repeat (SendGrid wants each
address once per request).

SendGrid answers 202 with one `X-Message-Id` for the whole request, used for every message in it
(`EmailMessage.message_id` is not sent; `categories` is the message's `kind` metadata or the URL's `tag`).
After a request that says "slow down", "account refused" or got no answer, the rest of the batch is
not sent. There is no idempotency key: a request that may have arrived unanswered is UNKNOWN.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Any, Self

import httpx
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mail.emailurl import EmailURL
from mail.providers.base import (
    EmailMessage,
    Outcome,
    SendResult,
    check_url_options,
)
from mail.providers.http import (
    HttpProvider,
    count_requests,
    send_by_content,
    temporary,
    transport_failure,
)
from mail.providers.webhooks import (
    EventType,
    WebhookConfig,
    WebhookEvent,
    WebhookRejected,
    WebhookRequest,
)
from subscriptions.errors import ConfigurationError

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"

#: Event `event` -> normalized type; `bounce` and `dropped` look further (see _type).
EVENT_TYPES: dict[str, EventType] = {
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "bounce": EventType.BOUNCED,
    "dropped": EventType.DROPPED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}
#: A `dropped` event's reason when SendGrid refused because of its own suppression lists.
DROP_REASONS: dict[str, EventType] = {
    "Bounced Address": EventType.BOUNCED,
    "Spam Reporting Address": EventType.COMPLAINED,
    "Unsubscribed Address": EventType.UNSUBSCRIBED,
}


class SendgridProvider(HttpProvider):
    """`sendgrid://API_KEY@api.sendgrid.com?tag=newsletter` (EU subusers: `api.eu.sendgrid.com`)."""

    name = "sendgrid"
    batch_limit = 1000
    supports_idempotency = False
    default_host = "api.sendgrid.com"
    has_webhooks = True

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        tag: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url or f"https://{self.default_host}", transport=transport)
        self.client.headers["Authorization"] = f"Bearer {api_key}"
        self.tag = tag

    def __repr__(self) -> str:
        return f"SendgridProvider({self.base_url!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Read the API key (the URL's user part), the host and `tag`."""
        check_url_options(url, "tag")
        api_key = url.password or url.username
        if not api_key:
            raise ConfigurationError(
                "NEWSLETTER_EMAIL_URL: sendgrid needs the API key as the user part,"
                " e.g. sendgrid://API_KEY@api.sendgrid.com"
            )
        return cls(api_key, base_url=cls.base_url_from(url), tag=url.params.get("tag") or None)

    def requests_for(self, messages: Sequence[EmailMessage]) -> int:
        """One request per shared body (or distinct content), split where an address repeats."""
        return count_requests(messages, self._content)

    def _content(self, message: EmailMessage) -> Hashable:
        """What messages sent in one request must share."""
        tag = message.metadata.get("kind") or self.tag
        if _substitutable(message):
            return (message.sender, message.subject, message.shared, tag)
        return (message.sender, message.subject, message.text, message.html, tag, None)

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        def post(
            indexes: list[int], addresses: Mapping[int, tuple[Address, Address]]
        ) -> SendResult:
            return self._post(self._body([messages[i] for i in indexes], indexes, addresses))

        return send_by_content(messages, self._content, post)

    def _body(
        self,
        group: list[EmailMessage],
        indexes: list[int],
        addresses: Mapping[int, tuple[Address, Address]],
    ) -> dict[str, Any]:
        """One request: the group's shared content once, one personalization per reader."""
        first = group[0]
        shared = first.shared if _substitutable(first) else None
        personalizations = []
        for message, index in zip(group, indexes, strict=True):
            personalization: dict[str, Any] = {"to": [_mailbox(addresses[index][0])]}
            if message.headers:
                personalization["headers"] = dict(message.headers)
            if message.metadata:
                personalization["custom_args"] = dict(message.metadata)
            if shared is not None:
                personalization["substitutions"] = substitutions(message)
            personalizations.append(personalization)
        if shared is not None:
            text, html = shared.template(lambda name: substitution_tag(shared.key, name))
        else:
            text, html = first.text, first.html
        content = [{"type": "text/plain", "value": text}]
        if html is not None:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _mailbox(addresses[indexes[0]][1]),
            "subject": first.subject,
            "content": content,
        }
        tag = first.metadata.get("kind") or self.tag
        if tag:
            body["categories"] = [tag]
        return body

    def _post(self, body: dict[str, Any]) -> SendResult:
        """Send one request; its one result stands for every message in it."""
        try:
            response = self.client.post("/v3/mail/send", json=body)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        if response.is_success:
            return SendResult(Outcome.SENT, response.headers.get("x-message-id"))
        return _refusal(response)

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Check the ECDSA P-256 signature over timestamp + raw body, then the timestamp's age."""
        if not config.secret:
            raise WebhookRejected("sendgrid webhooks are not configured", status=403)
        key = load_verification_key(config.secret)
        signature_b64 = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature_b64 or not timestamp:
            raise WebhookRejected("sendgrid webhook without signature headers", status=401)
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            key.verify(signature, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (binascii.Error, ValueError, InvalidSignature):
            raise WebhookRejected("sendgrid webhook signature does not match", status=401) from None
        if not timestamp.isdigit() or abs(config.now - int(timestamp)) > config.tolerance_seconds:
            raise WebhookRejected("sendgrid webhook timestamp is stale", status=403)

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """The JSON array of events, normalized; `event_id` is SendGrid's `sg_event_id`."""
        try:
            events = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("sendgrid webhook body is not JSON", status=400) from None
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise WebhookRejected("sendgrid webhook body is not an array of events", status=400)
        try:
            return [_event(e) for e in events]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise WebhookRejected(
                f"sendgrid webhook event is malformed: {exc}", status=400
            ) from None


def load_verification_key(secret: str) -> ec.EllipticCurvePublicKey:
    """The webhook verification key: base64 DER as SendGrid shows it (PEM also accepted)."""
    try:
        if secret.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(secret.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(secret, validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError(
            "NEWSLETTER_WEBHOOK_SENDGRID: not SendGrid's verification key (expected the base64"
            " P-256 public key shown under Mail Settings > Signed Event Webhook)"
        )
    return key


#: "The total collective size of your substitutions may not exceed 10,000 bytes per
#: personalization object" (SendGrid v3 Mail Send reference, `personalizations.substitutions`).
MAX_SUBSTITUTION_BYTES = 10_000


def substitution_tag(key: str, name: str) -> str:
    """The tag of one slot in a shared body: `%nl<key>.MANAGE.t%` (the key is random per body)."""
    return f"%nl{key}.{name}%"


def substitutions(message: EmailMessage) -> dict[str, str]:
    """One reader's `substitutions`: the tag of each slot of their shared body -> their value."""
    assert message.shared is not None
    key = message.shared.key
    return {
        substitution_tag(key, name): message.slot_values[name]
        for name in message.shared.variables()
    }


def _substitutable(message: EmailMessage) -> bool:
    """Whether the message can go as its shared body plus substitutions (within SendGrid's limit)."""
    if message.shared is None:
        return False
    names = message.shared.variables()
    if any(name not in message.slot_values for name in names):
        return False
    size = sum(
        len(substitution_tag(message.shared.key, n).encode()) + len(message.slot_values[n].encode())
        for n in names
    )
    return size <= MAX_SUBSTITUTION_BYTES


def _mailbox(address: Address) -> dict[str, str]:
    mailbox = {"email": address.addr_spec}
    if address.display_name:
        mailbox["name"] = address.display_name
    return mailbox


def _refusal(response: httpx.Response) -> SendResult:
    status = response.status_code
    try:
        errors = response.json().get("errors") or []
        message = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        message = response.text[:300]
    detail = f"SendGrid HTTP {status}" + (f": {message}" if message else "")
    if status == 429 or status >= 500:
        return temporary(detail, response.headers)  # 429: wait until X-RateLimit-Reset
    if status in (401, 403):
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail[:500])
    return SendResult(Outcome.REQUEST_WRONG, detail=detail[:500])  # 400, 413, 404…


def _event(event: Mapping[str, Any]) -> WebhookEvent:
    kind = str(event["event"])
    type_ = EVENT_TYPES.get(kind, EventType.OTHER)
    reason = str(event.get("reason") or event.get("response") or "")
    if kind == "bounce" and event.get("type") == "blocked":
        type_ = EventType.SOFT_BOUNCED
    elif kind == "dropped":
        type_ = DROP_REASONS.get(reason, EventType.DROPPED)
    event_id = event.get("sg_event_id")
    if not event_id:  # old or odd events: a digest of the event is stable across retries
        canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        event_id = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]
    message_id = str(event.get("sg_message_id") or "")
    delivery_id = event.get("delivery_id")  # custom_args come back as top-level fields
    return WebhookEvent(
        provider="sendgrid",
        event_id=str(event_id),
        type=type_,
        email=str(event.get("email") or ""),
        occurred_at=datetime.fromtimestamp(int(event["timestamp"]), UTC),
        # sg_message_id is the request's X-Message-Id followed by ".filter…".
        provider_message_id=message_id.split(".", 1)[0] or None,
        delivery_id=int(str(delivery_id)) if str(delivery_id).isdigit() else None,
        detail=" ".join(p for p in (kind, str(event.get("type") or ""), reason) if p)[:500],
        raw=dict(event),
    )
