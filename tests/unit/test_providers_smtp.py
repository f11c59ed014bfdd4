"""Tests for the SMTP provider against a real in-process SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import email.parser
import email.policy
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mail.emailurl import parse_email_url
from mail.providers import Outcome, SmtpProvider
from subscriptions.errors import ConfigurationError
from tests.providers import make_message, outcomes


@dataclass
class Received:
    """One message as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    tls: bool
    authenticated: bool

    def parsed(self) -> Any:
        """The message parsed back, as a mailbox would read it."""
        content = self.content.replace(b"\r\n", b"\n")  # as an mbox or Maildir would store it
        return email.parser.BytesParser(policy=email.policy.default).parsebytes(content)


class Handler:
    """An aiosmtpd handler that records messages and can refuse or drop on cue."""

    def __init__(
        self,
        *,
        rcpt_replies: dict[str, str] | None = None,
        mail_reply: str | None = None,
        data_reply: str | None = None,
        drop_on_mail: set[int] | None = None,
        drop_every_mail_after: int | None = None,
        drop_on_data: bool = False,
    ) -> None:
        self.rcpt_replies = rcpt_replies or {}
        self.mail_reply = mail_reply
        self.data_reply = data_reply
        self.drop_on_mail = drop_on_mail or set()
        self.drop_every_mail_after = drop_every_mail_after
        self.drop_on_data = drop_on_data
        self.peers: set[Any] = set()
        self.mails = 0
        self.received: list[Received] = []

    @property
    def connections(self) -> int:
        return len(self.peers)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # The peer (address, port) is one per TCP connection, and survives STARTTLS.
        self.peers.add(session.peer)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mails += 1
        after = self.drop_every_mail_after
        if self.mails in self.drop_on_mail or (after is not None and self.mails > after):
            assert server.transport is not None
            server.transport.close()
            return "421 dropped"
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.drop_on_data:
            assert server.transport is not None
            server.transport.close()
            return "250 never seen"
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.content,
                session.ssl is not None,
                bool(session.authenticated),
            )
        )
        return "250 Message accepted"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def smtp_server(handler: Handler, **options: Any) -> Iterator[int]:
    """Run aiosmtpd on 127.0.0.1 for the block; yields its port."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def test_delivers_message_with_content() -> None:
    handler = Handler()
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        (result,) = provider.send([make_message(7)])
    assert result.outcome is Outcome.SENT
    (got,) = handler.received
    assert got.mail_from == "news@example.org"
    assert got.rcpt_tos == ["reader7@example.net"]
    parsed = got.parsed()
    assert result.provider_message_id == parsed["Message-ID"]
    assert parsed["Subject"] == "Weekly digest"
    assert parsed["List-Unsubscribe"] == "<https://news.example.org/u/tok7>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Newsletter-Delivery-Id"] == "107"
    assert parsed.get_body(("plain",)).get_content() == "Hello reader\n"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hello reader</p>"


def test_reuses_one_connection_across_sends() -> None:
    handler = Handler()
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        assert outcomes(provider.send([make_message(1), make_message(2)])) == [Outcome.SENT] * 2
        assert outcomes(provider.send([make_message(3)])) == [Outcome.SENT]
    assert handler.connections == 1
    assert [r.rcpt_tos for r in handler.received] == [[f"reader{n}@example.net"] for n in (1, 2, 3)]


def test_reconnects_once_when_server_dropped_the_connection() -> None:
    handler = Handler(drop_on_mail={2})
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        assert outcomes(provider.send([make_message(1)])) == [Outcome.SENT]
        assert outcomes(provider.send([make_message(2)])) == [Outcome.SENT]
    assert handler.connections == 2
    assert len(handler.received) == 2


def test_gives_up_after_one_reconnect() -> None:
    handler = Handler(drop_every_mail_after=1)
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        provider.send([make_message(1)])
        (result,) = provider.send([make_message(2)])
    assert result.outcome is Outcome.TEMPORARY
    assert handler.connections == 2


def test_drop_after_data_is_unknown() -> None:
    handler = Handler(drop_on_data=True)
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        (result,) = provider.send([make_message()])
    assert result.outcome is Outcome.UNKNOWN
    assert result.provider_message_id is not None


def test_recipient_refusals_are_per_message() -> None:
    handler = Handler(
        rcpt_replies={
            "reader2@example.net": "550 5.1.1 no such user",
            "reader3@example.net": "451 try later",
        }
    )
    batch = [make_message(n) for n in (1, 2, 3, 4)]
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        results = provider.send(batch)
    assert outcomes(results) == [
        Outcome.SENT,
        Outcome.RECIPIENT_PERMANENT,
        Outcome.TEMPORARY,
        Outcome.SENT,
    ]
    assert "550 5.1.1 no such user" in results[1].detail
    assert "451 try later" in results[2].detail
    assert handler.connections == 1
    assert [r.rcpt_tos for r in handler.received] == [
        ["reader1@example.net"],
        ["reader4@example.net"],
    ]


@pytest.mark.parametrize(
    ("where", "reply", "expected"),
    [
        ("mail", "553 5.7.1 sender not allowed", Outcome.ACCOUNT_BLOCKED),  # pause, see #11
        ("mail", "451 4.3.0 try later", Outcome.TEMPORARY),
        ("data", "554 5.6.0 message refused", Outcome.REQUEST_WRONG),
        ("data", "452 4.3.1 out of storage", Outcome.TEMPORARY),
    ],
)
def test_sender_and_data_refusals(where: str, reply: str, expected: Outcome) -> None:
    handler = Handler(mail_reply=reply) if where == "mail" else Handler(data_reply=reply)
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        results = provider.send([make_message(1), make_message(2)])
    assert outcomes(results) == [expected, expected]
    assert reply in results[0].detail
    assert handler.connections == 1


def test_server_not_listening_is_temporary() -> None:
    provider = SmtpProvider("127.0.0.1", free_port())
    results = provider.send([make_message(1), make_message(2)])
    assert outcomes(results) == [Outcome.TEMPORARY, Outcome.TEMPORARY]
    assert "cannot connect" in results[0].detail


def test_silent_server_times_out_once_for_the_whole_batch() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        provider = SmtpProvider.from_url(parse_email_url(f"smtp://127.0.0.1:{port}?timeout=0.3"))
        started = time.monotonic()
        results = provider.send([make_message(n) for n in range(5)])
        elapsed = time.monotonic() - started
    assert outcomes(results) == [Outcome.TEMPORARY] * 5
    assert elapsed < 2


def test_bad_message_fails_alone() -> None:
    handler = Handler()
    batch = [make_message(1), make_message(2, subject="x\nBcc: v@example.com"), make_message(3)]
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        results = provider.send(batch)
    assert outcomes(results) == [Outcome.SENT, Outcome.REQUEST_WRONG, Outcome.SENT]
    assert len(handler.received) == 2


def test_internationalized_address_uses_smtputf8() -> None:
    handler = Handler()
    message = make_message(to="用户@例子.广告", subject="Grüße")
    with (
        smtp_server(handler, enable_SMTPUTF8=True) as port,
        SmtpProvider("127.0.0.1", port) as provider,
    ):
        (result,) = provider.send([message])
    assert result.outcome is Outcome.SENT
    (got,) = handler.received
    assert "SMTPUTF8" in got.mail_options
    assert got.rcpt_tos == ["用户@xn--fsqu00a.xn--4rr70v"]
    assert got.parsed()["Subject"] == "Grüße"


def test_internationalized_address_without_smtputf8_is_request_wrong() -> None:
    handler = Handler()
    with (
        smtp_server(handler, enable_SMTPUTF8=False) as port,
        SmtpProvider("127.0.0.1", port) as provider,
    ):
        results = provider.send([make_message(to="用户@例子.广告"), make_message(2)])
    assert outcomes(results) == [Outcome.REQUEST_WRONG, Outcome.SENT]
    assert "SMTPUTF8" in results[0].detail


def test_idn_domain_needs_no_smtputf8() -> None:
    handler = Handler()
    with smtp_server(handler) as port, SmtpProvider("127.0.0.1", port) as provider:
        (result,) = provider.send([make_message(to="zoe@bücher.example")])
    assert result.outcome is Outcome.SENT
    (got,) = handler.received
    assert "SMTPUTF8" not in got.mail_options
    assert got.rcpt_tos == ["zoe@xn--bcher-kva.example"]


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Accept only user / s3cret p@ss."""
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"user",
        b"s3cret p@ss",
    )
    # handled=False: aiosmtpd then answers "535" itself instead of staying silent.
    return AuthResult(success=ok, handled=False)


