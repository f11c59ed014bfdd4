"""Amazon SES v2: one SigV4-signed SendEmail per reader with the raw MIME message; events
arrive as SNS notifications.

Raw rather than Simple content: build_mime is the one place headers are written and checked
(the same bytes the SMTP provider sends), so each reader's List-Unsubscribe and
List-Unsubscribe-Post, List-Id and the X-Newsletter-* metadata headers arrive exactly as built,
with no 15-header cap and no dependence on the newer Simple.Headers member.
API: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import httpx

from mail.emailurl import EmailURL
from mail.providers import sigv4, sns
from mail.providers.base import (
    EmailMessage,
    Outcome,
    SendResult,
    build_mime,
    check_url_options,
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

SEND_PATH = "/v2/email/outbound-emails"
SERVICE = "ses"
_REGION_HOST = re.compile(r"^email(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: Error types (x-amzn-ErrorType or __type) worth a retry, or meaning the account must be fixed.
_RETRY_ERRORS = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "ThrottlingException", "Throttling"}
)
#: Refusals of the sender's setup: `MessageRejected` saying "Email address is not verified" is SES
#: refusing an unverified From address or, in the sandbox, any unverified recipient (every reader
#: would fail alike); a MessageRejected about the message itself (a virus) is the request's.
_UNVERIFIED = re.compile(r"not verified|sandbox|identit", re.IGNORECASE)
_IDENTITY_ERRORS = frozenset(
    {"MessageRejected", "MailFromDomainNotVerifiedException", "MailFromDomainNotVerified"}
)
_ACCOUNT_ERRORS = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        # Credentials, signature, clock: an operator has to act before anything can be sent.
        "AccessDeniedException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
#: After one of these, the rest of the batch is not tried: it would fail the same way.
_STOP_BATCH = frozenset({Outcome.TEMPORARY, Outcome.ACCOUNT_BLOCKED, Outcome.UNKNOWN})


class SesProvider(HttpProvider):
    """Sends through SES v2: `ses://ACCESS_KEY_ID:SECRET@email.us-east-1.amazonaws.com`.

    Options: `configuration_set` (needed for event publishing and EmailTags), `region` (when the
    host does not name one, e.g. a local stand-in at `ses+http://...`), `session_token`.
    """

    name = "ses"
    batch_limit = 50
    has_webhooks = True
    default_host = "email.us-east-1.amazonaws.com"

    def __init__(
        self,
        *,
        credentials: sigv4.Credentials,
        region: str,
        base_url: str | None = None,
        configuration_set: str | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url or f"https://email.{region}.amazonaws.com", transport=transport
        )
        self.credentials = credentials
        self.region = region
        self.configuration_set = configuration_set
        self._clock = clock or (lambda: datetime.now(UTC))
        self._host = httpx.URL(self.base_url).netloc.decode("ascii")

    def __repr__(self) -> str:
        return f"SesProvider({self.base_url!r}, region={self.region!r})"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Credentials from the user part, region from the host or `?region=`."""
        check_url_options(url, "configuration_set", "region", "session_token")
        if not (url.username and url.password):
            raise ConfigurationError(
                "ses email URL needs credentials: ses://ACCESS_KEY_ID:SECRET@email.REGION"
                ".amazonaws.com (write '/' in the secret as %2F)"
            )
        match = _REGION_HOST.fullmatch(url.host or "")
        region = url.params.get("region") or (match.group(1) if match else None)
        if not region:
            raise ConfigurationError(
                f"ses email URL: cannot tell the region from host {url.host!r};"
                " add ?region=us-east-1 (or use email.REGION.amazonaws.com)"
            )
        credentials = sigv4.Credentials(url.username, url.password, url.params.get("session_token"))
        return cls(
            credentials=credentials,
            region=region,
            base_url=cls.base_url_from(url),
            configuration_set=url.params.get("configuration_set"),
        )

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for message in messages:
            result = self._send_one(message)
            results.append(result)
            if result.outcome in _STOP_BATCH and len(results) < len(messages):
                if result.outcome is Outcome.UNKNOWN:
                    result = SendResult(Outcome.TEMPORARY, detail="not tried: " + result.detail)
                results.extend([result] * (len(messages) - len(results)))
                break
        return results

    def _send_one(self, message: EmailMessage) -> SendResult:
        try:
            body = self.request_body(message)
        except (InvalidInput, ValueError) as exc:
            return SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
        signed = sigv4.sign(
            "POST",
            f"{self.base_url}{SEND_PATH}",
            {"Content-Type": "application/json", "Host": self._host},
            body,
            credentials=self.credentials,
            region=self.region,
            service=SERVICE,
            now=self._clock(),
        )
        try:
            response = self.client.post(SEND_PATH, content=body, headers=signed.headers)
        except httpx.TransportError as exc:
            return transport_failure(exc)
        if response.is_success:
            try:
                message_id = response.json().get("MessageId")
            except (ValueError, AttributeError):
                message_id = None
            return SendResult(Outcome.SENT, message_id if isinstance(message_id, str) else None)
        return error_result(response)

    def request_body(self, message: EmailMessage) -> bytes:
        """The SendEmail JSON: raw MIME (CRLF line ends), the one recipient, tags, config set."""
        mime = build_mime(message)
        raw = mime.as_bytes(policy=mime.policy.clone(linesep="\r\n"))
        payload: dict[str, Any] = {
            "Destination": {"ToAddresses": [parse_address(message.to, "to").addr_spec]},
            "Content": {"Raw": {"Data": base64.b64encode(raw).decode("ascii")}},
        }
        tags = [
            {"Name": key, "Value": value}
            for key, value in message.metadata.items()
            if _TAG.fullmatch(key) and _TAG.fullmatch(value)
        ]
        if tags:
            payload["EmailTags"] = tags
        if self.configuration_set:
            payload["ConfigurationSetName"] = self.configuration_set
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def verify_webhook(cls, request: WebhookRequest, config: WebhookConfig) -> None:
        """Verify the SNS signature; `config.secret`, if set, is a comma-separated TopicArn list."""
        topics = {arn.strip() for arn in (config.secret or "").split(",") if arn.strip()}
        sns.verify_sns_message(
            request.body,
            fetch_certificate=config.fetch_certificate or sns.certificate_fetcher(config.transport),
            now=config.now,
            tolerance_seconds=config.tolerance_seconds,
            topic_arns=topics,
        )

    @classmethod
    def parse_events(cls, request: WebhookRequest) -> list[WebhookEvent]:
        """SES events, one per recipient. A (un)subscribe confirmation gives one OTHER event
        whose `raw` is the SNS envelope, which `acknowledge` answers."""
        envelope = sns.parse_envelope(request.body)
        if envelope["Type"] != sns.NOTIFICATION:
            return [
                WebhookEvent(
                    provider=cls.name,
                    event_id=envelope["MessageId"],
                    type=EventType.OTHER,
                    email="",
                    occurred_at=sns.parse_timestamp(envelope["Timestamp"]),
                    detail=f"{envelope['Type']} for {envelope['TopicArn']}",
                    raw=envelope,
                )
            ]
        return ses_events(envelope)

    @classmethod
    def acknowledge(
        cls, events: Sequence[WebhookEvent], config: WebhookConfig
    ) -> list[WebhookEvent]:
        """Confirm an SNS subscription by following its SubscribeURL (an UnsubscribeConfirmation
        is only noted); neither is an event for the store."""
        kept = []
        for event in events:
            kind = event.raw.get("Type")
            if kind == sns.SUBSCRIPTION_CONFIRMATION:
                sns.confirm_subscription(str(event.raw.get("SubscribeURL", "")), config.transport)
            elif kind != sns.UNSUBSCRIBE_CONFIRMATION:
                kept.append(event)
        return kept


