"""Benchmark: plan and render one daily digest for 100,000 readers on PostgreSQL.

    .venv/bin/python bench/digest.py [--readers 100000] [--topics 10] [--posts 30] [--zones 20]
                                     [--sample 2000] [--batch 500] [--plan-limit 300]
                                     [--spanish FRACTION] [--database-url URL]

Starts PostgreSQL the way scripts/services.sh does (by sourcing it: svc_init, svc_start_postgres),
unless --database-url names an empty database to use; migrates it with subscriptions.migrate.upgrade;
adds the topics with subscriptions.topics.add_topic and the posts with subscriptions.posts.add_post;
bulk-loads the readers and their subscriptions with COPY (readers spread over --zones time zones, each
with 1 to 3 daily subscriptions, every reader whose number modulo 100 is below --spanish x 100 reading
Spanish (NEWSLETTER_LANGUAGES=en,es then); then ANALYZE of the loaded tables, as autovacuum would do after such a
load; the ledger tables stay as the migration left them). The posts are released inside the window of
the daily period that has just ended in every zone, so every reader is due one email.

Then, timed:

1. Planning: worker.digests.planner.plan_periodic(session, DigestKind.DAILY, now=...) in one
   transaction, as the scheduler's tick runs it. Target: under 5 s for 100,000 readers, the first
   day and the next day, each printed with the CPU seconds it took (this process, and the
   PostgreSQL backend that ran it, read from /proc) and the load average. A watchdog
   cancels it after --plan-limit seconds and reports it as not finished; the deliveries for the next
   steps are then planned by the same call with `SET LOCAL enable_nestloop = off` (a diagnostic,
   printed as such). Then the same tick once more, which plans nothing new (the cost of every
   beat tick until the next period ends).
2. Rendering the Sender's way, without claiming or sending: deliveries in batches of --batch by keyset
   on the id, worker.digests.jobs.load_jobs per batch, then Sender._message per reader (the shared body
   from the Sender's own cache, rendered once per variant on a miss; the reader's signed links; the
   reasons line; DigestRenderer.personalize; the list headers), with the renderer timed. The headline
   figure is the sender's path end to end, load_jobs included (emails/s and CPU µs per email).
3. The naive way on --sample of those readers: the same message with DigestRenderer.full_render (a
   whole Jinja2 render and CSS inlining per reader), extrapolated to all readers. Each sampled email
   is checked to be byte-identical (subject, text, HTML) to the fast path's.

Prints the figures, the ratio naive/fast per email with load_jobs counted on both sides (the honest
figure) and of the render alone (target: at least 5), and the peak resident
memory of this process and of the PostgreSQL it started. Stops that PostgreSQL by process id (fast
shutdown) and removes its folder, also on Ctrl-C or SIGTERM. Exit status 0 when both targets are met
and the check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from procs import alive  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from mail.bodies import Body, DigestRenderer, ReaderParts, reasons_line  # noqa: E402
from mail.links import list_headers, reader_links  # noqa: E402
from mail.providers import EmailMessage, provider_from_url  # noqa: E402
from mail.rendering import RenderedEmail  # noqa: E402
from subscriptions.db import create_db_engine, session_factory, transaction  # noqa: E402
from subscriptions.i18n import reader_language  # noqa: E402
from subscriptions.migrate import upgrade  # noqa: E402
from subscriptions.models import Delivery, DigestKind, Post, delivery_posts  # noqa: E402
from subscriptions.posts import add_post  # noqa: E402
from subscriptions.settings import Settings, load_settings  # noqa: E402
from subscriptions.templating import template_environment  # noqa: E402
from subscriptions.tokens import TokenSigner  # noqa: E402
from subscriptions.topics import add_topic  # noqa: E402
from worker.digests import planner  # noqa: E402
from worker.digests.jobs import DigestInfo, Job, load_jobs  # noqa: E402
from worker.digests.schedule import latest_daily  # noqa: E402
from worker.digests.sender import Sender  # noqa: E402

ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Madrid",
    "Europe/Moscow",
    "Africa/Cairo",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Mexico_City",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/Azores",
]
NOW = datetime(2024, 6, 12, 23, 0, tzinfo=UTC)  # every zone's 07:00 of some date has just passed
PLAN_TARGET_SECONDS = 5.0
RATIO_TARGET = 5.0


# ------------------------------------------------------------------------------------ PostgreSQL


@dataclass
class Postgres:
    """The server this run started (empty when --database-url was given)."""

    url: str = ""
    pid: int | None = None
    folder: Path | None = None
    version: str = ""

    def start(self) -> None:
        script = r"""
