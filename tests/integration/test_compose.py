"""docker-compose.yml, rendered by Compose itself: every setting of the README's table reaches every service.

No Docker engine runs here, so `config` is as far as Compose goes: it renders the file with an env file the
way `up` would, and the rendered environment of each service is what its processes would read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from subscriptions.settings import load_settings
from tests.integration.conftest import REPO

NEWSLETTER_SERVICES = ("migrate", "web", "worker", "beat")

# A valid value for each setting, different from its default, so that arriving is told from defaulting.
SAMPLE = {
    "NEWSLETTER_ENVIRONMENT": "production",
    "NEWSLETTER_DATABASE_URL": "postgresql+psycopg://nl:pw@db.internal:5432/nl",
    "NEWSLETTER_BROKER_URL": "redis://cache.internal:6379/2",
    "NEWSLETTER_EMAIL_URL": "postmark://server-token@api.postmarkapp.com?stream=broadcast",
    "NEWSLETTER_BASE_URL": "https://news.example.org",
    "NEWSLETTER_PORT": "8101",
    "NEWSLETTER_SECRET_KEY": "s" * 48,
    "NEWSLETTER_FROM": "Institute Updates <news@example.org>",
    "NEWSLETTER_SITE_NAME": "Institute Updates",
    "NEWSLETTER_BRAND_COLOR": "#aa3300",
    "NEWSLETTER_TEMPLATES_DIR": "/app/var/templates",
    "NEWSLETTER_DEFAULT_TIMEZONE": "Europe/Berlin",
    "NEWSLETTER_CONFIRM_TOKEN_DAYS": "3",
    "NEWSLETTER_CHECK_DELIVERABILITY": "true",
    "NEWSLETTER_RATE_LIMIT_PER_IP": "31",
    "NEWSLETTER_RATE_LIMIT_PER_ADDRESS": "4",
    "NEWSLETTER_FORM_MIN_SECONDS": "3",
    "NEWSLETTER_FEEDS_ALLOW_PRIVATE_ADDRESSES": "true",
    "NEWSLETTER_FEEDS_MAX_BYTES": "1048576",
    "NEWSLETTER_FEEDS_TIMEOUT_SECONDS": "7",
    "NEWSLETTER_PUBLISH_WEBHOOK_SECRET": "publish-secret",
    "NEWSLETTER_DIGEST_HOUR": "6",
    "NEWSLETTER_WEEKLY_DIGEST_DAY": "friday",
    "NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO": "unsubscribe@example.org",
    "NEWSLETTER_MAX_DELIVERY_ATTEMPTS": "4",
    "NEWSLETTER_WEBHOOK_POSTMARK": "hook:secret",
    "NEWSLETTER_WEBHOOK_SENDGRID": "c2VuZGdyaWQ=",
    "NEWSLETTER_WEBHOOK_MAILGUN": "mailgun-key",
    "NEWSLETTER_WEBHOOK_RESEND": "whsec_resend",
    "NEWSLETTER_WEBHOOK_SES": "arn:aws:sns:us-east-1:123456789012:ses",
    "NEWSLETTER_RATE_MESSAGES_PER_SECOND": "12.5",
    "NEWSLETTER_RATE_REQUESTS_PER_SECOND": "3",
    "NEWSLETTER_CLAIM_TIMEOUT_SECONDS": "120",
    "NEWSLETTER_LOG_LEVEL": "DEBUG",
    "NEWSLETTER_LEDGER_RETENTION_DAYS": "180",
    "NEWSLETTER_LOG_FORMAT": "json",
    "NEWSLETTER_TRUSTED_PROXIES": "172.18.0.0/16",
    "NEWSLETTER_TEST_SEND_ALLOWLIST": "checks@example.org",
    "NEWSLETTER_EMBED_ORIGINS": "https://blog.example.org",
    "NEWSLETTER_LANGUAGES": "es,en",
    "NEWSLETTER_METRICS_TOKEN": "metrics-token-0123456789",
    "NEWSLETTER_METRICS_DIR": "/app/var/prometheus",
}


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    if found := shutil.which("docker-compose"):
        return [found]
    if os.environ.get("CI") == "true":
        pytest.fail(
            "neither `docker compose` nor docker-compose is installed; `make test` installs it"
        )
    pytest.skip("neither `docker compose` nor docker-compose is installed")
    raise AssertionError("unreachable")


def _render(tmp_path: Path, settings: dict[str, str]) -> dict[str, Any]:
    env_file = tmp_path / "sample.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    result = subprocess.run(
        [
            *_compose(),
            "--env-file",
            str(env_file),
            "-f",
            str(REPO / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rendered: dict[str, Any] = yaml.safe_load(result.stdout)
    return rendered


def _readme_settings() -> list[str]:
    readme = (REPO / "README.md").read_text()
    return re.findall(r"^\| `(NEWSLETTER_[A-Z_]+)` \|", readme, re.M)


def test_every_setting_in_the_readme_table_reaches_every_newsletter_service(tmp_path: Path) -> None:
    table = _readme_settings()
    assert len(table) >= 30 and "NEWSLETTER_WEBHOOK_POSTMARK" in table
    missing = [name for name in table if name not in SAMPLE]
    assert not missing, f"give these a sample value in this test: {missing}"
    rendered = _render(tmp_path, {name: SAMPLE[name] for name in table})
    for service in NEWSLETTER_SERVICES:
        environment = rendered["services"][service]["environment"]
        for name in table:
            assert str(environment.get(name)) == SAMPLE[name], f"{name} does not reach {service}"
    web = rendered["services"]["web"]
    assert web["ports"][0]["published"] in (8101, "8101") and web["ports"][0]["target"] == 8101


def test_with_only_the_secret_each_service_reads_the_products_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings left out of .env arrive empty, and an empty value is the product's default."""
    rendered = _render(tmp_path, {"NEWSLETTER_SECRET_KEY": "s" * 48, "NEWSLETTER_PORT": "8102"})
    monkeypatch.chdir(tmp_path)  # no developer's .env
    for service in NEWSLETTER_SERVICES:
        for name in list(os.environ):
            if name.startswith("NEWSLETTER_"):
                monkeypatch.delenv(name)
        for name, value in rendered["services"][service]["environment"].items():
            monkeypatch.setenv(name, "" if value is None else str(value))
        settings = load_settings()
        assert settings.environment == "production"
        assert settings.broker_url == "redis://redis:6379/0"
        assert settings.site_name == "Newsletter" and settings.confirm_token_days == 7
        assert settings.webhook_secret("postmark") is None
        # The base URL follows the published port unless set.
        assert settings.port == 8102 and settings.base_url == "http://127.0.0.1:8102"


def test_redis_keeps_an_append_only_file_and_worker_and_beat_have_healthchecks(
    tmp_path: Path,
) -> None:
    rendered = _render(tmp_path, {"NEWSLETTER_SECRET_KEY": "s" * 48})
    services = rendered["services"]
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    for service in ("web", "worker", "beat"):
        assert services[service]["healthcheck"]["test"], f"{service} has no healthcheck"
    assert "control.ping" in " ".join(services["worker"]["healthcheck"]["test"])
