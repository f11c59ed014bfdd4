"""Tests for the Amazon SES v2 provider: SigV4-signed SendEmail requests, outcomes, SNS events.

SES is replaced by httpx.MockTransport answering with the documented payloads in
tests/fixtures/providers/ses; SNS signatures come from the test key in test_sns.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mail.emailurl import EmailURL
from mail.providers import sigv4
from mail.providers.base import Outcome
from mail.providers.ses import SesProvider
from mail.providers.webhooks import EventType, WebhookConfig, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError
from tests.providers import Answer, Recorder, fixture, make_message, outcomes
from tests.unit.test_sns import SnsSigner, at, load_fixture
from tests.webhooksigning import trust_sns_test_root

ERRORS: dict[str, dict[str, Any]] = fixture("ses", "errors.json")
CREDENTIALS = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SENT_OK = load_fixture("send_email_ok.json")


def ses_api(*answers: Answer) -> Recorder:
    """The SES API: the scripted answers (the last one again), by default a sent message."""
    return Recorder(*(answers or [httpx.Response(200, json=SENT_OK)]))


def ses(api: Recorder, **options: Any) -> SesProvider:
    options.setdefault("credentials", CREDENTIALS)
    options.setdefault("region", "us-east-1")
    return SesProvider(transport=api.transport, clock=lambda: NOW, **options)


def error_response(name: str) -> httpx.Response:
    error = ERRORS[name]
    return httpx.Response(error["status"], json=error["body"], headers=error["headers"])


def test_send_email_request_shape() -> None:
    fake = ses_api()
    (result,) = ses(fake, configuration_set="newsletter").send([make_message()])
    (request,) = fake.requests
    assert request.method == "POST"
    assert str(request.url) == "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"
    assert request.headers["content-type"] == "application/json"
    payload = fake.json(-1)
    assert payload["Destination"] == {"ToAddresses": ["reader1@example.net"]}
    assert payload["EmailTags"] == [{"Name": "delivery_id", "Value": "101"}]
    assert payload["ConfigurationSetName"] == "newsletter"
    assert (result.outcome, result.provider_message_id) == (Outcome.SENT, SENT_OK["MessageId"])


def test_raw_content_carries_the_readers_headers() -> None:
    fake = ses_api()
    ses(fake).send([make_message(3)])
    raw = base64.b64decode(fake.json(-1)["Content"]["Raw"]["Data"])
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert parsed["To"] == "Reader 3 <reader3@example.net>"
    assert parsed["List-Unsubscribe"] == "<https://news.example.org/u/tok3>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Newsletter-Delivery-Id"] == "103"
    html = parsed.get_body(("html",))
    assert html is not None and html.get_content().strip() == "<p>Hello reader</p>"


def test_request_is_sigv4_signed_and_verifiable() -> None:
    fake = ses_api()
    ses(fake).send([make_message()])
    (request,) = fake.requests
    assert request.headers["x-amz-date"] == "20260102T030405Z"
    authorization = request.headers["authorization"]
    assert authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260102/us-east-1/ses/aws4_request,"
        " SignedHeaders=content-type;host;x-amz-date, Signature="
    )
    recomputed = sigv4.sign(
        request.method,
        str(request.url),
        {"Content-Type": request.headers["content-type"], "Host": request.headers["host"]},
        request.content,
        credentials=CREDENTIALS,
        region="us-east-1",
        service="ses",
        now=NOW,
    )
    assert recomputed.authorization == authorization


def test_another_body_would_not_match_the_signature() -> None:
    fake = ses_api()
    ses(fake).send([make_message()])
    (request,) = fake.requests
    recomputed = sigv4.sign(
        "POST",
        str(request.url),
        {"Content-Type": "application/json", "Host": request.headers["host"]},
        request.content + b" ",
        credentials=CREDENTIALS,
        region="us-east-1",
        service="ses",
        now=NOW,
    )
    assert recomputed.authorization != request.headers["authorization"]


def test_session_token_is_sent_and_signed() -> None:
    fake = ses_api()
    credentials = sigv4.Credentials("ASIAEXAMPLE", "secret", "session-token")
    ses(fake, credentials=credentials).send([make_message()])
    (request,) = fake.requests
    assert request.headers["x-amz-security-token"] == "session-token"
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"
        in (request.headers["authorization"])
    )


def test_one_call_per_message() -> None:
    fake = ses_api(*(httpx.Response(200, json={"MessageId": f"m{i}"}) for i in range(3)))
    results = ses(fake).send([make_message(n) for n in (1, 2, 3)])
    assert [r.provider_message_id for r in results] == ["m0", "m1", "m2"]
    sent_to = [fake.json(i)["Destination"]["ToAddresses"] for i in range(3)]
    assert sent_to == [["reader1@example.net"], ["reader2@example.net"], ["reader3@example.net"]]


EXPECTED_OUTCOMES = {
    "MessageRejected": Outcome.ACCOUNT_BLOCKED,  # "Email address is not verified": pause
    "BadRequestException": Outcome.REQUEST_WRONG,
    "NotFoundException": Outcome.REQUEST_WRONG,
    "MailFromDomainNotVerifiedException": Outcome.ACCOUNT_BLOCKED,
    "AccountSuspendedException": Outcome.ACCOUNT_BLOCKED,
    "SendingPausedException": Outcome.ACCOUNT_BLOCKED,
    "LimitExceededException": Outcome.TEMPORARY,
    "TooManyRequestsException": Outcome.TEMPORARY,
    "InternalFailure": Outcome.TEMPORARY,
    "ServiceUnavailable": Outcome.TEMPORARY,
    "UnrecognizedClientException": Outcome.ACCOUNT_BLOCKED,
    "InvalidSignatureException": Outcome.ACCOUNT_BLOCKED,
}


def test_every_error_fixture_has_an_expected_outcome() -> None:
    assert set(EXPECTED_OUTCOMES) == set(ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTCOMES))
def test_error_outcomes(name: str) -> None:
    fake = ses_api(error_response(name))
    (result,) = ses(fake).send([make_message()])
    assert result.outcome is EXPECTED_OUTCOMES[name]
    assert ERRORS[name]["body"]["message"][:20] in result.detail


def test_error_type_from_the_body_when_no_header() -> None:
    body = {"__type": "com.amazonaws.sesv2#MessageRejected", "message": "virus"}
    fake = ses_api(httpx.Response(400, json=body))
    (result,) = ses(fake).send([make_message()])
    assert result.outcome is Outcome.REQUEST_WRONG
    assert "MessageRejected" in result.detail


def test_a_refused_message_does_not_stop_the_batch() -> None:
    virus = {"__type": "com.amazonaws.sesv2#MessageRejected", "message": "virus"}
    fake = ses_api(
        httpx.Response(200, json=SENT_OK), httpx.Response(400, json=virus), httpx.Response(200)
    )
    results = ses(fake).send([make_message(n) for n in (1, 2, 3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert results[2].provider_message_id is None  # a 200 without a readable id is still sent
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TooManyRequestsException", Outcome.TEMPORARY),
        ("InternalFailure", Outcome.TEMPORARY),
        ("AccountSuspendedException", Outcome.ACCOUNT_BLOCKED),
        ("UnrecognizedClientException", Outcome.ACCOUNT_BLOCKED),
    ],
)
def test_throttling_or_account_trouble_stops_the_batch(name: str, expected: Outcome) -> None:
    fake = ses_api(httpx.Response(200, json=SENT_OK), error_response(name))
    results = ses(fake).send([make_message(n) for n in (1, 2, 3, 4)])
    assert outcomes(results) == [Outcome.SENT, expected, expected, expected]
    assert len(fake.requests) == 2


def test_connect_error_is_temporary_for_the_whole_batch() -> None:
    fake = ses_api(httpx.ConnectError("connection refused"))
    results = ses(fake).send([make_message(n) for n in (1, 2, 3)])
    assert outcomes(results) == [Outcome.TEMPORARY] * 3
    assert "request not sent" in results[0].detail
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("server disconnected")],
)
def test_no_answer_after_sending_is_unknown_and_the_rest_waits(error: Exception) -> None:
    fake = ses_api(httpx.Response(200, json=SENT_OK), error)
    results = ses(fake).send([make_message(n) for n in (1, 2, 3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.UNKNOWN, Outcome.TEMPORARY]
    assert results[2].detail.startswith("not tried:")
    assert len(fake.requests) == 2


def test_a_message_that_cannot_be_built_fails_alone() -> None:
    fake = ses_api()
    bad = make_message(2, headers={"List-Unsubscribe": "<https://x>\r\nBcc: v@example.com"})
    results = ses(fake).send([make_message(1), bad, make_message(3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert len(fake.requests) == 2


def test_tags_skip_values_ses_would_refuse() -> None:
    fake = ses_api()
    ses(fake).send([make_message(metadata={"delivery_id": "7", "topic": "a b"})])
    assert fake.json(-1)["EmailTags"] == [{"Name": "delivery_id", "Value": "7"}]
    ses(fake).send([make_message(metadata={})])
    assert "EmailTags" not in fake.json(-1) and "ConfigurationSetName" not in fake.json(-1)


def test_batch_limit() -> None:
    provider = ses(ses_api())
    assert len(provider.send([make_message(n) for n in range(50)])) == 50
    with pytest.raises(ValueError, match="limit of 50"):
        provider.send([make_message(n) for n in range(51)])


def test_from_url_reads_region_from_the_host() -> None:
    url = EmailURL(
        scheme="ses",
        username="AKIDEXAMPLE",
        password="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        host="email.eu-west-1.amazonaws.com",
        params={"configuration_set": "newsletter"},
    )
    provider = SesProvider.from_url(url)
    assert (provider.region, provider.configuration_set) == ("eu-west-1", "newsletter")
    assert provider.base_url == "https://email.eu-west-1.amazonaws.com"
    assert provider.credentials == CREDENTIALS
    assert "wJalr" not in repr(provider)


def test_from_url_for_a_local_stand_in() -> None:
    url = EmailURL(
        scheme="ses",
        plain_http=True,
        username="AKID",
        password="secret",
        host="127.0.0.1",
        port=4566,
        params={"region": "us-west-2", "session_token": "tok"},
    )
    provider = SesProvider.from_url(url)
    assert (provider.base_url, provider.region) == ("http://127.0.0.1:4566", "us-west-2")
    assert provider.credentials.session_token == "tok"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (EmailURL(scheme="ses", host="email.us-east-1.amazonaws.com"), "needs credentials"),
        (EmailURL(scheme="ses", username="A", password="S", host="127.0.0.1"), "region"),
        (
            EmailURL(scheme="ses", username="A", password="S", host="x", params={"regoin": "x"}),
            "unknown option 'regoin'",
        ),
    ],
)
def test_bad_urls(url: EmailURL, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SesProvider.from_url(url)


# --- webhooks (SES events through SNS) ---------------------------------------------------

TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner.create()


@pytest.fixture(autouse=True)
def trusted_test_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """SNS verification trusts the test PKI's root (and starts with an empty key cache)."""
    trust_sns_test_root(monkeypatch)


