"""Settings: defaults, .env, one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from subscriptions.errors import ConfigurationError
from subscriptions.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_design() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/newsletter.db"
    assert settings.broker_url is None
    assert settings.email_url == "outbox://var/outbox"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.email.location == "var/outbox"
    # Development generates a key and keeps it, so links survive a restart.
    assert len(settings.secret_key) >= 32
    assert load_settings().secret_key == settings.secret_key


def test_environment_variables_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(
        "NEWSLETTER_FROM=Institute Updates <news@example.org>\n"
        "NEWSLETTER_BASE_URL=https://news.example.org/\n"
    )
    monkeypatch.setenv("NEWSLETTER_EMAIL_URL", "smtp://u:p@smtp.example.org:587?tls=starttls")
    settings = load_settings()
    assert settings.from_address == "Institute Updates <news@example.org>"
    assert settings.base_url == "https://news.example.org"
    assert settings.email.scheme == "smtp"
    assert settings.email.params == {"tls": "starttls"}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "NEWSLETTER_EMAIL_URL",
            "postmak://token@api.postmarkapp.com",
            "NEWSLETTER_EMAIL_URL: unknown scheme 'postmak' (known: outbox, smtp",
        ),
        ("NEWSLETTER_EMAIL_URL", "smtp://host:notaport", "NEWSLETTER_EMAIL_URL: malformed URL"),
        ("NEWSLETTER_BASE_URL", "news.example.org", "NEWSLETTER_BASE_URL: malformed URL"),
        ("NEWSLETTER_BROKER_URL", "redis:/nohost", "NEWSLETTER_BROKER_URL: malformed URL"),
        ("NEWSLETTER_DATABASE_URL", "mysql://x/y", "NEWSLETTER_DATABASE_URL: unsupported"),
        ("NEWSLETTER_FROM", "not an address", "NEWSLETTER_FROM:"),
        ("NEWSLETTER_DEFAULT_TIMEZONE", "Mars/Olympus", "NEWSLETTER_DEFAULT_TIMEZONE: unknown"),
        ("NEWSLETTER_CONFIRM_TOKEN_DAYS", "zero", "NEWSLETTER_CONFIRM_TOKEN_DAYS:"),
        ("NEWSLETTER_EMBED_ORIGINS", "https://blog.example.org/posts", "NEWSLETTER_EMBED_ORIGINS:"),
        ("NEWSLETTER_EMBED_ORIGINS", "blog.example.org", "NEWSLETTER_EMBED_ORIGINS:"),
    ],
)
def test_bad_values_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("secret", ["", "changeme", "secret", "short"])
def test_placeholder_secret_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("NEWSLETTER_ENVIRONMENT", "production")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", secret)
    with pytest.raises(ConfigurationError, match="NEWSLETTER_SECRET_KEY"):
        load_settings()


def test_real_secret_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_ENVIRONMENT", "production")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)
    assert load_settings().secret_key == "k" * 40


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        variable = str(field.validation_alias or f"NEWSLETTER_{name.upper()}")
        assert f"`{variable}`" in readme, f"{variable} is missing from README's settings table"
        assert field.description, f"{name} has no description"
