"""A durable PostgreSQL cluster of the crash tests' own, and a Redis each test may restart.

Exactly-once across a crash can only be tested where an acknowledged commit survives one: the
cluster here runs with fsync, synchronous_commit and full_page_writes on (the suite's shared
PostgreSQL runs with them off, for speed, and would lose commits on `pg_ctl stop -m immediate`).
One cluster per session; each test gets a database copied from a migrated template.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from subscriptions.supervisor import embedded_redis_binary, free_port

BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


def _pg_bin() -> Path | None:
    for folder in (os.environ.get("PG_BIN", ""), *BIN_DIRS):
        if folder and all((Path(folder) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class DurablePostgres:
    """A PostgreSQL 15 cluster with durable commits, which a test may stop with `-m immediate`."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.folder = folder
        self.bin = bin_dir
        self.port = free_port()
        self.data = folder / "pg"
        self.sock = folder / "sock"

    def init(self) -> None:
        for path in (self.data, self.sock):
            path.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            for path in (self.data, self.sock):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run(
            _as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
            check=True, capture_output=True,
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.sock} -c fsync=on -c synchronous_commit=on"
            " -c full_page_writes=on -c max_connections=60"
        )
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.data / "server.log"), "-w", "-o", options, "start"]),
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False, capture_output=True,
        )  # fmt: skip

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings"
                " WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')"
            ).fetchall()
        return {name: value for name, value in rows}

    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def copy_of(self, template: str) -> str:
        name = f"crash_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def create(self, name: str) -> str:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def durable_pg() -> Iterator[DurablePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = (
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in PG_BIN or "
            + ", ".join(BIN_DIRS)
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Outside pytest's private (0700) temporary folder: the postgres user must reach it.
    folder = Path(tempfile.mkdtemp(prefix="newsletter-crash-pg-"))
    os.chmod(folder, 0o711)  # noqa: S103  # traversable, not listable: the server's own folders are 0700
    cluster = DurablePostgres(folder, bin_dir)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.stop("fast")
        shutil.rmtree(folder, ignore_errors=True)


class OwnRedis:
    """A Redis of this test's own, so the test can restart it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or embedded_redis_binary()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("test Redis did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.stop()
