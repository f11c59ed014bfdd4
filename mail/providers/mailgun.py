"""Mailgun: batch sending to `POST /v3/{domain}/messages` with many `to` and `recipient-variables`.

One request carries one subject and body for up to 1000 recipients, with per-recipient values in the
`recipient-variables` JSON (which also makes Mailgun send each reader a copy addressed to them
alone). A digest's readers of one variant share one body (`EmailMessage.shared`): it is sent once
per request with `%recipient.nl<key>_MANAGE_h%` in each per-reader slot, and each reader's values
under those names in their variables; Mailgun substitutes them into each reader's copy
(documentation.mailgun.com …/sending-messages/batch-sending), so every reader receives exactly the
email rendered for them (a test expands requests that way and compares). A header or metadata value
that differs between readers is sent as `h:List-Unsubscribe=%recipient.h:List-Unsubscribe%` or
`v:delivery_id=%recipient.v:delivery_id%`, its value in each reader's variables; a value shared by
all is sent as is. Messages are grouped by content (sender, subject, shared body or else text and
html, tag, header names, metadata keys), each distinct content is sent once, and a group is split
where an address would repeat, as the variables are keyed by address.

Mailgun answers one `{id, message}` per request, used for every message in it (`EmailMessage.message_id`
is not sent; `o:tag` is the message's `kind` metadata or the URL's `tag`). After a request that
says "slow down", "account refused" or got no answer, the rest of the batch is not sent. There is
no idempotency key: a request that may have arrived unanswered is UNKNOWN.

Webhooks are signed in the body: hex HMAC-SHA256 of timestamp + token with the webhook signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Any, Self

import httpx

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

#: event-data `event` -> normalized type; `failed` looks at severity and reason (see _type).
EVENT_TYPES: dict[str, EventType] = {
    "delivered": EventType.DELIVERED,
    "complained": EventType.COMPLAINED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}
#: A permanent `failed` event's reason, where it is not a plain hard bounce.
PERMANENT_REASONS: dict[str, EventType] = {
    "suppress-unsubscribe": EventType.UNSUBSCRIBED,
    "suppress-complaint": EventType.COMPLAINED,
    "old": EventType.SOFT_BOUNCED,  # gave up after retrying temporary failures for hours
}
_TRY_AGAIN = re.compile(r"try again after (\d+) seconds?", re.IGNORECASE)
#: A 400 about the sending domain, not the message: "Domain not found", "domain ... is not
#: verified", "Sandbox subdomains are for test purposes only" (unauthorized recipients).
_DOMAIN_PROBLEM = re.compile(
    r"domain not found|domain .*not (?:verified|found)|sandbox subdomains|unverified domain",
    re.IGNORECASE,
)


class MailgunProvider(HttpProvider):
    """`mailgun://API_KEY@api.mailgun.net/mg.example.org?tag=newsletter` (EU: `api.eu.mailgun.net`)."""

    name = "mailgun"
    batch_limit = 1000
    supports_idempotency = False
    default_host = "api.mailgun.net"
    has_webhooks = True

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        base_url: str | None = None,
        tag: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url or f"https://{self.default_host}", transport=transport)
        self.client.auth = httpx.BasicAuth("api", api_key)
        self.domain = domain
        self.tag = tag

    def __repr__(self) -> str:
        return f"MailgunProvider({self.base_url!r}, domain={self.domain!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Read the API key (the URL's user part), the host, the sending domain (path) and `tag`."""
        check_url_options(url, "tag")
        api_key = url.password or url.username
        if not api_key:
            raise ConfigurationError(
                "NEWSLETTER_EMAIL_URL: mailgun needs the API key as the user part,"
                " e.g. mailgun://API_KEY@api.mailgun.net/mg.example.org"
            )
        domain = url.path.strip("/")
        if not domain or "/" in domain:
            raise ConfigurationError(
                "NEWSLETTER_EMAIL_URL: mailgun needs the sending domain as the path,"
                " e.g. mailgun://API_KEY@api.mailgun.net/mg.example.org"
            )
        return cls(
            api_key, domain, base_url=cls.base_url_from(url), tag=url.params.get("tag") or None
        )

    def requests_for(self, messages: Sequence[EmailMessage]) -> int:
        """One request per shared body (or distinct content), split where an address repeats."""
        return count_requests(messages, self._content)

    def _content(self, message: EmailMessage) -> Hashable:
        """What messages sent in one request must share."""
        tag = message.metadata.get("kind") or self.tag
        if _substitutable(message):
            body: tuple[object, ...] = (message.shared,)
        else:
            body = (message.text, message.html)
        return (
            *(message.sender, message.subject, *body, tag),
            frozenset(message.headers),
            frozenset(message.metadata),
        )

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        def post(
            indexes: list[int], addresses: Mapping[int, tuple[Address, Address]]
        ) -> SendResult:
            group = [(messages[i], addresses[i][0]) for i in indexes]
            return self._post(self._form(group, addresses[indexes[0]][1]))

        return send_by_content(messages, self._content, post)

    def _form(self, group: list[tuple[EmailMessage, Address]], sender: Address) -> dict[str, Any]:
        """The form fields of one request: shared content once, per-reader values as variables."""
        first = group[0][0]
        shared = first.shared if _substitutable(first) else None
        if shared is not None:
            text, html = shared.template(lambda name: f"%recipient.{variable(shared.key, name)}%")
        else:
            text, html = first.text, first.html
        data: dict[str, Any] = {
            "from": str(sender),
            "to": [str(to) for _, to in group],
            "subject": first.subject,
            "text": text,
        }
        if html is not None:
            data["html"] = html
        tag = first.metadata.get("kind") or self.tag
        if tag:
            data["o:tag"] = tag
        addresses = [to.addr_spec for _, to in group]  # a property that formats: once each
        variables: dict[str, dict[str, str]] = {address: {} for address in addresses}
        for prefix, field in (("h:", "headers"), ("v:", "metadata")):
            fields: Mapping[str, str] = getattr(first, field)
            for name in fields:
                values = [getattr(m, field)[name] for m, _ in group]
                if len(set(values)) == 1:
                    data[prefix + name] = values[0]
                    continue
                data[prefix + name] = f"%recipient.{prefix}{name}%"
                for address, value in zip(addresses, values, strict=True):
                    variables[address][prefix + name] = value
        if shared is not None:
            names = [(variable(shared.key, name), name) for name in shared.variables()]
            for (message, _), address in zip(group, addresses, strict=True):
                own = variables[address]
                for key, name in names:
                    own[key] = message.slot_values[name]
        data["recipient-variables"] = json.dumps(variables, ensure_ascii=False)
        return data

    def _post(self, form: dict[str, Any]) -> SendResult:
        """Send one request as multipart/form-data; its one result stands for every message."""
        # Sent as a part with no file name, recipient-variables is a plain field; having a part
        # there makes httpx encode the request as multipart/form-data.
        variables = form.pop("recipient-variables").encode()
        try:
            response = self.client.post(
                f"/v3/{self.domain}/messages",
                data=form,
                files={"recipient-variables": (None, variables)},
            )
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        if response.is_success:
            try:
                message_id = str(response.json().get("id") or "").strip("<>") or None
            except (ValueError, AttributeError):
                message_id = None
            return SendResult(Outcome.SENT, message_id)
        return _refusal(response)

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Check hex HMAC-SHA256(signing key, timestamp + token) from the body, then its age."""
        if not config.secret:
            raise WebhookRejected("mailgun webhooks are not configured", status=403)
        signature = _body(request).get("signature")
        if not isinstance(signature, dict):
            raise WebhookRejected("mailgun webhook without a signature", status=401)
        timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
            raise WebhookRejected("mailgun webhook signature is incomplete", status=401)
        message = f"{timestamp}{token}".encode()
        expected = hmac.new(config.secret.encode(), message, hashlib.sha256).hexdigest()
        # Bytes: compare_digest raises TypeError on a non-ASCII str, which a forger can send.
        if not hmac.compare_digest(expected.encode(), str(given).lower().encode()):
            raise WebhookRejected("mailgun webhook signature does not match", status=401)
        if (
            not (str(timestamp).isascii() and str(timestamp).isdigit())
            or abs(config.now - int(str(timestamp))) > config.tolerance_seconds
        ):
            raise WebhookRejected("mailgun webhook timestamp is stale", status=403)

    @classmethod
    def replay_key(cls, request: WebhookRequest) -> str | None:
        """Mailgun signs only timestamp and token, not the event: a token must never come twice."""
        signature = _body(request).get("signature")
        token = signature.get("token") if isinstance(signature, dict) else None
        return token if isinstance(token, str) else None

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """The one event of a call, normalized; `event_id` is event-data `id` and `timestamp`."""
        data = _body(request).get("event-data")
        if not isinstance(data, dict):
            raise WebhookRejected("mailgun webhook without event-data", status=400)
        try:
            return [_event(data)]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise WebhookRejected(
                f"mailgun webhook event is malformed: {exc}", status=400
            ) from None


def variable(key: str, name: str) -> str:
    """The recipient variable of one slot of a shared body: `nl<key>_MANAGE_h` (key: random per body)."""
    return f"nl{key}_{name.replace('.', '_')}"


def _substitutable(message: EmailMessage) -> bool:
    """Whether the message can go as its shared body plus recipient variables."""
    return message.shared is not None and all(
        name in message.slot_values for name in message.shared.variables()
    )


def _body(request: WebhookRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("mailgun webhook body is not JSON", status=400) from None
    if not isinstance(body, dict):
        raise WebhookRejected("mailgun webhook body is not an object", status=400)
    return body


def _refusal(response: httpx.Response) -> SendResult:
    status = response.status_code
    try:
        message = str(response.json().get("message") or "")
    except (ValueError, AttributeError):
        message = response.text[:300]
    detail = f"Mailgun HTTP {status}" + (f": {message}" if message else "")
    if status == 429 or status >= 500:
        result = temporary(detail, response.headers)
        wait = _TRY_AGAIN.search(message)
        if result.retry_after is None and wait:
            return SendResult(Outcome.TEMPORARY, detail=result.detail, retry_after=float(wait[1]))
        return result
    if status in (401, 403):
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail[:500])
    if status == 404 or _DOMAIN_PROBLEM.search(message):
        # The domain is not in this account (or region), unverified, or a sandbox domain sending
        # to an unauthorized recipient: fix the URL or the domain, then resume.
        fix = "check the domain in NEWSLETTER_EMAIL_URL, its region and its verification"
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=f"{detail} ({fix})"[:500])
    return SendResult(Outcome.REQUEST_WRONG, detail=detail[:500])  # 400, 413…


def _event(data: Mapping[str, Any]) -> WebhookEvent:
    kind = str(data["event"])
    severity, reason = str(data.get("severity") or ""), str(data.get("reason") or "")
    if kind == "failed" and severity == "permanent":
        type_ = PERMANENT_REASONS.get(reason, EventType.BOUNCED)
    elif kind == "failed":
        # Mailgun retries a temporary failure and reports each attempt: counting every one as a
        # soft bounce would suppress a reader after one greylisted message.
        type_ = EventType.DEFERRED
    else:
        type_ = EVENT_TYPES.get(kind, EventType.OTHER)
    timestamp = float(data["timestamp"])
    status = data.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    said = str(status.get("description") or status.get("message") or "")
    headers = (data.get("message") or {}).get("headers") or {}
    message_id = str(headers.get("message-id") or "").strip("<>") or None
    variables = data.get("user-variables")
    delivery_id = variables.get("delivery_id") if isinstance(variables, dict) else None
    return WebhookEvent(
        provider="mailgun",
        # `id` is unique only within a day, so the event's own time goes with it; both are the
        # same in every retry of the call (the signature's token is not).
        event_id=f"{data['id']}@{timestamp:.6f}",
        type=type_,
        email=str(data.get("recipient") or ""),
        occurred_at=datetime.fromtimestamp(timestamp, UTC),
        provider_message_id=message_id,
        delivery_id=int(str(delivery_id)) if str(delivery_id).isdigit() else None,
        detail=" ".join(p for p in (kind, severity, reason, said) if p)[:500],
        raw=dict(data),
    )
