"""Tests for the Mailgun provider: batch sending with recipient-variables, outcomes, webhooks."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mail.emailurl import EmailURL, parse_email_url
from mail.providers.base import Outcome
from mail.providers.mailgun import MailgunProvider
from mail.providers.webhooks import EventType, WebhookConfig, WebhookRejected, WebhookRequest
from subscriptions.errors import ConfigurationError
from tests.providers import Answer, Recorder, fixture, make_message, outcomes, own_body

API_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
DOMAIN = "mg.example.org"


def form(request: httpx.Request) -> dict[str, list[str]]:
    """The multipart/form-data fields of a request, parsed back with the standard library."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + request.content
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    fields: dict[str, list[str]] = {}
    for part in parsed.iter_parts():
        assert part.get_filename() is None  # plain fields, no attachments
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields.setdefault(str(name), []).append(payload.decode())
    return fields


def queued(n: int = 1) -> httpx.Response:
    """Mailgun's documented success answer, with an id per request."""
    body = fixture("mailgun", "messages_response.json")
    return httpx.Response(200, json={**body, "id": f"<request{n}@{DOMAIN}>"})


def mailgun_api(*answers: Answer) -> Recorder:
    """Mailgun's API: the scripted answers, then every request queued."""
    return Recorder(*answers, default=lambda _, n: queued(n))


def make_provider(recorder: Recorder, **options: Any) -> MailgunProvider:
    return MailgunProvider(API_KEY, DOMAIN, transport=httpx.MockTransport(recorder), **options)


def test_from_url_reads_key_host_and_domain() -> None:
    url = EmailURL(
        scheme="mailgun", username=API_KEY, host="api.eu.mailgun.net", path="/mg.example.org"
    )
    provider = MailgunProvider.from_url(url)
    assert (provider.base_url, provider.domain) == ("https://api.eu.mailgun.net", DOMAIN)
    assert (provider.name, provider.batch_limit, provider.supports_idempotency) == (
        "mailgun",
        1000,
        False,
    )
    assert API_KEY not in repr(provider)


