"""Local stand-ins for SendGrid, Mailgun and Amazon SES v2, speaking their documented protocols.

`ProviderStandIns` extends `tests.providerserver.ProviderServer` (Postmark and Resend stay served as
before) with three more endpoints on the same 127.0.0.1 port:

- SendGrid v3: `POST /v3/mail/send`, `Authorization: Bearer KEY`, JSON with `personalizations`;
  each copy's subject and content get that personalization's `substitutions` applied (tag replaced
  by value); 202 with an empty body and `X-Message-Id`; errors as `{"errors": [{"message", "field"}]}`; each
  address at most once per request (400 otherwise).
- Mailgun: `POST /v3/{domain}/messages`, HTTP Basic `api:KEY`, multipart/form-data with `to`
  repeated and a `recipient-variables` JSON; each recipient gets its own copy with `%recipient.x%`
  substituted from its variables (subject, text, html, `h:` and `v:` fields); 200 `{"id", "message"}`; errors as `{"message"}`; an unknown
  domain is 404.
- SES v2: `POST /v2/email/outbound-emails`, SigV4-signed (checked with `mail.providers.sigv4`
  against the stand-in's credentials), JSON with `Content.Raw.Data` (base64 MIME, parsed to record
  what the reader receives); 200 `{"MessageId"}`; errors with `x-amzn-ErrorType` and `{"message"}`.

Faults are scripted per request exactly as for the other stand-ins (`Fault`, popped one per request):
`status`/`headers`/`body` answer an error instead, `drop_after_accepting`, `reset` and `delay` cut the
connection. `Fault()` with no field set lets a request through, so `faults = [Fault(), Fault(), bad]`
refuses the third request only. Every accepted message lands in `accepted` as an `Accepted` (to,
subject, headers as the reader's copy carries them, metadata, arrival time); `requests` records
(time, path, messages) for each accepted request.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import json
import re
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler
from typing import Any

from mail.providers import sigv4
from tests.providerserver import Accepted, Fault, ProviderServer

__all__ = ["Accepted", "Fault", "ProviderStandIns"]

_RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%]+)%")
_MAILGUN_PATH = re.compile(r"^/v3/([^/]+)/messages$")
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<signature>[0-9a-f]{64})$"
)


class ProviderStandIns(ProviderServer):
    """Postmark, Resend, SendGrid, Mailgun and SES v2 on one local port; use as a context manager."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        mailgun_domain: str = "mg.example.org",
        ses_credentials: sigv4.Credentials | None = None,
        ses_region: str = "us-east-1",
    ) -> None:
        self.mailgun_domain = mailgun_domain
        self.ses_credentials = ses_credentials or sigv4.Credentials(
            "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        )
        self.ses_region = ses_region
        super().__init__(token=token)
        # A short poll so that leaving the context takes milliseconds, not half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler()
        server = self

        class Handler(base):  # type: ignore[misc]
            """The base handler, with three more providers routed by path."""

            def setup(self) -> None:
                # Headers and body go out in two writes: without TCP_NODELAY the body waits for
                # the client's delayed ACK (40 ms a request), which hides real pacing.
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                if self.path in ("/email/batch", "/emails/batch"):
                    super().do_POST()
                    return
                with server._lock:
                    upcoming = server.faults[0] if server.faults else None
                if upcoming is not None and (upcoming.reset or upcoming.delay):
                    server._next_fault()
                    if upcoming.delay:
                        time.sleep(upcoming.delay)
                    self._drop()
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mailgun = _MAILGUN_PATH.match(self.path)
                if self.path == "/v3/mail/send":
                    self._sendgrid(raw)
                elif mailgun is not None:
                    self._mailgun(mailgun.group(1), raw)
                elif self.path == "/v2/email/outbound-emails":
                    self._ses(raw)
                else:
                    self._answer(404, {"message": "not found"})

            def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                """An answer with any body (SendGrid's 202 has none)."""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fault_answer(self, fault: Fault | None, default: Any) -> bool:
                """Answer a scripted HTTP error; True if one was answered."""
                if fault is None or fault.status is None:
                    return False
                self._answer(fault.status, fault.body or default, fault.headers)
                return True

            def _accept(
                self,
                fault: Fault | None,
                messages: list[tuple[str, str, dict[str, str], dict[str, str]]],
            ) -> bool:
                """Record the messages; False if the connection is then dropped unanswered."""
                self._record(messages)
                if fault is not None and fault.drop_after_accepting:
                    self._drop()
                    return False
                return True

            # SendGrid ---------------------------------------------------------------------

            def _sendgrid(self, raw: bytes) -> None:
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._answer(401, {"errors": [{"field": None, "message": "The provided authorization grant is invalid, expired, or revoked"}]})  # fmt: skip
                    return
                fault = server._next_fault()
                if self._fault_answer(fault, {"errors": [{"field": None, "message": "error"}]}):
                    return
                body = json.loads(raw)
                personalizations = body.get("personalizations") or []
                addresses = [p["to"][0]["email"].lower() for p in personalizations]
                if not personalizations or len(personalizations) > 1000:
                    self._answer(400, {"errors": [{"field": "personalizations", "message": "The personalizations field is required and must have at least one personalization."}]})  # fmt: skip
                    return
                if len(set(addresses)) != len(addresses):
                    self._answer(400, {"errors": [{"field": "personalizations.0.to", "message": "Each email address in the personalization block should be unique between to, cc, and bcc."}]})  # fmt: skip
                    return
                if not body.get("from") or not body.get("content"):
                    self._answer(400, {"errors": [{"field": "from", "message": "The from object must be provided for every email send."}]})  # fmt: skip
                    return
                shared = dict(body.get("headers") or {})
                content = {c["type"]: c["value"] for c in body["content"]}
                messages = []
                for p in personalizations:
                    # Substitutions: each tag replaced by its value in this copy's subject and
                    # content (SendGrid's substitution tags, in the order given).
                    subject = p.get("subject") or body["subject"]
                    text, html = content.get("text/plain"), content.get("text/html")
                    for tag, value in (p.get("substitutions") or {}).items():
                        subject = subject.replace(tag, value)
                        text = text.replace(tag, value) if text is not None else None
                        html = html.replace(tag, value) if html is not None else None
                    messages.append(
                        (
                            p["to"][0]["email"],
                            subject,
                            {**shared, **(p.get("headers") or {})},
                            {k: str(v) for k, v in (p.get("custom_args") or {}).items()},
                            text,
                            html,
                        )
                    )
                if self._accept(fault, messages):
                    self._reply(202, b"", {"X-Message-Id": uuid.uuid4().hex[:22]})

            # Mailgun ----------------------------------------------------------------------

            def _mailgun(self, domain: str, raw: bytes) -> None:
                expected = base64.b64encode(f"api:{server.token}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self._reply(401, b"Forbidden", {"Content-Type": "text/plain"})
                    return
                if domain != server.mailgun_domain:
                    self._answer(404, {"message": f"Domain not found: {domain}"})
                    return
                fault = server._next_fault()
                if self._fault_answer(fault, {"message": "error"}):
                    return
                fields = _multipart(self.headers.get("Content-Type", ""), raw)
                recipients = [a for _, a in getaddresses(fields.get("to", []))]
                missing = [f for f in ("from", "subject") if f not in fields]
                if not recipients or missing or not ({"text", "html"} & set(fields)):
                    self._answer(400, {"message": f"'{(missing or ['to'])[0]}' parameter is missing"})  # fmt: skip
                    return
                if len(recipients) > 1000:
                    self._answer(400, {"message": "Too many recipients"})
                    return
                try:
                    variables = json.loads((fields.get("recipient-variables") or ["{}"])[0])
                except ValueError:
                    self._answer(400, {"message": "recipient-variables parameter is not a valid JSON"})  # fmt: skip
                    return
                # Each field cut once at its `%recipient.NAME%` placeholders, then filled per
                # recipient (an unknown NAME stays as written).
                templates = {
                    name: _RECIPIENT_VARIABLE.split(
                        values[-1] if name[:2] in ("h:", "v:") else values[0]
                    )
                    for name, values in fields.items()
                    if name[:2] in ("h:", "v:") or name in ("text", "html", "subject")
                }
                messages = []
                for address in recipients:
                    own = variables.get(address, {})

                    def fill(name: str, own: dict[str, Any] = own) -> str:
                        pieces = templates[name]
                        out = [pieces[0]]
                        for i in range(1, len(pieces), 2):
                            key = pieces[i]
                            out.append(str(own[key]) if key in own else f"%recipient.{key}%")
                            out.append(pieces[i + 1])
                        return "".join(out)

                    headers = {k[2:]: fill(k) for k in templates if k.startswith("h:")}
                    metadata = {k[2:]: fill(k) for k in templates if k.startswith("v:")}
                    text = fill("text") if "text" in templates else None
                    html = fill("html") if "html" in templates else None
                    messages.append((address, fill("subject"), headers, metadata, text, html))
                if self._accept(fault, messages):
                    self._answer(
                        200,
                        {
                            "id": f"<{uuid.uuid4().hex}@{domain}>",
                            "message": "Queued. Thank you.",
                        },
                    )

            # SES v2 -----------------------------------------------------------------------

            def _ses_error(self, status: int, error_type: str, message: str) -> None:
                self._answer(status, {"message": message}, {"x-amzn-ErrorType": f"{error_type}:"})

            def _ses(self, raw: bytes) -> None:
                problem = self._sigv4_problem(raw)
                if problem is not None:
                    self._ses_error(403, *problem)
                    return
                fault = server._next_fault()
                if self._fault_answer(fault, {"message": "error"}):
                    return
                try:
                    body = json.loads(raw)
                    data = base64.b64decode(body["Content"]["Raw"]["Data"], validate=True)
                    to = body["Destination"]["ToAddresses"][0]
                except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
                    self._ses_error(400, "BadRequestException", f"malformed request: {exc}")
                    return
                if any(len(line) > 1000 for line in data.split(b"\r\n")):
                    self._ses_error(400, "MessageRejected", "Line too long")
                    return
                mime = email.message_from_bytes(data, policy=email.policy.default)
                headers = {name: str(value) for name, value in mime.items()}
                tags = {t["Name"]: t["Value"] for t in body.get("EmailTags", [])}
                if self._accept(fault, [(to, str(mime["Subject"]), headers, tags)]):
                    self._answer(200, {"MessageId": f"0100{uuid.uuid4().hex}-000000"})

            def _sigv4_problem(self, raw: bytes) -> tuple[str, str] | None:
                """(error type, message) if the request is not signed with the stand-in's key."""
                match = _AUTHORIZATION.match(self.headers.get("Authorization", ""))
                if match is None:
                    return "MissingAuthenticationTokenException", "Missing Authentication Token"
                credentials = server.ses_credentials
                if match["key"] != credentials.access_key_id:
                    return "UnrecognizedClientException", "The security token is invalid."
                try:
                    when = datetime.strptime(self.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
                except (KeyError, ValueError):
                    return "IncompleteSignatureException", "X-Amz-Date is missing or malformed"
                when = when.replace(tzinfo=UTC)
                if abs(time.time() - when.timestamp()) > 300:
                    return "InvalidSignatureException", "Signature expired"
                names = match["signed"].split(";")
                signed = [
                    (n, self.headers.get(n, ""))
                    for n in names
                    if n not in ("x-amz-date", "x-amz-security-token")
                ]
                expected = sigv4.sign(
                    "POST",
                    f"http://{self.headers.get('Host')}{self.path}",
                    signed,
                    raw,
                    credentials=credentials,
                    region=match["region"],
                    service=match["service"],
                    now=when,
                )
                if (
                    match["region"] != server.ses_region
                    or match["service"] != "ses"
                    or expected.signature != match["signature"]
                ):
                    return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."  # fmt: skip
                return None

        return Handler

    def accepted_by(self, address: str) -> list[Accepted]:
        """The messages accepted for one address, in arrival order."""
        return [a for a in self.accepted if a.to == address]


def _multipart(content_type: str, raw: bytes) -> dict[str, list[str]]:
    """The fields of a multipart/form-data (or urlencoded) body, each name with all its values."""
    fields: dict[str, list[str]] = {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        from urllib.parse import parse_qsl

        for name, value in parse_qsl(raw.decode(), keep_blank_values=True):
            fields.setdefault(name, []).append(value)
        return fields
    # Split on the boundary (RFC 7578): the email package's parser takes seconds for the thousand
    # `to` fields of a batch, and the benchmarks run this stand-in at 100,000 readers.
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        return fields
    for part in raw.split(b"--" + boundary[1].encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name is not None:
            value = body[:-2] if body.endswith(b"\r\n") else body
            fields.setdefault(name[1].decode(), []).append(value.decode("utf-8"))
    return fields
