"""The sending pipeline against local stand-ins for SendGrid, Mailgun and SES v2, failures injected.

Like tests/integration/test_delivery.py for Postmark and Resend: a real digest planned in the real
database, sent by the real Sender through the real provider module over HTTP to a stand-in
(tests/providerstandins.py) that speaks the provider's protocol and records what each reader would
receive. None of the three has an idempotency key, so an answer that never came is UNKNOWN and is
never sent again. All three send one request per reader here (each reader's body carries their own
links), so a fault scripted on a request hits that reader, and stops the rest of the batch when it
says "slow down", "account refused" or got no answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mail.links import list_headers, reader_links
from mail.providers import MailgunProvider, Provider, SendgridProvider, SesProvider
from mail.providers.sigv4 import Credentials
from subscriptions.models import Delivery, DeliveryStatus, Subscriber, utcnow
from subscriptions.notices import REQUEST_WRONG, SENDING_PAUSED, open_notices, resolve
from subscriptions.tokens import TokenSigner
from tests.factories import SECRET
from tests.integration.test_delivery import Rig
from tests.providerstandins import Fault, ProviderStandIns
from worker.digests import sender as sender_module

PROVIDERS = ["sendgrid", "mailgun", "ses"]


@pytest.fixture
def server() -> Iterator[ProviderStandIns]:
    with ProviderStandIns(token="test-token") as s:
        yield s


def make_provider(
    name: str, server: ProviderStandIns, *, timeout: float = 5.0, key: str = "test-token"
) -> Provider:
    """The real provider module, pointed at the stand-in."""
    base = f"http://127.0.0.1:{server.port}"
    provider: SendgridProvider | MailgunProvider | SesProvider
    if name == "sendgrid":
        provider = SendgridProvider(key, base_url=base)
    elif name == "mailgun":
        provider = MailgunProvider(key, server.mailgun_domain, base_url=base)
    else:
        credentials = server.ses_credentials
        if key != "test-token":
            credentials = Credentials(credentials.access_key_id, key)
        provider = SesProvider(credentials=credentials, region=server.ses_region, base_url=base)
    provider.client.timeout = httpx.Timeout(timeout)
    return provider


def rig_for(
    name: str,
    tmp_path: Path,
    database_url: str,
    server: ProviderStandIns,
    readers: int,
    **options: float | str,
) -> Rig:
    return Rig(tmp_path, database_url, server, make_provider(name, server, **options), readers)  # type: ignore[arg-type]


def waits(rig: Rig) -> list[float]:
    """Seconds from now until each pending delivery's next attempt."""
    with rig.sessions() as session:
        times = session.scalars(
            select(Delivery.next_attempt_at).where(
                Delivery.digest_id == rig.digest_id, Delivery.status == DeliveryStatus.PENDING
            )
        ).all()
    now = utcnow()
    return [(t - now).total_seconds() if t is not None else 0.0 for t in times]


def notices(rig: Rig) -> list[tuple[str, str]]:
    with rig.sessions() as session:
        return [(n.kind, n.message) for n in open_notices(session=session)]


def emails_with(rig: Rig, status: DeliveryStatus) -> set[str]:
    with rig.sessions() as session:
        return set(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.digest_id == rig.digest_id, Delivery.status == status)
            )
        )


