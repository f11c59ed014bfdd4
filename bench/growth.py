"""Benchmark: how cost grows with readers: planning, the send and the ledger's disk, then the archive.

    .venv/bin/python bench/growth.py                          # 300,000 then 1,000,000 readers
    .venv/bin/python bench/growth.py --readers 3000000
    .venv/bin/python bench/growth.py --database-url postgresql+psycopg://postgres@127.0.0.1:5433/x \
                                     --redis-url redis://127.0.0.1:6390/5   # services you run

For each reader count N, from an empty database (created on the PostgreSQL server, migrated, dropped
afterwards unless --keep): N active readers with an immediate subscription to one topic are loaded
in SQL (INSERT … SELECT generate_series, bench/delivery.py's `load_readers`); one post is added and
its alerts planned with worker.digests.planner.plan_post_alerts in one transaction ("plan"); the
digest is sent by real `newsletter worker` processes against bench/delivery.py's Postmark stand-in
("send", through delivery.py's Worker, StandIn, Sampler and wait_until_sent, imported, not copied);
the ledger's disk is read (pg_total_relation_size of `deliveries` and of `delivery_posts`, table
and indexes apart); then `ledger archive` runs on it (subscriptions/ledger_archive.archive_ledger,
as the CLI calls it, with --older-than 0) and the disk is read again, after a plain VACUUM
(what autovacuum does: the space is free for the next digests, not given back to the system).

Per stage it prints the wall time, the CPU seconds per process group (this process, the workers,
the stand-in, PostgreSQL's connections and background processes, Redis), read from /proc, the peak
RSS (VmHWM) per process and the load average before and after; then bytes per delivery and per
million readers, and what 50,000,000 deliveries would take with and without archiving. It checks
that N deliveries were planned and sent, and that after the archive the ledger holds none of them
and the archive all of them (the counts kept per digest). Exit status 0 when the checks pass.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import delivery
from procs import Services, start_services

ROWS_50M = 50_000_000


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    peaks: list[tuple[str, str, int]] = field(default_factory=list)  # group, label, KiB
    load: tuple[str, str] = ("", "")


@dataclass
class Disk:
    """Bytes on disk of the ledger's tables: (table, indexes) each."""

    deliveries: tuple[int, int]
    delivery_posts: tuple[int, int]
    archive: tuple[int, int]

    @property
    def ledger(self) -> int:
        return sum(self.deliveries) + sum(self.delivery_posts)


@dataclass
class Growth:
    readers: int
    load_seconds: float = 0.0
    stages: list[Stage] = field(default_factory=list)
    before: Disk | None = None
    after: Disk | None = None
    after_full: Disk | None = None
    archived: int = 0
    #: Bytes per archived delivery had every message id been a random UUID, as Postmark's are
    #: (the stand-in's "bench-N" ids compress to almost nothing).
    uuid_row: float = 0.0
    #: Milliseconds of one reader's audit (subscriptions/audit.audit_reader), before and after.
    audit_ms: tuple[float, float] = (0.0, 0.0)
    problems: list[str] = field(default_factory=list)


def disk(engine: Any) -> Disk:
    """pg_relation_size and pg_indexes_size of the ledger's tables and the archive's."""
    from sqlalchemy import text

    def sizes(connection: Any, table: str) -> tuple[int, int]:
        row = connection.execute(
            text(
                "SELECT pg_table_size(CAST(:t AS regclass)), pg_indexes_size(CAST(:t AS regclass))"
            ),
            {"t": table},
        ).one()
        return int(row[0]), int(row[1])

    with engine.connect() as connection:
        archive = [sizes(connection, t) for t in ("archived_deliveries", "archived_digests")]
        return Disk(
            deliveries=sizes(connection, "deliveries"),
            delivery_posts=sizes(connection, "delivery_posts"),
            archive=(sum(a[0] for a in archive), sum(a[1] for a in archive)),
        )


