"""SendGrid and Mailgun send one request per up to 1,000 readers of a shared body, with each reader's
own values as SendGrid `substitutions` or Mailgun `recipient-variables`.

The messages are made by the real Sender hand-off (`Sender._message`: shared body + slot values)
and sent by the real providers through httpx.MockTransport. Each recorded request is then expanded
the way the provider documents it (SendGrid: each substitution tag replaced by its value in the
subject and content of that personalization's copy; Mailgun: each `%recipient.NAME%` replaced by the
recipient's variable, in the body, subject and `h:`/`v:` fields), and every reader's resulting email
is compared with a full per-reader Jinja2 render, byte for byte after normalising line ends. No
reader's token may appear in another reader's email.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import DigestRenderer, Group, ReaderParts, post_view, reasons_line
from mail.links import list_headers, reader_links
from mail.providers import EmailMessage, Outcome, Provider
from mail.providers.mailgun import MailgunProvider
from mail.providers.sendgrid import MAX_SUBSTITUTION_BYTES, SendgridProvider
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from tests.factories import SECRET, make_settings
from tests.providers import Recorder
from tests.unit.test_provider_mailgun import form
from worker.digests.jobs import DigestInfo, Job
from worker.digests.sender import Sender

DOMAIN = "mg.example.org"
TOKEN = re.compile(r"/(?:manage|unsubscribe)/([\w.-]+)|subject=unsubscribe-([\w.-]+)")

#: Two variants: readers see one or the other, awkward characters in both (the inliner's escaping
#: rules, non-ASCII, and post text that looks like either provider's placeholders).
VARIANTS = (
    (
        Group(
            'Border & "Security" <Ops>',
            (
                post_view(
                    'Caf\xe9 "tax" & <fees>\xa0now %recipient.email% -name- %nl00.MANAGE.t%',
                    "https://example.org/a?b=1&c=%22x%22",
                    '<p>Fees &amp; <a href="https://x.example/?a=1&amp;b=2">rates</a>'
                    "\xa0\u2014 \u201cquoted\u201d</p>",
                ),
            ),
        ),
        Group("Mexico", (post_view("Привет, мир", "https://example.org/e", "<p>Vote.</p>"),)),
    ),
    (Group("Refugees", (post_view("Plain", "https://example.org/plain", ""),)),),
)
SUBSCRIPTIONS = (
    (("Border Security", "daily"),),
    (('Border & "Security" <Ops>', "daily"), ("Mexico", "daily")),
    (("Caf\xe9\xa0Topic", "daily"), ("A's", "daily"), ("Z>A", "daily")),
)


class Unused(Provider):
    """The Sender's provider slot; `_message` never sends."""

    name = "unused"
    batch_limit = 1000

    @classmethod
    def from_url(cls, url: Any) -> Unused:  # pragma: no cover
        return cls()

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[Any]:  # pragma: no cover
        raise AssertionError("not used")


def readers(tmp_path: Path, count: int, **overrides: Any) -> tuple[Any, list[tuple[Job, Any]]]:
    """`count` readers' messages from the Sender's hand-off, with each one's full render."""
    settings = make_settings(
        tmp_path, list_unsubscribe_mailto="unsubscribe@example.org", **overrides
    )
    renderer = DigestRenderer(template_environment(settings, "email"))
    signer = TokenSigner(SECRET)
    sender = Sender(sessionmaker[Session](), Unused(), renderer, settings, signer)
    info = DigestInfo(id=7, kind="daily", subject="", intro_markdown="")
    out = []
    for n in range(1, count + 1):
        job = Job(
            delivery_id=1000 + n,
            subscriber_id=n,
            email=f"Reader{n}@example.net",
            token_version=1 + n % 2,
            mailable=True,
            kind="daily",
            groups=VARIANTS[n % 2],
            subscriptions=SUBSCRIPTIONS[n % 3],
        )
        message = sender._message(info, job, "batch-1")
        links = reader_links(settings, signer, subscriber_id=n, version=job.token_version)
        parts = ReaderParts(links.manage, links.unsubscribe, reasons_line(job.subscriptions))
        subject, full = renderer.full_render("daily", job.groups, parts)
        expected = {
            "subject": subject,
            "text": full.text,
            "html": full.html,
            "headers": list_headers(settings, links),
            "tokens": {t for t in TOKEN.findall(full.text + full.html) for t in t if t},
        }
        out.append((message, expected))
    return settings, out


def lf(value: str) -> str:
    return value.replace("\r\n", "\n")


def check_email(
    to: str, subject: str, text: str, html: str, headers: dict[str, str], expected: dict[str, Any]
) -> None:
    """One reader's email as the provider would deliver it equals their full render."""
    assert subject == expected["subject"], to
    assert lf(text) == lf(expected["text"]), to
    assert lf(html) == lf(expected["html"]), to
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert headers[name] == expected["headers"][name], (to, name)
    seen = {t for t in TOKEN.findall(text + html + headers["List-Unsubscribe"]) for t in t if t}
    assert seen == expected["tokens"], f"{to} got another reader's token"


def expand_sendgrid(body: dict[str, Any]) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """Each personalization's copy, substitutions applied as SendGrid documents them."""
    content = {c["type"]: c["value"] for c in body["content"]}
    out = []
    for p in body["personalizations"]:
        text, html, subject = content["text/plain"], content["text/html"], body["subject"]
        for tag, value in (p.get("substitutions") or {}).items():
            text, html, subject = (s.replace(tag, value) for s in (text, html, subject))
        headers = {**(body.get("headers") or {}), **(p.get("headers") or {})}
        out.append((p["to"][0]["email"], subject, text, html, headers))
    return out


