"""Benchmark: one digest to N readers through each provider at its default rate (`bench/delivery.py --provider`).

    .venv/bin/python bench/delivery.py --provider postmark,sendgrid,mailgun --readers 100000 \
        --redis-url redis://127.0.0.1:6390/5
    .venv/bin/python bench/delivery.py --provider resend,ses --readers 2000 --redis-url …

Per provider: the real provider module sends to the local stand-ins of tests/providerstandins.py
(Postmark, Resend, SendGrid, Mailgun and SigV4-checked SES on one port; SendGrid's and Mailgun's
expand each request's substitutions / recipient-variables into every reader's copy, as the providers
do). The messages are made by the Sender's own hand-off (`Sender._message`: the shared body rendered
once, each reader's links filled in), in batches of the Sender's size (the provider's batch limit,
or less when the rate limit is lower), and every batch first waits on the real global rate limiter
in Redis (worker.ratelimit, GCRA) at the provider's default rates (DEFAULT_RATES), charged
`provider.requests_for(batch)` requests, exactly as the Sender does. No database, no queue: what is
measured is the provider's documented pace as this project paces it, and the requests it takes.

Prints one row per provider: readers, requests, messages per request, seconds, emails/s, and checks
that the stand-in accepted each reader exactly once and, for SendGrid and Mailgun, that requests ≤
readers / 1,000 + distinct bodies. The machine's load average is printed before and after, and this
process's CPU time per email (the sender's side alone: on a loaded machine the wall-clock rate is set
by the cores left, not by the provider's rate limit).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import redis
from procs import REPO

if str(REPO) not in sys.path:  # the stand-ins live in tests/, beside the installed packages
    sys.path.insert(0, str(REPO))

from sqlalchemy.orm import sessionmaker

from mail.bodies import DigestRenderer, Group, post_view
from mail.providers import Outcome, Provider
from mail.providers.mailgun import MailgunProvider
from mail.providers.postmark import PostmarkProvider
from mail.providers.resend import ResendProvider
from mail.providers.sendgrid import SendgridProvider
from mail.providers.ses import SesProvider
from subscriptions.settings import load_settings
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from tests.providerstandins import ProviderStandIns
from worker.digests.jobs import DigestInfo, Job
from worker.digests.sender import Sender
from worker.ratelimit import DEFAULT_RATES, GlobalRateLimiter, Rate

NAMES = ("postmark", "sendgrid", "mailgun", "resend", "ses")
#: Two variants, so that every request count includes more than one distinct body.
VARIANTS = (
    (Group("Mexico", (post_view("Mexico & the border", "https://example.org/m", "<p>New.</p>"),)),),
    (Group("Refugees", (post_view("Camps", "https://example.org/r", "<p>Report.</p>"),)),),
)


@dataclass
class Row:
    provider: str
    readers: int
    requests: int
    seconds: float
    accepted_once: bool
    #: CPU seconds of this process (render, hand-off, payloads, HTTP): the stand-in runs apart.
    sender_cpu: float = 0.0
    distinct_bodies: int = len(VARIANTS)

    @property
    def per_second(self) -> float:
        return self.readers / self.seconds if self.seconds else 0.0

    @property
    def requests_ok(self) -> bool:
        if self.provider not in ("sendgrid", "mailgun"):
            return True
        return self.requests <= -(-self.readers // 1000) + self.distinct_bodies


def make_provider(name: str, server: Any) -> Provider:
    base = f"http://127.0.0.1:{server.port}"
    provider: Provider
    if name == "postmark":
        provider = PostmarkProvider(server.token, base_url=base)
    elif name == "sendgrid":
        provider = SendgridProvider(server.token, base_url=base)
    elif name == "mailgun":
        provider = MailgunProvider(server.token, server.mailgun_domain, base_url=base)
    elif name == "resend":
        provider = ResendProvider(server.token, base_url=base)
    else:
        provider = SesProvider(
            credentials=server.ses_credentials, region=server.ses_region, base_url=base
        )
    if hasattr(provider, "client"):
        provider.client.timeout = httpx.Timeout(60.0)
    return provider


def run_provider(name: str, readers: int, redis_url: str, folder: Path) -> Row:
    """Send `readers` emails through `name` at its default rates; the row of the table."""
    settings = load_settings(
        _env_file=None,
        database_url=f"sqlite:///{folder / 'unused.db'}",
        email_url=f"outbox://{folder / 'outbox'}",
        secret_key="bench-secret-key-0123456789abcdef",
        environment="test",
        broker_url=None,
        from_address="Institute Updates <news@example.org>",
        base_url="https://news.example.org",
    )
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"nl:rate:{name}:*"):
        client.delete(key)
    messages_rate, requests_rate = DEFAULT_RATES[name]
    limiter = GlobalRateLimiter(
        client, name, messages=Rate(messages_rate), requests=Rate(requests_rate)
    )
    parent, child = multiprocessing.Pipe()
    # The stand-in runs in a process of its own: its work (parsing, expanding each reader's copy)
    # is the provider's, and must not share this process's interpreter lock with the sender.
    process = multiprocessing.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
    process.start()
    try:
        server = parent.recv()
        provider = make_provider(name, server)
        renderer = DigestRenderer(template_environment(settings, "email"))
        sender = Sender(
            sessionmaker(), provider, renderer, settings, TokenSigner(settings.secret_key), limiter
        )
        info = DigestInfo(id=1, kind="immediate", subject="", intro_markdown="")
        size = sender.batch_size
        started = time.perf_counter()
        cpu_started = time.process_time()
        not_sent = 0
        for low in range(1, readers + 1, size):
            jobs = [
                Job(
                    delivery_id=n,
                    subscriber_id=n,
                    email=f"reader{n}@example.org",
                    token_version=1,
                    mailable=True,
                    kind="immediate",
                    groups=VARIANTS[0 if n <= readers // 2 else 1],
                    subscriptions=(("Mexico", "immediate"),),
                )
                for n in range(low, min(low + size, readers + 1))
            ]
            messages = [sender._message(info, job, "bench") for job in jobs]
            limiter.acquire(len(messages), requests=provider.requests_for(messages), max_wait=3600)
            results = provider.send(messages)
            not_sent += sum(r.outcome is not Outcome.SENT for r in results)
        seconds = time.perf_counter() - started
        sender_cpu = time.process_time() - cpu_started
        provider.close()
        parent.send("report")
        requests, counts = parent.recv()
    finally:
        process.terminate()
        process.join(10)
    once = not_sent == 0 and len(counts) == readers and all(c == 1 for c in counts.values())
    return Row(name, readers, requests, seconds, once, sender_cpu)


@dataclass
class _Address:
    """What the parent needs of the stand-in to build a provider: its port and credentials."""

    port: int
    token: str
    mailgun_domain: str
    ses_credentials: object
    ses_region: str


def _serve(pipe: Connection) -> None:
    """The stand-in's process: serve until asked for the report (requests, accepted per address)."""
    with ProviderStandIns(token="bench-token") as server:
        server.keep_bodies = False
        address = _Address(
            server.port,
            server.token,
            server.mailgun_domain,
            server.ses_credentials,
            server.ses_region,
        )
        pipe.send(address)
        pipe.recv()
        counts: dict[str, int] = {}
        for accepted in server.accepted:
            counts[accepted.to.lower()] = counts.get(accepted.to.lower(), 0) + 1
        pipe.send((len(server.requests), counts))