def test_url_credentials_are_decoded_and_api_user_accepted() -> None:
    recorder = mailgun_api()
    url = parse_email_url("mailgun+http://api:k%2Fy%40z@127.0.0.1:9001/mg.example.org?tag=digest")
    provider = MailgunProvider.from_url(url)
    provider.client = httpx.Client(
        base_url=provider.base_url,
        auth=provider.client.auth,
        transport=httpx.MockTransport(recorder),
    )
    provider.send([make_message()])
    (request,) = recorder.requests
    assert str(request.url) == "http://127.0.0.1:9001/v3/mg.example.org/messages"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"api:k/y@z").decode()
    assert form(recorder.requests[0])["o:tag"] == ["digest"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (EmailURL(scheme="mailgun", host="api.mailgun.net", path="/d.org"), "needs the API key"),
        (EmailURL(scheme="mailgun", username="k", host="api.mailgun.net"), "sending domain"),
        (EmailURL(scheme="mailgun", username="k", host="h", path="/a/b"), "sending domain"),
        (
            EmailURL(scheme="mailgun", username="k", host="h", path="/d", params={"x": "1"}),
            "unknown option 'x'",
        ),
    ],
)
def test_bad_urls_are_refused(url: EmailURL, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MailgunProvider.from_url(url)


# --- sending -------------------------------------------------------------------------------------


def test_identical_content_is_one_batch_with_recipient_variables() -> None:
    recorder = mailgun_api()
    results = make_provider(recorder).send([make_message(n) for n in (1, 2, 3)])
    expected_id = f"request1@{DOMAIN}"
    assert [(r.outcome, r.provider_message_id) for r in results] == [
        (Outcome.SENT, expected_id)
    ] * 3
    (request,) = recorder.requests
    assert (request.method, str(request.url)) == (
        "POST",
        f"https://api.mailgun.net/v3/{DOMAIN}/messages",
    )
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    )
    fields = form(recorder.requests[0])
    assert fields["from"] == ["Topic News <news@example.org>"]
    assert fields["to"] == [f"Reader {n} <reader{n}@example.net>" for n in (1, 2, 3)]
    assert (fields["subject"], fields["text"], fields["html"]) == (
        ["Weekly digest"],
        ["Hello reader\n"],
        ["<p>Hello reader</p>"],
    )
    assert fields["h:List-Unsubscribe"] == ["%recipient.h:List-Unsubscribe%"]
    assert fields["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]  # shared: as is
    assert fields["v:delivery_id"] == ["%recipient.v:delivery_id%"]
    assert json.loads(fields["recipient-variables"][0]) == {
        f"reader{n}@example.net": {
            "h:List-Unsubscribe": f"<https://news.example.org/u/tok{n}>",
            "v:delivery_id": str(100 + n),
        }
        for n in (1, 2, 3)
    }


def test_a_single_reader_still_gets_recipient_variables() -> None:
    recorder = mailgun_api()
    make_provider(recorder).send([make_message(1, html=None)])
    fields = form(recorder.requests[0])
    # Without recipient-variables every reader of a request would see the others in To.
    assert json.loads(fields["recipient-variables"][0]) == {"reader1@example.net": {}}
    assert fields["h:List-Unsubscribe"] == ["<https://news.example.org/u/tok1>"]
    assert fields["v:delivery_id"] == ["101"]
    assert "html" not in fields and "o:tag" not in fields


def test_different_bodies_and_header_sets_go_in_separate_requests() -> None:
    recorder = mailgun_api()
    provider = make_provider(recorder)
    no_list_id = make_message(4, headers={"List-Unsubscribe": "<https://news.example.org/u/tok4>"})
    batch = [make_message(1, **own_body(1)), make_message(2), make_message(3), no_list_id]
    results = provider.send(batch)
    assert [r.provider_message_id for r in results] == [
        f"request{n}@{DOMAIN}" for n in (1, 2, 2, 3)
    ]
    assert [len(form(recorder.requests[i])["to"]) for i in range(3)] == [1, 2, 1]
    assert form(recorder.requests[0])["text"] == [own_body(1)["text"]]
    assert provider.requests_for(batch) == 3  # what the rate limiter is charged: the requests made


def test_an_address_repeated_with_the_same_content_goes_in_another_request() -> None:
    recorder = mailgun_api()
    twice = make_message(1, to="READER1@example.net", metadata={"delivery_id": "9"})
    make_provider(recorder).send([make_message(1), make_message(2), twice])
    assert [len(form(recorder.requests[i])["to"]) for i in range(2)] == [2, 1]
    assert form(recorder.requests[1])["v:delivery_id"] == ["9"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(400, json=fixture("mailgun", "error_400.json")), Outcome.REQUEST_WRONG),
        (
            httpx.Response(400, json=fixture("mailgun", "error_400_no_body.json")),
            Outcome.REQUEST_WRONG,
        ),
        (httpx.Response(413, text="Request Entity Too Large"), Outcome.REQUEST_WRONG),
        (httpx.Response(401, text="Forbidden"), Outcome.ACCOUNT_BLOCKED),
        (httpx.Response(403, json={"message": "Domain not allowed"}), Outcome.ACCOUNT_BLOCKED),
        (httpx.Response(404, json=fixture("mailgun", "error_404.json")), Outcome.ACCOUNT_BLOCKED),
        (httpx.Response(500, json=fixture("mailgun", "error_500.json")), Outcome.TEMPORARY),
        (httpx.Response(502, text="Bad Gateway"), Outcome.TEMPORARY),
    ],
)
def test_refusals(answer: httpx.Response, expected: Outcome) -> None:
    results = make_provider(mailgun_api(answer)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert f"Mailgun HTTP {answer.status_code}" in results[0].detail
    assert API_KEY not in results[0].detail


def test_429_waits_as_the_message_says_or_as_retry_after_says() -> None:
    body = fixture("mailgun", "error_429.json")
    (said,) = make_provider(mailgun_api(httpx.Response(429, json=body))).send([make_message()])
    assert (said.outcome, said.retry_after) == (Outcome.TEMPORARY, 120.0)
    assert "try again after 120 seconds" in said.detail
    header = httpx.Response(429, json=body, headers={"Retry-After": "7"})
    (told,) = make_provider(mailgun_api(header)).send([make_message()])
    assert (told.outcome, told.retry_after) == (Outcome.TEMPORARY, 7.0)


def test_a_provider_wide_answer_stops_the_rest_of_the_batch() -> None:
    recorder = mailgun_api(queued(1), httpx.Response(401, text="Forbidden"))
    batch = [make_message(n, **own_body(n)) for n in (1, 2, 3)]
    results = make_provider(recorder).send(batch)
    assert outcomes(results) == [Outcome.SENT, Outcome.ACCOUNT_BLOCKED, Outcome.ACCOUNT_BLOCKED]
    assert len(recorder.requests) == 2
    assert results[2].detail.startswith("not sent")


def test_no_answer_is_unknown_and_the_rest_is_not_sent() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    recorder = mailgun_api(dropped)
    batch = [make_message(n, **own_body(n)) for n in (1, 2)]
    results = make_provider(recorder).send(batch)
    assert outcomes(results) == [Outcome.UNKNOWN, Outcome.TEMPORARY]
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ReadTimeout, Outcome.UNKNOWN),
        (httpx.ReadError, Outcome.UNKNOWN),
        (httpx.ConnectError, Outcome.TEMPORARY),
        (httpx.ConnectTimeout, Outcome.TEMPORARY),
    ],
)
def test_transport_errors(error: type[httpx.TransportError], expected: Outcome) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    results = make_provider(mailgun_api(fail)).send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]


def test_batch_limit_is_1000_recipients() -> None:
    recorder = mailgun_api()
    provider = make_provider(recorder)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        provider.send([make_message(n) for n in range(1001)])
    assert recorder.requests == []
    provider.send([make_message(n) for n in range(1000)])
    assert len(recorder.requests) == 1
    fields = form(recorder.requests[0])
    assert len(fields["to"]) == 1000
    assert len(json.loads(fields["recipient-variables"][0])) == 1000