def one_request_per_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages without a shared body (as transactional mail is sent): SendGrid and Mailgun then
    send each reader's complete email, whose links differ, in a request of its own, which is what
    the tests of one failing request among several need."""
    monkeypatch.setattr(sender_module, "shared_body", lambda body: None)


def each_once(rig: Rig, server: ProviderStandIns, emails: set[str] | None = None) -> bool:
    """Every reader (or those given) accepted exactly once by the stand-in."""
    return all(server.delivered_to(e) == 1 for e in (rig.emails if emails is None else emails))


# Every reader gets their own email ------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
def test_every_reader_gets_one_email_with_their_own_unsubscribe_headers(
    name: str, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    rig = rig_for(name, tmp_path, database_url, server, readers=60)
    rig.send_all()
    assert rig.statuses() == {"sent": 60}
    assert sorted(a.to for a in server.accepted) == sorted(rig.emails)
    with rig.sessions() as session:
        readers = session.execute(
            select(Subscriber.email, Subscriber.id, Subscriber.token_version)
        ).all()
        ids = dict(
            session.execute(
                select(Subscriber.email, Delivery.id).join(
                    Delivery, Delivery.subscriber_id == Subscriber.id
                )
            ).all()
        )
    for address, subscriber_id, version in readers:
        [got] = server.accepted_by(address)
        links = reader_links(rig.settings, TokenSigner(SECRET), subscriber_id=subscriber_id, version=version)  # fmt: skip
        expected = list_headers(rig.settings, links)
        assert got.subject == "Mexico: Mexico & the border"
        assert got.headers["List-Unsubscribe"] == expected["List-Unsubscribe"]
        assert got.headers["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert got.metadata["delivery_id"] == str(ids[address])
        if name in ("sendgrid", "mailgun"):
            # The shared body, expanded by the stand-in as the provider would, carries this
            # reader's own links and nobody else's.
            assert got.text is not None and got.html is not None
            assert links.unsubscribe in got.text and links.manage in got.text
            assert len(set(re.findall(r"/unsubscribe/[\w.-]+", got.text))) == 1
            assert "%recipient." not in got.text + got.html and "%nl" not in got.text + got.html
    if name in ("sendgrid", "mailgun"):
        # 60 readers of one body: one request per batch, not one per reader.
        assert len(server.requests) <= 2
    with rig.sessions() as session:
        message_ids = session.scalars(select(Delivery.provider_message_id)).all()
    assert all(message_ids)
    if name == "ses":
        assert [n for _, _, n in server.requests] == [1] * 60  # one SendEmail per reader
        assert len(set(message_ids)) == 60


# Slow down, server errors ---------------------------------------------------------------------


def rate_limited(name: str) -> tuple[Fault, float]:
    """The provider's own 429, and the wait it asks for (SES names none: the back-off applies)."""
    if name == "sendgrid":
        reset = str(int(time.time()) + 120)
        body = {"errors": [{"field": None, "message": "too many requests"}]}
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}  # fmt: skip
        return Fault(status=429, headers=headers, body=body), 118
    if name == "mailgun":
        message = "Domain mg.example.org is not allowed to send: account-requests-per-sec limit exceeded, try again after 120 seconds"  # fmt: skip
        return Fault(status=429, body={"message": message}), 119
    headers = {"x-amzn-ErrorType": "TooManyRequestsException:"}
    return Fault(
        status=429, headers=headers, body={"message": "Maximum sending rate exceeded."}
    ), 20


def server_error(name: str, status: int) -> Fault:
    if name == "sendgrid":
        return Fault(status=status, body={"errors": [{"field": None, "message": "internal error"}]})
    if name == "mailgun":
        return Fault(status=status, body={"message": "Internal Server Error"})
    error = "InternalFailure" if status == 500 else "ServiceUnavailable"
    return Fault(status=status, headers={"x-amzn-ErrorType": f"{error}:"}, body={"message": error})


@pytest.mark.parametrize("kind", ["429", "500", "503"])
@pytest.mark.parametrize("name", PROVIDERS)
def test_temporary_failures_are_retried_later_and_sent_once(
    name: str, kind: str, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    rig = rig_for(name, tmp_path, database_url, server, readers=12)
    if kind == "429":
        fault, least = rate_limited(name)
    else:
        fault, least = server_error(name, int(kind)), 20
    server.faults.append(fault)
    rig.sender.send_batch(rig.digest_id)
    # The first request was refused; the rest of the batch was not tried.
    assert rig.statuses() == {"pending": 12} and server.accepted == []
    assert len(waits(rig)) == 12 and all(w >= least for w in waits(rig)), waits(rig)
    rig.send_all()  # not due yet: nothing happens
    assert server.accepted == []
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"sent": 12}
    assert each_once(rig, server)


def test_a_later_rate_limit_keeps_what_was_sent_and_defers_the_rest(
    tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    """SES sends one request per reader: a 429 on the fourth keeps the first three sent."""
    rig = rig_for("ses", tmp_path, database_url, server, readers=8)
    fault, _ = rate_limited("ses")
    server.faults.extend([Fault(), Fault(), Fault(), fault])
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"sent": 3, "pending": 5}
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"sent": 8} and each_once(rig, server)