def audit_ms(sessions: Any, readers: int, count: int = 50) -> float:
    """Mean milliseconds of the audit of `count` readers spread over the ids (warm cache)."""
    from subscriptions import audit

    ids = [1 + (readers - 1) * n // count for n in range(count)]
    with sessions() as session:
        audit.audit_reader(session=session, subscriber_id=ids[0])
        started = time.perf_counter()
        for reader in ids:
            found = audit.audit_reader(session=session, subscriber_id=reader, posts=10)
            assert len(found.emails) == 1
        return (time.perf_counter() - started) * 1000 / count


def with_random_ids(engine: Any, blocks: int = 50) -> float:
    """Bytes per delivery of up to `blocks` archived blocks packed again with a random UUID as
    each message id: what a real provider's ids would take."""
    import uuid

    from sqlalchemy import select

    from subscriptions import ledger_archive
    from subscriptions.models import ArchivedDeliveries

    size = rows = 0
    with engine.connect() as connection:
        for (data,) in connection.execute(select(ArchivedDeliveries.data).limit(blocks)):
            entries = ledger_archive._unpack(data)
            for e in entries:
                e["message_id"] = str(uuid.uuid4())
            size += len(ledger_archive._pack(entries))
            rows += len(entries)
    return size / rows if rows else 0.0


def vacuum(database_url: str, full: bool = False) -> None:
    import psycopg

    with psycopg.connect(delivery._libpq(database_url), autocommit=True) as connection:
        for table in ("deliveries", "delivery_posts", "archived_deliveries"):
            connection.execute(f"VACUUM {'FULL ' if full else ''}ANALYZE {table}")


def measured(
    name: str,
    groups: dict[str, Callable[[dict[int, int]], list[int]]],
    mains: set[int],
    work: Callable[[], Any],
) -> tuple[Stage, Any]:
    """Run `work` with /proc sampled: its wall time, CPU by group, peak RSS per process."""
    stage = Stage(name)
    with delivery.Sampler(groups, mains) as sampler:
        sampler.mark()
        before = delivery._loadavg()
        started = time.perf_counter()
        value = work()
        stage.seconds = time.perf_counter() - started
        stage.load = (before, delivery._loadavg())
        stage.cpu = sampler.cpu()
    stage.peaks = [
        (p.group, p.label, p.hwm_kib)
        for p in sorted(sampler.peaks.values(), key=lambda p: -p.hwm_kib)
        if p.group != "PostgreSQL" or p.ticks > p.base  # PostgreSQL: only processes that worked
    ]
    return stage, value


def run_round(readers: int, args: argparse.Namespace, services: Services, run: str) -> Growth:
    from subscriptions.db import create_db_engine, session_factory
    from subscriptions.ledger_archive import archive_ledger
    from subscriptions.migrate import upgrade
    from subscriptions.queue import SEND_DIGEST, TaskQueue

    result = Growth(readers)
    name = f"bench_growth_{run}_{readers}"
    database_url = delivery.create_database(services.database_url, name)
    print(f"\n== {readers:,} readers (database {name})", flush=True)
    folder = args.folder
    workers: list[delivery.Worker] = []
    stand_in: delivery.StandIn | None = None
    engine = create_db_engine(database_url)
    try:
        upgrade(database_url)
        delivery.add_topic(database_url)
        result.load_seconds = delivery.load_readers(database_url, readers)
        print(f"  loaded {readers:,} readers in {result.load_seconds:.1f} s", flush=True)

        base = {k: v for k, v in groups_of(services).items() if k != "stand-in"}
        plan, planned = measured(
            "plan", base, set(), lambda: delivery.add_post_and_plan(database_url)
        )
        digest_id, _, _ = planned
        result.stages.append(plan)
        counts = delivery.ledger(engine, digest_id)[0]
        if sum(counts.values()) != readers:
            result.problems.append(f"planned {sum(counts.values())} deliveries for {readers}")
        print(f"  planned in {plan.seconds:.1f} s (load {plan.load[1]})", flush=True)

        delivery.clear_broker(services.redis_url, whole_db=services.redis_pid is not None)
        stand_in = delivery.StandIn(folder, f"stand-in-{readers}")
        env = delivery.worker_env(args, services, database_url, port=stand_in.port)
        workers = [
            delivery.Worker(i + 1, env, folder, args.concurrency, "prefork")
            for i in range(args.workers)
        ]
        deadline = time.monotonic() + 90
        while not all(w.ready() for w in workers):
            if time.monotonic() > deadline:
                raise SystemExit("bench: the workers did not get ready in 90 s")
            time.sleep(0.2)
        time.sleep(1.0)
        groups = groups_of(services, stand_in, workers)
        queue = TaskQueue(services.redis_url)
        progress = delivery.Round(readers)

        def send() -> dict[str, int]:
            started = time.time()
            for _ in range(args.workers * args.concurrency * args.senders):
                queue.send(SEND_DIGEST, digest_id)
            return delivery.wait_until_sent(
                progress, queue, engine, stand_in, digest_id, started, args
            )

        stage, counts = measured("send", groups, {w.process.pid for w in workers}, send)
        result.stages.append(stage)
        if counts.get("sent", 0) != readers or stand_in.stats()["messages"] != readers:
            result.problems.append(
                f"sent: ledger {counts}, stand-in {stand_in.stats()['messages']} of {readers}"
            )
        print(f"  sent in {stage.seconds:.1f} s (load {stage.load[1]})", flush=True)
        for worker in workers:
            worker.stop()
        workers = []
        stand_in.stop()
        stand_in = None

        vacuum(database_url)
        result.before = disk(engine)
        sessions = session_factory(engine)
        before_ms = audit_ms(sessions, readers)

        def archive() -> int:
            report = archive_ledger(sessions=sessions, older_than=timedelta(0), chunk=args.chunk)
            return report.moved

        stage, result.archived = measured("archive", base, set(), archive)
        result.stages.append(stage)
        print(f"  archived in {stage.seconds:.1f} s (load {stage.load[1]})", flush=True)
        if result.archived != readers or sum(delivery.ledger(engine, digest_id)[0].values()):
            result.problems.append(f"archive moved {result.archived} of {readers}")
        result.uuid_row = with_random_ids(engine)
        result.audit_ms = (before_ms, audit_ms(sessions, readers))
        vacuum(database_url)
        result.after = disk(engine)
        vacuum(database_url, full=True)
        result.after_full = disk(engine)
    finally:
        for worker in workers:
            worker.stop()
        if stand_in is not None:
            stand_in.stop()
        engine.dispose()
        if not args.keep:
            delivery.drop_database(services.database_url, name)
    return result


def groups_of(
    services: Services, stand_in: delivery.StandIn | None = None, workers: Sequence[Any] = ()
) -> dict[str, Callable[[dict[int, int]], list[int]]]:
    """delivery.process_groups, also for services given by URL: their pids are asked for (the
    checkpointer's parent is the postmaster; Redis says its own)."""
    if services.pg_pid is None:
        import psycopg

        with psycopg.connect(delivery._libpq(services.database_url)) as connection:
            row = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
            ).fetchone()
        if row is not None:
            services.pg_pid = delivery.parents().get(int(row[0]))
    if services.redis_pid is None:
        import redis

        client = redis.Redis.from_url(services.redis_url)
        services.redis_pid = int(client.info("server")["process_id"])
        client.close()
    return delivery.process_groups(list(workers), stand_in or _NoStandIn(), services)  # type: ignore[arg-type]


