"""Tests for the Postmark provider: the batch request, per-message outcomes, failures, webhooks."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mail.emailurl import EmailURL, parse_email_url
from mail.providers.base import Outcome
from mail.providers.postmark import PostmarkProvider
from mail.providers.webhooks import EventType, WebhookConfig, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError
from tests.providers import Answer, Recorder, fixture, make_message, outcomes
from tests.providerserver import Fault, ProviderServer

TOKEN = "server-token-5ecret"


def ok_for(request: httpx.Request) -> httpx.Response:
    """Postmark's answer accepting every message of the batch (documented element shape)."""
    template = fixture("postmark", "batch_response.json")[0]
    batch = json.loads(request.content)
    answers = [{**template, "MessageID": f"id-{i}", "To": m["To"]} for i, m in enumerate(batch)]
    return httpx.Response(200, json=answers)


def postmark_api(*answers: Answer) -> Recorder:
    """Postmark's API: the scripted answers, then every message accepted."""
    return Recorder(*answers, default=lambda request, _: ok_for(request))


def make_provider(recorder: Recorder, **options: Any) -> PostmarkProvider:
    return PostmarkProvider(TOKEN, transport=httpx.MockTransport(recorder), **options)


def test_from_url_reads_token_host_stream_and_tag() -> None:
    url = EmailURL(
        scheme="postmark",
        username=TOKEN,
        host="api.postmarkapp.com",
        params={"stream": "broadcast", "tag": "digest"},
    )
    provider = PostmarkProvider.from_url(url)
    assert provider.base_url == "https://api.postmarkapp.com"
    assert (provider.stream, provider.tag) == ("broadcast", "digest")
    assert provider.client.headers["X-Postmark-Server-Token"] == TOKEN
    assert (provider.name, provider.batch_limit, provider.supports_idempotency) == (
        "postmark",
        500,
        False,
    )
    assert TOKEN not in repr(provider)


def test_url_credentials_are_decoded_and_plain_http_allowed() -> None:
    url = parse_email_url("postmark+http://tok%2Fen%40x@127.0.0.1:8025?stream=broadcast")
    provider = PostmarkProvider.from_url(url)
    assert provider.base_url == "http://127.0.0.1:8025"
    assert provider.client.headers["X-Postmark-Server-Token"] == "tok/en@x"


def test_missing_token_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_EMAIL_URL: postmark needs"):
        PostmarkProvider.from_url(EmailURL(scheme="postmark", host="api.postmarkapp.com"))


def test_unknown_option_is_refused() -> None:
    url = EmailURL(scheme="postmark", username=TOKEN, host="h", params={"steam": "broadcast"})
    with pytest.raises(ConfigurationError, match=r"unknown option 'steam' \(known: stream, tag\)"):
        PostmarkProvider.from_url(url)


# --- sending -------------------------------------------------------------------------------------