def notification(signer: SnsSigner, event: dict[str, Any] | str) -> tuple[WebhookRequest, float]:
    """The documented SNS notification carrying `event`, signed; and a `now` just after it."""
    envelope = load_fixture("sns_notification.json")
    envelope["Message"] = event if isinstance(event, str) else json.dumps(event)
    return WebhookRequest(headers={}, body=signer.body(envelope)), at(envelope)


def webhook_config(signer: SnsSigner, now: float, secret: str | None = None) -> WebhookConfig:
    return WebhookConfig(secret=secret, now=now, fetch_certificate=signer.fetch)


def test_verify_webhook_with_a_topic_allowlist(signer: SnsSigner) -> None:
    request, now = notification(signer, load_fixture("event_bounce.json"))
    SesProvider.verify_webhook(request, webhook_config(signer, now))
    allowed = f"arn:aws:sns:us-east-1:1:Other, {TOPIC}"
    SesProvider.verify_webhook(request, webhook_config(signer, now, secret=allowed))
    with pytest.raises(WebhookRejected) as caught:
        SesProvider.verify_webhook(request, webhook_config(signer, now, secret="arn:x:Other"))
    assert caught.value.status == 403


def test_verify_webhook_refuses_a_forgery(signer: SnsSigner) -> None:
    request, now = notification(signer, load_fixture("event_bounce.json"))
    forged = request.body.replace(b"Permanent", b"Transient")
    with pytest.raises(WebhookRejected) as caught:
        SesProvider.verify_webhook(WebhookRequest({}, forged), webhook_config(signer, now))
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("name", "expected", "delivery_id", "occurred_at"),
    [
        ("event_bounce.json", EventType.BOUNCED, 42, "2017-08-05T00:41:02.669Z"),
        ("event_complaint.json", EventType.COMPLAINED, 42, "2017-08-05T00:41:02.669Z"),
        ("event_delivery.json", EventType.DELIVERED, 42, "2016-10-19T23:21:04.133Z"),
        ("event_delivery_delay.json", EventType.DEFERRED, None, "2020-06-16T00:25:40.095Z"),
        ("event_reject.json", EventType.DROPPED, None, "2016-10-14T17:38:15.211Z"),
        ("event_rendering_failure.json", EventType.DROPPED, None, "2018-01-22T18:43:06.197Z"),
        ("event_send.json", EventType.OTHER, None, "2016-10-14T05:02:16.645Z"),
    ],
)
def test_parse_events(
    signer: SnsSigner, name: str, expected: EventType, delivery_id: int | None, occurred_at: str
) -> None:
    event = load_fixture(name)
    request, _ = notification(signer, event)
    (parsed,) = SesProvider.parse_events(request)
    assert parsed.provider == "ses"
    assert parsed.event_id == "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"
    assert parsed.type is expected
    assert parsed.email == event["mail"]["destination"][0]
    assert parsed.provider_message_id == event["mail"]["messageId"]
    assert parsed.delivery_id == delivery_id
    assert parsed.occurred_at == datetime.fromisoformat(occurred_at)
    assert parsed.raw == event


