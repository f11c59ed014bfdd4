"""The three ways in, side by side, for the operation tests: the console (a signed-in editor, real
CSRF forms), the API (a bearer token) and the CLI (click's CliRunner, in this process), all on
one real database and one real Redis, whose queue the tests read to see what each one queued."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from subscriptions.cli import main
from subscriptions.queue import QUEUE
from tests.consoles import Console


class EntryPoints(Console):
    """A console, an API client and the CLI on the same settings, database and broker."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, **settings: Any) -> None:
        super().__init__(tmp_path, database_url, redis_url, **settings)
        self.redis = redis.Redis.from_url(redis_url)
        self.web: TestClient = self.signed_in(role="admin")
        self.http: TestClient = self.api(role="admin")
        s = self.settings
        self.env: dict[str, str | None] = {
            "NEWSLETTER_DATABASE_URL": s.database_url,
            "NEWSLETTER_BROKER_URL": redis_url,
            "NEWSLETTER_EMAIL_URL": f"outbox://{tmp_path / 'outbox'}",
            "NEWSLETTER_SECRET_KEY": s.secret_key,
            "NEWSLETTER_ENVIRONMENT": "test",
            "NEWSLETTER_FROM": "Institute Updates <news@example.org>",
            "NEWSLETTER_SITE_NAME": "Institute Updates",
            "NEWSLETTER_TEST_SEND_ALLOWLIST": s.test_send_allowlist or None,
            "NEWSLETTER_LANGUAGES": s.languages,
        }
        self.cwd = tmp_path

    def cli(self, *args: str, input: str | bytes | None = None) -> Result:
        """Run `newsletter ARGS` in this process, on the same settings as the app."""
        return CliRunner().invoke(main, list(args), env=self.env, input=input)

    def queued(self) -> list[tuple[str, list[Any]]]:
        """(task name, args) of every message waiting on the broker, oldest first; then empty it."""
        out = []
        for raw in reversed(self.redis.lrange(QUEUE, 0, -1)):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            out.append((message["headers"]["task"], args))
        self.redis.delete(QUEUE)
        return out

    def close(self) -> None:
        self.redis.close()
        super().close()
