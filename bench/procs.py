"""What the benchmarks share: processes read from /proc and stopped by pid, and PostgreSQL and Redis
started through scripts/services.sh. Imported by bench/*.py as `procs` (their folder is on sys.path
when they run as scripts)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_pid(pid: int, sig: signal.Signals, seconds: float, name: str) -> None:
    """Send `sig` to `pid`, wait up to `seconds` for it to go, then SIGKILL it."""
    if not alive(pid):
        return
    with suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        print(f"  {name} (pid {pid}) did not stop after {sig.name} in {seconds:.0f} s: SIGKILL")
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Services:
    """PostgreSQL and Redis started through scripts/services.sh (pids empty when given by URL)."""

    database_url: str
    redis_url: str
    pg_pid: int | None = None
    redis_pid: int | None = None
    folder: Path | None = None
    versions: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """PostgreSQL by a fast shutdown (SIGINT to the postmaster), then Redis, then the folder."""
        if self.pg_pid:
            stop_pid(self.pg_pid, signal.SIGINT, 30, "PostgreSQL")
            self.pg_pid = None
        if self.redis_pid:
            stop_pid(self.redis_pid, signal.SIGTERM, 10, "Redis")
            self.redis_pid = None
        if self.folder and self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


START_SERVICES = r"""
set -u
source scripts/services.sh
svc_init
echo "SVC_DIR=$SVC_DIR"
if svc_start_redis; then
    echo "REDIS_PID=$REDIS_PID"; echo "REDIS_URL=$REDIS_URL"
else
    echo "FAILED=Redis: $SVC_WHY"; exit 1
fi
if svc_start_postgres; then
    echo "PG_PID=$PG_PID"; echo "PG_URL=$PG_URL"
else
    [[ -n $PG_PID ]] && echo "PG_PID=$PG_PID"
    echo "FAILED=PostgreSQL: $SVC_WHY (apt-get install -y postgresql, or pass --database-url)"; exit 1
fi
"""


def start_services(services: Services) -> None:
    """Start Redis and PostgreSQL with scripts/services.sh; fill in `services` as they come up."""
    script = subprocess.Popen(
        ["bash", "-c", START_SERVICES],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = script.communicate(timeout=180)
    except BaseException:
        output, _ = script.communicate()  # let it finish, so that what it started can be stopped
        read_services(output, services)
        raise
    failed = read_services(output, services)
    if failed or script.returncode != 0:
        raise SystemExit(f"bench: could not start {failed or 'the services'}\n{output}")


def read_services(output: str, services: Services) -> str:
    values = dict(
        line.split("=", 1) for line in output.splitlines() if line.split("=", 1)[0].isupper()
    )
    for line in output.splitlines():
        if line.startswith(("Redis:", "PostgreSQL:")):
            services.versions.append(line.split(", pid", 1)[0])
    if "SVC_DIR" in values:
        services.folder = Path(values["SVC_DIR"])
    if "REDIS_PID" in values:
        services.redis_pid = int(values["REDIS_PID"])
        services.redis_url = values["REDIS_URL"]
    if values.get("PG_PID", "").isdigit():
        services.pg_pid = int(values["PG_PID"])
    if "PG_URL" in values:
        services.database_url = values["PG_URL"]
    return values.get("FAILED", "")