class _NoStandIn:
    """No stand-in runs while planning and archiving: its group finds nothing."""

    pid = -1


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(g: Growth) -> None:
    print(f"\n-- {g.readers:,} readers: loaded in {g.load_seconds:.1f} s")
    for s in g.stages:
        rate = f", {g.readers / s.seconds:,.0f} deliveries/s" if s.seconds else ""
        print(f"  {s.name}: {s.seconds:.1f} s wall{rate}; load {s.load[0]} -> {s.load[1]}")
        for group, seconds in sorted(s.cpu.items(), key=lambda kv: -kv[1]):
            if seconds >= 0.05:
                print(
                    f"    CPU {group:<32} {seconds:8.1f} s"
                    f"  {seconds * 1e6 / g.readers:7.1f} µs per reader"
                )
        for group, label, kib in s.peaks[:8]:
            print(f"    peak RSS {kib / 1024:7.0f} MiB  {group}: {label[:60]}")
    per_million = 1_000_000 / g.readers
    for label, d in (
        ("ledger after the send", g.before),
        ("after the archive (VACUUM)", g.after),
        ("after VACUUM FULL", g.after_full),
    ):
        if d is None:
            continue
        print(
            f"  {label}: deliveries {mib(d.deliveries[0])} + indexes {mib(d.deliveries[1])};"
            f" delivery_posts {mib(d.delivery_posts[0])} + {mib(d.delivery_posts[1])};"
            f" archive {mib(d.archive[0])} + {mib(d.archive[1])}"
        )
    if g.before is not None and g.after_full is not None:
        per_row = g.before.ledger / g.readers
        archived_row = sum(g.after_full.archive) / g.readers
        print(
            f"  ledger: {per_row:,.0f} bytes per delivery, {mib(g.before.ledger * per_million)}"
            f" per million readers; archived: {archived_row:,.1f} bytes per delivery,"
            f" {mib(sum(g.after_full.archive) * per_million)} per million"
        )
        print(
            f"  with random UUIDs as message ids (as Postmark's): {g.uuid_row:,.1f} bytes per"
            f" archived delivery, {mib(g.uuid_row * 1_000_000)} per million"
        )
        print(
            f"  50,000,000 deliveries: {per_row * ROWS_50M / 2**30:,.1f} GiB in the ledger,"
            f" {archived_row * ROWS_50M / 2**30:,.2f} GiB archived"
            f" ({g.uuid_row * ROWS_50M / 2**30:,.2f} GiB with UUID message ids)"
        )
    print(
        f"  one reader's audit: {g.audit_ms[0]:.1f} ms from the ledger,"
        f" {g.audit_ms[1]:.1f} ms from the archive"
    )
    for problem in g.problems:
        print(f"  PROBLEM: {problem}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/growth.py", description=__doc__.split("\n")[0])
    parser.add_argument("--readers", default="300000,1000000", help="comma-separated counts")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=16 * 1024, help="archive: reader ids a commit")
    parser.add_argument("--database-url", help="an existing PostgreSQL server")
    parser.add_argument("--redis-url", help="an existing Redis")
    parser.add_argument("--keep", action="store_true", help="leave the databases")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per send at most")
    parser.add_argument("--stall", type=float, default=180, help="give up after this long idle")
    parser.add_argument("--dispatch-every", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(n.replace("_", "")) for n in args.readers.split(",") if n})
    except ValueError:
        parser.error("--readers takes whole numbers, comma-separated")
    if not args.counts or min(args.counts) < 1:
        parser.error("--readers needs at least one count above 0")
    if bool(args.database_url) != bool(args.redis_url):
        parser.error("give both --database-url and --redis-url, or neither")
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    run = secrets.token_hex(3)
    args.secret = secrets.token_urlsafe(32)
    args.folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"newsletter-growth-{run}"
    args.folder.mkdir(parents=True)
    for key in [k for k in os.environ if k.startswith("NEWSLETTER_")]:
        del os.environ[key]
    services = Services(args.database_url or "", args.redis_url or "")
    ok = False
    try:
        if not args.database_url:
            print("starting PostgreSQL and Redis (scripts/services.sh)...", flush=True)
            start_services(services)
        print(
            f"topic-newsletter growth benchmark: {', '.join(f'{n:,}' for n in args.counts)}"
            f" readers; {args.workers} x worker --concurrency {args.concurrency};"
            f" {os.cpu_count()} cores, load average {delivery._loadavg()}",
            flush=True,
        )
        results = []
        for readers in args.counts:
            results.append(run_round(readers, args, services, run))
            report(results[-1])
        ok = not any(r.problems for r in results)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what was started...", file=sys.stderr)
        return 130
    finally:
        if not args.database_url:  # the pids of services given by URL are only watched
            services.stop()
        if ok:
            shutil.rmtree(args.folder, ignore_errors=True)
        else:
            print(f"logs kept in {args.folder}")


if __name__ == "__main__":
    sys.exit(main())