# No answer: unknown, never resent -------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault(delay=1.2), Fault(reset=True), Fault(drop_after_accepting=True)],
    ids=["timeout", "reset", "accepted-then-dropped"],
)
@pytest.mark.parametrize("name", PROVIDERS)
def test_no_answer_is_unknown_and_never_resent(
    name: str, fault: Fault, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    """The request was written; whether the provider acted on it cannot be known, and none of
    the three has an idempotency key, so that reader is never sent again. The readers whose
    requests were not tried yet are sent later."""
    rig = rig_for(name, tmp_path, database_url, server, readers=5, timeout=0.4)
    server.faults.append(fault)
    rig.sender.send_batch(rig.digest_id)
    # SendGrid and Mailgun carry the five readers of one body in one request; SES one each.
    shared = 5 if name in ("sendgrid", "mailgun") else 1
    others = {"pending": 5 - shared} if shared < 5 else {}
    assert rig.statuses() == {"unknown": shared, **others}
    unknown = emails_with(rig, DeliveryStatus.UNKNOWN)
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"unknown": shared, **({"sent": 5 - shared} if shared < 5 else {})}
    for address in unknown:
        assert server.delivered_to(address) == (1 if fault.drop_after_accepting else 0)
    assert each_once(rig, server, set(rig.emails) - unknown)


# Account refused: pause everything, tell the editors ------------------------------------------


BLOCKED: dict[str, list[Fault]] = {
    "sendgrid": [
        Fault(
            status=401,
            body={
                "errors": [
                    {
                        "field": None,
                        "message": "The provided authorization grant is invalid, expired, or revoked",
                    }
                ]
            },
        ),
        Fault(status=403, body={"errors": [{"field": None, "message": "access forbidden"}]}),
    ],
    "mailgun": [
        Fault(status=401, body={"message": "Invalid private key"}),
        Fault(status=403, body={"message": "Domain mg.example.org is disabled"}),
        Fault(status=404, body={"message": "Domain not found: mg.example.org"}),
    ],
    "ses": [
        Fault(
            status=400,
            headers={"x-amzn-ErrorType": "AccountSuspendedException:"},
            body={"message": "Account suspended."},
        ),
        Fault(
            status=400,
            headers={"x-amzn-ErrorType": "SendingPausedException:"},
            body={"message": "Sending is paused for this account."},
        ),
    ],
}


@pytest.mark.parametrize(
    ("name", "fault"),
    [(name, fault) for name, faults in BLOCKED.items() for fault in faults],
    ids=[
        f"{name}-{(f.headers.get('x-amzn-ErrorType') or str(f.status)).rstrip(':')}"
        for name, faults in BLOCKED.items()
        for f in faults
    ],
)
def test_account_blocked_pauses_all_sending_and_tells_editors(
    name: str, fault: Fault, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    rig = rig_for(name, tmp_path, database_url, server, readers=10)
    server.faults.append(fault)
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"pending": 10}
    [(kind, message)] = notices(rig)
    assert kind == SENDING_PAUSED and name in message
    assert rig.sender.send_batch(rig.digest_id, now=utcnow() + timedelta(hours=2)).paused
    assert server.accepted == []
    with rig.sessions() as session:
        attempts = session.scalars(select(Delivery.attempts)).all()
    assert set(attempts) == {0}  # waiting, untried: no retry budget spent
    with rig.sessions.begin() as session:
        resolve(session=session, kind=SENDING_PAUSED)
    rig.send_all()
    assert rig.statuses() == {"sent": 10} and each_once(rig, server)


@pytest.mark.parametrize("name", PROVIDERS)
def test_wrong_credentials_are_refused_by_the_stand_in_and_pause_sending(
    name: str, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    """The stand-ins check credentials as the providers do (SES: the SigV4 signature)."""
    rig = rig_for(name, tmp_path, database_url, server, readers=3, key="wrong-key")
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"pending": 3} and server.accepted == []
    [(kind, message)] = notices(rig)
    assert kind == SENDING_PAUSED and name in message
    if name == "ses":
        assert "SignatureDoesNotMatch" in message


