"""subscriptions/resp.py's script runner against real Redis servers (the test one and one of its own
with a password), including the failures it must report as redis-py's exceptions."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from subscriptions.resp import ScriptRunner
from subscriptions.supervisor import embedded_redis_binary, free_port

SCRIPT = "redis.call('INCRBY', KEYS[1], ARGV[1]); return {tonumber(redis.call('GET', KEYS[1])), 7}"


def runner(url: str, script: str = SCRIPT) -> ScriptRunner:
    made = ScriptRunner.for_url(url, script)
    assert made is not None
    return made


def test_runs_the_script_loading_it_when_redis_does_not_know_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    run = runner(redis_url)

    async def go() -> list[object]:
        return [await run.run(["counter"], [5]), await run.run(["counter"], [2])]

    assert asyncio.run(go()) == [[5, 7], [7, 7]]
    assert client.get("counter") == b"7"


def test_the_database_number_in_the_url_is_used(redis_url: str) -> None:
    other = redis_url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(other).flushdb()
    asyncio.run(runner(other).run(["in-three"], [1]))
    assert redis.Redis.from_url(other).get("in-three") == b"1"
    assert redis.Redis.from_url(redis_url).get("in-three") is None


def test_a_script_error_is_a_response_error_and_the_connection_stays_usable(
    redis_url: str,
) -> None:
    failing = runner(redis_url, "return redis.call('INCR', KEYS[1])")
    redis.Redis.from_url(redis_url).set("text", "not a number")

    async def go() -> object:
        with pytest.raises(redis.ResponseError, match="not an integer"):
            await failing.run(["text"], [])
        return await failing.run(["number"], [])

    assert asyncio.run(go()) == 1


def test_nothing_listening_is_a_connection_error() -> None:
    run = runner(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        asyncio.run(run.run(["k"], [1]))


def test_tls_urls_are_left_to_redis_py() -> None:
    assert ScriptRunner.for_url("rediss://example.org:6380/0", SCRIPT) is None


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    binary = shutil.which("redis-server") or embedded_redis_binary()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir"]
    process = subprocess.Popen(
        [*argv, str(tmp_path), "--requirepass", "s3cret pass"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:s3cret%20pass@127.0.0.1:{port}/2"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the test Redis did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_authenticates_with_the_password_in_the_url(password_redis: str) -> None:
    assert asyncio.run(runner(password_redis).run(["k"], [3])) == [3, 7]
    assert redis.Redis.from_url(password_redis).get("k") == b"3"
    wrong = password_redis.replace("s3cret%20pass", "wrong")
    with pytest.raises(redis.ResponseError):
        asyncio.run(runner(wrong).run(["k"], [1]))
