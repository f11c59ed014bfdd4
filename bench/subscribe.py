"""Benchmark: POST /subscribe against the bare GET /livez of the same app, on PostgreSQL and Redis.

    .venv/bin/python bench/subscribe.py [--requests 3000] [--concurrency 16] [--workers 2]
                                        [--database-url URL --redis-url URL] [--client raw|httpx]

Starts PostgreSQL and Redis the way scripts/services.sh does (by sourcing it), unless both URLs are
given; migrates, adds a topic, and serves the app as in production (`newsletter web --workers 2`,
access log off, NEWSLETTER_ENVIRONMENT=production) on a free loopback port. After a warm-up it sends
the same bounded number of requests to each endpoint from one asyncio load generator on this machine,
and prints throughput, p50/p99 latency, CPU per request of each process group, and the ratio of the
subscribe throughput to the bare one (target: at least 0.40). Every POST carries a valid form token and
cookie made with the server's secret exactly as FormGuard.issue makes them, and a unique address; the
rate limiter still counts in Redis, with limits too high to refuse. Afterwards it checks that every
POST got 200 and that the database holds one pending reader per POST. It stops everything it started,
by process id, also on Ctrl-C or SIGTERM. Exit status: 0 when the checks pass, 1 when one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlencode

import httpx
from procs import Services, start_services, stop_pid
from sqlalchemy import func, select
from starlette.requests import Request

from subscriptions.db import create_db_engine
from subscriptions.models import Consent, Subscriber, SubscriberStatus
from subscriptions.ratelimit import RateLimiter
from subscriptions.supervisor import free_port
from subscriptions.web.forms import COOKIE, FIELD, FormGuard

REPO = Path(__file__).resolve().parents[1]
TOPIC = "bench"
#: Sign-up at no less than half the bare endpoint, by the web CPU per request (issue #12, #18).
TARGET_RATIO = 0.50
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUBSCRIBED_PAGE = b"Check your email"


# ------------------------------------------------------------------------------------ processes


def children(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes in `pids` that still run."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of `pid`, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class WebServer:
    """`newsletter web --workers N` in its own session; its workers are found through /proc."""

    def __init__(self, env: dict[str, str], port: int, workers: int, folder: Path) -> None:
        self.port = port
        self.expected_workers = workers
        self.log = folder / "web.log"
        self._out = self.log.open("wb")
        argv = ["web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "subscriptions.cli", *argv],
            env=env,
            cwd=folder,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers: list[int] = []

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *self.workers]

    def wait_until_serving(self, timeout: float = 60) -> None:
        """Until every worker process runs and /livez answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the web server exited:\n{self.log.read_text()}")
            # uvicorn spawns its workers with multiprocessing (and may start a resource tracker).
            self.workers = [
                pid for pid in children(self.process.pid) if b"spawn_main" in _cmdline(pid)
            ]
            started = self.log.read_text(errors="replace").count("Application startup complete")
            if started >= self.expected_workers and len(self.workers) >= self.expected_workers:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/livez", timeout=2).is_success:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise SystemExit(
            f"bench: the web server did not start in {timeout} s:\n{self.log.read_text()}"
        )

    def stop(self) -> None:
        """SIGTERM to the server (it stops its workers), then any worker left, by pid."""
        workers = children(self.process.pid) or self.workers
        stop_pid(self.process.pid, signal.SIGTERM, 15, "web server")
        self.process.wait()
        for pid in workers:
            stop_pid(pid, signal.SIGTERM, 5, "web worker")
        self._out.close()


class Worker:
    """`newsletter worker` in its own session: it applies the queued sign-ups and sends the
    confirmation emails (to an outbox folder) while the load runs, on the same cores."""

    def __init__(self, env: dict[str, str], concurrency: int, folder: Path) -> None:
        self.log = folder / "worker.log"
        self._out = self.log.open("wb")
        argv = ["worker", "--concurrency", str(concurrency)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "subscriptions.cli", *argv],
            env={**env, "C_FORCE_ROOT": "1"},
            cwd=folder,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def wait_until_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the worker exited:\n{self.log.read_text()}")
            if " ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise SystemExit(f"bench: the worker did not start in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        pool = children(self.process.pid)
        stop_pid(self.process.pid, signal.SIGTERM, 15, "worker")
        self.process.wait()
        for pid in pool:
            stop_pid(pid, signal.SIGKILL, 5, "worker pool process")
        self._out.close()