def test_one_batch_request_with_each_readers_headers_and_metadata() -> None:
    recorder = postmark_api()
    provider = make_provider(recorder, stream="broadcast")
    results = provider.send([make_message(1), make_message(2), make_message(3)])
    assert [(r.outcome, r.provider_message_id) for r in results] == [
        (Outcome.SENT, "id-0"),
        (Outcome.SENT, "id-1"),
        (Outcome.SENT, "id-2"),
    ]
    (request,) = recorder.requests
    assert (request.method, str(request.url)) == ("POST", "https://api.postmarkapp.com/email/batch")
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    batch = recorder.json()
    assert [m["To"] for m in batch] == [f"Reader {n} <reader{n}@example.net>" for n in (1, 2, 3)]
    for n, element in enumerate(batch, start=1):
        assert element["From"] == "Topic News <news@example.org>"
        assert element["Subject"] == "Weekly digest"
        assert element["TextBody"] == "Hello reader\n"
        assert element["HtmlBody"] == "<p>Hello reader</p>"
        assert element["MessageStream"] == "broadcast"
        assert element["Metadata"] == {"delivery_id": str(100 + n)}
        assert element["Headers"] == [
            {"Name": "List-Unsubscribe", "Value": f"<https://news.example.org/u/tok{n}>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            {"Name": "List-Id", "Value": "Weekly <weekly.news.example.org>"},
        ]
        assert "Tag" not in element


def test_documented_batch_answer_is_read_in_order() -> None:
    recorder = postmark_api(httpx.Response(200, json=fixture("postmark", "batch_response.json")))
    results = make_provider(recorder).send([make_message(1), make_message(2)])
    assert [r.provider_message_id for r in results] == [
        "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
        "e2ecbbfc-fe12-463d-b933-9fe22915106d",
    ]


def test_tag_from_message_kind_or_url_and_text_only_message() -> None:
    recorder = postmark_api()
    provider = make_provider(recorder, tag="digest")
    provider.send([make_message(1), make_message(2, metadata={"kind": "confirm"}, html=None)])
    first, second = recorder.json()
    assert (first["Tag"], second["Tag"]) == ("digest", "confirm")
    assert "HtmlBody" not in second and "MessageStream" not in second


def test_per_message_error_codes() -> None:
    recorder = postmark_api(
        httpx.Response(200, json=fixture("postmark", "batch_response_with_errors.json"))
    )
    results = make_provider(recorder).send([make_message(n) for n in range(1, 7)])
    assert outcomes(results) == [
        Outcome.SENT,
        Outcome.RECIPIENT_PERMANENT,  # 406 inactive recipient
        Outcome.RECIPIENT_PERMANENT,  # 300 about the To address
        Outcome.REQUEST_WRONG,  # 300 about the body
        Outcome.TEMPORARY,  # 429 for that message
        Outcome.SENT,
    ]
    assert "ErrorCode 406" in results[1].detail and "inactive" in results[1].detail


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, "error_401.json", Outcome.ACCOUNT_BLOCKED),
        (422, "error_422_account_pending.json", Outcome.ACCOUNT_BLOCKED),
        (422, "error_422_not_allowed.json", Outcome.ACCOUNT_BLOCKED),
        (422, "error_422_invalid_json.json", Outcome.REQUEST_WRONG),
        (422, "error_422_too_many_messages.json", Outcome.REQUEST_WRONG),
        (422, "error_422_maintenance.json", Outcome.TEMPORARY),
        (413, None, Outcome.REQUEST_WRONG),
        (500, None, Outcome.TEMPORARY),
        (503, None, Outcome.TEMPORARY),
    ],
)
def test_request_level_answers(status: int, body: str | None, expected: Outcome) -> None:
    answer = (
        httpx.Response(status, json=fixture("postmark", body))
        if body
        else httpx.Response(status, text="Request Entity Too Large")
    )
    results = make_provider(postmark_api(answer)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert f"HTTP {status}" in results[0].detail
    assert TOKEN not in results[0].detail


def test_rate_limited_batch_waits_as_told() -> None:
    answer = httpx.Response(
        429, json=fixture("postmark", "error_429.json"), headers={"Retry-After": "30"}
    )
    results = make_provider(postmark_api(answer)).send([make_message(1), make_message(2)])
    assert [(r.outcome, r.retry_after) for r in results] == [(Outcome.TEMPORARY, 30.0)] * 2


def test_406_for_a_single_message_request_is_the_readers() -> None:
    body = {
        "ErrorCode": 406,
        "Message": "You tried to send to a recipient that has been marked as inactive.",
    }
    (result,) = make_provider(postmark_api(httpx.Response(422, json=body))).send([make_message()])
    assert result.outcome is Outcome.RECIPIENT_PERMANENT
    two = make_provider(postmark_api(httpx.Response(422, json=body))).send(
        [make_message(1), make_message(2)]
    )
    assert outcomes(two) == [Outcome.REQUEST_WRONG] * 2  # which reader it was is not known


def test_batch_limit_is_500() -> None:
    recorder = postmark_api()
    provider = make_provider(recorder)
    with pytest.raises(ValueError, match="over the limit of 500"):
        provider.send([make_message(n) for n in range(501)])
    assert recorder.requests == []
    assert len(provider.send([make_message(n) for n in range(500)])) == 500
    assert len(recorder.requests) == 1 and len(recorder.json()) == 500


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadTimeout, Outcome.UNKNOWN),
        (httpx.ReadError, Outcome.UNKNOWN),
        (httpx.RemoteProtocolError, Outcome.UNKNOWN),
        (httpx.ConnectError, Outcome.TEMPORARY),
        (httpx.ConnectTimeout, Outcome.TEMPORARY),
        (httpx.WriteError, Outcome.TEMPORARY),
    ],
)
def test_transport_errors(error: type[httpx.TransportError], expected: Outcome) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    results = make_provider(postmark_api(fail)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert results[0].provider_message_id is None


def test_unreadable_success_answer_is_unknown() -> None:
    answers = [httpx.Response(200, text="<html>"), httpx.Response(200, json=[{"ErrorCode": 0}])]
    for answer in answers:
        results = make_provider(postmark_api(answer)).send([make_message(1), make_message(2)])
        assert outcomes(results) == [Outcome.UNKNOWN, Outcome.UNKNOWN]


def test_a_malformed_message_fails_alone() -> None:
    recorder = postmark_api()
    bad = make_message(2, subject="x\nBcc: victim@example.com")
    reserved = make_message(3, headers={"From": "evil@example.com"})
    results = make_provider(recorder).send([make_message(1), bad, reserved, make_message(4)])
    assert outcomes(results) == [
        Outcome.SENT,
        Outcome.REQUEST_WRONG,
        Outcome.REQUEST_WRONG,
        Outcome.SENT,
    ]
    assert [r.provider_message_id for r in results if r.outcome is Outcome.SENT] == ["id-0", "id-1"]
    assert [m["To"] for m in recorder.json()] == [
        "Reader 1 <reader1@example.net>",
        "Reader 4 <reader4@example.net>",
    ]


def test_request_body_is_byte_for_byte_what_the_standard_json_module_writes() -> None:
    # orjson serializes the batch (#18); its bytes must equal compact UTF-8 json.dumps, escapes and all.
    recorder = postmark_api()
    tricky = (
        "Caf\u00e9 \u2013 \u201cquoted\u201d \\ / <b>&amp;</b>\t\x00\x1f\x7f \u2028 \U0001f600\n"
    )
    message = make_message(
        1,
        subject=tricky.replace("\n", "")
        .replace("\t", " ")
        .replace("\x00", "")
        .replace("\x1f", "")
        .replace("\u2028", ""),
        text=tricky,
        html=f"<p>{tricky}</p>",
    )
    make_provider(recorder, stream="broadcast", tag="news").send([message])
    provider = make_provider(postmark_api(), stream="broadcast", tag="news")
    element = provider._element(message)
    expected = json.dumps([element], ensure_ascii=False, separators=(",", ":")).encode()
    assert recorder.requests[0].content == expected
    assert recorder.json()[0]["TextBody"] == tricky


def test_a_message_utf8_cannot_carry_fails_alone() -> None:
    recorder = postmark_api()
    broken = make_message(2, text="half a pair: \ud800")
    results = make_provider(recorder).send([make_message(1), broken, make_message(3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert [m["To"] for m in recorder.json()] == [
        "Reader 1 <reader1@example.net>",
        "Reader 3 <reader3@example.net>",
    ]


def test_against_the_local_stand_in() -> None:
    with ProviderServer(token=TOKEN) as server:
        provider = PostmarkProvider(TOKEN, base_url=f"http://127.0.0.1:{server.port}")
        assert outcomes(provider.send([make_message(1), make_message(2)])) == [Outcome.SENT] * 2
        server.faults.append(Fault(drop_after_accepting=True))
        dropped = provider.send([make_message(3)])
        wrong = PostmarkProvider("wrong", base_url=f"http://127.0.0.1:{server.port}")
        refused = wrong.send([make_message(4)])
    assert outcomes(dropped) == [Outcome.UNKNOWN]  # accepted, but the answer never came
    assert outcomes(refused) == [Outcome.ACCOUNT_BLOCKED]
    assert [a.to for a in server.accepted] == [
        "Reader 1 <reader1@example.net>",
        "Reader 2 <reader2@example.net>",
        "Reader 3 <reader3@example.net>",
    ]
    assert server.accepted[1].headers["List-Unsubscribe"] == "<https://news.example.org/u/tok2>"


# --- webhooks ------------------------------------------------------------------------------------

SECRET = "hooks:s3cret pass"
CONFIG = WebhookConfig(secret=SECRET, now=1_700_000_000.0)


def basic(credentials: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def call(record: Any, headers: dict[str, str] | None = None) -> WebhookRequest:
    body = record if isinstance(record, bytes) else json.dumps(record).encode()
    return WebhookRequest(headers=basic(SECRET) if headers is None else headers, body=body)


def test_basic_auth_is_accepted() -> None:
    PostmarkProvider.verify_webhook(call(fixture("postmark", "webhook_delivery.json")), CONFIG)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (basic("hooks:wrong"), 401),
        (basic("hooks:s3cret pass "), 401),
        ({"authorization": "Basic !!not-base64!!"}, 401),
        ({"authorization": "Bearer hooks:s3cret pass"}, 401),
    ],
)
def test_missing_or_wrong_credentials_are_rejected(headers: dict[str, str], status: int) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        PostmarkProvider.verify_webhook(
            call(fixture("postmark", "webhook_delivery.json"), headers), CONFIG
        )
    assert rejected.value.status == status


def test_unconfigured_webhook_is_rejected() -> None:
    config = WebhookConfig(secret=None, now=CONFIG.now)
    with pytest.raises(WebhookRejected) as rejected:
        PostmarkProvider.verify_webhook(call(fixture("postmark", "webhook_delivery.json")), config)
    assert rejected.value.status == 403


def test_bounce_event() -> None:
    (event,) = PostmarkProvider.parse_events(call(fixture("postmark", "webhook_bounce.json")))
    assert event.type is EventType.BOUNCED
    assert event.event_id == "Bounce:4323372036854775807"
    assert event.email == "john@example.com"
    assert event.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    assert event.delivery_id == 1234
    assert event.occurred_at == datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)
    assert "HardBounce" in event.detail and "Test bounce details" in event.detail
    assert "Content" not in event.raw and event.raw["ServerID"] == 23


@pytest.mark.parametrize(
    ("name", "type_", "email"),
    [
        ("webhook_spam_complaint.json", EventType.COMPLAINED, "john@example.com"),
        ("webhook_delivery.json", EventType.DELIVERED, "john@example.com"),
        ("webhook_subscription_change.json", EventType.BOUNCED, "bounced-address@wildbit.com"),
        ("webhook_open.json", EventType.OTHER, "john@example.com"),
        ("webhook_click.json", EventType.OTHER, "john@example.com"),
    ],
)
def test_documented_records(name: str, type_: EventType, email: str) -> None:
    (event,) = PostmarkProvider.parse_events(call(fixture("postmark", name)))
    assert (event.provider, event.type, event.email) == ("postmark", type_, email)
    assert event.occurred_at.tzinfo is not None
    assert event.event_id.startswith(fixture("postmark", name)["RecordType"] + ":")


def test_delivery_links_to_its_delivery_and_keeps_its_id_across_retries() -> None:
    record = fixture("postmark", "webhook_delivery.json")
    (first,) = PostmarkProvider.parse_events(call(record))
    (again,) = PostmarkProvider.parse_events(call(dict(reversed(record.items()))))
    (other,) = PostmarkProvider.parse_events(call({**record, "Recipient": "jane@example.com"}))
    assert first.delivery_id == 77
    assert first.event_id == again.event_id != other.event_id


@pytest.mark.parametrize(
    ("bounce_type", "expected"),
    [
        ("HardBounce", EventType.BOUNCED),
        ("BadEmailAddress", EventType.BOUNCED),
        ("SoftBounce", EventType.SOFT_BOUNCED),
        ("Transient", EventType.SOFT_BOUNCED),
        ("SpamComplaint", EventType.COMPLAINED),
        ("ManuallyDeactivated", EventType.DROPPED),
        ("AutoResponder", EventType.OTHER),
    ],
)
def test_bounce_types(bounce_type: str, expected: EventType) -> None:
    record = {**fixture("postmark", "webhook_bounce.json"), "Type": bounce_type}
    (event,) = PostmarkProvider.parse_events(call(record))
    assert event.type is expected


@pytest.mark.parametrize(
    ("suppress", "reason", "expected"),
    [
        (True, "HardBounce", EventType.BOUNCED),
        (True, "SpamComplaint", EventType.COMPLAINED),
        (True, "ManualSuppression", EventType.UNSUBSCRIBED),
        (False, None, EventType.OTHER),  # a reactivation: nothing to act on
    ],
)
def test_subscription_changes(suppress: bool, reason: str | None, expected: EventType) -> None:
    record = {
        **fixture("postmark", "webhook_subscription_change.json"),
        "SuppressSending": suppress,
        "SuppressionReason": reason,
    }
    (event,) = PostmarkProvider.parse_events(call(record))
    assert event.type is expected


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"ID": 1}',
        json.dumps({"RecordType": "Bounce", "ID": 1, "Email": "a@example.org"}).encode(),
        json.dumps(
            {**fixture("postmark", "webhook_delivery.json"), "DeliveredAt": "yesterday"}
        ).encode(),
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        PostmarkProvider.parse_events(call(body))
    assert rejected.value.status == 400


def test_a_batch_over_50_mb_is_split_into_requests_under_it() -> None:
    """500 messages of ~150 KB (~75 MB of JSON): two requests, each under Postmark's 50 MB."""
    recorder = postmark_api()
    provider = make_provider(recorder)
    html = "<p>" + "Привет, мир & <b>x</b> " * 6_000 + "</p>"  # ~150 KB as UTF-8 JSON
    batch = [make_message(n, html=html) for n in range(500)]
    results = provider.send(batch)
    assert outcomes(results) == [Outcome.SENT] * 500
    sizes = [len(r.content) for r in recorder.requests]
    assert len(sizes) == 2 and sum(sizes) > PostmarkProvider.max_request_bytes
    assert all(size <= PostmarkProvider.max_request_bytes for size in sizes)
    # Every message once, in order, and each result from its own request's answer.
    sent = [m["To"] for i in range(2) for m in recorder.json(i)]
    assert sent == [f"Reader {n} <reader{n}@example.net>" for n in range(500)]
    first = len(recorder.json(0))
    assert results[first].provider_message_id == "id-0"


def test_after_a_refused_part_of_a_split_batch_the_rest_is_not_sent() -> None:
    recorder = postmark_api(httpx.Response(429, json={"ErrorCode": 429, "Message": "Rate limit"}))
    provider = make_provider(recorder)
    provider.max_request_bytes = 3_000  # type: ignore[misc]  # two messages a request
    results = provider.send([make_message(n) for n in range(5)])
    assert len(recorder.requests) == 1
    assert outcomes(results) == [Outcome.TEMPORARY] * 5
    assert all("not sent" in r.detail for r in results[len(recorder.json(0)) :])


def test_a_message_over_10_mb_fails_alone() -> None:
    recorder = postmark_api()
    provider = make_provider(recorder)
    big = make_message(2, text="x" * 10_000_001)
    results = provider.send([make_message(1), big, make_message(3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert "10,000,000" in results[1].detail
    assert len(recorder.json(0)) == 2
