"""Resend: up to 100 complete emails per `POST /emails/batch`, resend-safe through an
Idempotency-Key; webhooks signed the Svix way.

API: https://resend.com/docs/api-reference/emails/send-batch-emails ; errors:
https://resend.com/docs/api-reference/errors ; webhooks:
https://docs.svix.com/receiving/verifying-payloads/how-manual .
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from mail.emailurl import EmailURL
from mail.providers.base import (
    EmailMessage,
    Outcome,
    SendResult,
    build_mime,
    check_url_options,
    metadata_header_name,
    parse_address,
)
from mail.providers.http import HttpProvider, temporary, transport_failure
from mail.providers.webhooks import (
    EventType,
    WebhookConfig,
    WebhookEvent,
    WebhookRejected,
    WebhookRequest,
)
from subscriptions.errors import ConfigurationError, InvalidInput

API_HOST = "api.resend.com"
BATCH_PATH = "/emails/batch"
#: Tag names and values: ASCII letters, digits, '_' and '-', at most 256 characters.
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Transport errors raised before the request left: retrying cannot send twice.
_QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})
_EVENT_TYPES: dict[str, EventType] = {
    "email.delivered": EventType.DELIVERED,
    "email.complained": EventType.COMPLAINED,
    "email.delivery_delayed": EventType.DEFERRED,
    # Resend skipped the address because it is on its suppression list (an earlier hard
    # bounce or complaint): it will never deliver there, so the address is bad for good.
    "email.suppressed": EventType.BOUNCED,
    # Never handed to a mail server (bad recipient, domain, quota): the provider refused it.
    "email.failed": EventType.DROPPED,
}
#: `email.suppressed` `data.suppressed.reason` -> type (the spec's enum: previous_bounce,
#: previous_complaint); any other reason keeps the `email.suppressed` default above.
SUPPRESSION_REASONS: dict[str, EventType] = {
    "previous_bounce": EventType.BOUNCED,
    "previous_complaint": EventType.COMPLAINED,
}


class ResendProvider(HttpProvider):
    """Sends through Resend's batch API: `resend://API_KEY@api.resend.com`."""

    name = "resend"
    batch_limit = 100
    supports_idempotency = True
    has_webhooks = True
    default_host = API_HOST

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = f"https://{API_HOST}",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url, transport=transport)
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"ResendProvider({self.base_url!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """The API key is the user part of the URL; the host defaults to api.resend.com."""
        check_url_options(url)
        if not url.username:
            raise ConfigurationError(
                "resend email URL needs the API key as its user part:"
                " resend://re_xxxxxxxx@api.resend.com"
            )
        return cls(url.username, base_url=cls.base_url_from(url))

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        emails: list[dict[str, Any]] = []
        positions: list[int] = []
        for position, message in enumerate(messages):
            try:
                emails.append(email_json(message))
            except (InvalidInput, ValueError) as exc:
                results[position] = SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
            else:
                positions.append(position)
        if emails:
            sent = self._post_batch(emails, [messages[p] for p in positions])
            results.update(zip(positions, sent, strict=True))
        return [results[position] for position in range(len(messages))]

    def _post_batch(
        self, emails: list[dict[str, Any]], messages: Sequence[EmailMessage]
    ) -> list[SendResult]:
        """One POST /emails/batch; one result per email, in order."""
        body = json.dumps(emails, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(messages, body),
            # One bad email fails alone instead of the whole batch.
            "x-batch-validation": "permissive",
        }
        try:
            response = self.client.post(BATCH_PATH, content=body, headers=headers)
        except httpx.TransportError as exc:
            return [transport_failure(exc)] * len(emails)
        if response.is_success:
            return _batch_results(response, len(emails))
        return [_error_result(response)] * len(emails)

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Check the Svix signature over `{id}.{timestamp}.{body}` and the timestamp's age."""
        key = _svix_key(config.secret)
        message_id = _svix_header(request, "id")
        timestamp = _svix_header(request, "timestamp")
        signatures = _svix_header(request, "signature")
        if not (message_id and timestamp and signatures):
            raise WebhookRejected("missing svix-id, svix-timestamp or svix-signature", status=400)
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookRejected(
                f"svix-timestamp {timestamp!r} is not a number", status=400
            ) from None
        if abs(config.now - sent_at) > config.tolerance_seconds:
            raise WebhookRejected(f"svix-timestamp {timestamp} is outside the allowed window")
        signed = f"{message_id}.{timestamp}.".encode() + request.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        for entry in signatures.split():
            version, _, signature = entry.partition(",")
            if version == "v1" and hmac.compare_digest(signature.encode(), expected):
                return
        raise WebhookRejected("svix-signature does not match")

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """One event per recipient of an `email.*` event; other events (domains...) give none."""
        event_id = _svix_header(request, "id")
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("Resend webhook body is not JSON", status=400) from None
        if not (isinstance(payload, dict) and isinstance(payload.get("type"), str)):
            raise WebhookRejected("Resend webhook body has no event type", status=400)
        data = payload.get("data")
        if not (event_id and isinstance(data, dict)):
            raise WebhookRejected("Resend webhook has no svix-id or no data", status=400)
        kind: str = payload["type"]
        recipients = data.get("to")
        recipients = [recipients] if isinstance(recipients, str) else recipients
        if not kind.startswith("email.") or not isinstance(recipients, list):
            return []
        event_type, detail = _classify(kind, data)
        occurred_at = _parse_time(payload.get("created_at") or data.get("created_at"))
        email_id = data.get("email_id")
        delivery_id = _delivery_id(data.get("tags"))
        addresses = [address for address in recipients if isinstance(address, str)]
        return [
            WebhookEvent(
                provider=cls.name,
                event_id=event_id if len(addresses) == 1 else f"{event_id}:{index}",
                type=event_type,
                email=address,
                occurred_at=occurred_at,
                provider_message_id=email_id if isinstance(email_id, str) else None,
                delivery_id=delivery_id,
                detail=detail[:500],
                raw=payload,
            )
            for index, address in enumerate(addresses)
        ]


