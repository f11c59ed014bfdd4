"""The operator's mistakes pause sending (ACCOUNT_BLOCKED) and name the fix; a refusal about one
address is still the reader's. One test per provider error the issue (#11) lists, with the
documented payloads: Postmark ErrorCode 300 about the From, 400 and 401; SES MessageRejected in
the sandbox and MailFromDomainNotVerified; Mailgun's unknown or sandbox domain; SMTP relay
refusals (5.7.x at RCPT or MAIL FROM) and authentication failures.
"""

from __future__ import annotations

import httpx
import pytest

from mail.providers import Outcome, SmtpProvider
from tests.providers import make_message
from tests.unit.test_provider_mailgun import mailgun_api
from tests.unit.test_provider_mailgun import make_provider as mailgun_provider
from tests.unit.test_provider_postmark import make_provider as postmark_provider
from tests.unit.test_provider_postmark import postmark_api
from tests.unit.test_provider_ses import error_response, ses, ses_api
from tests.unit.test_providers_smtp import Handler, smtp_server

BLOCKED = Outcome.ACCOUNT_BLOCKED

FROM_NOT_A_SIGNATURE = (
    "The 'From' address you supplied (news@example.org) is not a Sender Signature on your"
    " account. Please add and confirm this address in order to be able to use it in the 'From'"
    " field of your messages."
)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (300, FROM_NOT_A_SIGNATURE),
        (400, "Sender signature not found."),
        (401, "Sender signature not confirmed."),
    ],
)
def test_postmark_sender_identity_errors_pause_per_message_and_per_request(
    code: int, message: str
) -> None:
    answer = [{"ErrorCode": code, "Message": message}, {"ErrorCode": code, "Message": message}]
    results = postmark_provider(postmark_api(httpx.Response(200, json=answer))).send(
        [make_message(1), make_message(2)]
    )
    assert [r.outcome for r in results] == [BLOCKED, BLOCKED]
    assert "Sender Signature" in results[0].detail  # the fix is named
    refused = httpx.Response(422, json={"ErrorCode": code, "Message": message})
    results = postmark_provider(postmark_api(refused)).send([make_message(1), make_message(2)])
    assert [r.outcome for r in results] == [BLOCKED, BLOCKED]


def test_postmark_300_about_the_to_address_is_still_the_readers() -> None:
    answer = [{"ErrorCode": 300, "Message": "Invalid 'To' address: 'x@'."}]
    (result,) = postmark_provider(postmark_api(httpx.Response(200, json=answer))).send(
        [make_message(1)]
    )
    assert result.outcome is Outcome.RECIPIENT_PERMANENT


@pytest.mark.parametrize("name", ["MessageRejected", "MailFromDomainNotVerifiedException"])
def test_ses_unverified_identities_and_the_sandbox_pause(name: str) -> None:
    fake = ses_api(error_response(name))
    results = ses(fake).send([make_message(1), make_message(2)])
    assert [r.outcome for r in results] == [BLOCKED, BLOCKED]
    assert "verify the sender identity" in results[0].detail
    assert len(fake.requests) == 1  # the batch stops at the first: the rest wait untried


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "Domain not found: mg.example.org"),
        (400, "Sandbox subdomains are for test purposes only. Please add your own domain."),
    ],
)
def test_mailgun_domain_problems_pause(status: int, message: str) -> None:
    recorder = mailgun_api(httpx.Response(status, json={"message": message}))
    results = mailgun_provider(recorder).send([make_message(1), make_message(2)])
    assert {r.outcome for r in results} == {BLOCKED}
    assert "check the domain" in results[0].detail


@pytest.mark.parametrize(
    ("where", "reply"),
    [
        ("rcpt", "554 5.7.1 <reader1@example.net>: Relay access denied"),
        ("rcpt", "530 5.7.0 Authentication required"),
        ("mail", "550 5.7.1 Sender address rejected: not owned by user"),
    ],
)
def test_smtp_relay_policy_refusals_pause_and_touch_no_reader(where: str, reply: str) -> None:
    if where == "rcpt":
        handler = Handler(rcpt_replies={f"reader{n}@example.net": reply for n in (1, 2, 3)})
    else:
        handler = Handler(mail_reply=reply)
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        results = provider.send([make_message(n) for n in (1, 2, 3)])
    assert [r.outcome for r in results] == [BLOCKED] * 3
    assert reply in results[0].detail and "check the relay" in results[0].detail
    assert handler.received == []
    assert handler.mails == 1  # the first refusal stops the batch: the rest wait, untried


def test_smtp_refusal_about_one_address_is_that_readers() -> None:
    handler = Handler(rcpt_replies={"reader2@example.net": "550 5.1.1 no such user"})
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        results = provider.send([make_message(n) for n in (1, 2, 3)])
    assert [r.outcome for r in results] == [
        Outcome.SENT,
        Outcome.RECIPIENT_PERMANENT,
        Outcome.SENT,
    ]