def test_ses_account_suspended_mid_batch_keeps_what_was_sent(
    tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    rig = rig_for("ses", tmp_path, database_url, server, readers=6)
    server.faults.extend([Fault(), Fault(), BLOCKED["ses"][0]])
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"sent": 2, "pending": 4}
    assert [k for k, _ in notices(rig)] == [SENDING_PAUSED]
    with rig.sessions.begin() as session:
        resolve(session=session, kind=SENDING_PAUSED)
    rig.send_all()
    assert rig.statuses() == {"sent": 6} and each_once(rig, server)


# A message or a request refused ---------------------------------------------------------------


def refused(name: str) -> Fault:
    """The provider's answer to a request it will never accept."""
    if name == "sendgrid":
        message = "The from address does not match a verified Sender Identity."
        return Fault(status=400, body={"errors": [{"field": "from", "message": message}]})
    if name == "mailgun":
        return Fault(status=400, body={"message": "from parameter is not a valid address"})
    # About this message (an unverified identity would pause sending instead: issue #11).
    return Fault(
        status=400,
        headers={"x-amzn-ErrorType": "MessageRejected:"},
        body={"message": "Message rejected: the message contains a virus."},
    )


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_refused_message_inside_a_batch_fails_alone(
    name: str,
    tmp_path: Path,
    database_url: str,
    server: ProviderStandIns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One request per reader: a refusal of the second (SES MessageRejected, a 400 elsewhere)
    fails that delivery only, the others of the batch go, and editors get a request_wrong notice."""
    one_request_per_reader(monkeypatch)
    rig = rig_for(name, tmp_path, database_url, server, readers=5)
    server.faults.extend([Fault(), refused(name)])
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"sent": 4, "failed": 1}
    [failed] = emails_with(rig, DeliveryStatus.FAILED)
    assert server.delivered_to(failed) == 0
    assert each_once(rig, server, set(rig.emails) - {failed})
    assert [k for k, _ in notices(rig)] == [REQUEST_WRONG]
    rig.send_all(later=timedelta(hours=2))  # a refused request is not retried
    assert rig.statuses() == {"sent": 4, "failed": 1} and server.delivered_to(failed) == 0


BAD_REQUEST: dict[str, Callable[[], Fault]] = {
    "sendgrid": lambda: refused("sendgrid"),
    "mailgun": lambda: refused("mailgun"),
    "ses": lambda: Fault(
        status=400,
        headers={"x-amzn-ErrorType": "BadRequestException:"},
        body={"message": "Configuration set <news> does not exist."},
    ),
}


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_request_the_provider_calls_malformed_fails_loudly(
    name: str, tmp_path: Path, database_url: str, server: ProviderStandIns
) -> None:
    """A mistake in every request (an unverified sender, a missing configuration set)."""
    rig = rig_for(name, tmp_path, database_url, server, readers=4)
    server.faults.extend(BAD_REQUEST[name]() for _ in range(4))
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"failed": 4} and server.accepted == []
    [(kind, message)] = notices(rig)
    assert kind == REQUEST_WRONG and name in message
    with rig.sessions() as session:
        errors = session.scalars(select(Delivery.last_error)).all()
    assert all("400" in (e or "") for e in errors)


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_reset_on_a_reused_connection_mid_batch(
    name: str,
    tmp_path: Path,
    database_url: str,
    server: ProviderStandIns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two requests answered on the keep-alive connection, the third cut: two sent, one unknown,
    the rest sent later, and nobody twice."""
    one_request_per_reader(monkeypatch)
    rig = rig_for(name, tmp_path, database_url, server, readers=6, timeout=0.4)
    server.faults.extend([Fault(), Fault(), Fault(reset=True)])
    rig.sender.send_batch(rig.digest_id)
    assert rig.statuses() == {"sent": 2, "unknown": 1, "pending": 3}
    [unknown] = emails_with(rig, DeliveryStatus.UNKNOWN)
    rig.send_all(later=timedelta(hours=2))
    assert rig.statuses() == {"sent": 5, "unknown": 1}
    assert server.delivered_to(unknown) == 0
    assert each_once(rig, server, set(rig.emails) - {unknown})
