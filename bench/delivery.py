"""Benchmark: one digest to 100,000 and to 1,000,000 readers on PostgreSQL, sent by real workers.

    .venv/bin/python bench/delivery.py                       # 100,000 then 1,000,000 readers
    .venv/bin/python bench/delivery.py --quick               # a smoke run: 20,000 readers
    .venv/bin/python bench/delivery.py --readers 100000 --workers 1 --concurrency 2 --pool prefork
    .venv/bin/python bench/delivery.py --database-url postgresql+psycopg://postgres@127.0.0.1:5433/x \
                                       --redis-url redis://127.0.0.1:6390/5    # services you run
    .venv/bin/python bench/delivery.py --profile              # also py-spy every pool process

For each reader count N it starts from an empty database: PostgreSQL 15 and Redis are started through
scripts/services.sh (as bench/subscribe.py does) unless both URLs are given; a database of its own is
created for N and migrated; N active readers with an immediate subscription to one topic are
bulk-loaded in SQL (INSERT … SELECT generate_series); one post is added and its alerts are planned with
worker.digests.planner.plan_post_alerts in one transaction (timed apart: "planning").

The floor, in the same run: as many processes as the send has pool processes (forked from this one)
render the same N messages as the Sender does (DigestRenderer.body once, personalize per reader,
through Sender._message on jobs made in memory from the planned digest), and hand batches of 500 to
PostmarkProvider.send(), which builds the Postmark JSON with the provider's own code and POSTs it to
the round's stand-in: no database, no queue. A sample (--full-sample) is also rendered the naive way
(DigestRenderer.full_render per reader), in this process.

The send: `newsletter worker` processes (--workers, each `--concurrency` pool processes of --pool)
against the same stand-in, which runs in its own process (an asyncio HTTP/1.1 server in this file,
`--stand-in MODE`) and does the same for the floor and the send: it finds each batch's delivery ids
(`count`, one regular-expression scan, the default; or `parse`, json.loads), counts them and answers
Postmark's per-message results, nothing more; with NEWSLETTER_EMAIL_URL=postmark+http://TOKEN@127.0.0.1:PORT
and the global rate limit raised out of the way. The clock starts when the first `newsletter.send_digest`
is put on the broker (--senders per pool process) and stops at the last `sent_at` in the ledger;
`newsletter.dispatch` is enqueued every second (--dispatch-every; beat's schedule is 30 s).

It prints, per N: load and planning time, send time, emails/s, the ratio to the floor, the load average
beside every rate, the CPU time per email of each kind of process and of each group (workers,
PostgreSQL, Redis, the stand-in; for the send and for the floor) and the peak RSS (VmHWM), both sampled from /proc every second, of every
process (workers and their pool processes, the stand-in, PostgreSQL's processes, Redis, this process),
and for the smallest and largest N the time ratio (linear: the reader ratio). It checks that the stand-in
counted exactly N messages, with the delivery ids of the digest each once (sum and sum of squares
compared with the ledger's), and that the ledger holds N sent. Targets (2 cores): ≥ 5,000 emails/s at
1,000,000 readers, ≥ half the floor's rate, ≤ 120 µs of CPU per email for workers + PostgreSQL + Redis,
every process under 300 MB (this one not counted), time linear in N. Exit status
0 when the checks pass, 1 when one fails (targets are printed, not enforced). Everything it started is
stopped by process id, also on Ctrl-C or SIGTERM; --keep leaves the databases (and the services it
started) running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from procs import REPO, Services, start_services, stop_pid

if TYPE_CHECKING:  # product modules are imported where used: the stand-in process needs none
    from sqlalchemy import Engine

TOKEN = "bench-postmark-token"
TOPIC_SLUG = "mexico"
TOPIC_NAME = "Mexico"
POST_TITLE = "Mexico & the border: what changed at the crossings this week"
POST_LINK = "https://example.org/posts/2026/11/mexico-border-crossings"
POST_SUMMARY = (
    "<p>Crossings at the southern border fell for the third month in a row, while asylum requests at "
    "ports of entry rose. We look at what changed in the rules, what the numbers say and do not say, "
    "and what the <a href='https://example.org/data'>new data</a> means for the policy debate in "
    "both capitals.</p><p>Also: how appointments through the app are allotted, and why waiting times "
    "differ so much from one crossing to the next.</p>"
)
BATCH = 500  # Postmark's batch limit: what the Sender claims at once with the rate limit raised
TARGET_RATE = 5_000.0
TARGET_FLOOR_SHARE = 0.5
TARGET_RSS_MIB = 300.0
TARGET_CPU_US = 120.0  # workers + PostgreSQL + Redis per email (issue #18)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH = "bench (this process)"


# ------------------------------------------------------------------------------------ the stand-in


#: What a counting stand-in looks for in each element (Postmark's Metadata, as the provider writes it).
_DELIVERY_ID = re.compile(rb'"delivery_id":"([0-9]+)"')


class _Tally:
    """What the stand-in counted; answers Postmark's batch endpoint, GET /stats and POST /reset.

    `mode` is the work done per batch, the same for the floor and the send: "count" finds each
    element's delivery id with one regular-expression scan of the body (~8 µs per email), "parse"
    runs `json.loads` over it and reads each element (~27-34 µs per email).
    """

    def __init__(self, token: str, mode: str = "count") -> None:
        self.token = token
        self.mode = mode
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.messages = 0
        self.id_sum = 0
        self.id_square_sum = 0
        self.refused = 0
        self.first = 0.0
        self.last = 0.0

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if method == "GET" and path == "/stats":
            return 200, json.dumps(self.__dict__).encode()
        if method == "POST" and path == "/reset":
            self.reset()
            return 200, b"{}"
        if method != "POST" or path != "/email/batch":
            return 404, b'{"ErrorCode":404,"Message":"not found"}'
        if headers.get("x-postmark-server-token") != self.token:
            self.refused += 1
            return (
                401,
                b'{"ErrorCode":10,"Message":"No Account or Server API tokens were supplied."}',
            )
        try:
            if self.mode == "parse":
                ids = [int(m["Metadata"]["delivery_id"]) for m in json.loads(body)]
            else:
                ids = [int(i) for i in _DELIVERY_ID.findall(body)]
        except (ValueError, KeyError, TypeError):
            ids = []
        if not ids:
            self.refused += 1
            return 422, b'{"ErrorCode":402,"Message":"Invalid JSON"}'
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.requests += 1
        first = self.messages
        self.messages += len(ids)
        self.id_sum += sum(ids)
        self.id_square_sum += sum(i * i for i in ids)
        submitted = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        # Postmark's per-message result; the provider reads ErrorCode and MessageID (To is not sent
        # back: finding each element's address would be work the product never asks for).
        results = b",".join(
            b'{"ErrorCode":0,"Message":"OK","MessageID":"bench-%d","SubmittedAt":"%s"}'
            % (first + n, submitted.encode())
            for n in range(len(ids))
        )
        return 200, b"[" + results + b"]"


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies: all httpx sends here."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.request: tuple[str, str, dict[str, str]] | None = None
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._next():
            pass

    def _next(self) -> bool:
        if self.request is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.request = (method, path, headers)
            self.length = int(headers.get("content-length", "0"))
        if len(self.buffer) < self.length:
            return False
        body = bytes(self.buffer[: self.length])
        del self.buffer[: self.length]
        method, path, headers = self.request
        self.request = None
        status, payload = self.tally.answer(method, path, headers, body)
        head = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        assert self.transport is not None
        self.transport.write(head.encode() + payload)
        return True


async def _serve(token: str, mode: str) -> None:
    tally = _Tally(token, mode)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(tally), "127.0.0.1", 0, backlog=256)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def stand_in_main(mode: str) -> None:
    """`delivery.py --stand-in MODE`: serve until SIGTERM; the first line printed is the port."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops it by pid
    asyncio.run(_serve(TOKEN, mode))