def email_json(message: EmailMessage) -> dict[str, Any]:
    """One element of the batch: a complete email to one reader, with its headers and tags."""
    build_mime(message)  # the same address and header checks as every other provider
    email: dict[str, Any] = {
        "from": str(parse_address(message.sender, "sender")),
        "to": [str(parse_address(message.to, "to"))],
        "subject": message.subject,
        "text": message.text,
    }
    if message.html is not None:
        email["html"] = message.html
    headers = dict(message.headers)
    headers.update({metadata_header_name(k): v for k, v in message.metadata.items()})
    if headers:
        email["headers"] = headers
    tags = [
        {"name": key, "value": value}
        for key, value in message.metadata.items()
        if _TAG.fullmatch(key) and _TAG.fullmatch(value)
    ]
    if tags:
        email["tags"] = tags
    return email


def idempotency_key(messages: Sequence[EmailMessage], body: bytes) -> str:
    """A key that is the same whenever the same deliveries are sent again (Resend keeps it 24 h).

    Made from the messages' own idempotency keys, sorted; when one lacks a key, from the body.
    """
    keys = [message.idempotency_key or "" for message in messages]
    material = json.dumps(sorted(keys)).encode() if all(keys) else body
    return "newsletter-batch-" + hashlib.sha256(material).hexdigest()


