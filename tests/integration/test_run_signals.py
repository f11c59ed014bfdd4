"""`make run` as a person runs it: started, then stopped with signals sent twice, leaves nothing behind.

Every process of the run carries a marker variable in its environment, so the test finds all of them (make,
the script, the supervisor, Redis, web, worker and its pool, beat), whatever sessions they moved to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from subscriptions.supervisor import port_is_free
from tests.integration.conftest import REPO, free_port

pytestmark = pytest.mark.timeout(120)


def _marked(mark: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds the marker, and their descendants.

    Descendants too: Redis rewrites its process title over its environment block.
    """
    needle = f"NEWSLETTER_TEST_RUN_MARK={mark}".encode()
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if state == "Z":
            continue
        parents[int(entry.name)] = int(ppid)
        if needle in environ:
            found.add(int(entry.name))
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_make_run(tmp_path: Path, mark: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_TEST_RUN_MARK=mark,
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'newsletter.db'}",
        NEWSLETTER_EMAIL_URL=f"outbox://{tmp_path / 'outbox'}",
        C_FORCE_ROOT="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("MAKEFLAGS", None)
    log = tmp_path / "run.log"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"ARGS=--port {port}"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    deadline = time.monotonic() + 60
    while b"is running at" not in log.read_bytes():
        if make.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGKILL)
            for pid in _marked(mark):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"make run did not serve within 60 s:\n{log.read_text()}")
        time.sleep(0.2)
    return make, log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_sent_twice_to_make_run_leaves_no_process_and_frees_the_port(
    tmp_path: Path, signum: signal.Signals
) -> None:
    mark = uuid.uuid4().hex
    port = free_port()
    make, log = _start_make_run(tmp_path, mark, port)
    try:
        running = _marked(mark)
        names = " | ".join(_cmdline(pid) for pid in running)
        for part in ("make", "run.sh", " dev ", "redis-server", " web ", " worker ", " beat"):
            assert part in names, f"{part!r} not among the running processes: {names}"
        # #13: without NEWSLETTER_BASE_URL, links in emails follow --port.
        web = next(pid for pid in running if " web " in _cmdline(pid))
        assert _environ(web)["NEWSLETTER_BASE_URL"] == f"http://127.0.0.1:{port}"
        assert f"Links in emails point to http://127.0.0.1:{port}" in log.read_text()
        assert "warning: NEWSLETTER_BASE_URL" not in log.read_text()

        # Like a terminal: the signal goes to the whole foreground group (make and the script),
        # and make forwards SIGTERM to its child; then a second, impatient one.
        os.killpg(make.pid, signum)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signum)
        started = time.monotonic()
        make.wait(timeout=40)
        stop_seconds = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGKILL)
        leftovers = _marked(mark)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert not leftovers, f"left running: {[_cmdline(pid) for pid in leftovers]}\n{output}"
    assert port_is_free("127.0.0.1", port)
    assert "stopped." in output and "Aborted!" not in output and "Traceback" not in output, output
    assert stop_seconds < 15, f"stopping took {stop_seconds:.1f} s"
