"""Tests for the Resend provider: batch requests, outcomes, Idempotency-Key, Svix webhooks.

Resend is replaced by httpx.MockTransport answering with the documented payloads in
tests/fixtures/providers/resend.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mail.emailurl import EmailURL
from mail.providers.base import EmailMessage, Outcome
from mail.providers.resend import ResendProvider
from mail.providers.webhooks import EventType, WebhookConfig, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError
from tests.providers import Answer, Recorder, fixture, fixture_text, make_message, outcomes

ERRORS: dict[str, dict[str, Any]] = fixture("resend", "errors.json")
SECRET = "whsec_" + base64.b64encode(b"a test signing key of 24b").decode()


def resend_api(*answers: Answer) -> Recorder:
    """Resend's API: the scripted answers (the last one again), by default its documented success."""
    return Recorder(*(answers or [httpx.Response(200, json=fixture("resend", "batch_ok.json"))]))


def resend(api: Recorder) -> ResendProvider:
    return ResendProvider("re_test_key", transport=api.transport)


def keyed(n: int) -> EmailMessage:
    """Reader n's message with the idempotency key the Sender gives its delivery."""
    return make_message(n, idempotency_key=f"delivery-{100 + n}")


def ok(count: int) -> httpx.Response:
    return httpx.Response(200, json={"data": [{"id": f"id-{i}"} for i in range(count)]})


def test_batch_request_shape() -> None:
    fake = resend_api()
    results = resend(fake).send([make_message(1), make_message(2)])
    (request,) = fake.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.resend.com/emails/batch")
    assert request.headers["authorization"] == "Bearer re_test_key"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-batch-validation"] == "permissive"
    first, second = fake.json(-1)
    assert first == {
        "from": "Topic News <news@example.org>",
        "to": ["Reader 1 <reader1@example.net>"],
        "subject": "Weekly digest",
        "text": "Hello reader\n",
        "html": "<p>Hello reader</p>",
        "headers": {
            "List-Unsubscribe": "<https://news.example.org/u/tok1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Weekly <weekly.news.example.org>",
            "X-Newsletter-Delivery-Id": "101",
        },
        "tags": [{"name": "delivery_id", "value": "101"}],
    }
    assert second["headers"]["List-Unsubscribe"] == "<https://news.example.org/u/tok2>"
    assert [(r.outcome, r.provider_message_id) for r in results] == [
        (Outcome.SENT, "ae2014de-c168-4c61-8267-70d2662a1ce1"),
        (Outcome.SENT, "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"),
    ]


def test_text_only_message_and_idn_domain() -> None:
    fake = resend_api(ok(1))
    resend(fake).send([make_message(html=None, to="zoe@bücher.example", metadata={})])
    (email,) = fake.json(-1)
    assert "html" not in email and "tags" not in email
    assert email["to"] == ["zoe@xn--bcher-kva.example"]


def test_tags_skip_values_resend_would_refuse() -> None:
    fake = resend_api(ok(1))
    metadata = {"delivery_id": "7", "topic": "space news"}
    resend(fake).send([make_message(metadata=metadata)])
    (email,) = fake.json(-1)
    assert email["tags"] == [{"name": "delivery_id", "value": "7"}]
    assert email["headers"]["X-Newsletter-Topic"] == "space news"


def test_idempotency_key_is_stable_for_the_same_deliveries() -> None:
    fake = resend_api(ok(2))
    provider = resend(fake)
    provider.send([keyed(1), keyed(2)])
    provider.send([keyed(1), keyed(2)])
    provider.send([keyed(2), keyed(1)])  # the same deliveries, in another order
    provider.send([keyed(1), keyed(3)])
    keys = [request.headers["idempotency-key"] for request in fake.requests]
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
    assert all(0 < len(key) <= 256 for key in keys)


def test_without_idempotency_keys_the_body_decides() -> None:
    fake = resend_api(ok(1))
    provider = resend(fake)
    for subject in ("A", "A", "B"):
        provider.send([make_message(idempotency_key=None, subject=subject)])
    keys = [request.headers["idempotency-key"] for request in fake.requests]
    assert keys[0] == keys[1] != keys[2]