def error_result(response: httpx.Response) -> SendResult:
    """The outcome of a refused SendEmail, from the error type and the HTTP status."""
    status = response.status_code
    error_type = response.headers.get("x-amzn-errortype", "").split(":")[0]
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    if not error_type:
        error_type = str(answer.get("__type") or answer.get("code") or "").rpartition("#")[2]
    text = answer.get("message") or answer.get("Message") or response.text[:200]
    detail = f"{status} {error_type}: {text}"[:500]
    if error_type in _RETRY_ERRORS or status == 429 or status >= 500:
        return temporary(detail, response.headers)
    if error_type in _ACCOUNT_ERRORS or status in (401, 403):
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail)
    if error_type in _IDENTITY_ERRORS and (
        error_type != "MessageRejected" or _UNVERIFIED.search(str(text))
    ):
        # The operator's setup, not the reader or the message: pause, name the fix.
        fix = (
            "verify the sender identity (and the MAIL FROM domain) in SES, or leave the sandbox"
            " (request production access) for this region"
        )
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=f"{detail} ({fix})"[:500])
    # BadRequestException, NotFoundException (e.g. no such configuration set) and other 4xx.
    return SendResult(Outcome.REQUEST_WRONG, detail=detail)


#: eventType (or notificationType) -> the section naming the recipients and the reason.
_SECTIONS = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Reject": "reject",
    "Rendering Failure": "failure",
}
_EVENT_TYPES = {
    "Complaint": EventType.COMPLAINED,
    "Delivery": EventType.DELIVERED,
    "DeliveryDelay": EventType.DEFERRED,
    "Reject": EventType.DROPPED,  # SES found a virus and did not send
    "Rendering Failure": EventType.DROPPED,  # a template could not be rendered: not sent
}


