"""Benchmark: the retry tail. One alert to N readers through two real workers and a Postmark stand-in,
fault-free, then with a share of the requests answered 429 or 503 with `Retry-After: 1`.

    .venv/bin/python bench/retrytail.py --database-url postgresql+psycopg://postgres@127.0.0.1:5433/postgres \\
                                        --redis-url redis://127.0.0.1:6390/6 [--readers 20000] [--faults 0.2]

The dispatcher is ticked every 30 s, as beat does. Prints for each run the time to the last `sent_at`
(from the first task enqueued), when 97 % were out, the requests refused and the tail (last 3 %).
The goal (issue #11): the faulty run within 2x the fault-free one. Services are the caller's; it makes
and drops a database of its own per run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from subscriptions.models import Delivery, DeliveryStatus  # noqa: E402
from subscriptions.queue import TaskQueue  # noqa: E402
from tests.factories import SECRET, add_demo_topics, migrated_sessions  # noqa: E402
from tests.integration.test_delivery import add_readers, plan_alert  # noqa: E402
from tests.providerserver import Fault, ProviderServer  # noqa: E402


def run(args: argparse.Namespace, share: float) -> dict[str, float]:
    base = make_url(args.database_url)
    name = f"bench_tail_{uuid.uuid4().hex[:8]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        sessions = migrated_sessions(url)
        with sessions.begin() as session:
            add_demo_topics(session)
            add_readers(session, args.readers)
        rng = random.Random(11)
        with ProviderServer(token="test-token") as server:
            for _ in range(args.readers):  # more than enough: one fault entry per request
                if rng.random() < share:
                    status = rng.choice([429, 503])
                    server.faults.append(Fault(status=status, headers={"Retry-After": "1"}))
                else:
                    server.faults.append(Fault())
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
            env.update(
                NEWSLETTER_DATABASE_URL=url,
                NEWSLETTER_BROKER_URL=args.redis_url,
                NEWSLETTER_EMAIL_URL=f"postmark+http://test-token@127.0.0.1:{server.port}",
                NEWSLETTER_SECRET_KEY=SECRET,
                NEWSLETTER_ENVIRONMENT="test",
                NEWSLETTER_FROM="Institute Updates <news@example.org>",
                NEWSLETTER_MAX_DELIVERY_ATTEMPTS="10",
                C_FORCE_ROOT="1",
            )
            for _ in range(2):
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "subscriptions.cli", "worker", "-c", "1"],
                        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )  # fmt: skip
            redis.Redis.from_url(args.redis_url).flushdb()  # no old tasks, no old rate buckets
            script = list(server.faults)
            time.sleep(args.warmup)
            queue = TaskQueue(args.redis_url)
            started = time.time()
            plan_alert(sessions)  # the post's alerts, then the first dispatch as beat would
            queue.send("newsletter.dispatch")
            next_tick = started + 30
            while True:
                time.sleep(0.5)
                if time.time() >= next_tick:
                    queue.send("newsletter.dispatch")
                    next_tick += 30
                with sessions() as session:
                    left = session.scalar(
                        select(func.count()).where(
                            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.CLAIMED])
                        )
                    )
                if not left or time.time() - started > args.timeout:
                    break
            with sessions() as session:
                times = sorted(
                    t.timestamp()
                    for t in session.scalars(
                        select(Delivery.sent_at).where(Delivery.status == DeliveryStatus.SENT)
                    )
                    if t is not None
                )
                sent = len(times)
            used = len(script) - len(server.faults)
            refused = sum(1 for f in script[:used] if f.status)
        sessions.kw["bind"].dispose()
        p97 = times[int(len(times) * 0.97) - 1] - started if times else float("nan")
        last = times[-1] - started if times else float("nan")
        return {"sent": sent, "last": last, "p97": p97, "requests": used, "refused": refused}
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an existing PostgreSQL server")
    parser.add_argument("--redis-url", required=True, help="an existing Redis (a db of its own)")
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--faults", type=float, default=0.2, help="share of requests refused")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds for workers to start")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    print(f"retry tail: {args.readers:,} readers, Postmark stand-in, 2 workers -c 1,"
          f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    results = {}
    for share in (0.0, args.faults):
        r = run(args, share)
        results[share] = r
        print(f"  {share:.0%} refused: {r['sent']:,} sent, 97 % at {r['p97']:.1f} s, last at"
              f" {r['last']:.1f} s, {r['requests']:,} requests, {r['refused']:,} refused")  # fmt: skip
    ratio = results[args.faults]["last"] / results[0.0]["last"]
    print(f"  faulty / fault-free: {ratio:.2f}x (goal: at most 2x); load average now"
          f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
