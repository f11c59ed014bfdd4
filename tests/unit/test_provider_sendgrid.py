"""Tests for the SendGrid provider: requests by content with personalizations, outcomes, webhooks."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mail.emailurl import EmailURL, parse_email_url
from mail.providers.base import Outcome
from mail.providers.sendgrid import SendgridProvider
from mail.providers.webhooks import EventType, WebhookConfig, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError
from tests.providers import (
    Answer,
    Recorder,
    fixture,
    fixture_text,
    make_message,
    outcomes,
    own_body,
)

API_KEY = "SG.k3y.s3cret"


def accepted(n: int = 1) -> httpx.Response:
    """SendGrid's success: 202, empty body, the request's X-Message-Id."""
    return httpx.Response(202, headers={"X-Message-Id": f"msg-{n}"})


def sendgrid_api(*answers: Answer) -> Recorder:
    """SendGrid's API: the scripted answers, then every request accepted."""
    return Recorder(*answers, default=lambda _, n: accepted(n))


def make_provider(recorder: Recorder, **options: Any) -> SendgridProvider:
    return SendgridProvider(API_KEY, transport=httpx.MockTransport(recorder), **options)


def test_from_url_reads_key_and_host() -> None:
    url = EmailURL(scheme="sendgrid", username=API_KEY, host="api.eu.sendgrid.com")
    provider = SendgridProvider.from_url(url)
    assert provider.base_url == "https://api.eu.sendgrid.com"
    assert provider.client.headers["Authorization"] == f"Bearer {API_KEY}"
    assert (provider.name, provider.batch_limit, provider.supports_idempotency) == (
        "sendgrid",
        1000,
        False,
    )
    assert API_KEY not in repr(provider)


def test_url_credentials_are_decoded_and_plain_http_allowed() -> None:
    provider = SendgridProvider.from_url(parse_email_url("sendgrid+http://SG.a%2Fb@127.0.0.1:9000"))
    assert provider.base_url == "http://127.0.0.1:9000"
    assert provider.client.headers["Authorization"] == "Bearer SG.a/b"


def test_missing_key_and_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_EMAIL_URL: sendgrid needs"):
        SendgridProvider.from_url(EmailURL(scheme="sendgrid", host="api.sendgrid.com"))
    url = EmailURL(scheme="sendgrid", username=API_KEY, host="h", params={"stream": "x"})
    with pytest.raises(ConfigurationError, match="unknown option 'stream'"):
        SendgridProvider.from_url(url)


# --- sending -------------------------------------------------------------------------------------


def test_identical_content_is_sent_once_with_a_personalization_per_reader() -> None:
    recorder = sendgrid_api()
    results = make_provider(recorder).send([make_message(n) for n in (1, 2, 3)])
    assert [(r.outcome, r.provider_message_id) for r in results] == [(Outcome.SENT, "msg-1")] * 3
    (request,) = recorder.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.sendgrid.com/v3/mail/send")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = recorder.json()
    assert body["from"] == {"email": "news@example.org", "name": "Topic News"}
    assert body["subject"] == "Weekly digest"
    assert body["content"] == [
        {"type": "text/plain", "value": "Hello reader\n"},
        {"type": "text/html", "value": "<p>Hello reader</p>"},
    ]
    assert request.content.count(b"Hello reader") == 2  # text and html, once each
    assert body["personalizations"] == [
        {
            "to": [{"email": f"reader{n}@example.net", "name": f"Reader {n}"}],
            "headers": {
                "List-Unsubscribe": f"<https://news.example.org/u/tok{n}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "List-Id": "Weekly <weekly.news.example.org>",
            },
            "custom_args": {"delivery_id": str(100 + n)},
        }
        for n in (1, 2, 3)
    ]
    assert "categories" not in body


def test_different_bodies_go_in_separate_requests_in_order() -> None:
    recorder = sendgrid_api()
    provider = make_provider(recorder)
    batch = [make_message(1, **own_body(1)), make_message(2), make_message(3, **own_body(3))]
    batch.append(make_message(4))
    results = provider.send(batch)
    assert [r.provider_message_id for r in results] == ["msg-1", "msg-2", "msg-3", "msg-2"]
    assert [len(recorder.json(i)["personalizations"]) for i in range(3)] == [1, 2, 1]
    assert recorder.json(0)["content"][0]["value"] == own_body(1)["text"]
    assert provider.requests_for(batch) == 3  # what the rate limiter is charged: the requests made


def test_an_address_repeated_with_the_same_content_goes_in_another_request() -> None:
    recorder = sendgrid_api()
    twice = make_message(1, to="reader1@EXAMPLE.net", metadata={"delivery_id": "9"})
    results = make_provider(recorder).send([make_message(1), make_message(2), twice])
    assert [r.provider_message_id for r in results] == ["msg-1", "msg-1", "msg-2"]
    assert recorder.json(1)["personalizations"][0]["custom_args"] == {"delivery_id": "9"}