class StandIn:
    """The stand-in in its own process (started from this file, without the product's modules)."""

    def __init__(self, folder: Path, name: str, mode: str = "count") -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        self._err = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--stand-in", mode],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise SystemExit(f"bench: the stand-in did not start:\n{self.log.read_text()}")
        self.port = int(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        import httpx

        answer = httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=30).json()
        assert isinstance(answer, dict)
        return answer

    def reset(self) -> None:
        """Zero the counts (between the floor and the send, which share this stand-in)."""
        import httpx

        httpx.post(f"http://127.0.0.1:{self.port}/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        stop_pid(self.process.pid, signal.SIGTERM, 10, self.name)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._err.close()


# ------------------------------------------------------------------------------------ processes


def parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(root: int, tree: dict[int, int] | None = None) -> list[int]:
    """Every process below `root`."""
    tree = parents() if tree is None else tree
    below: dict[int, list[int]] = {}
    for pid, ppid in tree.items():
        below.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in below.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/PID/status (VmHWM, VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of `pid` in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    except (OSError, IndexError, ValueError):
        return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@dataclass
class Peak:
    group: str
    label: str
    hwm_kib: int = 0
    ticks: int = 0  # CPU (user + system) when last seen
    base: int = 0  # CPU when the measured phase began (0 for processes started during it)

    @property
    def kind(self) -> str:
        """The group, and for PostgreSQL the kind of process, for the CPU table."""
        if self.group != "PostgreSQL":
            return self.group
        for kind in ("autovacuum worker", "parallel worker"):
            if kind in self.label:
                return f"PostgreSQL {kind}s"
        if self.label.count(" ") >= 3 and "(" in self.label:  # postgres: user db host(port) …
            return "PostgreSQL connections"
        return "PostgreSQL background"


class Sampler:
    """Reads VmHWM (the kernel's own peak RSS) and the CPU time of every process of each group
    once a second, so that processes that end before the report still count."""

    def __init__(
        self, groups: dict[str, Callable[[dict[int, int]], list[int]]], mains: set[int]
    ) -> None:
        self.groups = groups
        self.mains = mains  # the worker processes themselves (their pool processes fork from them)
        self.peaks: dict[int, Peak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def pids(self, group: str) -> list[int]:
        return self.groups[group](parents())

    def sample(self) -> None:
        tree = parents()
        for group, find in self.groups.items():
            for pid in find(tree):
                hwm = status_kib(pid, "VmHWM")
                if hwm is None:
                    continue
                peak = self.peaks.get(pid)
                if peak is None:
                    peak = self.peaks[pid] = Peak(group, _label(group, pid, pid in self.mains))
                peak.hwm_kib = max(peak.hwm_kib, hwm)
                peak.ticks = max(peak.ticks, cpu_ticks(pid))

    def mark(self) -> None:
        """The measured phase begins: CPU is counted from here."""
        self.sample()
        for peak in self.peaks.values():
            peak.base = peak.ticks

    def cpu(self) -> dict[str, float]:
        """CPU seconds since mark() by kind of process."""
        self.sample()
        spent: dict[str, float] = {}
        for peak in self.peaks.values():
            spent[peak.kind] = spent.get(peak.kind, 0.0) + (peak.ticks - peak.base) / CLK_TCK
        return spent

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()


def _label(group: str, pid: int, main: bool) -> str:
    line = cmdline(pid)
    if line.startswith("postgres:"):
        return line
    if group.startswith("worker"):
        return "celery worker (main process)" if main else "pool process"
    return line.split(" ", 1)[0].rsplit("/", 1)[-1] if line else "?"


# ------------------------------------------------------------------------------------ services


def _libpq(url: str) -> str:
    """A SQLAlchemy postgresql+psycopg URL as a libpq one."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server_url: str, name: str) -> str:
    """A new, empty database `name` on the server of `server_url`; its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(_libpq(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(server_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear_broker(redis_url: str, *, whole_db: bool) -> None:
    """Leave no task of an earlier round on the broker, and no rate-limit state."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        if whole_db:
            client.flushdb()
        else:
            from subscriptions.queue import QUEUE

            keys = [QUEUE, "unacked", "unacked_index", "unacked_mutex"]
            keys += [k.decode() for k in client.scan_iter("nl:rate:*")]
            client.delete(*keys)
    finally:
        client.close()


# ------------------------------------------------------------------------------------ the data


def load_readers(database_url: str, readers: int) -> float:
    """N active readers, each with an immediate subscription to the topic; seconds taken."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(_libpq(database_url)) as connection:
        topic_id = connection.execute(
            "SELECT id FROM topics WHERE slug = %s", [TOPIC_SLUG]
        ).fetchone()
        assert topic_id is not None
        connection.execute(
            "INSERT INTO subscribers (email, status, timezone, token_version, created_at,"
            " confirmed_at) SELECT 'reader' || g || '@example.org', 'active', 'UTC', 1, now(), now()"
            " FROM generate_series(1, %s) AS g ORDER BY g",
            [readers],
        )
        connection.execute(
            "INSERT INTO subscriptions (subscriber_id, topic_id, frequency, created_at, updated_at)"
            " SELECT id, %s, 'immediate', now(), now() FROM subscribers ORDER BY id",
            [topic_id[0]],
        )
        connection.commit()
        connection.autocommit = True
        connection.execute("ANALYZE subscribers")  # as after any bulk load
        connection.execute("ANALYZE subscriptions")
    return time.perf_counter() - started


def add_topic(database_url: str) -> None:
    """The readers' topic, added with the product's own function."""
    from subscriptions import topics
    from subscriptions.db import create_db_engine, session_factory

    engine = create_db_engine(database_url)
    try:
        with session_factory(engine).begin() as session:
            topics.add_topic(
                session=session, slug=TOPIC_SLUG, name=TOPIC_NAME, description="Relations."
            )
    finally:
        engine.dispose()


def add_post_and_plan(database_url: str) -> tuple[int, int, float]:
    """One post in the topic, then its alerts planned in one transaction: (digest id, planned,
    planning seconds)."""
    from subscriptions import posts
    from subscriptions.db import create_db_engine, session_factory
    from worker.digests import planner

    engine = create_db_engine(database_url)
    try:
        sessions = session_factory(engine)
        with sessions.begin() as session:
            post = posts.add_post(
                session=session,
                title=POST_TITLE,
                link=POST_LINK,
                topics=[TOPIC_SLUG],
                summary=POST_SUMMARY,
            )
        started = time.perf_counter()
        with sessions.begin() as session:
            result = planner.plan_post_alerts(session, post.id)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    assert result is not None
    return result.digest_id, result.planned, seconds


def ledger(engine: Engine, digest_id: int) -> tuple[dict[str, int], int, int, float | None]:
    """(deliveries by status, sum of sent ids, sum of their squares, last sent_at as Unix time)."""
    from sqlalchemy import func, select

    from subscriptions.models import Delivery, DeliveryStatus

    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.status, func.count())
            .where(Delivery.digest_id == digest_id)
            .group_by(Delivery.status)
        ).all()
        sent = Delivery.status == DeliveryStatus.SENT
        sums = connection.execute(
            select(
                func.coalesce(func.sum(Delivery.id), 0),
                func.coalesce(func.sum(Delivery.id * Delivery.id), 0),
                func.max(Delivery.sent_at),
            ).where(Delivery.digest_id == digest_id, sent)
        ).one()
    counts = {getattr(s, "value", str(s)): int(n) for s, n in rows}
    last = sums[2].timestamp() if sums[2] is not None else None
    return counts, int(sums[0]), int(sums[1]), last


# ------------------------------------------------------------------------------------ the floor


@dataclass
class Floor:
    messages: int = 0
    processes: int = 0
    seconds: float = 0.0
    render_seconds: float = 0.0  # summed over the processes
    send_seconds: float = 0.0
    serialize_us: float = 0.0
    full_messages: int = 0
    full_seconds: float = 0.0
    not_sent: int = 0
    counted: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    peaks: dict[int, Peak] = field(default_factory=dict)
    load: tuple[str, str] = ("", "")

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def full_rate(self) -> float:
        return self.full_messages / self.full_seconds if self.full_seconds else 0.0


FLOOR = "floor processes"


def run_floor(
    database_url: str,
    digest_id: int,
    readers: int,
    full_sample: int,
    processes: int,
    stand_in: StandIn,
) -> Floor:
    """Render, serialize and POST the digest's messages in `processes` plain loops: no database, no
    queue, against the stand-in the send then uses.

    The digest and one planned job are read once from the database, before the clock starts; each
    process (forked from this one, as the send has one pool process per core) then makes its share of
    the N jobs in memory (reader n: id n, reader{n}@example.org, as loaded; batch k goes to process
    k mod P), renders them with Sender._message, the Sender's own rendering, and sends them with
    PostmarkProvider.send(). The clock runs from the release of the ready processes to the last one's
    end; their CPU and the stand-in's are read from /proc as in the send.
    """
    import multiprocessing

    from sqlalchemy import select

    from subscriptions.db import create_db_engine, session_factory
    from subscriptions.models import Delivery
    from worker.digests.jobs import load_jobs

    engine = create_db_engine(database_url)
    try:
        with session_factory(engine)() as session:
            first = session.scalar(
                select(Delivery.id).where(Delivery.digest_id == digest_id).order_by(Delivery.id)
            )
            assert first is not None
            info, jobs = load_jobs(session, [first])
    finally:
        engine.dispose()
    assert info is not None and jobs
    floor = Floor(processes=processes)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    answers: Any = context.Queue()
    children = [
        context.Process(
            target=_floor_part,
            args=(index, processes, readers, info, jobs[0], stand_in.port, go, answers),
        )
        for index in range(processes)
    ]
    stand_in.reset()
    for child in children:
        child.start()
    for _ in children:  # each says it is ready (its Sender and provider built)
        answers.get(timeout=120)
    groups: dict[str, Callable[[dict[int, int]], list[int]]] = {
        FLOOR: lambda _tree: [c.pid for c in children if c.pid],
        "stand-in": lambda _tree: [stand_in.pid],
    }
    with Sampler(groups, set()) as sampler:
        sampler.mark()
        floor.load = (_loadavg(), "")
        started = time.time()
        go.set()
        ends = []
        for _ in children:
            end, render_seconds, send_seconds, not_sent = answers.get(timeout=3600)
            ends.append(end)
            floor.render_seconds += render_seconds
            floor.send_seconds += send_seconds
            floor.not_sent += not_sent
        floor.seconds = max(ends) - started
        floor.load = (floor.load[0], _loadavg())
        floor.cpu = sampler.cpu()
    floor.peaks = sampler.peaks
    for child in children:
        child.join(timeout=30)
    floor.messages = readers
    floor.counted = int(stand_in.stats()["messages"])

    # What serializing alone costs (the provider's elements, encoded as the provider encodes them),
    # and the naive way on a sample (the whole template rendered and CSS-inlined per reader), in this
    # process.
    sender, provider, settings, signer, renderer = _floor_sender(stand_in.port)
    from mail.bodies import ReaderParts, reasons_line
    from mail.links import list_headers, reader_links
    from mail.providers import EmailMessage, Outcome, postmark

    batch = [_floor_job(jobs[0], n) for n in range(1, min(BATCH, readers) + 1)]
    messages = [sender._message(info, j, "floor") for j in batch]
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        for m in messages:
            postmark._json(provider._element(m))
        timings.append((time.perf_counter() - t0) / len(messages))
    floor.serialize_us = min(timings) * 1e6
    sample = min(full_sample, readers)
    started_full = time.perf_counter()
    for low in range(1, sample + 1, BATCH):
        full = []
        for j in (_floor_job(jobs[0], n) for n in range(low, min(low + BATCH, sample + 1))):
            links = reader_links(
                settings, signer, subscriber_id=j.subscriber_id, version=j.token_version
            )
            parts = ReaderParts(links.manage, links.unsubscribe, reasons_line(j.subscriptions))
            subject, email = renderer.full_render(
                info.kind,
                j.groups,
                parts,
                intro_markdown=info.intro_markdown,
                editorial_subject=info.subject,
            )
            full.append(
                EmailMessage(
                    to=j.email,
                    sender=settings.from_address,
                    subject=subject,
                    text=email.text,
                    html=email.html,
                    headers=list_headers(settings, links),
                    message_id=f"<nl.{info.id}.{j.delivery_id}@example.org>",
                    metadata={"delivery_id": str(j.delivery_id)},
                    idempotency_key=f"delivery-{j.delivery_id}",
                )
            )
        results = provider.send(full)
        floor.not_sent += sum(r.outcome is not Outcome.SENT for r in results)
    floor.full_seconds = time.perf_counter() - started_full
    floor.full_messages = sample
    provider.close()
    floor.counted = int(stand_in.stats()["messages"])
    stand_in.reset()  # the send counts from zero
    return floor


def _floor_sender(port: int) -> tuple[Any, Any, Any, Any, Any]:
    """A Sender (no database), its Postmark provider to the stand-in, and what it was built from."""
    from sqlalchemy.orm import sessionmaker

    from mail.bodies import DigestRenderer
    from mail.providers import provider_from_url
    from subscriptions.settings import load_settings
    from subscriptions.templating import template_environment
    from subscriptions.tokens import TokenSigner
    from worker.digests.sender import Sender

    settings = load_settings(_env_file=None)  # the workers' settings: os.environ was set for them
    provider = provider_from_url(f"postmark+http://{TOKEN}@127.0.0.1:{port}")
    renderer = DigestRenderer(template_environment(settings, "email"))
    signer = TokenSigner(settings.secret_key)
    sender = Sender(sessionmaker(), provider, renderer, settings, signer)
    return sender, provider, settings, signer, renderer


def _floor_job(model: Any, n: int) -> Any:
    from worker.digests.jobs import Job

    return Job(
        delivery_id=n,
        subscriber_id=n,
        email=f"reader{n}@example.org",
        token_version=model.token_version,
        mailable=True,
        kind=model.kind,
        groups=model.groups,
        subscriptions=model.subscriptions,
    )


def _floor_part(
    index: int,
    processes: int,
    readers: int,
    info: Any,
    model: Any,
    port: int,
    go: Any,
    answers: Any,
) -> None:
    """One floor process: batches index, index + P, … of the N messages, rendered and sent."""
    from mail.providers import Outcome

    sender, provider, *_ = _floor_sender(port)
    answers.put(("ready",))
    go.wait()
    render_seconds = send_seconds = 0.0
    not_sent = 0
    for low in range(1 + index * BATCH, readers + 1, processes * BATCH):
        batch = [_floor_job(model, n) for n in range(low, min(low + BATCH, readers + 1))]
        t0 = time.perf_counter()
        messages = [sender._message(info, j, "floor") for j in batch]
        t1 = time.perf_counter()
        results = provider.send(messages)
        send_seconds += time.perf_counter() - t1
        render_seconds += t1 - t0
        not_sent += sum(r.outcome is not Outcome.SENT for r in results)
    provider.close()
    answers.put((time.time(), render_seconds, send_seconds, not_sent))


# ------------------------------------------------------------------------------------ the workers


class Worker:
    """`newsletter worker` in its own session, its pool processes found through /proc."""

    def __init__(
        self, index: int, env: dict[str, str], folder: Path, concurrency: int, pool: str
    ) -> None:
        self.name = f"worker {index}"
        self.log = folder / f"worker-{index}.log"
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "subscriptions.cli", "worker", "--concurrency",
             str(concurrency), "--pool", pool],
            env=env,
            cwd=folder,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def pids(self, tree: dict[int, int] | None = None) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid, tree)]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"bench: {self.name} exited:\n{self.log.read_text(errors='replace')}")
        return " ready." in self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for the worker and any pool process left."""
        pool = descendants(self.process.pid)
        stop_pid(self.process.pid, signal.SIGTERM, 15, self.name)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for pid in pool:
            stop_pid(pid, signal.SIGKILL, 5, f"{self.name} pool process")
        self._out.close()


class Profiler:
    """py-spy recording one process (wall-clock, idle included, raw collapsed stacks)."""

    def __init__(self, binary: str, pid: int, output: Path, rate: int) -> None:
        self.output = output
        self._log = output.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
             "--idle", "--nolineno", "--nonblocking", "--output", str(output)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        stop_pid(self.process.pid, signal.SIGINT, 30, "py-spy")  # SIGINT: it writes its file
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._log.close()


def summarize_profile(paths: Sequence[Path], top: int = 28) -> list[str]:
    """Inclusive wall-clock share of the functions in the product's code and the libraries it calls,
    and the leaf functions where the samples were taken (self time), over every profile given."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [
                _frame(f)
                for f in stack.split(";")
                if f and not f.startswith(("process ", "thread "))
            ]
            if not frames:
                continue
            total += n
            leaf[frames[-1]] += n
            for name in set(frames):
                inclusive[name] += n
    if not total:
        return ["  (no samples: is py-spy allowed to ptrace here?)"]
    lines = [f"  {total} samples (pool processes, wall clock, waiting included); inclusive share:"]
    wanted = [
        (name, n)
        for name, n in inclusive.most_common()
        if ("/worker/" in name or "/subscriptions/" in name) and "tasks.py" not in name
    ]
    for name, n in wanted[:top]:
        lines.append(f"    {100 * n / total:5.1f} %  {name}")
    lines.append("  where the samples landed (self, top 15):")
    for name, n in leaf.most_common(15):
        lines.append(f"    {100 * n / total:5.1f} %  {name}")
    return lines