def ses_events(envelope: Mapping[str, Any]) -> list[WebhookEvent]:
    """The events in an SES notification (event publishing or identity notifications)."""
    try:
        event = json.loads(envelope["Message"])
    except ValueError:
        raise WebhookRejected("SNS Message is not an SES event", status=400) from None
    if not isinstance(event, dict):
        raise WebhookRejected("SNS Message is not an SES event", status=400)
    kind = event.get("eventType") or event.get("notificationType")
    mail = event.get("mail")
    if not (isinstance(kind, str) and isinstance(mail, dict)):
        return []  # e.g. AmazonSnsSubscriptionSucceeded: nothing happened to a message
    section = event.get(_SECTIONS.get(kind, ""))
    section = section if isinstance(section, dict) else {}
    event_type, reason = _classify(kind, section)
    stamp = section.get("timestamp") or mail.get("timestamp")
    occurred_at = sns.parse_timestamp(stamp if isinstance(stamp, str) else envelope["Timestamp"])
    recipients = _recipients(kind, section, mail)
    message_id = mail.get("messageId")
    return [
        WebhookEvent(
            provider=SesProvider.name,
            event_id=envelope["MessageId"]
            if len(recipients) == 1
            else f"{envelope['MessageId']}:{i}",
            type=event_type,
            email=address,
            occurred_at=occurred_at,
            provider_message_id=message_id if isinstance(message_id, str) else None,
            delivery_id=_delivery_id(mail.get("tags")),
            detail=f"{reason} {diagnostic}".strip()[:500],
            raw=event,
        )
        for i, (address, diagnostic) in enumerate(recipients)
    ]


def _classify(kind: str, section: Mapping[str, Any]) -> tuple[EventType, str]:
    """The normalized type and a short reason for one SES event."""
    if kind == "Bounce":
        bounce_type = section.get("bounceType")
        permanent = bounce_type == "Permanent"  # Transient and Undetermined may still deliver
        reason = f"{bounce_type}/{section.get('bounceSubType')}"
        return (EventType.BOUNCED if permanent else EventType.SOFT_BOUNCED), reason
    if kind == "Complaint" and section.get("complaintFeedbackType") == "not-spam":
        return EventType.OTHER, "Complaint: not-spam"  # the reader says it is not spam
    why = section.get("reason") or section.get("errorMessage") or section.get("delayType")
    return _EVENT_TYPES.get(kind, EventType.OTHER), f"{kind}: {why}" if why else kind


def _recipients(
    kind: str, section: Mapping[str, Any], mail: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(address, diagnostic) for each recipient the event is about."""
    listed = {
        "Bounce": "bouncedRecipients",
        "Complaint": "complainedRecipients",
        "DeliveryDelay": "delayedRecipients",
    }
    if kind in listed:
        entries = section.get(listed[kind])
        return [
            (entry["emailAddress"], str(entry.get("diagnosticCode", "")))
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and isinstance(entry.get("emailAddress"), str)
        ]
    addresses = section.get("recipients") if kind == "Delivery" else mail.get("destination")
    smtp_response = str(section.get("smtpResponse", ""))
    listed_addresses = addresses if isinstance(addresses, list) else []
    return [(a, smtp_response) for a in listed_addresses if isinstance(a, str)]


def _delivery_id(tags: object) -> int | None:
    """The `delivery_id` EmailTag, which SES publishes as `{"delivery_id": ["42"]}`."""
    values = tags.get("delivery_id") if isinstance(tags, dict) else None
    value = values[0] if isinstance(values, list) and values else values
    return int(value) if isinstance(value, str) and value.isdigit() else None
