"""Benchmark: one polling round over 1,000 feeds, 10 % of them changed and the rest answering 304.

    .venv/bin/python bench/feeds.py [--feeds 1000] [--entries 20] [--changed 0.10]
                                    [--processes 2] [--threads 8] [--database-url URL | --sqlite]

A separate process serves the feeds (ThreadingHTTPServer on 127.0.0.1, so it does not share the
poller's GIL): feed i has `--entries` entries, an ETag naming its version, and answers 304 when the
poller sends that ETag back. The benchmark registers the feeds in a fresh database: by default on a
PostgreSQL it starts the way the other benchmarks do (bench/procs.py: scripts/services.sh's
svc_start_postgres, stopped by pid at the end); with --database-url postgresql+psycopg://… a new
database is created on that server and dropped afterwards; with --sqlite, a SQLite file in a
temporary folder. It polls every feed once (all 200: the backlog is recorded), then bumps the
version of a random 10 % (one new entry each, the oldest drops off) and times the second round, then
times a third round in which nothing changed (every feed answers 304): the pollers' CPU time over
it, divided by the feeds, is the CPU cost of a 304 (target < 2 ms). Polls go through worker.feeds.poll.poll_feed, as the worker's poll task does, with the
concurrency of a worker deployment: `--processes` processes (Celery prefork -c 2 by default), each
running `--threads` polls at a time (threads, since a poll is mostly waiting on the network and the
database). Each process has its own engine, as each worker process does.

It prints the round time against the target (< 5 s on 2 cores), feeds/s, p50/p99 per-feed poll
latency, entries parsed per second (parse_feed alone over the 100 changed documents, and within the
round), the CPU time and peak RSS of the pollers and of the server, and checks the outcome: exactly the
changed feeds produced one new post each, the others were not modified, nothing failed. Exit status 0
when the checks pass and the target is met, 1 otherwise. It stops what it started (the server process,
the pool, the database it created), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import httpx
from procs import Services, start_services

TARGET_SECONDS = 5.0
#: CPU time of the pollers per feed answering 304, in ms.
TARGET_304_CPU_MS = 2.0
TOPIC = "bench"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------- the feed server


def feed_document(feed: int, version: int, entries: int) -> bytes:
    """RSS 2.0 for feed `feed` at `version`: entries version … version+entries-1, newest first."""
    items = []
    for n in range(version + entries - 1, version - 1, -1):
        when = format_datetime(EPOCH + timedelta(hours=n))
        items.append(
            f"<item><title>Feed {feed} post {n}: border and migration notes</title>"
            f"<link>http://feeds.example.org/{feed}/posts/{n}</link>"
            f'<guid isPermaLink="false">bench-{feed}-{n}</guid>'
            f"<description>&lt;p&gt;Summary of post {n} of feed {feed}, with a "
            f'&lt;a href="http://feeds.example.org/{feed}/posts/{n}"&gt;link&lt;/a&gt;.&lt;/p&gt;'
            f"</description><pubDate>{when}</pubDate>"
            f"<category>Mexico</category><category>Migration</category></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Bench feed {feed}</title><link>http://feeds.example.org/{feed}/</link>"
        f"<description>d</description>{''.join(items)}</channel></rss>"
    ).encode()


def serve(versions: SynchronizedArray[int], entries: int, pipe: Connection) -> None:
    """The feed server's process: answers /feeds/{i}.xml, 304 on a matching If-None-Match."""
    cache: dict[tuple[int, int], bytes] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            if self.path == "/_stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                body = f"{usage.ru_utime + usage.ru_stime:.3f} {peak_rss_mib():.1f}".encode()
                self._send(200, {}, body)
                return
            try:
                feed = int(self.path.removeprefix("/feeds/").removesuffix(".xml"))
                version = versions[feed]
            except (ValueError, IndexError):
                self._send(404, {}, b"no such feed")
                return
            etag = f'"{feed}-{version}"'
            if self.headers.get("If-None-Match") == etag:
                self._send(304, {"ETag": etag}, b"")
                return
            with lock:
                cached = cache.get((feed, version))
                if cached is None:
                    cached = cache[(feed, version)] = feed_document(feed, version, entries)
            body = cached
            headers = {"Content-Type": "application/rss+xml; charset=utf-8", "ETag": etag}
            self._send(200, headers, body)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    pipe.send(server.server_address[1])
    server.serve_forever(poll_interval=0.2)


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------ the pollers