def _frame(frame: str) -> str:
    """`send_batch (/work/main/worker/digests/sender.py)` -> `send_batch (worker/digests/sender.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        with suppress(ValueError):
            where = "/" + str(Path(where).resolve().relative_to(REPO))
    return f"{name} ({where})"


# ------------------------------------------------------------------------------------ one round


@dataclass
class Round:
    readers: int
    load_seconds: float = 0.0
    plan_seconds: float = 0.0
    planned: int = 0
    planner_said: int = 0  # PlanResult.planned, the planner's own count
    floor: Floor = field(default_factory=Floor)
    send_seconds: float = 0.0
    arrivals: tuple[float, float] = (0.0, 0.0)
    stand_in: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    checksum_ok: bool = False
    cpu: dict[str, float] = field(default_factory=dict)
    peaks: dict[int, Peak] = field(default_factory=dict)
    tasks: int = 0
    load: tuple[str, str] = ("", "")  # load averages when the send started and ended
    profile: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.readers / self.send_seconds if self.send_seconds else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def run_round(
    readers: int, args: argparse.Namespace, services: Services, run: str, folder: Path
) -> Round:
    """One reader count, from an empty database to a verified ledger."""
    from subscriptions.db import create_db_engine
    from subscriptions.migrate import upgrade
    from subscriptions.queue import SEND_DIGEST, TaskQueue

    result = Round(readers)
    name = f"bench_delivery_{run}_{readers}"
    database_url = create_database(services.database_url, name)
    print(f"\n== {readers:,} readers (database {name})", flush=True)
    workers: list[Worker] = []
    stand_in: StandIn | None = None
    profilers: list[Profiler] = []
    engine = create_db_engine(database_url)
    try:
        upgrade(database_url)
        add_topic(database_url)
        result.load_seconds = load_readers(database_url, readers)
        print(
            f"  loaded {readers:,} readers in {result.load_seconds:.1f} s {_own_rss()}", flush=True
        )
        digest_id, result.planner_said, result.plan_seconds = add_post_and_plan(database_url)
        result.planned = sum(ledger(engine, digest_id)[0].values())
        print(
            f"  planned {result.planned:,} deliveries in {result.plan_seconds:.1f} s {_own_rss()}",
            flush=True,
        )
        if result.planned != readers:
            result.problems.append(f"planned {result.planned} deliveries for {readers} readers")

        # One stand-in for the floor and the send: the same receiver doing the same work for both.
        stand_in = StandIn(folder, "stand-in", args.stand_in)
        slots = args.workers * (args.concurrency if args.pool == "prefork" else 1)
        env = worker_env(args, services, database_url, port=stand_in.port)
        os.environ.update({k: v for k, v in env.items() if k.startswith("NEWSLETTER_")})
        if not args.no_floor:
            print(
                f"  floor: {slots} processes over {readers:,} messages (load average "
                f"{_loadavg()})...",
                flush=True,
            )
            result.floor = run_floor(
                database_url, digest_id, readers, args.full_sample, slots, stand_in
            )
            floor = result.floor
            if floor.not_sent or floor.counted != floor.messages + floor.full_messages:
                result.problems.append(
                    f"floor: {floor.not_sent} not sent, stand-in counted {floor.counted} of "
                    f"{floor.messages + floor.full_messages}"
                )
            print(
                f"  floor: {floor.rate:,.0f} emails/s ({floor.seconds:.1f} s; load average "
                f"{floor.load[0]} -> {floor.load[1]}) {_own_rss()}",
                flush=True,
            )

        clear_broker(services.redis_url, whole_db=services.redis_pid is not None)
        workers = [
            Worker(i + 1, env, folder, args.concurrency, args.pool) for i in range(args.workers)
        ]
        deadline = time.monotonic() + 90
        while not all(w.ready() for w in workers):
            if time.monotonic() > deadline:
                raise SystemExit("bench: the workers did not get ready in 90 s")
            time.sleep(0.2)
        time.sleep(1.0)  # the pool processes fork after "ready" is logged on some pools

        groups = process_groups(workers, stand_in, services, name)
        queue = TaskQueue(services.redis_url)
        with Sampler(groups, {w.process.pid for w in workers}) as sampler:
            if args.profile:
                tree = parents()
                pool = (
                    [p for w in workers for p in w.pids(tree)[1:]]
                    if args.pool == "prefork"
                    else [w.process.pid for w in workers]
                )
                profilers = [
                    Profiler(
                        args.py_spy, pid, folder / f"profile-{readers}-{pid}.txt", args.profile_rate
                    )
                    for pid in pool
                ]
            sampler.mark()
            result.load = (_loadavg(), "")
            started = time.time()
            for _ in range(slots * args.senders):
                queue.send(SEND_DIGEST, digest_id)
            result.tasks = slots * args.senders
            result.counts = wait_until_sent(
                result, queue, engine, stand_in, digest_id, started, args
            )
            result.load = (result.load[0], _loadavg())
            result.cpu = sampler.cpu()
            for profiler in profilers:
                profiler.stop()
        result.peaks = sampler.peaks
        counts, id_sum, id_squares, last = ledger(engine, digest_id)
        result.counts = counts
        result.stand_in = stand_in.stats()
        result.send_seconds = (last or time.time()) - started
        result.arrivals = (result.stand_in["first"] - started, result.stand_in["last"] - started)
        result.checksum_ok = (
            result.stand_in["id_sum"] == id_sum and result.stand_in["id_square_sum"] == id_squares
        )
        if result.stand_in["messages"] != readers:
            result.problems.append(
                f"the stand-in counted {result.stand_in['messages']} of {readers}"
            )
        if counts.get("sent", 0) != readers or sum(counts.values()) != readers:
            result.problems.append(f"the ledger says {counts}, not {readers} sent")
        if not result.checksum_ok:
            result.problems.append("the delivery ids the stand-in saw differ from the ledger's")
        if profilers:
            result.profile = summarize_profile([p.output for p in profilers])
    finally:
        for profiler in profilers:
            profiler.stop()
        for worker in workers:
            worker.stop()
        if stand_in is not None:
            stand_in.stop()
        engine.dispose()
        if not args.keep:
            drop_database(services.database_url, name)
    return result


def worker_env(
    args: argparse.Namespace, services: Services, database_url: str, *, port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_ENVIRONMENT="production",
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_BROKER_URL=services.redis_url,
        NEWSLETTER_EMAIL_URL=f"postmark+http://{TOKEN}@127.0.0.1:{port}",
        NEWSLETTER_SECRET_KEY=args.secret,
        NEWSLETTER_BASE_URL="https://news.example.org",
        NEWSLETTER_FROM="Institute Updates <news@example.org>",
        NEWSLETTER_SITE_NAME="Institute Updates",
        # Far above what 2 cores can send: the limiter still takes its turn in Redis per batch.
        NEWSLETTER_RATE_MESSAGES_PER_SECOND="10000000",
        NEWSLETTER_RATE_REQUESTS_PER_SECOND="1000000",
        NEWSLETTER_LOG_LEVEL="INFO",
        C_FORCE_ROOT="1",
    )
    return env


def process_groups(
    workers: list[Worker], stand_in: StandIn, services: Services, database: str
) -> dict[str, Callable[[dict[int, int]], list[int]]]:
    groups: dict[str, Callable[[dict[int, int]], list[int]]] = {}
    for worker in workers:
        groups[worker.name] = worker.pids
    groups["stand-in"] = lambda _tree: [stand_in.pid]
    pg_pid, redis_pid = server_pids(services)
    if pg_pid:
        pg = pg_pid
        # Connections to other databases (other runs or tests on a server given by URL) are not
        # this send's: only the round's database's connections and the server's own processes.
        groups["PostgreSQL"] = lambda tree: [
            p for p in [pg, *descendants(pg, tree)] if _own_backend(p, database)
        ]
    if redis_pid:
        rd = redis_pid
        groups["Redis"] = lambda _tree: [rd]
    me = os.getpid()
    groups[BENCH] = lambda _tree: [me]
    return groups


def _own_backend(pid: int, database: str) -> bool:
    """A PostgreSQL process that is not a connection to another database (`postgres: USER DB …`)."""
    words = cmdline(pid).split()
    if len(words) >= 4 and words[0] == "postgres:" and "(" in words[3]:
        return words[2] == database
    return True


def server_pids(services: Services) -> tuple[int | None, int | None]:
    """PostgreSQL's postmaster and Redis's process ids: the ones started here, or, for servers given
    by URL on this machine, asked of the servers (their CPU counts whoever started them)."""
    pg_pid, redis_pid = services.pg_pid, services.redis_pid
    if pg_pid is None and services.database_url:
        import psycopg

        with suppress(Exception), psycopg.connect(_libpq(services.database_url)) as connection:
            row = connection.execute("SHOW data_directory").fetchone()
            assert row is not None
            pid = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
            pg_pid = pid if Path(f"/proc/{pid}").exists() else None
    if redis_pid is None and services.redis_url:
        import redis

        with suppress(Exception):
            client = redis.Redis.from_url(services.redis_url)
            pid = int(client.info("server")["process_id"])
            client.close()
            redis_pid = pid if Path(f"/proc/{pid}").exists() else None
    return pg_pid, redis_pid


def wait_until_sent(
    result: Round,
    queue: Any,
    engine: Engine,
    stand_in: StandIn,
    digest_id: int,
    started: float,
    args: argparse.Namespace,
) -> dict[str, int]:
    """Enqueue `newsletter.dispatch` every --dispatch-every seconds until the ledger has no open
    work; progress every 10 s. The ledger is read only when the stand-in has them all (or every
    15 s), so that watching costs PostgreSQL little."""
    last_report, last_count, last_change = started, 0, time.time()
    last_ledger, last_dispatch, seen = started, 0.0, 0
    while True:
        time.sleep(1.0)
        now = time.time()
        if now - last_dispatch >= args.dispatch_every - 0.01:
            queue.send("newsletter.dispatch")
            result.tasks += 1
            last_dispatch = now
        count = int(stand_in.stats()["messages"])
        if count != seen:
            seen, last_change = count, now
        if now - last_report >= 10:
            rate = (count - last_count) / (now - last_report) if now > last_report else 0.0
            print(
                f"  {now - started:6.0f} s  {count:>9,} received  ({rate:,.0f}/s lately; load "
                f"average {_loadavg()})",
                flush=True,
            )
            last_report, last_count = now, count
        if count >= result.readers or now - last_ledger >= 15:
            last_ledger = now
            counts = ledger(engine, digest_id)[0]
            if counts.get("pending", 0) + counts.get("claimed", 0) == 0:
                return counts
        if now - last_change > args.stall:
            raise SystemExit(f"bench: nothing received for {args.stall:.0f} s; see the worker logs")
        if now - started > args.timeout:
            raise SystemExit(f"bench: not done after {args.timeout:.0f} s (--timeout)")


# ------------------------------------------------------------------------------------ report


def report_round(r: Round, args: argparse.Namespace) -> None:
    print()
    print(f"  -- {r.readers:,} readers")
    print(f"  load          {r.load_seconds:8.1f} s   readers and subscriptions, INSERT … SELECT")
    said = f"; PlanResult.planned says {r.planner_said:,}" if r.planner_said != r.planned else ""
    print(
        f"  planning      {r.plan_seconds:8.1f} s   plan_post_alerts, one transaction "
        f"({r.planned:,} deliveries in the ledger{said})"
    )
    print(
        f"  send          {r.send_seconds:8.1f} s   first send_digest enqueued -> last sent_at "
        f"(stand-in: first request at +{r.arrivals[0]:.1f} s, last at +{r.arrivals[1]:.1f} s)"
    )
    verdict = "meets" if r.rate >= TARGET_RATE else "BELOW"
    print(
        f"  rate          {r.rate:8,.0f} emails/s   ({verdict} the {TARGET_RATE:,.0f}/s target; "
        f"load average {r.load[0]} -> {r.load[1]})"
    )
    f = r.floor
    if f.messages:
        share = r.rate / f.rate if f.rate else 0.0
        verdict = "meets" if share >= TARGET_FLOOR_SHARE else "BELOW"
        render_us = f.render_seconds / f.messages * 1e6
        send_us = f.send_seconds / f.messages * 1e6
        print(
            f"  floor         {f.rate:8,.0f} emails/s   {f.processes} processes, body once + "
            f"personalize ({f.seconds:.1f} s; load average {f.load[0]} -> {f.load[1]}): render "
            f"{render_us:.0f} µs, provider.send {send_us:.0f} µs (of which serialize ≈ "
            f"{f.serialize_us:.0f} µs) per email, wall clock in each process"
        )
        print(
            f"  naive floor   {f.full_rate:8,.0f} emails/s   full_render per reader, one process, "
            f"{f.full_messages:,} sampled"
        )
        print(
            f"  ratio         {share:8.2f}   to the floor ({verdict} the target of {TARGET_FLOOR_SHARE})"
        )
    print(
        f"  checks        stand-in ({args.stand_in}) counted {r.stand_in.get('messages', 0):,} in "
        f"{r.stand_in.get('requests', 0):,} requests; ledger {r.counts}; ids "
        f"{'match' if r.checksum_ok else 'DIFFER'}; {r.tasks:,} tasks enqueued"
    )
    busy = sum(r.cpu.values())
    cores = os.cpu_count() or 1
    share = busy / r.send_seconds / cores * 100 if r.send_seconds else 0.0
    ceiling = cores * r.readers / busy if busy else 0.0
    print(
        f"  CPU           {busy:.1f} s in {r.send_seconds:.1f} s on {cores} cores ({share:.0f} % of "
        f"them; the rest idle or taken by other work: load average {r.load[0]} before, {r.load[1]} "
        f"after). At this CPU per email, {cores} cores of its own would send at most "
        f"{ceiling:,.0f}/s. Per email:"
    )
    for group, seconds in sorted(r.cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {group:<30}{seconds:8.1f} s  {seconds / r.readers * 1e6:7.0f} µs")
    groups = cpu_by_group(r.cpu)
    product = sum(v for k, v in groups.items() if k in PRODUCT_GROUPS)
    product_us = product / r.readers * 1e6
    verdict = "meets" if product_us <= TARGET_CPU_US else "ABOVE"
    print(
        "  CPU per email by process group: "
        + ", ".join(f"{k} {v / r.readers * 1e6:.0f} µs" for k, v in groups.items())
        + f"; workers + PostgreSQL + Redis {product_us:.0f} µs ({verdict} the target of "
        f"{TARGET_CPU_US:.0f} µs; load average {r.load[0]} -> {r.load[1]})"
    )
    if f.messages and f.cpu:
        print(
            "  floor CPU per email by process group: "
            + ", ".join(f"{k} {v / f.messages * 1e6:.0f} µs" for k, v in sorted(f.cpu.items()))
            + f" (load average {f.load[0]} -> {f.load[1]}); peak RSS "
            + ", ".join(
                f"{p.group} {pid} {p.hwm_kib / 1024:.0f} MiB"
                for pid, p in sorted(f.peaks.items(), key=lambda kv: (kv[1].group, kv[0]))
            )
        )
    print(
        "  peak RSS (VmHWM; PostgreSQL's include the shared buffers each touched; its short-lived"
        " parallel and autovacuum workers as one line each, with their count and largest):"
    )
    for pids, label, group, kib in _peak_lines(r.peaks):
        flag = "  OVER" if kib / 1024 >= TARGET_RSS_MIB else ""
        print(f"    {group:<22}{pids:>12}  {kib / 1024:7.0f} MiB  {label[:60]}{flag}")
    if r.profile:
        print("  profile (py-spy):")
        for line in r.profile:
            print(line)
    for problem in r.problems:
        print(f"  PROBLEM {problem}")


#: The process groups the CPU target counts (the stand-in, a provider's part, and this process not).
PRODUCT_GROUPS = ("workers", "PostgreSQL", "Redis")


def cpu_by_group(cpu: dict[str, float]) -> dict[str, float]:
    """CPU seconds by process group: workers (every worker and its pool), PostgreSQL (all its
    kinds), Redis, the stand-in, and this process."""
    groups: dict[str, float] = {}
    for kind, seconds in cpu.items():
        group = (
            "workers"
            if kind.startswith("worker")
            else "PostgreSQL"
            if kind.startswith("PostgreSQL")
            else kind
        )
        groups[group] = groups.get(group, 0.0) + seconds
    order = ["workers", "PostgreSQL", "Redis", "stand-in", BENCH]
    return {k: groups[k] for k in sorted(groups, key=lambda k: [*order, k].index(k))}


def _peak_lines(peaks: dict[int, Peak]) -> list[tuple[str, str, str, int]]:
    """(pid or count, label, group, VmHWM KiB) per process; PostgreSQL's parallel and autovacuum
    workers (one per query or table, many over a long run) folded into one line per kind."""
    lines: list[tuple[str, str, str, int]] = []
    folded: dict[str, list[int]] = {}
    for pid, peak in sorted(peaks.items(), key=lambda kv: (kv[1].group, kv[0])):
        kind = next((k for k in ("parallel worker", "autovacuum worker") if k in peak.label), None)
        if kind is None:
            lines.append((str(pid), peak.label, peak.group, peak.hwm_kib))
        else:
            folded.setdefault(f"postgres: {kind}s", []).append(peak.hwm_kib)
    for label, sizes in folded.items():
        lines.append((f"{len(sizes)} procs", label, "PostgreSQL", max(sizes)))
    return sorted(lines, key=lambda line: line[2])


def report_summary(rounds: list[Round]) -> None:
    print("\n== summary")
    print(f"  {'readers':>10}{'load s':>9}{'plan s':>9}{'send s':>9}{'emails/s':>10}{'floor/s':>10}"
          f"{'ratio':>7}{'CPU µs/email':>14}{'max RSS MiB':>13}  {'load average (send; floor)':<30} checks")  # fmt: skip
    for r in rounds:
        biggest = max((p.hwm_kib for p in r.peaks.values() if p.group != BENCH), default=0) / 1024
        share = r.rate / r.floor.rate if r.floor.rate else math.nan
        groups = cpu_by_group(r.cpu)
        product_us = sum(v for k, v in groups.items() if k in PRODUCT_GROUPS) / r.readers * 1e6
        load = f"{r.load[0].split(' ')[0]}-{r.load[1].split(' ')[0]}"
        if r.floor.messages:
            load += f"; {r.floor.load[0].split(' ')[0]}-{r.floor.load[1].split(' ')[0]}"
        print(
            f"  {r.readers:>10,}{r.load_seconds:>9.1f}{r.plan_seconds:>9.1f}{r.send_seconds:>9.1f}"
            f"{r.rate:>10,.0f}{r.floor.rate:>10,.0f}{share:>7.2f}{product_us:>14.0f}"
            f"{biggest:>13.0f}  {load:<30} {'OK' if r.ok else 'FAILED'}"
        )
    if len(rounds) >= 2:
        small, large = min(rounds, key=lambda r: r.readers), max(rounds, key=lambda r: r.readers)
        factor = large.readers / small.readers
        send = large.send_seconds / small.send_seconds if small.send_seconds else math.nan
        plan = large.plan_seconds / small.plan_seconds if small.plan_seconds else math.nan
        verdict = "linear" if send <= factor * 1.15 else "SUPERLINEAR"
        print(
            f"  {large.readers:,} vs {small.readers:,} readers ({factor:g}x): send time "
            f"{send:.1f}x ({verdict}), planning {plan:.1f}x"
        )
    largest = max(rounds, key=lambda r: r.readers)
    biggest = (
        max((p.hwm_kib for r in rounds for p in r.peaks.values() if p.group != BENCH), default=0)
        / 1024
    )
    print(
        f"  targets: {largest.rate:,.0f} emails/s at {largest.readers:,} readers (≥ {TARGET_RATE:,.0f}; "
        f"load average {largest.load[0]} -> {largest.load[1]}); "
        f"largest peak RSS {biggest:.0f} MiB (< {TARGET_RSS_MIB:.0f}; the benchmark's own process,"
        " which also runs the floor, not counted)"
    )


# ------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/delivery.py",
        description="One digest to N readers on PostgreSQL with real workers, against the floor.",
    )
    parser.add_argument(
        "--readers",
        default="100000,1000000",
        help="comma-separated counts (default 100000,1000000)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: --readers 20000")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="pool processes per worker (default 2)"
    )
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    parser.add_argument(
        "--senders", type=int, default=2, help="send_digest tasks per pool process at the start"
    )
    parser.add_argument(
        "--full-sample", type=int, default=10000, help="readers rendered naively (default 10000)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor loops")
    parser.add_argument(
        "--stand-in",
        choices=("count", "parse"),
        default="count",
        help="what the stand-in does with each batch, for the floor and the send alike: find the "
        "delivery ids with one regular-expression scan (count, default, ~8 µs per email) or "
        "json.loads it (parse, ~30 µs per email)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy every pool process")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "", help="py-spy binary")
    parser.add_argument("--profile-rate", type=int, default=50, help="samples a second")
    parser.add_argument(
        "--database-url", help="an existing PostgreSQL server (postgresql+psycopg://…)"
    )
    parser.add_argument("--redis-url", help="an existing Redis (redis://host:port/db)")
    parser.add_argument("--keep", action="store_true", help="leave the databases (and services)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per send at most")
    parser.add_argument("--stall", type=float, default=120, help="give up after this long idle")
    parser.add_argument(
        "--provider",
        help="comma-separated postmark,sendgrid,mailgun,resend,ses: send through each at its default"
        " rate instead (bench/provider_rates.py; needs --redis-url; --readers takes one count)",
    )
    parser.add_argument(
        "--dispatch-every",
        type=float,
        default=1.0,
        help="seconds between newsletter.dispatch tasks (default 1; beat's schedule is 30)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.readers = "20000"
    try:
        args.counts = sorted(
            {int(n.replace("_", "")) for n in args.readers.split(",") if n.strip()}
        )
    except ValueError:
        parser.error("--readers takes whole numbers, comma-separated")
    if not args.counts or min(args.counts) < 1:
        parser.error("--readers needs at least one count above 0")
    if bool(args.database_url) != bool(args.redis_url) and not args.provider:
        parser.error("give both --database-url and --redis-url, or neither")
    if min(args.workers, args.concurrency, args.senders) < 1:
        parser.error("--workers, --concurrency and --senders must be at least 1")
    if args.profile and not args.py_spy:
        parser.error("--profile needs py-spy (pip install py-spy, or --py-spy PATH)")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.provider:
        import provider_rates

        names = [n.strip() for n in args.provider.split(",") if n.strip()]
        unknown = [n for n in names if n not in provider_rates.NAMES]
        if unknown or not args.redis_url:
            print(
                f"--provider takes {', '.join(provider_rates.NAMES)} and needs --redis-url",
                file=sys.stderr,
            )
            return 2
        return provider_rates.main(names, max(args.counts), args.redis_url)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    run = secrets.token_hex(3)
    args.secret = secrets.token_urlsafe(32)
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"newsletter-delivery-{run}"
    folder.mkdir(parents=True)
    for key in [k for k in os.environ if k.startswith("NEWSLETTER_")]:
        del os.environ[key]
    services = Services(args.database_url or "", args.redis_url or "")
    rounds: list[Round] = []
    finished = False
    try:
        if not args.database_url:
            print("starting PostgreSQL and Redis (scripts/services.sh)...", flush=True)
            start_services(services)
        print(
            f"topic-newsletter delivery benchmark: {', '.join(f'{n:,}' for n in args.counts)} "
            f"readers; {args.workers} x `newsletter worker --concurrency {args.concurrency} "
            f"--pool {args.pool}`, {args.senders} send_digest per pool process, dispatch every "
            f"{args.dispatch_every:g} s, {os.cpu_count()} cores, load average {_loadavg()}"
        )
        for line in services.versions or [f"given: {services.database_url}, {services.redis_url}"]:
            print(f"  service  {line}")
        for readers in args.counts:
            rounds.append(run_round(readers, args, services, run, folder))
            report_round(rounds[-1], args)
        report_summary(rounds)
        finished = all(r.ok for r in rounds)
        return 0 if finished else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started...", file=sys.stderr)
        return 130
    finally:
        if args.keep and services.pg_pid:
            print(
                f"--keep: PostgreSQL (pid {services.pg_pid}, {services.database_url}) and Redis "
                f"(pid {services.redis_pid}) left running; their folder is {services.folder}"
            )
        else:
            services.stop()
        if finished and not args.profile:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs{' and profiles' if args.profile else ''} kept in {folder}")


def _own_rss() -> str:
    """This process's resident memory, now and at its peak."""
    now, peak = status_kib(os.getpid(), "VmRSS") or 0, status_kib(os.getpid(), "VmHWM") or 0
    return f"(this process: {now / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB)"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stand-in"]:
        stand_in_main(sys.argv[2] if len(sys.argv) > 2 else "count")
    else:
        sys.exit(main())