def test_event_details(signer: SnsSigner) -> None:
    bounce, _ = notification(signer, load_fixture("event_bounce.json"))
    reject, _ = notification(signer, load_fixture("event_reject.json"))
    assert SesProvider.parse_events(bounce)[0].detail == (
        "Permanent/General smtp; 550 5.1.1 user unknown"
    )
    assert SesProvider.parse_events(reject)[0].detail == "Reject: Bad content"


def test_identity_notification_for_two_recipients(signer: SnsSigner) -> None:
    request, _ = notification(signer, load_fixture("notification_bounce_two_recipients.json"))
    events = SesProvider.parse_events(request)
    assert [(e.event_id, e.email, e.type) for e in events] == [
        ("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324:0", "jane@example.com", EventType.SOFT_BOUNCED),
        ("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324:1", "richard@example.com", EventType.SOFT_BOUNCED),
    ]
    assert all(e.delivery_id is None for e in events)  # identity notifications carry no tags


def test_not_spam_feedback_is_not_a_complaint(signer: SnsSigner) -> None:
    event = load_fixture("event_complaint.json")
    event["complaint"]["complaintFeedbackType"] = "not-spam"
    request, _ = notification(signer, event)
    assert SesProvider.parse_events(request)[0].type is EventType.OTHER


def test_subscription_confirmation_is_parsed_as_an_envelope(signer: SnsSigner) -> None:
    envelope = load_fixture("sns_subscription_confirmation.json")
    request = WebhookRequest(headers={}, body=signer.body(envelope))
    SesProvider.verify_webhook(request, webhook_config(signer, at(envelope)))
    (event,) = SesProvider.parse_events(request)
    assert event.type is EventType.OTHER
    assert event.event_id == envelope["MessageId"]
    assert event.raw["Type"] == "SubscriptionConfirmation"
    assert event.raw["SubscribeURL"] == envelope["SubscribeURL"]