def test_tag_becomes_a_category_and_text_only_has_one_content() -> None:
    recorder = sendgrid_api()
    make_provider(recorder, tag="digest").send([make_message(1, html=None, metadata={})])
    body = recorder.json()
    assert body["categories"] == ["digest"]
    assert body["content"] == [{"type": "text/plain", "value": "Hello reader\n"}]
    assert "custom_args" not in body["personalizations"][0]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, "error_400.json", Outcome.REQUEST_WRONG),
        (413, "error_413.json", Outcome.REQUEST_WRONG),
        (401, "error_401.json", Outcome.ACCOUNT_BLOCKED),
        (403, "error_403.json", Outcome.ACCOUNT_BLOCKED),
        (500, "error_500.json", Outcome.TEMPORARY),
        (503, None, Outcome.TEMPORARY),
    ],
)
def test_refusals(status: int, body: str | None, expected: Outcome) -> None:
    answer = (
        httpx.Response(status, json=fixture("sendgrid", body)) if body else httpx.Response(status)
    )
    results = make_provider(sendgrid_api(answer)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert f"SendGrid HTTP {status}" in results[0].detail
    if body:
        assert fixture("sendgrid", body)["errors"][0]["message"] in results[0].detail
    assert API_KEY not in results[0].detail


def test_429_waits_until_the_rate_limit_resets() -> None:
    reset = int(time.time()) + 60
    headers = {
        "X-RateLimit-Limit": "600",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    answer = httpx.Response(429, json=fixture("sendgrid", "error_429.json"), headers=headers)
    (result,) = make_provider(sendgrid_api(answer)).send([make_message()])
    assert result.outcome is Outcome.TEMPORARY
    assert result.retry_after is not None and 55 <= result.retry_after <= 61
    assert "too many requests" in result.detail


def test_a_provider_wide_answer_stops_the_rest_of_the_batch() -> None:
    answer = httpx.Response(
        429, json=fixture("sendgrid", "error_429.json"), headers={"Retry-After": "20"}
    )
    recorder = sendgrid_api(answer)
    batch = [make_message(n, **own_body(n)) for n in (1, 2, 3)]
    results = make_provider(recorder).send(batch)
    assert len(recorder.requests) == 1
    assert [(r.outcome, r.retry_after) for r in results] == [(Outcome.TEMPORARY, 20.0)] * 3
    assert results[1].detail.startswith("not sent")


def test_a_bad_request_does_not_stop_the_others() -> None:
    recorder = sendgrid_api(httpx.Response(400, json=fixture("sendgrid", "error_400.json")))
    batch = [make_message(n, **own_body(n)) for n in (1, 2, 3)]
    results = make_provider(recorder).send(batch)
    assert outcomes(results) == [Outcome.REQUEST_WRONG, Outcome.SENT, Outcome.SENT]
    assert len(recorder.requests) == 3


def test_no_answer_is_unknown_and_the_rest_is_not_sent() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    recorder = sendgrid_api(accepted(1), timeout)
    batch = [make_message(n, **own_body(n)) for n in (1, 2, 3)]
    results = make_provider(recorder).send(batch)
    assert outcomes(results) == [Outcome.SENT, Outcome.UNKNOWN, Outcome.TEMPORARY]
    assert len(recorder.requests) == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadTimeout, Outcome.UNKNOWN),
        (httpx.ReadError, Outcome.UNKNOWN),
        (httpx.RemoteProtocolError, Outcome.UNKNOWN),
        (httpx.ConnectError, Outcome.TEMPORARY),
        (httpx.ConnectTimeout, Outcome.TEMPORARY),
    ],
)
def test_transport_errors(error: type[httpx.TransportError], expected: Outcome) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    results = make_provider(sendgrid_api(fail)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]


def test_batch_limit_is_1000_personalizations() -> None:
    recorder = sendgrid_api()
    provider = make_provider(recorder)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        provider.send([make_message(n) for n in range(1001)])
    assert recorder.requests == []
    provider.send([make_message(n) for n in range(1000)])
    assert len(recorder.requests) == 1
    assert len(recorder.json()["personalizations"]) == 1000