def _batch_results(response: httpx.Response, count: int) -> list[SendResult]:
    """Pair `data` ids with the emails that have no entry in `errors` (permissive mode)."""
    try:
        answer = response.json()
        data = answer["data"]
        errors = answer.get("errors") or []
    except (ValueError, TypeError, KeyError, AttributeError):
        detail = f"{response.status_code} with an unreadable body; the batch may have been sent"
        return [SendResult(Outcome.UNKNOWN, detail=detail)] * count
    refused: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict) and error.get("index") in range(count):
            refused[error["index"]] = str(error.get("message", ""))
    ids = [item.get("id") if isinstance(item, dict) else None for item in data]
    accepted = [index for index in range(count) if index not in refused]
    results = {i: SendResult(Outcome.REQUEST_WRONG, detail=refused[i][:500]) for i in refused}
    if len(ids) == len(accepted):
        results.update(
            {i: SendResult(Outcome.SENT, id_) for i, id_ in zip(accepted, ids, strict=True)}
        )
    else:
        detail = f"{len(ids)} ids for {len(accepted)} accepted emails; cannot tell which were sent"
        results.update({i: SendResult(Outcome.UNKNOWN, detail=detail) for i in accepted})
    return [results[index] for index in range(count)]


def _error_result(response: httpx.Response) -> SendResult:
    """The outcome of a refused batch, from the status and Resend's error `name`."""
    status = response.status_code
    try:
        answer = response.json()
        name, text = str(answer.get("name", "")), str(answer.get("message", ""))
    except (ValueError, AttributeError):
        name, text = "", response.text[:200]
    detail = f"{status} {name}: {text}"[:500]
    if name in _QUOTA_ERRORS or status in (401, 403):
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail)
    if name == "concurrent_idempotent_requests" or status == 429 or status >= 500:
        # Safe to retry: the same Idempotency-Key will be sent again.
        return temporary(detail, response.headers)
    # 400, 404, 405, 413, 422 and 409 invalid_idempotent_request (same key, another body).
    return SendResult(Outcome.REQUEST_WRONG, detail=detail)


def _svix_key(secret: str | None) -> bytes:
    """The HMAC key: the base64 after `whsec_` in the signing secret."""
    if not secret:
        raise ConfigurationError("resend webhooks need the signing secret (whsec_...) to verify")
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("resend webhook secret must be whsec_ then base64") from None


def _svix_header(request: WebhookRequest, name: str) -> str:
    """`svix-{name}`, or the white-labelled `webhook-{name}` Svix also sends."""
    return request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}") or ""


def _classify(kind: str, data: Mapping[str, Any]) -> tuple[EventType, str]:
    """The normalized type of one Resend email event, and a short reason."""
    if kind == "email.bounced":
        bounce: Mapping[str, Any] = data["bounce"] if isinstance(data.get("bounce"), dict) else {}
        permanent = bounce.get("type") == "Permanent"
        reason = f"{bounce.get('type')}/{bounce.get('subType')}: {bounce.get('message', '')}"
        return (EventType.BOUNCED if permanent else EventType.SOFT_BOUNCED), reason
    reason = kind
    for section in ("suppressed", "failed"):
        if isinstance(data.get(section), dict):
            part = data[section]
            words = (part.get("type"), part.get("reason"), part.get("message"))
            reason = ": ".join([section, *(str(word) for word in words if word)])
    if kind == "email.suppressed" and isinstance(data.get("suppressed"), dict):
        # Suppressed for an earlier complaint is a complaint (and is reported as one), not a bounce.
        why = SUPPRESSION_REASONS.get(str(data["suppressed"].get("reason") or ""))
        if why is not None:
            return why, reason
    return _EVENT_TYPES.get(kind, EventType.OTHER), reason


def _delivery_id(tags: object) -> int | None:
    """The `delivery_id` tag: webhooks carry tags as `{name: value}` or `[{name, value}]`."""
    if isinstance(tags, list):
        tags = {t.get("name"): t.get("value") for t in tags if isinstance(t, dict)}
    value = tags.get("delivery_id") if isinstance(tags, dict) else None
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _parse_time(value: object) -> datetime:
    """An ISO 8601 time from the payload, in UTC; WebhookRejected(400) when absent or invalid."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise WebhookRejected(f"Resend webhook time {value!r} is not ISO 8601", status=400)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
