"""The SMTP provider: smtplib over one reused connection, with per-recipient outcomes."""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Self

from mail.emailurl import EmailURL
from mail.providers.base import (
    EmailMessage,
    Outcome,
    Provider,
    SendResult,
    build_mime,
    check_url_options,
)
from subscriptions.errors import ConfigurationError, InvalidInput

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

logger = logging.getLogger(__name__)

TlsMode = Literal["starttls", "ssl", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("starttls", "ssl", "none")
_DEFAULT_PORTS: dict[TlsMode, int] = {"ssl": 465, "starttls": 587, "none": 25}
_TLS_BY_PORT: dict[int, TlsMode] = {465: "ssl", 587: "starttls"}
DEFAULT_TIMEOUT = 30.0


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP that notes when DATA began: a drop after that leaves the outcome unknown."""

    data_started = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.data_started = True
        return super().data(msg)


class _SMTPS(_SMTP, smtplib.SMTP_SSL):
    """The same over implicit TLS (port 465)."""


class _ConnectionFailed(Exception):
    """Opening or authenticating the connection failed; every message left gets `result`."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.detail)
        self.result = result


class SmtpProvider(Provider):
    """Sends through an SMTP server: `smtp://user:pass@host:587?tls=starttls&timeout=30`."""

    name = "smtp"
    batch_limit = 100

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsMode | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls is None:
            tls = _TLS_BY_PORT.get(port or 0, "none")
        self.host = host
        self.port = port or _DEFAULT_PORTS[tls]
        self.username = username
        self._password = password
        self.tls: TlsMode = tls
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._conn: _SMTP | None = None

    def __repr__(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        return f"SmtpProvider('smtp://{user}{self.host}:{self.port}?tls={self.tls}')"

    @classmethod
    def from_url(cls, url: EmailURL) -> Self:
        """Read host, port, credentials and the `tls` and `timeout` options from the URL."""
        check_url_options(url, "tls", "timeout")
        if not url.host:
            raise ConfigurationError("smtp email URL needs a host, e.g. smtp://mail.example.org")
        tls_name = url.params.get("tls")
        tls = next((mode for mode in TLS_MODES if mode == tls_name), None)
        if tls_name is not None and tls is None:
            raise ConfigurationError(
                f"smtp email URL: tls={tls_name!r} is not one of {', '.join(TLS_MODES)}"
            )
        timeout = DEFAULT_TIMEOUT
        if "timeout" in url.params:
            try:
                timeout = float(url.params["timeout"])
            except ValueError:
                timeout = 0
            if not timeout > 0:
                raise ConfigurationError(
                    f"smtp email URL: timeout={url.params['timeout']!r} must be a number of"
                    " seconds above 0"
                )
        return cls(
            url.host,
            url.port,
            username=url.username,
            password=url.password,
            tls=tls,
            timeout=timeout,
        )

    def close(self) -> None:
        """Say QUIT and drop the connection, if one is open."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def _send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for message in messages:
            try:
                results.append(self._send_one(message))
            except _ConnectionFailed as failure:
                # Without a connection the rest would fail the same way, one timeout each.
                results.extend([failure.result] * (len(messages) - len(results)))
                break
            if results[-1].outcome is Outcome.ACCOUNT_BLOCKED:
                # The relay refuses us: the rest would be refused alike; they wait, untried.
                results.extend([results[-1]] * (len(messages) - len(results)))
                break
        return results

    def _send_one(self, message: EmailMessage) -> SendResult:
        try:
            mime = build_mime(message)
        except (InvalidInput, ValueError) as exc:
            return SendResult(Outcome.REQUEST_WRONG, detail=str(exc))
        message_id = str(mime["Message-ID"])
        reused = self._conn is not None and self._conn.sock is not None
        conn = self._connection()
        while True:
            conn.data_started = False
            try:
                conn.send_message(mime)
            except smtplib.SMTPServerDisconnected as exc:
                conn.close()
                self._conn = None
                if conn.data_started:
                    detail = f"connection lost after DATA, the server may have accepted it: {exc}"
                    return SendResult(Outcome.UNKNOWN, message_id, detail)
                if reused:
                    # An idle connection the server has since dropped: open a new one, once.
                    logger.debug("smtp %s:%s dropped the connection; reconnecting", *self._addr)
                    reused = False
                    conn = self._connection()
                    continue
                return SendResult(Outcome.TEMPORARY, detail=f"connection lost: {exc}")
            except smtplib.SMTPException as exc:  # an OSError too, so caught before it
                if conn.sock is None:  # a 421 reply closes the connection
                    self._conn = None
                return _refusal(exc)
            except OSError as exc:
                conn.close()
                self._conn = None
                outcome = Outcome.UNKNOWN if conn.data_started else Outcome.TEMPORARY
                return SendResult(outcome, detail=f"connection error: {exc}")
            return SendResult(Outcome.SENT, message_id)

    @property
    def _addr(self) -> tuple[str, int]:
        return self.host, self.port

    def _connection(self) -> _SMTP:
        """The open connection, or a new one; raises _ConnectionFailed."""
        if self._conn is not None and self._conn.sock is not None:
            return self._conn
        self._conn = None
        context = self._ssl_context or ssl.create_default_context()
        conn: _SMTP | None = None
        try:
            logger.debug("smtp: connecting to %s:%s (tls=%s)", *self._addr, self.tls)
            # Host and port go to the constructor: it connects, and TLS checks the certificate
            # against the host it was given there.
            if self.tls == "ssl":
                conn = _SMTPS(self.host, self.port, timeout=self.timeout, context=context)
            else:
                conn = _SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.tls == "starttls":
                code, reply = conn.starttls(context=context)
                if code != 220:  # smtplib returns a refused STARTTLS instead of raising
                    raise smtplib.SMTPResponseException(code, reply)
                conn.ehlo()
            if self.username:
                conn.login(self.username, self._password or "")
        except (smtplib.SMTPException, OSError) as exc:
            if conn is not None:
                conn.close()
            raise _ConnectionFailed(_connect_failure(exc)) from exc
        self._conn = conn
        return conn


def _connect_failure(exc: BaseException) -> SendResult:
    """The outcome for every message when the connection could not be set up."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        detail = f"authentication refused: {_reply(exc)}"
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=detail)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        # The server lacks STARTTLS or AUTH: the URL asks for something this server cannot do.
        return SendResult(Outcome.REQUEST_WRONG, detail=f"server cannot do it: {exc}")
    if isinstance(exc, smtplib.SMTPConnectError):
        return SendResult(Outcome.TEMPORARY, detail=f"cannot connect: {_reply(exc)}")
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500:
        return SendResult(Outcome.REQUEST_WRONG, detail=f"server refused: {_reply(exc)}")
    return SendResult(Outcome.TEMPORARY, detail=f"cannot connect: {exc}")


def _refusal(exc: smtplib.SMTPException) -> SendResult:
    """The outcome of a reply that refused one message on a working connection."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (0, b""))
        text = reply.decode(errors="replace")
        detail = f"recipient refused: {code} {text}"
        if _relay_policy(code, text):
            # "554 5.7.1 Relay access denied": the relay refuses us, not this reader.
            return SendResult(Outcome.ACCOUNT_BLOCKED, detail=f"{detail} ({_POLICY_FIX})")
        if code >= 500:
            return SendResult(Outcome.RECIPIENT_PERMANENT, detail=detail)
        return SendResult(Outcome.TEMPORARY, detail=detail)
    if isinstance(exc, smtplib.SMTPSenderRefused) and exc.smtp_code >= 500:
        # MAIL FROM refused: the operator's sender address or the relay's policy.
        return SendResult(
            Outcome.ACCOUNT_BLOCKED, detail=f"sender refused: {_reply(exc)} ({_POLICY_FIX})"
        )
    if isinstance(exc, smtplib.SMTPResponseException) and _relay_policy(
        exc.smtp_code, _reply(exc).partition(" ")[2]
    ):
        return SendResult(Outcome.ACCOUNT_BLOCKED, detail=f"refused: {_reply(exc)} ({_POLICY_FIX})")
    if isinstance(exc, smtplib.SMTPResponseException):
        # SMTPSenderRefused (MAIL FROM) and SMTPDataError (DATA) land here.
        outcome = Outcome.REQUEST_WRONG if exc.smtp_code >= 500 else Outcome.TEMPORARY
        return SendResult(outcome, detail=f"refused: {_reply(exc)}")
    # SMTPNotSupportedError: the address needs SMTPUTF8 and this server does not offer it.
    return SendResult(Outcome.REQUEST_WRONG, detail=str(exc))


_POLICY_FIX = "check the relay's credentials and that it lets NEWSLETTER_FROM send through it"


def _relay_policy(code: int, text: str) -> bool:
    """A refusal of the relay's configuration, not of one address: authentication required or
    failed (530, 535) or an enhanced status 5.7.x (RFC 3463: security or policy status)."""
    return code in (530, 535) or (code >= 500 and text.lstrip().startswith("5.7."))


def _reply(exc: smtplib.SMTPResponseException) -> str:
    """`550 5.1.1 no such user` from an exception's code and bytes."""
    message = exc.smtp_error
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return f"{exc.smtp_code} {text}"