def test_acknowledge_confirms_a_subscription_and_leaves_only_events(signer: SnsSigner) -> None:
    """A SubscriptionConfirmation's SubscribeURL is fetched (over the config's transport) and the
    confirmation is not an event for the store; an UnsubscribeConfirmation is only dropped; a
    notification's events pass through untouched."""
    api = Recorder(httpx.Response(200, text="<ConfirmSubscriptionResponse/>"))
    config = WebhookConfig(secret=None, now=0.0, transport=api.transport)
    subscribe = load_fixture("sns_subscription_confirmation.json")
    confirmations = SesProvider.parse_events(
        WebhookRequest(headers={}, body=signer.body(subscribe))
    )
    unsubscribe = {**subscribe, "Type": "UnsubscribeConfirmation"}
    leaving = SesProvider.parse_events(WebhookRequest(headers={}, body=signer.body(unsubscribe)))
    request, _ = notification(signer, load_fixture("event_bounce.json"))
    bounces = SesProvider.parse_events(request)

    assert SesProvider.acknowledge(confirmations, config) == []
    assert [str(r.url) for r in api.requests] == [subscribe["SubscribeURL"]]
    assert SesProvider.acknowledge(leaving, config) == []
    assert SesProvider.acknowledge(bounces, config) == bounces
    assert len(api.requests) == 1


def test_acknowledge_follows_no_link_off_the_sns_hosts(signer: SnsSigner) -> None:
    api = Recorder(httpx.Response(200))
    envelope = {
        **load_fixture("sns_subscription_confirmation.json"),
        "SubscribeURL": "https://evil.example/?Action=ConfirmSubscription",
    }
    events = SesProvider.parse_events(WebhookRequest(headers={}, body=signer.body(envelope)))

    with pytest.raises(WebhookRejected) as caught:
        SesProvider.acknowledge(
            events, WebhookConfig(secret=None, now=0.0, transport=api.transport)
        )
    assert caught.value.status == 403
    assert api.requests == []


def test_the_certificate_is_fetched_over_the_configs_transport(signer: SnsSigner) -> None:
    """Without a fetch_certificate of its own, verification fetches over `transport`."""
    api = Recorder(httpx.Response(200, content=signer.fetch("")))
    request, now = notification(signer, load_fixture("event_bounce.json"))
    SesProvider.verify_webhook(
        request, WebhookConfig(secret=None, now=now, transport=api.transport)
    )
    envelope = json.loads(request.body)
    assert [str(r.url) for r in api.requests] == [envelope["SigningCertURL"]]


def test_messages_that_are_not_ses_events(signer: SnsSigner) -> None:
    succeeded = {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}
    request, _ = notification(signer, succeeded)
    assert SesProvider.parse_events(request) == []
    for body in ("Hello world!", "[1, 2]"):
        request, _ = notification(signer, body)
        with pytest.raises(WebhookRejected) as caught:
            SesProvider.parse_events(request)
        assert caught.value.status == 400