set -u
source scripts/services.sh
svc_init
echo "SVC_DIR=$SVC_DIR"
if svc_start_postgres; then echo "PG_PID=$PG_PID"; echo "PG_URL=$PG_URL"
else [[ -n $PG_PID ]] && echo "PG_PID=$PG_PID"; echo "FAILED=$SVC_WHY"; exit 1; fi
"""
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
            start_new_session=True,
        )
        values = dict(
            line.split("=", 1)
            for line in done.stdout.splitlines()
            if "=" in line and line.split("=", 1)[0].isupper()
        )
        self.folder = Path(values["SVC_DIR"]) if "SVC_DIR" in values else None
        self.pid = int(values["PG_PID"]) if values.get("PG_PID", "").isdigit() else None
        self.version = next(
            (
                ln.split(", pid")[0]
                for ln in done.stdout.splitlines()
                if ln.startswith("PostgreSQL:")
            ),
            "",
        )
        if done.returncode != 0 or "PG_URL" not in values:
            self.stop()
            raise SystemExit(
                f"bench: could not start PostgreSQL: {values.get('FAILED', done.stderr.strip())}"
                " (apt-get install -y postgresql, or pass --database-url)"
            )
        self.url = values["PG_URL"]

    def peak_rss_mib(self) -> float | None:
        """VmHWM of the postmaster and its children (backends), summed, in MiB."""
        if self.pid is None:
            return None
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(entry.name) != self.pid and int(stat[1]) != self.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1024

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), wait, then remove the folder."""
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(self.pid):
                print(f"  PostgreSQL (pid {self.pid}) did not stop in 30 s: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


# ------------------------------------------------------------------------------------ data


def psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def load(url: str, args: argparse.Namespace) -> tuple[int, float]:
    """Topics and posts through the product's operations, readers and subscriptions by COPY.
    Returns (subscriptions loaded, seconds)."""
    t0 = time.perf_counter()
    sessions = session_factory(create_db_engine(url))
    zones = ZONES[: args.zones]
    periods = [latest_daily(NOW, zone, hour=7) for zone in zones]
    # Inside every zone's just-ended window: after the latest start, up to the earliest end.
    opens, closes = max(p.start for p in periods), min(p.end for p in periods)
    assert opens < closes, "no instant lies in every zone's window"
    with transaction(sessions) as session:
        topic_slugs = [f"topic-{n}" for n in range(args.topics)]
        for n, slug in enumerate(topic_slugs):
            add_topic(session=session, slug=slug, name=f"Topic {n:02d}", description=f"About {n}.")
        for n in range(args.posts):
            slugs = [topic_slugs[n % args.topics]]
            if n % 3 == 0:
                slugs.append(topic_slugs[(n + 3) % args.topics])
            info = add_post(
                session=session,
                title=f"Post {n}: what the numbers say about policy {n}",
                link=f"https://www.example.org/posts/{n}",
                topics=slugs,
                summary=(
                    f"<p>A summary of post {n}, two sentences long, with a "
                    f'<a href="https://www.example.org/data/{n}">link to the data</a>. '
                    "It reads like the first paragraph of a policy brief.</p>"
                ),
            )
            post = session.get(Post, info.id)
            assert post is not None
            post.released_at = post.published_at = opens + (closes - opens) * (n + 1) / (
                args.posts + 1
            )
    rng = random.Random(42)
    created = NOW - timedelta(days=30)
    subscriptions = 0
    with psycopg.connect(psycopg_dsn(url)) as conn:
        topic_ids = [
            row[0] for row in conn.execute("SELECT id FROM topics ORDER BY slug").fetchall()
        ]
        with conn.cursor() as cur:
            with cur.copy(
                "COPY subscribers (id, email, status, timezone, token_version, created_at,"
                " confirmed_at, language) FROM STDIN"
            ) as copy:
                spanish = round(args.spanish * 100)
                for n in range(1, args.readers + 1):
                    copy.write_row(
                        (
                            n,
                            f"reader{n}@example.org",
                            "active",
                            zones[n % len(zones)],
                            1,
                            created,
                            created,
                            "es" if n % 100 < spanish else None,
                        )
                    )
            cur.execute("SELECT setval('subscribers_id_seq', %s)", (args.readers,))
            with cur.copy(
                "COPY subscriptions (subscriber_id, topic_id, frequency, created_at, updated_at)"
                " FROM STDIN"
            ) as copy:
                for n in range(1, args.readers + 1):
                    for topic_id in rng.sample(topic_ids, rng.randint(1, 3)):
                        copy.write_row((n, topic_id, "daily", created, created))
                        subscriptions += 1
        conn.commit()
        conn.autocommit = True
        for table in ("subscribers", "subscriptions", "topics", "posts", "post_topics"):
            conn.execute(f"ANALYZE {table}")
    return subscriptions, time.perf_counter() - t0


# ------------------------------------------------------------------------------------ timing


class TimedRenderer(DigestRenderer):
    """The product's renderer, timing and counting what the Sender asks of it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(template_environment(settings, "email"))
        self.bodies = 0
        self.body_seconds = 0.0
        self.personal_seconds = 0.0

    def body(self, *args: Any, **kwargs: Any) -> Body:
        t0 = time.perf_counter()
        try:
            return super().body(*args, **kwargs)
        finally:
            self.bodies += 1
            self.body_seconds += time.perf_counter() - t0

    def personalize(self, body: Body, parts: ReaderParts) -> RenderedEmail:
        t0 = time.perf_counter()
        try:
            return super().personalize(body, parts)
        finally:
            self.personal_seconds += time.perf_counter() - t0


@dataclass
class RenderRun:
    """What the fast path did over every delivery."""

    deliveries: int = 0
    batches: int = 0
    bodies: int = 0
    variants: int = 0
    bytes: int = 0
    load_seconds: float = 0.0
    message_seconds: float = 0.0
    load_cpu: float = 0.0
    message_cpu: float = 0.0
    body_seconds: float = 0.0
    personal_seconds: float = 0.0
    sample: list[tuple[DigestInfo, Job, EmailMessage]] = field(default_factory=list)


def make_sender(url: str, settings: Settings, renderer: DigestRenderer) -> Sender:
    provider = provider_from_url(f"outbox://{Path(tempfile.gettempdir()) / 'bench-digest-unused'}")
    return Sender(
        session_factory(create_db_engine(url)),
        provider,
        renderer,
        settings,
        TokenSigner(settings.secret_key),
    )


def render_all(
    url: str, digest_ids: list[int], args: argparse.Namespace, settings: Settings
) -> RenderRun:
    """Every delivery the Sender's way, without claiming or sending: load_jobs per batch of
    deliveries (keyset on the id), then Sender._message per job: the shared body from the Sender's
    own cache (rendered on a miss), the reader's signed links, personalize, the list headers."""
    sessions = session_factory(create_db_engine(url))
    renderer = TimedRenderer(settings)
    sender = make_sender(url, settings, renderer)
    run = RenderRun()
    variants: set[tuple[int, tuple[object, ...]]] = set()
    for digest_id in digest_ids:
        last = 0
        while True:
            t0 = time.perf_counter()
            c0 = time.process_time()
            with sessions() as session:
                ids = list(
                    session.scalars(
                        select(Delivery.id)
                        .where(Delivery.digest_id == digest_id, Delivery.id > last)
                        .order_by(Delivery.id)
                        .limit(args.batch)
                    )
                )
                if not ids:
                    break
                info, jobs = load_jobs(session, ids)
            run.load_seconds += time.perf_counter() - t0
            run.load_cpu += time.process_time() - c0
            assert info is not None
            last = ids[-1]
            run.batches += 1
            t0 = time.perf_counter()
            c0 = time.process_time()
            messages = [sender._message(info, job, "bench") for job in jobs]
            run.message_seconds += time.perf_counter() - t0
            run.message_cpu += time.process_time() - c0
            for job, message in zip(jobs, messages, strict=True):
                variants.add((info.id, job.variant))
                run.deliveries += 1
                run.bytes += len(message.html or "") + len(message.text)
                if len(run.sample) < args.sample:
                    run.sample.append((info, job, message))
    run.variants = len(variants)
    run.bodies = renderer.bodies
    run.body_seconds = renderer.body_seconds
    run.personal_seconds = renderer.personal_seconds
    return run


def naive_message(
    renderer: DigestRenderer, settings: Settings, signer: TokenSigner, info: DigestInfo, job: Job
) -> EmailMessage:
    """Sender._message with a full Jinja2 render and CSS inlining per reader instead of a shared
    body: the same links, headers and message fields."""
    links = reader_links(
        settings, signer, subscriber_id=job.subscriber_id, version=job.token_version
    )
    language = reader_language(settings.language_list, job.language)
    parts = ReaderParts(links.manage, links.unsubscribe, reasons_line(job.subscriptions, language))
    subject, email = renderer.full_render(
        info.kind,
        job.groups,
        parts,
        intro_markdown=info.intro_markdown,
        editorial_subject=info.subject,
        language=language,
    )
    headers = list_headers(settings, links)
    domain = urlsplit(settings.base_url).hostname or "localhost"
    return EmailMessage(
        to=job.email,
        sender=settings.from_address,
        subject=subject,
        text=email.text,
        html=email.html,
        headers=headers,
        message_id=f"<nl.{info.id}.{job.delivery_id}@{domain}>",
        metadata={"delivery_id": str(job.delivery_id)},
        idempotency_key=f"delivery-{job.delivery_id}",
    )


def render_naive(run: RenderRun, settings: Settings) -> tuple[float, float, int]:
    """The naive way for the sampled readers; (seconds, CPU seconds, emails whose subject, text or
    HTML differ from the fast path's)."""
    renderer = DigestRenderer(template_environment(settings, "email"))
    signer = TokenSigner(settings.secret_key)
    mismatches = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    naive = [naive_message(renderer, settings, signer, info, job) for info, job, _ in run.sample]
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    for (_, _, fast), slow in zip(run.sample, naive, strict=True):
        if (fast.subject, fast.text, fast.html) != (slow.subject, slow.text, slow.html):
            mismatches += 1
    return seconds, cpu, mismatches


@dataclass
class PlanTiming:
    """One timed tick: wall seconds, CPU seconds of this process and of the PostgreSQL backend
    that ran it (None when its /proc entry cannot be read: a server on another machine), and the
    1-minute load average at its end."""

    seconds: float
    client_cpu: float
    backend_cpu: float | None
    load: str

    def cpu(self) -> str:
        backend = f"{self.backend_cpu:.2f} s" if self.backend_cpu is not None else "?"
        return (
            f"CPU {self.client_cpu:.2f} s here + {backend} in the PostgreSQL backend;"
            f" load average {self.load}"
        )


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far, from /proc (None if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def timed_plan(
    sessions: sessionmaker[Session], dsn: str, now: datetime, limit: float, setup: str = ""
) -> tuple[PlanTiming, list[planner.PlanResult] | None]:
    """plan_periodic(DAILY) in one transaction, as the scheduler runs it; (timing, results), or
    (timing, None) when it ran past `limit` seconds (0: no limit) and was cancelled."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    done = threading.Event()
    watchdog: threading.Thread | None = None
    backend: int | None = None
    b0: float | None = None

    def timing() -> PlanTiming:
        b1 = process_cpu(backend) if backend is not None else None
        return PlanTiming(
            time.perf_counter() - t0,
            time.process_time() - c0,
            b1 - b0 if b1 is not None and b0 is not None else None,
            loadavg().split()[0],
        )

    try:
        with transaction(sessions) as session:
            if setup:
                session.execute(text(setup))
            backend = int(session.scalar(text("SELECT pg_backend_pid()")) or 0)
            b0 = process_cpu(backend)
            if limit:
                watchdog = threading.Thread(
                    target=cancel_after, args=(dsn, backend, limit, done), daemon=True
                )
                watchdog.start()
            results = planner.plan_periodic(session, DigestKind.DAILY, now=now)
            session.flush()
            spent = timing()  # before the commit, while the backend is surely this one's
    except DBAPIError as exc:
        if "cancel" not in str(exc).lower():
            raise
        return timing(), None
    finally:
        done.set()
        if watchdog is not None:
            watchdog.join()
    spent.seconds = time.perf_counter() - t0  # the commit included
    return spent, results


def plan_next_day(
    database_url: str, sessions: sessionmaker[Session], args: argparse.Namespace
) -> tuple[PlanTiming, list[planner.PlanResult] | None]:
    """The day after: the ledger analyzed (as autovacuum does after a day's inserts), new posts
    released in every zone's next window, and that day's tick timed. A planner whose plans assume
    the just-written rows are not there (nested loops) would take minutes here."""
    with psycopg.connect(psycopg_dsn(database_url), autocommit=True) as conn:
        for table in ("deliveries", "delivery_posts", "digests", "digest_marks", "posts"):
            conn.execute(f"ANALYZE {table}")
    tomorrow = NOW + timedelta(days=1)
    periods = [latest_daily(tomorrow, zone, hour=7) for zone in ZONES[: args.zones]]
    opens, closes = max(p.start for p in periods), min(p.end for p in periods)
    with transaction(sessions) as session:
        for n in range(args.posts):
            info = add_post(
                session=session,
                title=f"Day two, post {n}",
                link=f"https://www.example.org/day-two/{n}",
                topics=[f"topic-{n % args.topics}"],
            )
            post = session.get(Post, info.id)
            assert post is not None
            post.released_at = post.published_at = opens + (closes - opens) * (n + 1) / (
                args.posts + 1
            )
    return timed_plan(sessions, psycopg_dsn(database_url), tomorrow, args.plan_limit)


def cancel_after(dsn: str, pid: int, limit: float, done: threading.Event) -> None:
    """After `limit` seconds, cancel the backend's statement, again and again until `done`
    (a cancel between two statements of the transaction is a no-op)."""
    if done.wait(limit):
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not done.is_set():
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
            done.wait(0.2)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(args: argparse.Namespace, database_url: str) -> int:
    print(f"load average: {loadavg()}")
    t0 = time.perf_counter()
    upgrade(database_url)
    print(f"migrated in {time.perf_counter() - t0:.1f} s")
    subscriptions, seconds = load(database_url, args)
    print(
        f"loaded {args.readers:,} readers in {args.zones} time zones, {subscriptions:,} daily"
        f" subscriptions to {args.topics} topics, {args.posts} posts: {seconds:.1f} s"
    )

    sessions = session_factory(create_db_engine(database_url))
    first, results = timed_plan(sessions, psycopg_dsn(database_url), NOW, args.plan_limit)
    plan_seconds = first.seconds
    finished = results is not None
    if results is None:
        print(
            f"planning: NOT FINISHED after {plan_seconds:.0f} s (cancelled; target <"
            f" {PLAN_TARGET_SECONDS:.0f} s); see the diagnostics below"
        )
        # Only to have deliveries to render: the same planner, hash joins forced.
        nested, results = timed_plan(
            sessions, psycopg_dsn(database_url), NOW, 0, "SET LOCAL enable_nestloop = off"
        )
        assert results is not None
        print(
            f"  diagnostic: the same plan_periodic with enable_nestloop=off: {nested.seconds:.1f} s"
        )
    rerun, _ = timed_plan(sessions, psycopg_dsn(database_url), NOW + timedelta(minutes=1), 0)
    with sessions() as session:
        deliveries = session.scalar(select(func.count()).select_from(Delivery)) or 0
        carried = session.scalar(select(func.count()).select_from(delivery_posts)) or 0
    digest_ids = sorted({r.digest_id for r in results})
    if finished:
        print(
            f"planning, the first day: {deliveries:,} deliveries ({carried:,} delivery-post rows),"
            f" {args.zones} zones in {len(digest_ids)} digest runs: {plan_seconds:.2f} s"
            f" ({deliveries / plan_seconds:,.0f} readers/s; target < {PLAN_TARGET_SECONDS:.0f} s);"
            f" {first.cpu()}"
        )
    print(
        f"  PlanResult.planned summed: {sum(r.planned for r in results):,} (the ledger holds"
        f" {deliveries:,})"
    )
    print(f"rerun of the same tick (plans nothing new): {rerun.seconds:.2f} s; {rerun.cpu()}")
    next_day, next_results = plan_next_day(database_url, sessions, args)
    next_ok = next_results is not None and next_day.seconds < PLAN_TARGET_SECONDS
    if next_results is None:
        print(f"the next day: NOT FINISHED after {next_day.seconds:.0f} s (cancelled)")
    else:
        print(
            f"planning, the next day (ledger analyzed, {args.posts} new posts): "
            f"{sum(r.planned for r in next_results):,} deliveries planned in"
            f" {next_day.seconds:.2f} s (target < {PLAN_TARGET_SECONDS:.0f} s); {next_day.cpu()}"
        )

    settings = load_settings(
        _env_file=None,
        database_url=database_url,
        secret_key="bench-secret-key-0123456789abcdef",
        base_url="https://news.example.org",
        site_name="Institute Updates",
        from_address="Institute Updates <news@example.org>",
        environment="test",
        languages="en,es" if args.spanish else "en",
    )
    fast = render_all(database_url, digest_ids, args, settings)
    naive_seconds, naive_cpu, mismatches = render_naive(fast, settings)
    n = len(fast.sample)
    naive_per = naive_seconds / n
    fast_per = fast.message_seconds / fast.deliveries
    load_per = fast.load_seconds / fast.deliveries
    # The sender's path end to end: load_jobs (read the batch's readers, posts and topics) and
    # the message per reader. The naive path would read the same rows: load_jobs on both sides.
    end_to_end = fast.deliveries / (fast.message_seconds + fast.load_seconds)
    naive_end_to_end = 1 / (naive_per + load_per)
    print(
        f"rendering the Sender's way (load_jobs per {args.batch}, Sender._message per reader):"
        f" {fast.deliveries:,} emails, {fast.bytes / fast.deliveries / 1024:.1f} KiB each"
    )
    cpu_each = (fast.load_cpu + fast.message_cpu) / fast.deliveries
    print(
        f"  with load_jobs (the sender's path end to end): {end_to_end:,.0f} emails/s"
        f" ({1e6 / end_to_end:.0f} µs each); CPU of this process {cpu_each * 1e6:.0f} µs an email"
        f" = {1 / cpu_each:,.0f} emails/s per core (load_jobs {fast.load_cpu / fast.deliveries * 1e6:.0f}"
        f" µs, message {fast.message_cpu / fast.deliveries * 1e6:.0f} µs; the PostgreSQL side of"
        f" load_jobs not counted); load average {loadavg().split()[0]}"
    )
    print(
        f"  load_jobs            {fast.load_seconds:7.2f} s  ({fast.deliveries / fast.load_seconds:,.0f}"
        f" readers/s, {fast.batches} batches; {load_per * 1e6:.0f} µs an email)"
    )
    print(
        f"  shared bodies        {fast.body_seconds:7.2f} s  ({fast.bodies} renders for"
        f" {fast.variants} variants: the Sender's cache holds 256 per language)"
    )
    print(f"  personalize          {fast.personal_seconds:7.2f} s")
    print(
        f"  messages alone       {fast.message_seconds:7.2f} s  = {1 / fast_per:,.0f} emails/s"
        f" ({fast_per * 1e6:.0f} µs each, links and headers included, load_jobs not)"
    )
    print(
        f"naive (full_render per reader) on {n:,} of them: {naive_seconds:.2f} s ="
        f" {1 / naive_per:,.0f} emails/s ({naive_per * 1e6:.0f} µs each); for all"
        f" {fast.deliveries:,}: ~{naive_per * fast.deliveries:.1f} s; with load_jobs"
        f" {naive_end_to_end:,.0f} emails/s; load average {loadavg().split()[0]}"
    )
    ratio = naive_per / fast_per
    honest = end_to_end / naive_end_to_end
    load_cpu_each = fast.load_cpu / fast.deliveries
    honest_cpu = (naive_cpu / n + load_cpu_each) / cpu_each
    print(
        f"ratio naive/fast with load_jobs on both sides: {honest:.1f}x wall, {honest_cpu:.1f}x CPU"
        f" (the sender's path); the render alone: {ratio:.1f}x wall,"
        f" {naive_cpu / n / (fast.message_cpu / fast.deliveries):.1f}x CPU"
        f" (target >= {RATIO_TARGET:.0f}x); load average {loadavg().split()[0]}"
    )
    print(f"byte-identical check on the sample: {n - mismatches:,}/{n:,} equal")
    print(
        f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(f"load average: {loadavg()}")
    ok = (
        finished
        and next_ok
        and plan_seconds < PLAN_TARGET_SECONDS
        and ratio >= RATIO_TARGET
        and mismatches == 0
        and deliveries == args.readers
    )
    print("result: " + ("targets met" if ok else "TARGET MISSED or check failed"))
    return 0 if ok else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=10)
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--zones", type=int, default=20, choices=range(1, len(ZONES) + 1))
    parser.add_argument("--sample", type=int, default=2_000, help="readers rendered the naive way")
    parser.add_argument("--batch", type=int, default=500, help="deliveries per load_jobs call")
    parser.add_argument(
        "--plan-limit",
        type=float,
        default=300,
        help="seconds after which planning is cancelled and reported as not finished",
    )
    parser.add_argument(
        "--spanish",
        type=float,
        default=0.0,
        help="fraction of readers who read Spanish (0.5: half); 0: one language",
    )
    parser.add_argument(
        "--database-url",
        help="an empty PostgreSQL database to use (postgresql+psycopg://...); default: start one",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    server = Postgres()
    try:
        if args.database_url:
            url = args.database_url
        else:
            server.start()
            url = server.url
            print(f"started {server.version} (pid {server.pid})")
        status = run(args, url)
        rss = server.peak_rss_mib()
        if rss is not None:
            print(f"peak RSS of PostgreSQL (postmaster and backends, summed): {rss:.0f} MiB")
        return status
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        if server.pid is not None:
            pid = server.pid
            server.stop()
            print(f"stopped PostgreSQL (pid {pid})")


if __name__ == "__main__":
    sys.exit(main())
