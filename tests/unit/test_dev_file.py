"""`var/dev.json`: what `newsletter dev` leaves for CLI commands run beside it, and when it counts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from subscriptions.supervisor import dev_broker_url, remove_dev_file, write_dev_file


def test_a_file_written_by_a_live_process_names_its_broker_until_removed(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dev.json"
    write_dev_file("redis://127.0.0.1:6399/0", path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {
        "broker_url": "redis://127.0.0.1:6399/0",
        "pid": os.getpid(),
    }
    assert dev_broker_url(path) == "redis://127.0.0.1:6399/0"
    remove_dev_file(path)
    assert not path.exists() and dev_broker_url(path) is None


def test_a_stale_or_broken_file_is_ignored_and_not_removed_by_another_dev(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    gone = subprocess.Popen(["true"])
    gone.wait()
    path.write_text(json.dumps({"broker_url": "redis://127.0.0.1:6399/0", "pid": gone.pid}))
    assert dev_broker_url(path) is None
    remove_dev_file(path)  # not this process's file: left alone
    assert path.exists()
    for broken in (
        "",
        "{",
        "[]",
        '{"pid": 1}',
        '{"broker_url": 5, "pid": 1}',
        '{"broker_url": "x", "pid": -1}',
    ):
        path.write_text(broken)
        assert dev_broker_url(path) is None, broken