def expand_mailgun(fields: dict[str, list[str]]) -> list[tuple[str, str, str, str, dict[str, str]]]:
    """Each recipient's copy, `%recipient.NAME%` filled from recipient-variables as Mailgun does."""
    variables = json.loads(fields["recipient-variables"][0])
    out = []
    for to in fields["to"]:
        address = re.sub(r"^.*<(.+)>$", r"\1", to)
        own = variables[address]

        def fill(value: str, own: dict[str, str] = own) -> str:
            return re.sub(r"%recipient\.([^%]+)%", lambda m: own.get(m[1], m[0]), value)

        headers = {k[2:]: fill(v[0]) for k, v in fields.items() if k.startswith("h:")}
        metadata = {k[2:]: fill(v[0]) for k, v in fields.items() if k.startswith("v:")}
        if "delivery_id" in metadata:
            headers["delivery_id"] = metadata["delivery_id"]
        text, html = fill(fields["text"][0]), fill(fields["html"][0])
        out.append((address, fill(fields["subject"][0]), text, html, headers))
    return out


@pytest.mark.parametrize("provider_name", ["sendgrid", "mailgun"])
def test_each_reader_of_a_shared_body_request_receives_exactly_their_own_render(
    tmp_path: Path, provider_name: str
) -> None:
    _, batch = readers(tmp_path, 1000)
    messages = [m for m, _ in batch]
    expected = {m.to.lower(): e for m, e in batch}
    delivery = {m.to.lower(): m.metadata["delivery_id"] for m in messages}
    provider: SendgridProvider | MailgunProvider
    if provider_name == "sendgrid":
        recorder = Recorder(httpx.Response(202, headers={"X-Message-Id": "sg-1"}))
        provider = SendgridProvider("KEY", transport=httpx.MockTransport(recorder))
    else:
        recorder = Recorder(httpx.Response(200, json={"id": f"<1@{DOMAIN}>", "message": "Queued"}))
        provider = MailgunProvider("KEY", DOMAIN, transport=httpx.MockTransport(recorder))
    # Two variants (distinct bodies): two requests for 1,000 readers, and the limiter is told so.
    assert provider.requests_for(messages) == 2
    results = provider.send(messages)
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(recorder.requests) == 2
    copies = []
    for request in recorder.requests:
        if provider_name == "sendgrid":
            body = json.loads(request.content)
            assert len(body["personalizations"]) <= 1000
            for p in body["personalizations"]:
                size = sum(len(k.encode()) + len(v.encode()) for k, v in p["substitutions"].items())
                assert size <= MAX_SUBSTITUTION_BYTES
                assert p["custom_args"]["delivery_id"] == delivery[p["to"][0]["email"].lower()]
            # The shared body travels once per request, not once per reader.
            assert request.content.count(b"https://example.org/") <= 4
            copies += expand_sendgrid(body)
        else:
            fields = form(request)
            assert len(fields["to"]) <= 1000
            for copy in expand_mailgun(fields):
                assert copy[4].pop("delivery_id") == delivery[copy[0].lower()]
                copies.append(copy)
    assert sorted(c[0].lower() for c in copies) == sorted(expected)
    for to, subject, text, html, headers in copies:
        check_email(to, subject, text, html, headers, expected[to.lower()])


def test_sendgrid_reader_whose_values_exceed_the_substitution_limit_gets_their_full_email(
    tmp_path: Path,
) -> None:
    """Over 10,000 bytes of substitutions a personalization: that reader's complete email alone."""
    _, batch = readers(tmp_path, 3, base_url="https://news.example.org/" + "p" * 3000)
    recorder = Recorder(httpx.Response(202, headers={"X-Message-Id": "sg-1"}))
    provider = SendgridProvider("KEY", transport=httpx.MockTransport(recorder))
    messages = [m for m, _ in batch]
    assert provider.requests_for(messages) == 3
    assert {r.outcome for r in provider.send(messages)} == {Outcome.SENT}
    for request, (message, expected) in zip(recorder.requests, batch, strict=True):
        body = json.loads(request.content)
        assert "substitutions" not in body["personalizations"][0]
        (copy,) = expand_sendgrid(body)
        check_email(*copy, expected)
        assert copy[2] == message.text


def test_messages_without_a_shared_body_still_go_whole(tmp_path: Path) -> None:
    """Transactional mail (no shared body) is sent as it always was: its complete text."""
    _, batch = readers(tmp_path, 2)
    plain = [
        EmailMessage(
            to=m.to, sender=m.sender, subject=m.subject, text=m.text, html=m.html, headers=m.headers
        )
        for m, _ in batch
    ]
    recorder = Recorder(httpx.Response(200, json={"id": f"<1@{DOMAIN}>", "message": "Queued"}))
    provider = MailgunProvider("KEY", DOMAIN, transport=httpx.MockTransport(recorder))
    assert provider.requests_for(plain) == 2
    provider.send(plain)
    for request, (message, expected) in zip(recorder.requests, batch, strict=True):
        (copy,) = expand_mailgun(form(request))
        copy[4].pop("delivery_id", None)
        assert form(request)["text"] == [message.text]
        check_email(*copy, expected)