_worker: dict[str, Any] = {}


@dataclass(frozen=True)
class Outcome:
    feed_id: int
    status: str
    new: int
    updated: int
    backlog: int
    seconds: float


def init_poller(database_url: str, threads: int) -> None:
    """In each poller process: its own engine and thread pool, like a worker process."""
    from subscriptions.db import create_db_engine, session_factory
    from worker.feeds.poll import FetchOptions

    engine = create_db_engine(database_url, pool_size=threads, max_overflow=threads)
    _worker["engine"] = engine
    _worker["sessions"] = session_factory(engine)
    _worker["threads"] = ThreadPoolExecutor(threads)
    # No transport: poll_feed uses this process's FeedFetcher, as the worker's task does.
    _worker["options"] = FetchOptions(allow_private=True, timeout=10.0)


def poll_chunk(feed_ids: Sequence[int]) -> tuple[list[Outcome], float, float]:
    """Poll `feed_ids` on this process's threads: outcomes, CPU seconds used, peak RSS (MiB)."""
    from worker.feeds.poll import poll_feed

    def one(feed_id: int) -> Outcome:
        started = time.perf_counter()
        try:
            report = poll_feed(_worker["sessions"], feed_id, _worker["options"])
        except Exception as exc:  # poll_feed raised (e.g. SQLite "database is locked"): count it
            reason = str(exc).strip().splitlines()[0][:120]
            return Outcome(
                feed_id, f"raised {type(exc).__name__}: {reason}", 0, 0, 0,
                time.perf_counter() - started,
            )  # fmt: skip
        return Outcome(
            feed_id,
            report.status,
            report.new,
            report.updated,
            report.backlog,
            time.perf_counter() - started,
        )

    cpu = time.process_time()
    outcomes = list(_worker["threads"].map(one, feed_ids))
    return outcomes, time.process_time() - cpu, peak_rss_mib()


def warm(_: int) -> float:
    """Open the process's database connections before the clock starts."""
    from sqlalchemy import text

    with _worker["sessions"]() as session:
        session.execute(text("SELECT 1"))
    return peak_rss_mib()


@dataclass
class Round:
    seconds: float
    outcomes: list[Outcome]
    cpu: float
    peak_rss: float

    def latency_ms(self, fraction: float) -> float:
        ordered = sorted(o.seconds for o in self.outcomes)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def run_round(pool: Any, feed_ids: list[int], chunk: int) -> Round:
    chunks = [feed_ids[i : i + chunk] for i in range(0, len(feed_ids), chunk)]
    started = time.perf_counter()
    results = list(pool.imap_unordered(poll_chunk, chunks))
    seconds = time.perf_counter() - started
    outcomes = [o for r in results for o in r[0]]
    return Round(seconds, outcomes, sum(r[1] for r in results), max(r[2] for r in results))


class InProcessPool:
    """--processes 1: the thread pool runs in this process (same interface as multiprocessing.Pool)."""

    def __init__(self, database_url: str, threads: int) -> None:
        init_poller(database_url, threads)

    def imap_unordered(self, fn: Any, items: list[Any]) -> Any:
        return map(fn, items)

    def map(self, fn: Any, items: list[Any]) -> list[Any]:
        return list(map(fn, items))

    def close(self) -> None:
        _worker["threads"].shutdown()
        _worker["engine"].dispose()

    def join(self) -> None:
        pass

    def terminate(self) -> None:
        self.close()


# ---------------------------------------------------------------------------------- the database


def fresh_database(url: str | None, folder: str) -> tuple[str, str | None]:
    """(URL of an empty database, admin URL to drop it with, for PostgreSQL); no URL: SQLite."""
    if not url:
        return f"sqlite:///{os.path.join(folder, 'bench.db')}", None
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, None
    name = f"feedbench_{uuid.uuid4().hex[:10]}"
    admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False), admin