AUTH_OPTIONS: dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": False}


def test_login_with_credentials_from_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler = Handler()
    with smtp_server(handler, **AUTH_OPTIONS) as port:
        url = parse_email_url(f"smtp://user:s3cret%20p%40ss@127.0.0.1:{port}")
        with SmtpProvider.from_url(url) as provider:
            assert "s3cret" not in repr(provider)
            (result,) = provider.send([make_message()])
    assert result.outcome is Outcome.SENT
    assert [r.authenticated for r in handler.received] == [True]
    assert "s3cret" not in caplog.text


def test_auth_failure_is_account_blocked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handler = Handler()
    with smtp_server(handler, **AUTH_OPTIONS) as port:
        provider = SmtpProvider("127.0.0.1", port, username="user", password="wrong-s3cret")
        results = provider.send([make_message(1), make_message(2)])
    assert outcomes(results) == [Outcome.ACCOUNT_BLOCKED] * 2
    assert "535" in results[0].detail
    assert handler.received == []
    assert "wrong-s3cret" not in caplog.text + results[0].detail


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("needs the cryptography package or the openssl command to make a cert")
        subprocess.run(
            [
                *(
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ),
                *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
                *("-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(key_path), "-out", str(cert_path)),
            ],
            check=True,
            capture_output=True,
        )
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts the server's self-signed cert)."""
    cert, key = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_starttls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_contexts
    handler = Handler()
    with smtp_server(handler, tls_context=server_context, require_starttls=True) as port:
        provider = SmtpProvider("127.0.0.1", port, tls="starttls", ssl_context=client_context)
        with provider:
            assert outcomes(provider.send([make_message(1), make_message(2)])) == [Outcome.SENT] * 2
    assert [r.tls for r in handler.received] == [True, True]
    assert handler.connections == 1


def test_starttls_with_untrusted_certificate_is_temporary(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, _ = tls_contexts
    handler = Handler()
    with smtp_server(handler, tls_context=server_context, require_starttls=True) as port:
        (result,) = SmtpProvider("127.0.0.1", port, tls="starttls").send([make_message()])
    assert result.outcome is Outcome.TEMPORARY
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert handler.received == []


def test_plain_connection_to_server_requiring_starttls_pauses_sending(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, _ = tls_contexts
    handler = Handler()
    with smtp_server(handler, tls_context=server_context, require_starttls=True) as port:
        (result,) = SmtpProvider("127.0.0.1", port, tls="none").send([make_message()])
    # The URL's mistake (tls=none): sending pauses until it is fixed; no reader is failed.
    assert result.outcome is Outcome.ACCOUNT_BLOCKED
    assert "530" in result.detail


def test_implicit_tls(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls_contexts
    handler = Handler()
    with (
        smtp_server(handler, ssl_context=server_context) as port,
        SmtpProvider("127.0.0.1", port, tls="ssl", ssl_context=client_context) as provider,
    ):
        (result,) = provider.send([make_message()])
    assert result.outcome is Outcome.SENT
    assert len(handler.received) == 1


@pytest.mark.parametrize(
    ("url", "port", "tls"),
    [
        ("smtp://mail.example.org", 25, "none"),
        ("smtp://mail.example.org:465", 465, "ssl"),
        ("smtp://mail.example.org:587", 587, "starttls"),
        ("smtp://mail.example.org:2525", 2525, "none"),
        ("smtp://mail.example.org:2525?tls=starttls", 2525, "starttls"),
        ("smtp://mail.example.org?tls=ssl", 465, "ssl"),
        ("smtp://mail.example.org?tls=starttls", 587, "starttls"),
    ],
)
def test_port_and_tls_defaults(url: str, port: int, tls: str) -> None:
    provider = SmtpProvider.from_url(parse_email_url(url))
    assert (provider.port, provider.tls, provider.timeout) == (port, tls, 30.0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("smtp://mail.example.org?tls=yes", "tls='yes' is not one of starttls, ssl, none"),
        ("smtp://mail.example.org?timeout=soon", "timeout='soon' must be a number"),
        ("smtp://mail.example.org?timeout=0", "timeout='0' must be a number"),
        ("smtp://mail.example.org?tsl=ssl", "unknown option 'tsl'"),
    ],
)
def test_bad_url_options_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SmtpProvider.from_url(parse_email_url(url))