def newsletter(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run one `newsletter` command; its output, or exit with its error."""
    result = subprocess.run(
        [sys.executable, "-m", "subscriptions.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench: newsletter {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


# ------------------------------------------------------------------------------------ load


@dataclass(frozen=True, slots=True)
class Call:
    """One prepared request: its raw HTTP/1.1 bytes, and the same for httpx."""

    raw: bytes
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def livez_calls(count: int) -> list[Call]:
    raw = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"
    return [Call(raw, "GET", "/livez", {}, b"") for _ in range(count)]


def subscribe_calls(guard: FormGuard, run: str, first: int, count: int) -> list[Call]:
    """POSTs of the subscribe form, each with its own form token, cookie and address."""
    calls = []
    for n in range(first, first + count):
        # Exactly what the server does for a visitor without a cookie (FormGuard.issue).
        cookie, token = guard.issue(Request({"type": "http", "headers": []}))
        body = urlencode(
            {
                FIELD: token,
                "email": f"bench-{run}-{n}@example.org",
                "topics": TOPIC,
                "frequency": "daily",
                "timezone": "Europe/Madrid",
                "website": "",
            }
        ).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"{COOKIE}={cookie}",
        }
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw = (
            f"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        calls.append(Call(raw, "POST", "/subscribe", headers, body))
    return calls


@dataclass
class Outcome:
    """What one phase measured."""

    label: str
    sent: int
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wrong_body: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0) - self.wrong_body

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000 if ordered else math.nan


class RawConnection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for uvicorn's answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        if "content-length" not in headers:
            raise RuntimeError(f"answer without Content-Length: {lines[0]}")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        self.reader = self.writer = None


async def load(
    port: int, calls: list[Call], concurrency: int, client: str, outcome: Outcome, timeout: float
) -> None:
    """Send `calls` over `concurrency` keep-alive connections, recording each latency and status."""
    queue = iter(calls)
    expect_page = calls[0].method == "POST"

    def record(status: int, body: bytes, started: float) -> None:
        outcome.latencies.append(time.perf_counter() - started)
        outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
        if status == 200 and expect_page and SUBSCRIBED_PAGE not in body:
            outcome.wrong_body += 1

    async def raw_worker() -> None:
        connection = RawConnection(port)
        try:
            for call in queue:
                started = time.perf_counter()
                try:
                    status, body = await connection.request(call.raw)
                except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
                    outcome.errors.append(f"{type(exc).__name__}: {exc}")
                    await connection.close()
                    continue
                record(status, body, started)
        finally:
            await connection.close()

    async def httpx_worker(session: httpx.AsyncClient) -> None:
        for call in queue:
            started = time.perf_counter()
            try:
                answer = await session.request(
                    call.method, call.path, headers=call.headers, content=call.body or None
                )
            except httpx.HTTPError as exc:
                outcome.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            record(answer.status_code, answer.content, started)

    started = time.perf_counter()
    if client == "raw":
        await asyncio.wait_for(asyncio.gather(*(raw_worker() for _ in range(concurrency))), timeout)
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as session:
            await asyncio.wait_for(
                asyncio.gather(*(httpx_worker(session) for _ in range(concurrency))), timeout
            )
    outcome.seconds = time.perf_counter() - started


def measure(
    label: str,
    calls: list[Call],
    args: argparse.Namespace,
    groups: dict[str, Callable[[], list[int]]],
    port: int | None = None,
) -> Outcome:
    """One phase: the load, with the CPU time each process group spent during it."""
    port = port or args.port
    outcome = Outcome(label, len(calls))
    pids = {name: find() for name, find in groups.items()}
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    generator_before = time.process_time()
    try:
        asyncio.run(load(port, calls, args.concurrency, args.client, outcome, args.timeout))
    except TimeoutError:
        outcome.errors.append(f"the phase did not finish in {args.timeout:g} s (--timeout)")
        outcome.seconds = args.timeout
    outcome.cpu = {name: cpu_seconds(p) - before[name] for name, p in pids.items()}
    outcome.cpu["load generator"] = time.process_time() - generator_before
    return outcome


def add_to(total: Outcome, part: Outcome) -> None:
    """Fold one round's figures into its endpoint's total."""
    total.sent += part.sent
    total.latencies += part.latencies
    for status, count in part.statuses.items():
        total.statuses[status] = total.statuses.get(status, 0) + count
    total.wrong_body += part.wrong_body
    total.errors += part.errors
    total.seconds += part.seconds
    for name, seconds in part.cpu.items():
        total.cpu[name] = total.cpu.get(name, 0.0) + seconds


def rounds_of(calls: list[Call], rounds: int) -> list[list[Call]]:
    """`calls` cut into `rounds` consecutive slices of (nearly) equal size."""
    size = math.ceil(len(calls) / rounds)
    return [calls[i : i + size] for i in range(0, len(calls), size)]


# ------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/subscribe.py",
        description="POST /subscribe throughput and latency against the bare GET /livez.",
    )
    parser.add_argument("--requests", type=int, default=3000, help="per endpoint (default 3000)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--warmup", type=int, default=300, help="per endpoint (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="web processes (default 2)")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="pool processes of the `newsletter worker` that applies sign-ups (default 1)",
    )
    parser.add_argument(
        "--worker",
        choices=["after", "during"],
        default="after",
        help="start the worker after the timed load (default: the web server alone is measured, "
        "then the time the worker takes to apply the backlog) or before it (it then applies "
        "sign-ups and sends confirmations on the same cores while the load runs)",
    )
    parser.add_argument(
        "--apply-timeout",
        type=float,
        default=300,
        help="seconds to wait after the last answer for the worker to apply every sign-up",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: raw asyncio HTTP/1.1 (default; least CPU) or httpx.AsyncClient",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="short rounds per endpoint, bare and subscribe taking turns (default 10), so that a "
        "change of load on the machine moves both sides alike",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds per phase at most")
    parser.add_argument("--database-url", help="an existing PostgreSQL (postgresql+psycopg://...)")
    parser.add_argument("--redis-url", help="an existing Redis (redis://host:port/db)")
    args = parser.parse_args(argv)
    if bool(args.database_url) != bool(args.redis_url):
        parser.error("give both --database-url and --redis-url, or neither")
    if min(args.requests, args.concurrency, args.workers, args.rounds) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency, --workers and --rounds must be at least 1")
    # One web server. Commit 889b00a ran one per intake client (resp.py and redis.asyncio), their
    # rounds taking turns, to compare the two in one run (issue #16; bench/README.md).
    args.clients = ["app"]
    return args


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews the figures."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Stop cleanly on Ctrl-C and SIGTERM, also when started in the background (SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    run = secrets.token_hex(4)
    args.load_before = _loadavg()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"newsletter-bench-{run}"
    folder.mkdir(parents=True)
    services = Services(args.database_url or "", args.redis_url or "")
    servers: dict[str, WebServer] = {}
    worker: Worker | None = None
    try:
        if not args.database_url:
            print("starting PostgreSQL and Redis (scripts/services.sh)...", flush=True)
            start_services(services)
        secret = secrets.token_urlsafe(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(
            NEWSLETTER_ENVIRONMENT="production",
            NEWSLETTER_DATABASE_URL=services.database_url,
            NEWSLETTER_BROKER_URL=services.redis_url,
            NEWSLETTER_SECRET_KEY=secret,
            NEWSLETTER_EMAIL_URL=f"outbox://{folder / 'outbox'}",
            NEWSLETTER_BASE_URL="https://newsletter.example.org",
            NEWSLETTER_FORM_MIN_SECONDS="0",
            NEWSLETTER_RATE_LIMIT_PER_IP="1000000000",
            NEWSLETTER_RATE_LIMIT_PER_ADDRESS="1000000000",
            NEWSLETTER_LOG_LEVEL="INFO",
        )
        newsletter(env, folder, "db", "upgrade")
        if not any(
            line.split("\t")[0] == TOPIC
            for line in newsletter(env, folder, "topics", "list", "--all").splitlines()
        ):
            newsletter(env, folder, "topics", "add", TOPIC, "Benchmark")
        for client in args.clients:
            port = free_port()
            (folder / client).mkdir()
            servers[client] = WebServer(env, port, args.workers, folder / client)
        for web_server in servers.values():
            web_server.wait_until_serving()
        args.port = next(iter(servers.values())).port
        if args.worker == "during":
            worker = Worker(env, args.worker_concurrency, folder)
            worker.wait_until_ready()

        # The server's HTTPS base URL makes its CSRF cookie Secure; the cookie is still sent here,
        # as a browser behind a TLS-terminating proxy would send it.
        guard = FormGuard(secret, RateLimiter(None), min_seconds=0, secure_cookie=True)
        posts = (args.warmup + args.requests) * len(servers)

        def groups_for(web_server: WebServer) -> dict[str, Callable[[], list[int]]]:
            groups: dict[str, Callable[[], list[int]]] = {
                "web server": lambda: web_server.pids,
                "worker": lambda: worker.pids if worker else [],
            }
            if services.pg_pid:
                pg = services.pg_pid
                groups["PostgreSQL"] = lambda: [pg, *children(pg)]
            if services.redis_pid:
                rd = services.redis_pid
                groups["Redis"] = lambda: [rd]
            return groups

        print(
            f"warming up: {args.warmup} GET /livez and {args.warmup} POST /subscribe per server "
            f"({', '.join(servers)})...",
            flush=True,
        )
        first = 0
        results: dict[str, tuple[Outcome, Outcome]] = {}
        plans: dict[str, tuple[list[list[Call]], list[list[Call]]]] = {}
        for client, web_server in servers.items():
            groups = groups_for(web_server)
            if args.warmup:
                measure("warm-up", livez_calls(args.warmup), args, groups, web_server.port)
                warm = measure(
                    "warm-up",
                    subscribe_calls(guard, run, first, args.warmup),
                    args,
                    groups,
                    web_server.port,
                )
                if warm.ok != warm.sent:
                    raise SystemExit(f"bench: warm-up POSTs failed on {client}: {warm.statuses}")
            first += args.warmup
            subscribe = subscribe_calls(guard, run, first, args.requests)
            first += args.requests
            plans[client] = (
                rounds_of(livez_calls(args.requests), args.rounds),
                rounds_of(subscribe, args.rounds),
            )
            results[client] = (
                Outcome(f"GET /livez ({client})", 0),
                Outcome(f"POST /subscribe ({client})", 0),
            )
        print(
            f"measuring: {args.requests} requests per endpoint and server in {args.rounds} rounds, "
            f"bare and subscribe taking turns (load average {_loadavg()})...",
            flush=True,
        )
        for index in range(args.rounds):
            for client, web_server in servers.items():
                groups = groups_for(web_server)
                bare_rounds, sub_rounds = plans[client]
                bare_total, sub_total = results[client]
                if index < len(bare_rounds):
                    add_to(
                        bare_total, measure("", bare_rounds[index], args, groups, web_server.port)
                    )
                if index < len(sub_rounds):
                    add_to(sub_total, measure("", sub_rounds[index], args, groups, web_server.port))
        args.load_during = _loadavg()

        # The answers do not wait for the database: the worker applies the sign-ups behind them.
        answered = time.monotonic()
        if worker is None:
            worker = Worker(env, args.worker_concurrency, folder)
        worker_cpu = cpu_seconds(worker.pids)
        engine = create_db_engine(services.database_url)
        pending = sent = 0
        while True:
            with engine.connect() as conn:
                pending = conn.execute(
                    select(func.count())
                    .select_from(Subscriber)
                    .where(
                        Subscriber.status == SubscriberStatus.PENDING,
                        Subscriber.email.like(f"bench-{run}-%"),
                    )
                ).scalar_one()
                sent = conn.execute(
                    select(func.count())
                    .select_from(Consent)
                    .where(Consent.email_sent_at.is_not(None))
                ).scalar_one()
            if pending >= posts or time.monotonic() - answered > args.apply_timeout:
                break
            time.sleep(0.25)
        applied_after = time.monotonic() - answered
        worker_cpu = cpu_seconds(worker.pids) - worker_cpu
        engine.dispose()

        report(args, services, servers, results, pending, posts)
        started = "ran during the load" if args.worker == "during" else "started after the load"
        print(
            f"  the worker ({started}, --concurrency {args.worker_concurrency}) had applied "
            f"{pending} sign-ups {applied_after:.1f} s after the last answer, using "
            f"{worker_cpu:.1f} s of CPU in that time, and had handed {sent} confirmation emails "
            "to the outbox by then"
        )
        print(
            "  peak RSS (VmHWM) of the worker: "
            + ", ".join(
                f"{mib:.0f} MiB"
                for mib in (peak_rss_mib(pid) for pid in worker.pids)
                if mib is not None
            )
        )
        every_call_ok = all(
            p.ok == p.sent and not p.errors for pair in results.values() for p in pair
        )
        return 0 if every_call_ok and pending == posts else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started...", file=sys.stderr)
        return 130
    finally:
        if worker is not None:
            worker.stop()
        for web_server in servers.values():
            web_server.stop()
        services.stop()
        shutil.rmtree(folder, ignore_errors=True)


def report(
    args: argparse.Namespace,
    services: Services,
    servers: dict[str, WebServer],
    results: dict[str, tuple[Outcome, Outcome]],
    pending: int,
    posts: int,
) -> None:
    """Print the figures."""
    print()
    print("topic-newsletter: POST /subscribe against the bare GET /livez")
    print(
        f"  servers  newsletter web --workers {args.workers} (uvicorn, access log off, "
        f"NEWSLETTER_ENVIRONMENT=production): "
        + ", ".join(f"{client} on 127.0.0.1:{w.port}" for client, w in servers.items())
    )
    for line in services.versions or [f"given: {services.database_url}, {services.redis_url}"]:
        print(f"  service  {line}")
    print(
        f"  load     {args.requests} requests per endpoint and server after {args.warmup} warm-up, "
        f"in {args.rounds} interleaved rounds, concurrency {args.concurrency}, {args.client} "
        f"client, one process on the same {os.cpu_count()}-core machine"
    )
    print(
        f"  machine  load average {args.load_before} before, {args.load_during} after the "
        f"rounds, {_loadavg()} at the end"
    )
    print()
    header = f"  {'endpoint':<30}{'ok':>7}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    phases = [p for pair in results.values() for p in pair]
    groups = list(phases[-1].cpu)
    print(header + "   CPU ms per request: " + ", ".join(groups))
    for outcome in phases:
        n = len(outcome.latencies) or 1
        cpu = "  ".join(f"{outcome.cpu[g] * 1000 / n:6.2f}" for g in groups)
        print(
            f"  {outcome.label:<30}{outcome.ok:>7}{outcome.throughput:>9.0f}"
            f"{outcome.percentile(0.50):>9.1f}{outcome.percentile(0.99):>9.1f}"
            f"{outcome.percentile(1.0):>9.1f}   {cpu}"
        )
    print()
    for client, (bare, sub) in results.items():
        ratio = sub.throughput / bare.throughput if bare.throughput else 0.0
        bare_cpu = bare.cpu["web server"] / (len(bare.latencies) or 1)
        sub_cpu = sub.cpu["web server"] / (len(sub.latencies) or 1)
        ceiling = bare_cpu / sub_cpu if sub_cpu else 0.0
        verdict = "meets" if ceiling >= TARGET_RATIO else "BELOW"
        print(
            f"  {client:<9} CPU ceiling subscribe/bare: {ceiling:.2f} ({verdict} the target of "
            f"{TARGET_RATIO:.2f}): web CPU {sub_cpu * 1000:.2f} ms per sign-up against "
            f"{bare_cpu * 1000:.2f} ms per bare request; throughput ratio {ratio:.2f} "
            f"({sub.throughput:.0f} / {bare.throughput:.0f} req/s); load average "
            f"{args.load_during}"
        )
    for outcome in phases:
        bad = {s: c for s, c in outcome.statuses.items() if s != 200}
        if bad or outcome.wrong_body or outcome.errors:
            print(
                f"  PROBLEM {outcome.label}: statuses {bad}, {outcome.wrong_body} answers without "
                f"'{SUBSCRIBED_PAGE.decode()}', {len(outcome.errors)} errors {outcome.errors[:3]}"
            )
    post_ok = sum(sub.ok for _, sub in results.values()) + args.warmup * len(results)
    print(
        f"  POSTs answered 200 with the check-your-email page: {post_ok} of {posts} (warm-up "
        f"included); pending readers in the database: {pending} "
        f"({'OK' if pending == posts == post_ok else 'MISMATCH'})"
    )
    for client, web_server in servers.items():
        rss = {"supervisor": peak_rss_mib(web_server.process.pid)} | {
            f"worker {i + 1}": peak_rss_mib(pid) for i, pid in enumerate(web_server.workers)
        }
        print(
            f"  peak RSS (VmHWM) of the web server ({client}): "
            + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in rss.items() if mib is not None)
        )


if __name__ == "__main__":
    sys.exit(main())