def drop_database(url: str, admin: str | None) -> None:
    if admin is None:
        return
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(database_url: str, port: int, feeds: int) -> list[int]:
    """Migrate, add the topic, register the feeds; their ids."""
    from subscriptions import feeds as feed_ops
    from subscriptions.db import create_db_engine, session_factory, transaction
    from subscriptions.migrate import upgrade
    from subscriptions.topics import add_topic

    upgrade(database_url)
    engine = create_db_engine(database_url)
    try:
        with transaction(session_factory(engine)) as session:
            add_topic(session=session, slug=TOPIC, name="Bench")
            return [
                feed_ops.add_feed(
                    session=session,
                    url=f"http://127.0.0.1:{port}/feeds/{i}.xml",
                    topic=TOPIC,
                    category_map={"Mexico": TOPIC},
                ).id
                for i in range(feeds)
            ]
    finally:
        engine.dispose()


def count_posts(database_url: str) -> int:
    from sqlalchemy import func, select

    from subscriptions.db import create_db_engine
    from subscriptions.models import Post

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Post)) or 0)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=20, help="entries per feed")
    parser.add_argument("--changed", type=float, default=0.10, help="fraction changed in round 2")
    parser.add_argument("--processes", type=int, default=2, help="poller processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="polls at a time per process")
    parser.add_argument("--chunk", type=int, default=25, help="feeds handed to a process at a time")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--database-url",
        help="a PostgreSQL server to create a database on (default: start one with scripts/services.sh)",
    )
    where.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = mp.get_context("spawn")
    versions = ctx.Array("i", args.feeds, lock=False)
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(versions, args.entries, child), daemon=True)
    server.start()
    folder = tempfile.mkdtemp(prefix="feedbench-")
    services = Services("", "")
    pool: Any = None
    database_url, admin = "", None
    try:
        server_url = args.database_url
        if not args.sqlite and not server_url:
            start_services(services)
            server_url = services.database_url
            print(f"started {', '.join(services.versions)}")
        database_url, admin = fresh_database(server_url, folder)
        if not parent.poll(30):
            raise SystemExit("the feed server did not start")
        port = int(parent.recv())
        backend = "PostgreSQL" if admin else "SQLite file"
        if args.processes > 1:
            model = f"{args.processes} processes x {args.threads} threads (like Celery prefork -c {args.processes})"
        else:
            model = f"1 process x {args.threads} threads"
        print(
            f"feeds benchmark: {args.feeds} feeds x {args.entries} entries, "
            f"{args.changed:.0%} changed in round 2; {backend}; pollers: {model}; "
            f"feed server: separate process, ThreadingHTTPServer; {os.cpu_count()} CPUs"
        )
        print("fetches: poll_feed as shipped (one FeedFetcher, its client and pool, per process)")
        print(f"load average: {loadavg()}")
        started = time.perf_counter()
        feed_ids = prepare(database_url, port, args.feeds)
        print(
            f"setup: migrated and registered {len(feed_ids)} feeds in {time.perf_counter() - started:.1f} s"
        )

        if args.processes > 1:
            pool = ctx.Pool(
                args.processes, initializer=init_poller, initargs=(database_url, args.threads)
            )
        else:
            pool = InProcessPool(database_url, args.threads)
        pool.map(warm, range(args.processes * 4))

        first = run_round(pool, feed_ids, args.chunk)
        print(
            f"round 1 (first poll, all 200, backlog recorded): {first.seconds:.1f} s, "
            f"{args.feeds / first.seconds:.0f} feeds/s, "
            f"{args.feeds * args.entries / first.seconds:.0f} entries stored/s; "
            f"pollers' CPU {first.cpu:.2f} s (load average {loadavg()})"
        )
        raised = [o for o in first.outcomes if o.status.startswith("raised")]
        if raised:
            # Not the feeds' fault: poll them again one at a time so that round 2 starts even.
            print(f"  {len(raised)} polls raised instead of reporting, e.g. {raised[0].status}")
            retried = [
                r for chunk in pool.map(poll_chunk, [[o.feed_id] for o in raised]) for r in chunk[0]
            ]
            first.outcomes = [
                o for o in first.outcomes if not o.status.startswith("raised")
            ] + retried
            print(f"  polled again one at a time: {sum(o.status == 'ok' for o in retried)} ok")
        first_ok = all(o.status == "ok" and o.backlog == args.entries for o in first.outcomes)

        changed = sorted(
            random.Random(args.seed).sample(range(args.feeds), round(args.feeds * args.changed))
        )
        for index in changed:
            versions[index] += 1
        second = run_round(pool, feed_ids, args.chunk)
        second_load = loadavg()
        by_feed = {o.feed_id: o for o in second.outcomes}
        changed_ids = {feed_ids[i] for i in changed}
        statuses: dict[str, int] = {}
        for o in second.outcomes:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        second_ok = len(by_feed) == args.feeds and all(
            (o.status, o.new, o.updated) == ("ok", 1, args.entries - 1)
            if o.feed_id in changed_ids
            else o.status == "not_modified"
            for o in by_feed.values()
        )
        # Round 3: nothing changed, every feed answers 304: what a 304 costs the pollers.
        third = run_round(pool, feed_ids, args.chunk)
        third_load = loadavg()
        third_ok = all(o.status == "not_modified" for o in third.outcomes)
        per_304_ms = third.cpu / args.feeds * 1000
        posts = count_posts(database_url)
        expected_posts = args.feeds * args.entries + len(changed)

        # parse_feed alone, over the changed feeds' documents as served in round 2.
        from worker.feeds.parse import parse_feed

        documents = [feed_document(i, versions[i], args.entries) for i in changed]
        repeats = 5
        parse_started = time.perf_counter()
        parsed = sum(len(parse_feed(doc).entries) for _ in range(repeats) for doc in documents)
        parse_seconds = time.perf_counter() - parse_started

        with httpx.Client() as client:
            server_cpu, server_rss = (
                float(v) for v in client.get(f"http://127.0.0.1:{port}/_stats").text.split()
            )
        met = second.seconds < TARGET_SECONDS
        met_304 = per_304_ms < TARGET_304_CPU_MS
        print(
            f"round 2 ({len(changed)} changed, {args.feeds - len(changed)} answer 304): "
            f"{second.seconds:.2f} s (target < {TARGET_SECONDS:.0f} s: {'met' if met else 'MISSED'}), "
            f"{args.feeds / second.seconds:.0f} feeds/s; pollers' CPU {second.cpu:.2f} s "
            f"({second.cpu / second.seconds:.2f} cores) (load average {second_load})"
        )
        print(
            f"  per-feed poll latency: p50 {second.latency_ms(0.50):.1f} ms, "
            f"p99 {second.latency_ms(0.99):.1f} ms, max {second.latency_ms(1.0):.1f} ms"
        )
        print(
            f"  outcomes: {statuses}; new posts {sum(o.new for o in second.outcomes)}, "
            f"updated {sum(o.updated for o in second.outcomes)}"
        )
        print(
            f"round 3 (nothing changed, all {args.feeds} answer 304): {third.seconds:.2f} s, "
            f"pollers' CPU {third.cpu:.2f} s = {per_304_ms:.2f} ms per 304 "
            f"(target < {TARGET_304_CPU_MS:.0f} ms: {'met' if met_304 else 'MISSED'}); "
            f"p50 {third.latency_ms(0.50):.1f} ms (load average {third_load})"
        )
        print(
            f"entries parsed: parse_feed alone {parsed / parse_seconds:,.0f} entries/s "
            f"({len(documents)} documents x {args.entries} entries x {repeats}, {parse_seconds:.2f} s); "
            f"within round 2 {len(changed) * args.entries / second.seconds:,.0f} entries/s "
            f"(fetched, parsed and stored) (load average {loadavg()})"
        )
        main_rss = peak_rss_mib()
        print(f"CPU: feed server {server_cpu:.1f} s over the three rounds")
        print(
            f"peak RSS: poller process {max(second.peak_rss, third.peak_rss):.0f} MiB"
            + (f" (each of {args.processes})" if args.processes > 1 else "")
            + f", benchmark driver {main_rss:.0f} MiB, feed server {server_rss:.0f} MiB"
        )
        checks_ok = first_ok and second_ok and third_ok and posts == expected_posts
        print(
            f"checks: round 1 all ok with backlog {'yes' if first_ok else 'NO'}; "
            f"round 2 exactly the changed feeds had 1 new post {'yes' if second_ok else 'NO'}; "
            f"round 3 all not modified {'yes' if third_ok else 'NO'}; "
            f"posts {posts} (expected {expected_posts})"
        )
        print(f"load average: {loadavg()}")
        return 0 if checks_ok and met and met_304 else 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        server.terminate()
        server.join(timeout=5)
        if database_url:
            drop_database(database_url, admin)
        services.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
