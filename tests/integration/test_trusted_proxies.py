"""X-Forwarded-For is believed only from the proxies in NEWSLETTER_TRUSTED_PROXIES (none by default).

What the rate limits count is the client IP: with a per-IP limit of 2 link requests an hour, a
client that names a new X-Forwarded-For on every request must still be stopped at the third,
unless it really is a listed proxy passing on other clients' addresses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from subscriptions.errors import ConfigurationError
from tests import webforms
from tests.consoles import Console
from tests.factories import make_settings, migrated_sessions
from tests.integration.conftest import free_port, wait_until_serving


def _statuses(console: Console, peer: str) -> list[int]:
    client = TestClient(
        console.app, base_url="http://127.0.0.1:8000", follow_redirects=False, client=(peer, 5000)
    )
    statuses = []
    for n in range(4):
        token = webforms.form_token(client, "/manage")
        answer = client.post(
            "/manage",
            data={"csrf_token": token, "email": f"r{n}@example.org"},
            headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
        )
        statuses.append(answer.status_code)
    return statuses


def test_forwarded_headers_are_ignored_by_default_even_from_loopback(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    console = Console(tmp_path, database_url, redis_url, rate_limit_per_ip=2)
    try:
        assert _statuses(console, "127.0.0.1") == [200, 200, 429, 429]
    finally:
        console.close()


def test_forwarded_headers_from_a_listed_proxy_name_the_client(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    console = Console(
        tmp_path, database_url, redis_url, rate_limit_per_ip=2, trusted_proxies="10.0.0.0/8"
    )
    try:
        assert _statuses(console, "10.1.2.3") == [200, 200, 200, 200]  # four clients
        assert _statuses(console, "192.0.2.50") == [200, 200, 429, 429]  # not a listed proxy
    finally:
        console.close()


def test_a_malformed_proxy_setting_is_refused_with_an_example(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NEWSLETTER_TRUSTED_PROXIES: 'proxy' is not"):
        make_settings(tmp_path, trusted_proxies="10.0.0.1, proxy")


def test_the_web_process_does_not_trust_loopback_by_default(
    service_env: dict[str, str], start: Callable[..., Any]
) -> None:
    """`newsletter web` itself (uvicorn would trust 127.0.0.1's X-Forwarded-For by default)."""
    migrated_sessions(service_env["NEWSLETTER_DATABASE_URL"])
    port = free_port()
    web = start(["web", "--port", str(port)], {**service_env, "NEWSLETTER_RATE_LIMIT_PER_IP": "2"})
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{base}/healthz", web)
    statuses = []
    with httpx.Client(base_url=base) as client:
        for n in range(4):
            token = webforms.form_token(client, "/manage")
            answer = client.post(
                "/manage",
                data={"csrf_token": token, "email": f"r{n}@example.org"},
                headers={"X-Forwarded-For": f"198.51.100.{n + 1}"},
            )
            statuses.append(answer.status_code)
    assert statuses == [200, 200, 429, 429]