def test_a_malformed_message_fails_alone() -> None:
    recorder = sendgrid_api()
    bad = make_message(2, headers={"List-Id": "a\r\nBcc: victim@example.com"})
    results = make_provider(recorder).send([make_message(1), bad, make_message(3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    emails = [p["to"][0]["email"] for p in recorder.json()["personalizations"]]
    assert emails == ["reader1@example.net", "reader3@example.net"]


# --- webhooks ------------------------------------------------------------------------------------

NOW = 1_700_000_000


@pytest.fixture(scope="module")
def key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def signed(
    private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int = NOW
) -> WebhookRequest:
    """A request signed as SendGrid signs: ECDSA-SHA256 over timestamp + raw body, base64 DER."""
    signature = private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": str(timestamp),
        "content-type": "application/json",
    }
    return WebhookRequest(headers=headers, body=body)


def events_body() -> bytes:
    return fixture_text("sendgrid", "events.json").encode()


def test_sendgrids_own_signed_vector_verifies() -> None:
    vector = fixture("sendgrid", "signed_sdk_vector.json")
    request = WebhookRequest(
        headers={
            "x-twilio-email-event-webhook-signature": vector["signature"],
            "x-twilio-email-event-webhook-timestamp": vector["timestamp"],
        },
        body=vector["body"].encode(),
    )
    config = WebhookConfig(secret=vector["public_key"], now=int(vector["timestamp"]) + 5)
    SendgridProvider.verify_webhook(request, config)
    tampered = WebhookRequest(
        headers=request.headers, body=request.body.replace(b"hello", b"h3llo")
    )
    with pytest.raises(WebhookRejected) as rejected:
        SendgridProvider.verify_webhook(tampered, config)
    assert rejected.value.status == 401


def test_a_generated_signature_verifies_with_der_or_pem(
    key_pair: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    private, public = key_pair
    SendgridProvider.verify_webhook(signed(private, events_body()), WebhookConfig(public, NOW))
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    SendgridProvider.verify_webhook(
        signed(private, events_body()), WebhookConfig(pem.decode(), NOW)
    )


def test_forged_and_stale_calls_are_rejected(
    key_pair: tuple[ec.EllipticCurvePrivateKey, str],
) -> None:
    private, public = key_pair
    other = ec.generate_private_key(ec.SECP256R1())
    good = signed(private, events_body())
    cases = [
        (signed(other, events_body()), NOW, 401),  # someone else's key
        (WebhookRequest(headers={}, body=events_body()), NOW, 401),  # unsigned
        (WebhookRequest(headers=good.headers, body=events_body() + b" "), NOW, 401),
        (
            WebhookRequest(
                headers={**good.headers, "x-twilio-email-event-webhook-timestamp": str(NOW + 1)},
                body=events_body(),
            ),
            NOW,
            401,
        ),  # the timestamp is signed too
        (
            WebhookRequest(
                headers={**good.headers, "x-twilio-email-event-webhook-signature": "%%"},
                body=events_body(),
            ),
            NOW,
            401,
        ),
        (good, NOW + 301, 403),  # a replay after the tolerance
        (good, NOW - 301, 403),  # from the future
    ]
    for request, now, status in cases:
        with pytest.raises(WebhookRejected) as rejected:
            SendgridProvider.verify_webhook(request, WebhookConfig(public, now))
        assert rejected.value.status == status


def test_unconfigured_or_unusable_key() -> None:
    request = WebhookRequest(headers={}, body=b"[]")
    with pytest.raises(WebhookRejected) as rejected:
        SendgridProvider.verify_webhook(request, WebhookConfig(None, NOW))
    assert rejected.value.status == 403
    with pytest.raises(ConfigurationError, match="NEWSLETTER_WEBHOOK_SENDGRID"):
        SendgridProvider.verify_webhook(request, WebhookConfig("not a key", NOW))


def test_documented_events_are_normalized() -> None:
    events = SendgridProvider.parse_events(WebhookRequest(headers={}, body=events_body()))
    assert [(e.raw["event"], e.type) for e in events] == [
        ("processed", EventType.OTHER),
        ("dropped", EventType.BOUNCED),  # reason "Bounced Address"
        ("delivered", EventType.DELIVERED),
        ("deferred", EventType.DEFERRED),
        ("bounce", EventType.BOUNCED),
        ("bounce", EventType.SOFT_BOUNCED),  # type "blocked"
        ("open", EventType.OTHER),
        ("click", EventType.OTHER),
        ("spamreport", EventType.COMPLAINED),
        ("unsubscribe", EventType.UNSUBSCRIBED),
        ("group_unsubscribe", EventType.UNSUBSCRIBED),
        ("group_resubscribe", EventType.OTHER),
        ("dropped", EventType.COMPLAINED),  # "Spam Reporting Address"
        ("dropped", EventType.UNSUBSCRIBED),  # "Unsubscribed Address"
        ("dropped", EventType.DROPPED),  # "Invalid SMTPAPI header"
    ]
    first = events[0]
    assert first.event_id == "sg_event_id_01_processed"
    assert len({e.event_id for e in events}) == len(events)
    assert (first.provider, first.email, first.delivery_id) == ("sendgrid", "example@test.com", 501)
    assert first.provider_message_id == "14c5d75ce93"
    assert first.occurred_at == datetime.fromtimestamp(1513299569, UTC)
    assert "500 unknown recipient" in events[4].detail


def test_an_event_without_sg_event_id_gets_a_stable_id() -> None:
    event = {"email": "a@example.org", "event": "dropped", "reason": "Invalid", "timestamp": NOW}
    body = json.dumps([event]).encode()
    (first,) = SendgridProvider.parse_events(WebhookRequest(headers={}, body=body))
    (again,) = SendgridProvider.parse_events(
        WebhookRequest(headers={}, body=json.dumps([dict(reversed(event.items()))]).encode())
    )
    assert first.event_id == again.event_id and first.event_id.startswith("sha256:")
    assert first.delivery_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"event": "delivered"}',
        b"[1]",
        b'[{"email": "a@example.org"}]',
        b'[{"event": "delivered", "email": "a@example.org", "timestamp": "soon"}]',
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        SendgridProvider.parse_events(WebhookRequest(headers={}, body=body))
    assert rejected.value.status == 400