def test_permissive_errors_are_per_message() -> None:
    fake = resend_api(httpx.Response(200, json=fixture("resend", "batch_permissive.json")))
    results = resend(fake).send([make_message(n) for n in (1, 2, 3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.SENT, Outcome.REQUEST_WRONG]
    assert results[1].provider_message_id == "faccb7a5-8a28-4e9a-ac64-8da1cc3bc1cb"
    assert results[2].detail == "The `to` field is missing."


def test_ids_skip_the_refused_index() -> None:
    answer = {"data": [{"id": "a"}, {"id": "c"}], "errors": [{"index": 1, "message": "bad"}]}
    fake = resend_api(httpx.Response(200, json=answer))
    results = resend(fake).send([make_message(n) for n in (1, 2, 3)])
    assert [(r.outcome, r.provider_message_id) for r in results] == [
        (Outcome.SENT, "a"),
        (Outcome.REQUEST_WRONG, None),
        (Outcome.SENT, "c"),
    ]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"data": [{"id": "only-one"}]}),
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={"unexpected": True}),
    ],
)
def test_an_answer_that_cannot_be_paired_is_unknown(answer: httpx.Response) -> None:
    fake = resend_api(answer)
    results = resend(fake).send([make_message(1), make_message(2)])
    assert outcomes(results) == [Outcome.UNKNOWN, Outcome.UNKNOWN]


EXPECTED_OUTCOMES = {
    "invalid_idempotency_key": Outcome.REQUEST_WRONG,
    "validation_error": Outcome.REQUEST_WRONG,
    "missing_api_key": Outcome.ACCOUNT_BLOCKED,
    "invalid_api_key": Outcome.ACCOUNT_BLOCKED,
    "not_found": Outcome.REQUEST_WRONG,
    "method_not_allowed": Outcome.REQUEST_WRONG,
    "invalid_idempotent_request": Outcome.REQUEST_WRONG,
    "concurrent_idempotent_requests": Outcome.TEMPORARY,
    "missing_required_field": Outcome.REQUEST_WRONG,
    "rate_limit_exceeded": Outcome.TEMPORARY,
    "daily_quota_exceeded": Outcome.ACCOUNT_BLOCKED,
    "monthly_quota_exceeded": Outcome.ACCOUNT_BLOCKED,
    "application_error": Outcome.TEMPORARY,
    "internal_server_error": Outcome.TEMPORARY,
}


def test_every_documented_error_has_an_expected_outcome() -> None:
    assert set(EXPECTED_OUTCOMES) == set(ERRORS)


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTCOMES))
def test_error_outcomes(name: str) -> None:
    error = ERRORS[name]
    fake = resend_api(httpx.Response(error["status"], json=error["body"]))
    results = resend(fake).send([make_message(1), make_message(2)])
    assert outcomes(results) == [EXPECTED_OUTCOMES[name]] * 2
    assert name in results[0].detail and str(error["status"]) in results[0].detail


def test_rate_limit_carries_the_wait() -> None:
    error = ERRORS["rate_limit_exceeded"]
    headers = {"retry-after": "3", "ratelimit-reset": "1", "ratelimit-remaining": "0"}
    fake = resend_api(httpx.Response(429, json=error["body"], headers=headers))
    (result,) = resend(fake).send([make_message()])
    assert (result.outcome, result.retry_after) == (Outcome.TEMPORARY, 3.0)


def test_rate_limit_reset_alone_is_used_too() -> None:
    error = ERRORS["rate_limit_exceeded"]
    fake = resend_api(httpx.Response(429, json=error["body"], headers={"ratelimit-reset": "2"}))
    (result,) = resend(fake).send([make_message()])
    assert result.retry_after == 2.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [(502, Outcome.TEMPORARY), (503, Outcome.TEMPORARY), (413, Outcome.REQUEST_WRONG)],
)
def test_non_json_error_pages(status: int, expected: Outcome) -> None:
    fake = resend_api(httpx.Response(status, text="<html>Bad gateway</html>"))
    (result,) = resend(fake).send([make_message()])
    assert result.outcome is expected
    assert str(status) in result.detail


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("connection refused"), Outcome.TEMPORARY),
        (httpx.ConnectTimeout("timed out"), Outcome.TEMPORARY),
        (httpx.PoolTimeout("no connection free"), Outcome.TEMPORARY),
        (httpx.ReadTimeout("timed out"), Outcome.UNKNOWN),
        (httpx.ReadError("connection reset"), Outcome.UNKNOWN),
        (httpx.WriteTimeout("timed out"), Outcome.TEMPORARY),  # the request never left whole
        (httpx.RemoteProtocolError("server disconnected"), Outcome.UNKNOWN),
    ],
)
def test_transport_failures(error: Exception, expected: Outcome) -> None:
    fake = resend_api(error)
    results = resend(fake).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert type(error).__name__ in results[0].detail


def test_resending_after_an_unknown_outcome_uses_the_same_key() -> None:
    fake = resend_api(httpx.ReadTimeout("timed out"), ok(2))
    provider = resend(fake)
    batch = [make_message(1), make_message(2)]
    assert outcomes(provider.send(batch)) == [Outcome.UNKNOWN] * 2
    assert outcomes(provider.send(batch)) == [Outcome.SENT] * 2
    first, second = fake.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.content == second.content


