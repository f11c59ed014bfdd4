"""Postmark: a batch is one `POST /email/batch` of complete messages, answered message by message.

Postmark's batch endpoint takes an array of whole messages (≤500), so every reader's own
List-Unsubscribe headers and `delivery_id` metadata travel in their own element; the shared body is
repeated per element, as the endpoint requires. (The Bulk API, one body for many readers, is
asynchronous and enabled only on request, so it is not used.) `Tag` is the message's `kind`
metadata, else the URL's `tag`. `EmailMessage.message_id` is not sent: Postmark's own MessageID is
what its webhooks carry. Postmark has no idempotency key: a request that may have reached it
without an answer is UNKNOWN, never resent.

Webhooks carry no signature. Postmark calls a URL with Basic credentials in it
(`https://user:password@host/webhooks/postmark`), checked here in constant time against the configured
`user:password`; with no timestamp to check, replays are caught upstream by event-id dedupe, so
`event_id` is stable across Postmark's retries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Self

import httpx
import orjson

from mail.emailurl import EmailURL
from mail.providers.base import (
    EmailMessage,
    Outcome,
    SendResult,
    check_message_text,
    check_url_options,
)
from mail.providers.http import (
    STOP_BATCH,
    HttpProvider,
    not_tried,
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
from subscriptions.errors import ConfigurationError, InvalidInput

#: Postmark API ErrorCodes (developer/api/overview#error-codes) and what they mean for us.
#: 300 is looked at apart (see _code_300): the reader's address, the sender's, or the request.
#: The operator's mistakes (token, sender signature, account) pause sending: no reader is touched.
ERROR_CODES: dict[int, Outcome] = {
    10: Outcome.ACCOUNT_BLOCKED,  # bad or missing server token: sending pauses, editors are told
    100: Outcome.TEMPORARY,  # maintenance
    400: Outcome.ACCOUNT_BLOCKED,  # sender signature not found: the From is not on the account
    401: Outcome.ACCOUNT_BLOCKED,  # sender signature not confirmed yet
    405: Outcome.ACCOUNT_BLOCKED,  # not allowed to send
    406: Outcome.RECIPIENT_PERMANENT,  # inactive recipient: bounced, complained or suppressed
    412: Outcome.ACCOUNT_BLOCKED,  # account pending
    413: Outcome.ACCOUNT_BLOCKED,  # account may not send
    429: Outcome.TEMPORARY,
}

#: Bounce `Type` (developer/api/bounce-api#bounce-types) -> event; unlisted types are OTHER.
BOUNCE_TYPES: dict[str, EventType] = {
    "HardBounce": EventType.BOUNCED,
    "BadEmailAddress": EventType.BOUNCED,
    "SoftBounce": EventType.SOFT_BOUNCED,
    "Transient": EventType.SOFT_BOUNCED,
    "DnsError": EventType.SOFT_BOUNCED,
    "Blocked": EventType.SOFT_BOUNCED,  # the receiving ISP blocked it: counted, not final
    "SpamComplaint": EventType.COMPLAINED,
    "Unsubscribe": EventType.UNSUBSCRIBED,  # an unsubscribe request sent back by mail
    "ManuallyDeactivated": EventType.DROPPED,
}
#: SubscriptionChange with SuppressSending true: why Postmark stopped sending to the address.
SUPPRESSION_REASONS: dict[str, EventType] = {
    "HardBounce": EventType.BOUNCED,
    "SpamComplaint": EventType.COMPLAINED,
    "ManualSuppression": EventType.UNSUBSCRIBED,  # what a reader's own unsubscribe is recorded as
}
_RECORD_TIMES = {
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Delivery": "DeliveredAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


class PostmarkProvider(HttpProvider):
    """`postmark://SERVER_TOKEN@api.postmarkapp.com?stream=broadcast&tag=newsletter`."""

    name = "postmark"
    batch_limit = 500
    supports_idempotency = False
    default_host = "api.postmarkapp.com"
    has_webhooks = True

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        stream: str | None = None,
        tag: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url=base_url or f"https://{self.default_host}", transport=transport)
        self.client.headers.update({"Accept": "application/json", "X-Postmark-Server-Token": token})
        self.stream = stream
        self.tag = tag

    def __repr__(self) -> str:
        return f"PostmarkProvider({self.base_url!r}, stream={self.stream!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Read the server token (the URL's user part), host, `stream` and `tag`."""
        check_url_options(url, "stream", "tag")
        token = url.password or url.username
        if not token:
            raise ConfigurationError(
                "NEWSLETTER_EMAIL_URL: postmark needs the server token as the user part,"
                " e.g. postmark://SERVER_TOKEN@api.postmarkapp.com?stream=broadcast"
            )
        return cls(
            token,
            base_url=cls.base_url_from(url),
            stream=url.params.get("stream") or None,
            tag=url.params.get("tag") or None,
        )

    #: "50 MB total" per batch request and "10 MB" per message (postmarkapp.com/developer/api/overview,
    #: HTTP 413); a request over either is refused whole. Decimal megabytes, the stricter reading.
    max_request_bytes: ClassVar[int] = 50_000_000
    max_message_bytes: ClassVar[int] = 10_000_000

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Elements serialized one by one, sent in requests that stay under max_request_bytes."""
        results: list[SendResult | None] = [None] * len(messages)
        chunks: list[tuple[list[int], list[bytes]]] = [([], [])]
        size = 2  # the brackets
        for index, message in enumerate(messages):
            try:
                element = _json(self._element(message))
            except (InvalidInput, ValueError, orjson.JSONEncodeError) as exc:
                results[index] = SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
                continue
            if len(element) > self.max_message_bytes:
                detail = f"message of {len(element):,} bytes is over Postmark's {self.max_message_bytes:,} bytes"
                results[index] = SendResult(Outcome.REQUEST_WRONG, detail=detail)
                continue
            positions, elements = chunks[-1]
            if elements and size + 1 + len(element) > self.max_request_bytes:
                positions, elements = [], []
                chunks.append((positions, elements))
                size = 2
            size += len(element) + (1 if elements else 0)
            positions.append(index)
            elements.append(element)
        stopped: SendResult | None = None
        for positions, elements in chunks:
            if not elements:
                continue
            if stopped is not None:
                answers = [not_tried(stopped)] * len(elements)
            else:
                answers, whole = self._post(b"[" + b",".join(elements) + b"]", len(elements))
                stopped = whole if whole is not None and whole.outcome in STOP_BATCH else None
            for index, result in zip(positions, answers, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def _element(self, message: EmailMessage) -> dict[str, Any]:
        """One message of the batch, complete with the reader's own headers and metadata."""
        to, sender = check_message_text(message)
        element: dict[str, Any] = {
            "From": sender,
            "To": to,
            "Subject": message.subject,
            "TextBody": message.text,
            "Headers": [{"Name": k, "Value": v} for k, v in message.headers.items()],
            "Metadata": dict(message.metadata),
        }
        if message.html is not None:
            element["HtmlBody"] = message.html
        if self.stream:
            element["MessageStream"] = self.stream
        tag = message.metadata.get("kind") or self.tag
        if tag:
            element["Tag"] = tag
        return element

    def _post(self, payload: bytes, count: int) -> tuple[list[SendResult], SendResult | None]:
        """The results of one batch request, and the request's own result when it has one."""
        try:
            response = self.client.post(
                "/email/batch", content=payload, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            failure = transport_failure(exc)
            return [failure] * count, failure
        if response.status_code != 200:
            refusal = _refusal(response, count)
            return [refusal] * count, refusal
        try:
            answers = orjson.loads(response.content)
        except ValueError:  # orjson.JSONDecodeError is one
            answers = None
        if not isinstance(answers, list) or len(answers) != count:
            detail = "Postmark answered 200 without one result per message; they may have been sent"
            unknown = SendResult(Outcome.UNKNOWN, detail=detail)
            return [unknown] * count, unknown
        return [_answer(a) for a in answers], None

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Check the Basic credentials Postmark sends from the webhook URL (constant time)."""
        if not config.secret:
            raise WebhookRejected("postmark webhooks are not configured", status=403)
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise WebhookRejected("postmark webhook without Basic credentials", status=401)
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("postmark webhook with malformed credentials") from None
        if not hmac.compare_digest(given, config.secret.encode()):
            raise WebhookRejected("postmark webhook with wrong credentials", status=401)

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """One record per call (Bounce, SpamComplaint, Delivery, Open, Click, SubscriptionChange)."""
        try:
            record = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("postmark webhook body is not JSON", status=400) from None
        if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
            raise WebhookRejected("postmark webhook body is not a record", status=400)
        try:
            return [_event(record)]
        except (KeyError, TypeError, ValueError) as exc:
            raise WebhookRejected(
                f"postmark webhook record is malformed: {exc}", status=400
            ) from None


def _answer(answer: object) -> SendResult:
    """One element of a 200 batch answer."""
    if not isinstance(answer, dict):
        return SendResult(Outcome.UNKNOWN, detail=f"unreadable result {answer!r:.200}")
    code, message = answer.get("ErrorCode"), str(answer.get("Message") or "")
    if code == 0 and answer.get("MessageID"):
        return SendResult(Outcome.SENT, str(answer["MessageID"]))
    detail = f"Postmark ErrorCode {code}: {message}"[:500]
    if code == 300:
        return SendResult(_code_300(message), detail=_hint(_code_300(message), detail))
    if not isinstance(code, int):
        return SendResult(Outcome.REQUEST_WRONG, detail=detail)
    outcome = ERROR_CODES.get(code, Outcome.REQUEST_WRONG)
    return SendResult(outcome, detail=_hint(outcome, detail))


def _code_300(message: str) -> Outcome:
    """ErrorCode 300 "Invalid email request": whose mistake, from the message.

    About the 'To' address ("Invalid 'To' address", "Error parsing 'To'") it is the reader's;
    about the From or a sender signature ("The 'From' address you supplied ... is not a Sender
    Signature on your account") it is the operator's: sending pauses; otherwise the request's.
    """
    lowered = message.lower()
    if "'to'" in lowered:
        return Outcome.RECIPIENT_PERMANENT
    if "'from'" in lowered or "sender signature" in lowered or "from address" in lowered:
        return Outcome.ACCOUNT_BLOCKED
    return Outcome.REQUEST_WRONG


def _hint(outcome: Outcome, detail: str) -> str:
    """Name the fix for the operator's mistakes (shown in the notice that pauses sending)."""
    if outcome is Outcome.ACCOUNT_BLOCKED and "ErrorCode 10" not in detail:
        return (
            f"{detail} (make NEWSLETTER_FROM a confirmed Sender Signature or verified domain of"
            " this Postmark server, or fix the account)"
        )[:500]
    return detail


def _json(element: dict[str, Any]) -> bytes:
    """One element as the request carries it (compact UTF-8 JSON), so its size is known exactly.

    orjson writes the same bytes as `json.dumps(element, ensure_ascii=False, separators=(",", ":"))`
    (a test holds this) in a tenth of the time: serializing was most of `provider.send` (issue #18).
    A lone surrogate, which UTF-8 cannot carry, raises orjson.JSONEncodeError (a TypeError).
    """
    return orjson.dumps(element)


def _refusal(response: httpx.Response, count: int) -> SendResult:
    """The outcome of every message when Postmark refused the whole request."""
    status = response.status_code
    code: object = None
    message = response.text[:300]
    try:
        body = response.json()
        if isinstance(body, dict):
            code, message = body.get("ErrorCode"), str(body.get("Message") or "")
    except ValueError:
        pass
    detail = f"Postmark HTTP {status}" + (f" ErrorCode {code}" if code is not None else "")
    detail += f": {message}" if message else ""
    if status == 429 or status >= 500:
        return temporary(detail, response.headers)
    if status == 401:  # a bad token: a configuration problem, so stop and tell the editors
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail)
    if status == 422 and code == 300:
        outcome = _code_300(message)
        if outcome is not Outcome.RECIPIENT_PERMANENT or count == 1:
            return SendResult(outcome, detail=_hint(outcome, detail))
    if status == 422 and isinstance(code, int) and code in ERROR_CODES:
        outcome = ERROR_CODES[code]
        if outcome is Outcome.TEMPORARY:
            return temporary(detail, response.headers)
        if outcome is not Outcome.RECIPIENT_PERMANENT or count == 1:
            return SendResult(outcome, detail=_hint(outcome, detail))
    # 413 payload too large, 422 with 300/402/403/409/410/411, 404 and the rest: fix the request.
    return SendResult(Outcome.REQUEST_WRONG, detail=detail)


def _event(record: Mapping[str, Any]) -> WebhookEvent:
    kind = record["RecordType"]
    if kind == "Bounce":
        type_ = BOUNCE_TYPES.get(str(record.get("Type")), EventType.OTHER)
    elif kind == "SpamComplaint":
        type_ = EventType.COMPLAINED
    elif kind == "Delivery":
        type_ = EventType.DELIVERED
    elif kind == "SubscriptionChange" and record.get("SuppressSending") is True:
        type_ = SUPPRESSION_REASONS.get(str(record.get("SuppressionReason")), EventType.DROPPED)
    else:  # Open, Click, a reactivation, anything new
        type_ = EventType.OTHER
    names = [_RECORD_TIMES.get(kind, ""), *_RECORD_TIMES.values()]
    when = next((record[n] for n in names if record.get(n)), "")
    occurred_at = datetime.fromisoformat(str(when))
    if occurred_at.tzinfo is None:
        raise ValueError(f"time {when!r} has no offset")
    detail = " ".join(
        str(record[k])
        for k in ("Type", "SuppressionReason", "Description", "Details")
        if record.get(k)
    )
    # Bounce dumps (`Content`) can be large and hold the reader's mail: not kept.
    raw = {k: v for k, v in record.items() if k != "Content"}
    return WebhookEvent(
        provider="postmark",
        event_id=_event_id(record),
        type=type_,
        email=str(record.get("Email") or record.get("Recipient") or ""),
        occurred_at=occurred_at,
        provider_message_id=str(record["MessageID"]) if record.get("MessageID") else None,
        delivery_id=_delivery_id(record.get("Metadata")),
        detail=detail[:500],
        raw=raw,
    )


def _event_id(record: Mapping[str, Any]) -> str:
    """`Bounce:42` where Postmark numbers the record; otherwise a digest of the record itself."""
    if record.get("ID") is not None:
        return f"{record['RecordType']}:{record['ID']}"
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{record['RecordType']}:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"


def _delivery_id(metadata: object) -> int | None:
    value = metadata.get("delivery_id") if isinstance(metadata, dict) else None
    return int(value) if isinstance(value, str | int) and str(value).isdigit() else None