def test_a_malformed_message_fails_alone() -> None:
    recorder = mailgun_api()
    bad = make_message(2, to="two@example.net, three@example.net")
    results = make_provider(recorder).send([make_message(1), bad, make_message(3)])
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert form(recorder.requests[0])["to"] == [
        "Reader 1 <reader1@example.net>",
        "Reader 3 <reader3@example.net>",
    ]


# --- webhooks ------------------------------------------------------------------------------------

SIGNING_KEY = "whsec-signing-key-0123456789"
NOW = 1_529_006_900


def signed(
    payload: dict[str, Any],
    *,
    key: str = SIGNING_KEY,
    timestamp: int = NOW,
    token: str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0",
) -> WebhookRequest:
    """The payload with a signature object made as Mailgun makes it."""
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {
        **payload,
        "signature": {"timestamp": str(timestamp), "token": token, "signature": digest},
    }
    return WebhookRequest(
        headers={"content-type": "application/json"}, body=json.dumps(body).encode()
    )


def config(now: float = NOW, secret: str | None = SIGNING_KEY) -> WebhookConfig:
    return WebhookConfig(secret=secret, now=now)


def test_a_signed_call_verifies() -> None:
    MailgunProvider.verify_webhook(signed(fixture("mailgun", "webhook_delivered.json")), config())


def test_forged_stale_and_unsigned_calls_are_rejected() -> None:
    payload = fixture("mailgun", "webhook_delivered.json")
    good = signed(payload)
    altered = json.loads(good.body)
    altered["signature"]["token"] = "another-token"
    unsigned = {k: v for k, v in payload.items() if k != "signature"}
    cases = [
        (signed(payload, key="not-the-key"), config(), 401),
        (WebhookRequest(headers={}, body=json.dumps(altered).encode()), config(), 401),
        (WebhookRequest(headers={}, body=json.dumps(payload).encode()), config(), 401),  # docs' own
        (WebhookRequest(headers={}, body=json.dumps(unsigned).encode()), config(), 401),
        (good, config(now=NOW + 301), 403),
        (good, config(now=NOW - 301), 403),
        (good, config(secret=None), 403),
        (WebhookRequest(headers={}, body=b"token=x&timestamp=1"), config(), 400),
    ]
    for request, conf, status in cases:
        with pytest.raises(WebhookRejected) as rejected:
            MailgunProvider.verify_webhook(request, conf)
        assert rejected.value.status == status


def test_permanent_failure() -> None:
    (event,) = MailgunProvider.parse_events(
        signed(fixture("mailgun", "webhook_failed_permanent.json"))
    )
    assert (event.provider, event.type, event.email) == (
        "mailgun",
        EventType.BOUNCED,
        "alice@example.com",
    )
    assert event.event_id == "CPgfbmQMTCKtHW6uIWtuVe@1529006854.329574"
    assert event.delivery_id == 901
    assert event.provider_message_id == "20130503182626.18666.16540@sandbox.mgsend.net"
    assert event.occurred_at == datetime.fromtimestamp(1529006854.329574, UTC)
    assert "permanent bounce" in event.detail and "previously bounced" in event.detail
    assert "signature" not in event.raw and event.raw["severity"] == "permanent"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("webhook_delivered.json", EventType.DELIVERED),
        ("webhook_failed_temporary.json", EventType.DEFERRED),
        ("webhook_complained.json", EventType.COMPLAINED),
        ("webhook_unsubscribed.json", EventType.UNSUBSCRIBED),
        ("webhook_opened.json", EventType.OTHER),
    ],
)
def test_documented_events(name: str, expected: EventType) -> None:
    (event,) = MailgunProvider.parse_events(signed(fixture("mailgun", name)))
    assert event.type is expected
    assert event.email == "alice@example.com" and event.delivery_id == 901


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("bounce", EventType.BOUNCED),
        ("suppress-bounce", EventType.BOUNCED),
        ("suppress-unsubscribe", EventType.UNSUBSCRIBED),
        ("suppress-complaint", EventType.COMPLAINED),
        ("old", EventType.SOFT_BOUNCED),
    ],
)
def test_permanent_failure_reasons(reason: str, expected: EventType) -> None:
    payload = fixture("mailgun", "webhook_failed_permanent.json")
    payload["event-data"]["reason"] = reason
    (event,) = MailgunProvider.parse_events(signed(payload))
    assert event.type is expected


def test_event_id_is_the_same_in_a_retry_signed_anew() -> None:
    payload = fixture("mailgun", "webhook_failed_permanent.json")
    (first,) = MailgunProvider.parse_events(signed(payload))
    (retry,) = MailgunProvider.parse_events(signed(payload, timestamp=NOW + 600, token="fresh"))
    payload["event-data"]["timestamp"] += 86400  # the same id a day later is another event
    (later,) = MailgunProvider.parse_events(signed(payload))
    assert first.event_id == retry.event_id != later.event_id


@pytest.mark.parametrize(
    "event_data",
    [None, [], {"event": "delivered"}, {"event": "delivered", "id": "x", "timestamp": "soon"}],
)
def test_malformed_events_are_400(event_data: Any) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        MailgunProvider.parse_events(signed({"event-data": event_data}))
    assert rejected.value.status == 400