def test_a_message_that_cannot_be_built_fails_alone() -> None:
    fake = resend_api(ok(2))
    batch = [make_message(1), make_message(2, subject="x\nBcc: v@example.com"), make_message(3)]
    results = resend(fake).send(batch)
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert [email["to"] for email in fake.json(-1)] == [
        ["Reader 1 <reader1@example.net>"],
        ["Reader 3 <reader3@example.net>"],
    ]


def test_no_request_when_every_message_is_bad() -> None:
    fake = resend_api()
    results = resend(fake).send([make_message(to="not an address")])
    assert outcomes(results) == [Outcome.REQUEST_WRONG]
    assert fake.requests == []


def test_batch_limit() -> None:
    fake = resend_api(ok(100))
    provider = resend(fake)
    assert outcomes(provider.send([make_message(n) for n in range(100)])) == [Outcome.SENT] * 100
    assert len(fake.requests) == 1
    with pytest.raises(ValueError, match="limit of 100"):
        provider.send([make_message(n) for n in range(101)])


def test_from_url() -> None:
    provider = ResendProvider.from_url(
        EmailURL(scheme="resend", username="re_123", host="api.resend.com")
    )
    assert provider.base_url == "https://api.resend.com"
    assert "re_123" not in repr(provider)
    local = ResendProvider.from_url(
        EmailURL(scheme="resend", plain_http=True, username="re_1", host="127.0.0.1", port=8025)
    )
    assert local.base_url == "http://127.0.0.1:8025"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (EmailURL(scheme="resend", host="api.resend.com"), "needs the API key"),
        (
            EmailURL(scheme="resend", username="re_1", host="api.resend.com", params={"x": "1"}),
            "unknown option 'x'",
        ),
    ],
)
def test_bad_urls(url: EmailURL, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ResendProvider.from_url(url)


# --- webhooks ---------------------------------------------------------------------------

NOW = 1_732_318_872.0  # 2024-11-22T23:41:12Z, when the documented events were created


def svix_request(
    body: str,
    *,
    secret: str = SECRET,
    message_id: str = "msg_2pAhvY7ucqHpJZh4vRb9nQ0rBvE",
    timestamp: float = NOW,
    prefix: str = "svix",
) -> WebhookRequest:
    """A webhook call signed as Svix signs it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{int(timestamp)}.{body}".encode()
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    headers = {
        f"{prefix}-id": message_id,
        f"{prefix}-timestamp": str(int(timestamp)),
        f"{prefix}-signature": f"v1,{signature}",
    }
    return WebhookRequest(headers=headers, body=body.encode())


def config(now: float = NOW, secret: str | None = SECRET) -> WebhookConfig:
    return WebhookConfig(secret=secret, now=now, tolerance_seconds=300)


def rejected_status(request: WebhookRequest, webhook_config: WebhookConfig) -> int:
    with pytest.raises(WebhookRejected) as caught:
        ResendProvider.verify_webhook(request, webhook_config)
    return caught.value.status


def test_svix_documentation_example_verifies() -> None:
    example = fixture("resend", "svix_example.json")
    request = WebhookRequest(headers=example["headers"], body=example["payload"].encode())
    ResendProvider.verify_webhook(request, config(now=1614265330, secret=example["secret"]))


def test_svix_documentation_example_with_another_body_is_forged() -> None:
    example = fixture("resend", "svix_example.json")
    request = WebhookRequest(headers=example["headers"], body=b'{"test": 2432232315}')
    assert rejected_status(request, config(now=1614265330, secret=example["secret"])) == 401


def test_signed_event_verifies_also_with_white_labelled_headers() -> None:
    body = fixture_text("resend", "webhook_email_delivered.json")
    ResendProvider.verify_webhook(svix_request(body), config())
    ResendProvider.verify_webhook(svix_request(body, prefix="webhook"), config())


def test_any_listed_v1_signature_may_match() -> None:
    request = svix_request(fixture_text("resend", "webhook_email_delivered.json"))
    good = request.headers["svix-signature"]
    headers = {**request.headers, "svix-signature": f"v1,bm90IGl0 v2,abc {good}"}
    ResendProvider.verify_webhook(WebhookRequest(headers=headers, body=request.body), config())


def test_signature_with_another_secret_is_forged() -> None:
    other = "whsec_" + base64.b64encode(b"someone else's key").decode()
    request = svix_request(fixture_text("resend", "webhook_email_bounced.json"), secret=other)
    assert rejected_status(request, config()) == 401


def test_signature_over_another_id_is_forged() -> None:
    request = svix_request(fixture_text("resend", "webhook_email_bounced.json"))
    headers = {**request.headers, "svix-id": "msg_other"}
    assert rejected_status(WebhookRequest(headers=headers, body=request.body), config()) == 401


@pytest.mark.parametrize("offset", [301, -301, 86400])
def test_stale_or_future_timestamps_are_refused(offset: float) -> None:
    request = svix_request(
        fixture_text("resend", "webhook_email_delivered.json"), timestamp=NOW - offset
    )
    assert rejected_status(request, config()) == 401


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.pop("svix-signature"),
        lambda h: h.pop("svix-id"),
        lambda h: h.update({"svix-timestamp": "yesterday"}),
    ],
)
def test_malformed_headers_are_bad_requests(change: Callable[[dict[str, str]], object]) -> None:
    request = svix_request(fixture_text("resend", "webhook_email_delivered.json"))
    headers = dict(request.headers)
    change(headers)
    assert rejected_status(WebhookRequest(headers=headers, body=request.body), config()) == 400


@pytest.mark.parametrize("secret", [None, "", "whsec_%%%"])
def test_missing_or_malformed_secret_is_a_configuration_error(secret: str | None) -> None:
    request = svix_request(fixture_text("resend", "webhook_email_delivered.json"))
    with pytest.raises(ConfigurationError, match="resend webhook"):
        ResendProvider.verify_webhook(request, config(secret=secret))


@pytest.mark.parametrize(
    ("name", "expected", "delivery_id"),
    [
        ("webhook_email_delivered.json", EventType.DELIVERED, 42),
        ("webhook_email_bounced.json", EventType.BOUNCED, 42),
        ("webhook_email_bounced_transient.json", EventType.SOFT_BOUNCED, 43),
        ("webhook_email_complained.json", EventType.COMPLAINED, 42),
        ("webhook_email_suppressed.json", EventType.BOUNCED, None),
        ("webhook_email_delivery_delayed.json", EventType.DEFERRED, 42),
        ("webhook_email_failed.json", EventType.DROPPED, 42),
        ("webhook_email_opened.json", EventType.OTHER, 42),
    ],
)
def test_parse_events(name: str, expected: EventType, delivery_id: int | None) -> None:
    request = svix_request(fixture_text("resend", name), message_id="msg_abc")
    (event,) = ResendProvider.parse_events(request)
    assert event.provider == "resend"
    assert event.event_id == "msg_abc"
    assert event.type is expected
    assert event.email == "delivered@resend.dev"
    assert event.provider_message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert event.delivery_id == delivery_id
    assert event.occurred_at == datetime(2024, 11, 22, 23, 41, 12, 126000, tzinfo=UTC)
    assert event.raw["type"] == fixture("resend", name)["type"]


def test_event_details() -> None:
    bounced = svix_request(fixture_text("resend", "webhook_email_bounced.json"))
    suppressed = svix_request(fixture_text("resend", "webhook_email_suppressed.json"))
    assert "Permanent/Suppressed" in ResendProvider.parse_events(bounced)[0].detail
    detail = ResendProvider.parse_events(suppressed)[0].detail
    assert detail.startswith("suppressed: OnAccountSuppressionList: Resend has suppressed")


def test_events_for_several_recipients_get_distinct_ids() -> None:
    payload = fixture("resend", "webhook_email_delivered.json")
    payload["data"]["to"] = ["a@example.net", "b@example.net"]
    events = ResendProvider.parse_events(svix_request(json.dumps(payload), message_id="msg_1"))
    assert [(e.event_id, e.email) for e in events] == [
        ("msg_1:0", "a@example.net"),
        ("msg_1:1", "b@example.net"),
    ]


def test_events_about_no_email_give_nothing() -> None:
    request = svix_request(fixture_text("resend", "webhook_domain_created.json"))
    assert ResendProvider.parse_events(request) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"type": "email.delivered"}',
        '{"type": "email.delivered", "data": {"to": ["a@example.net"]}}',
        '{"type": "email.delivered", "created_at": "soon", "data": {"to": ["a@example.net"]}}',
    ],
)
def test_malformed_events_are_bad_requests(body: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        ResendProvider.parse_events(svix_request(body))
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("previous_complaint", EventType.COMPLAINED),
        ("previous_bounce", EventType.BOUNCED),
        (None, EventType.BOUNCED),
    ],
)
def test_suppressed_event_is_typed_by_its_reason(reason: str | None, expected: EventType) -> None:
    payload = fixture("resend", "webhook_email_suppressed.json")
    if reason is not None:
        payload["data"]["suppressed"]["reason"] = reason
    (event,) = ResendProvider.parse_events(svix_request(json.dumps(payload)))
    assert event.type is expected
    if reason is not None:
        assert reason in event.detail