def print_table(rows: list[Row]) -> None:
    print(
        f"{'provider':<10} {'readers':>9} {'requests':>9} {'msgs/request':>13} {'seconds':>9}"
        f" {'emails/s':>9} {'sender CPU µs/email':>20}  checks"
    )
    for r in rows:
        checks = "ok" if r.accepted_once and r.requests_ok else "FAILED"
        if not r.accepted_once:
            checks += " (not every reader accepted exactly once)"
        if not r.requests_ok:
            checks += f" (requests > readers/1000 + {r.distinct_bodies} bodies)"
        print(
            f"{r.provider:<10} {r.readers:>9,} {r.requests:>9,} {r.readers / max(r.requests, 1):>13,.0f}"
            f" {r.seconds:>9.1f} {r.per_second:>9,.0f} {r.sender_cpu / r.readers * 1e6:>20,.0f}  {checks}"
        )


def main(names: list[str], readers: int, redis_url: str) -> int:
    """Run each provider in turn; exit status 0 when every check passed."""
    print(f"load average before: {_loadavg()}", flush=True)
    rows = []
    with TemporaryDirectory(prefix="newsletter-provider-rates-") as folder:
        for name in names:
            rows.append(run_provider(name, readers, redis_url, Path(folder)))
            print(f"  {name}: {rows[-1].seconds:.1f} s, load average {_loadavg()}", flush=True)
    print_table(rows)
    postmark = next((r for r in rows if r.provider == "postmark"), None)
    if postmark is not None:
        for r in rows:
            if r.provider in ("sendgrid", "mailgun"):
                verdict = "≥" if r.per_second >= postmark.per_second else "<"
                print(
                    f"{r.provider} {verdict} postmark: {r.per_second:,.0f} vs {postmark.per_second:,.0f} emails/s"
                )
    return 0 if all(r.accepted_once and r.requests_ok for r in rows) else 1


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
