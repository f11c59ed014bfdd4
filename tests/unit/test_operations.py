"""Operator-facing pieces without services: JSON log lines, the base-URL warning, the default base URL."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from subscriptions.logs import JSONFormatter, formatter
from subscriptions.settings import load_settings
from subscriptions.supervisor import base_url_mismatch, default_base_url, embedded_redis_argv


def test_a_json_log_line_is_one_object_with_time_level_logger_message_and_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "newsletter.test", logging.ERROR, __file__, 1, "sent %d", (3,), sys.exc_info()
        )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "newsletter.test"
    assert entry["message"] == "sent 3" and "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")
    assert not isinstance(formatter("text"), JSONFormatter)


def test_log_format_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_LOG_FORMAT", "JSON")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("NEWSLETTER_LOG_FORMAT", "xml")
    with pytest.raises(Exception, match="NEWSLETTER_LOG_FORMAT"):
        load_settings()


@pytest.mark.parametrize(
    ("base_url", "host", "port", "warns"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", 8000, False),
        ("http://localhost:8000", "127.0.0.1", 8000, False),
        ("http://127.0.0.1:8000", "0.0.0.0", 8000, False),
        ("http://127.0.0.1:8000", "127.0.0.1", 8101, True),  # #13: links to nowhere
        ("http://192.0.2.7:8101", "127.0.0.1", 8101, True),
        ("https://news.example.org", "0.0.0.0", 8000, True),
    ],
)
def test_a_base_url_that_is_not_where_web_serves_gives_a_warning(
    base_url: str, host: str, port: int, warns: bool
) -> None:
    warning = base_url_mismatch(base_url, host, port)
    assert (warning is not None) is warns
    if warning:
        assert warning.startswith("warning:") and base_url in warning and f":{port}" in warning


def test_the_default_base_url_follows_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_BASE_URL", raising=False)
    monkeypatch.setenv("NEWSLETTER_PORT", "8101")
    assert load_settings().base_url == "http://127.0.0.1:8101"
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "https://news.example.org/")
    assert load_settings().base_url == "https://news.example.org"
    assert default_base_url("0.0.0.0", 8102) == "http://127.0.0.1:8102"


def test_the_embedded_redis_keeps_an_append_only_file() -> None:
    argv = " ".join(embedded_redis_argv(Path("/tmp/x"), 6399))
    assert "--appendonly yes" in argv and "--appendfsync everysec" in argv
    assert "--bind 127.0.0.1" in argv


def test_the_counters_and_the_ledger_state_appear_in_one_exposition(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from subscriptions import metrics
    from tests.factories import migrated_sessions

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("newsletter_webhook_events_total", provider="postmark", type="bounced")
    metrics.count_webhook_events("postmark", ["bounced", "bounced", "delivered"])
    metrics.count_feed_poll("failed")
    metrics.count_rate_limit_wait(0.25)
    metrics.count_rate_limit_wait(0.0)  # no wait: not counted
    assert (
        value("newsletter_webhook_events_total", provider="postmark", type="bounced") == before + 2
    )
    sessions = migrated_sessions(f"sqlite:///{tmp_path / 'm.db'}")
    text = metrics.render(sessions, None, None).decode()
    assert 'newsletter_webhook_events_total{provider="postmark",type="delivered"}' in text
    assert 'newsletter_feed_polls_total{result="failed"}' in text
    assert "newsletter_rate_limit_wait_seconds_total" in text
    assert "# TYPE newsletter_deliveries gauge" in text
