"""The one settings object, read from NEWSLETTER_* variables and `.env` once, at the edges."""

from __future__ import annotations

import ipaddress
import secrets
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mail.emailurl import EmailURL, parse_email_url
from subscriptions.errors import ConfigurationError

PREFIX = "NEWSLETTER_"
#: Secret keys that are never acceptable outside development.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "development"})
DEV_SECRET_FILE = Path("var/dev-secret-key")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every setting the product reads; each has a description that the README's table repeats."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # docker-compose passes every setting as `${NEWSLETTER_X:-}`: an empty value means "not set".
        env_ignore_empty=True,
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="development, test or production; production refuses placeholder secrets.",
    )
    database_url: str = Field(
        "sqlite:///var/newsletter.db", description="SQLAlchemy URL of the database."
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (Redis URL); unset means `newsletter dev` starts an embedded Redis.",
    )
    email_url: str = Field(
        "outbox://var/outbox", description="Where email goes: provider and its options, as a URL."
    )
    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="Public URL of the web app, used in links in emails (default: http://127.0.0.1:PORT).",
    )
    port: int = Field(
        8000,
        ge=1,
        le=65535,
        description="Port `newsletter web` and `newsletter dev` serve on unless --port says otherwise.",
    )
    secret_key: str = Field(
        "",
        description="Signs tokens and cookies; generated and kept in var/ for development.",
    )
    from_address: str = Field(
        "Newsletter <newsletter@localhost>",
        validation_alias="NEWSLETTER_FROM",
        description="The From address of every email.",
    )
    site_name: str = Field("Newsletter", description="Name shown on pages and in emails.")
    brand_color: str = Field("#1d4e89", description="Accent colour of pages and emails (CSS).")
    templates_dir: Path | None = Field(
        None, description="Folder whose templates override the built-in ones, file by file."
    )
    default_timezone: str = Field(
        "UTC", description="Time zone for readers whose browser did not send one."
    )
    languages: str = Field(
        "en",
        description="Languages offered to readers, comma-separated (e.g. `en,es`); the first is the fallback.",
    )
    confirm_token_days: int = Field(
        7, ge=1, le=60, description="Days a confirmation link stays valid."
    )
    check_deliverability: bool = Field(
        False, description="Also check that an address's domain accepts mail (a DNS lookup)."
    )
    rate_limit_per_ip: int = Field(
        30, ge=1, description="Sign-ups and link requests allowed per client IP per hour."
    )
    rate_limit_per_address: int = Field(
        5, ge=1, description="Sign-ups and link requests allowed per email address per hour."
    )
    form_min_seconds: float = Field(
        2.0,
        ge=0,
        description="A form sent back faster than this gets one more button to press.",
    )
    embed_origins: str = Field(
        "",
        description=(
            "Sites whose pages may post the subscribe box and frame the form, comma-separated"
            " origins (https://blog.example.org); empty: none."
        ),
    )
    feeds_allow_private_addresses: bool = Field(
        False,
        description="Let feed URLs reach private, loopback and link-local addresses (local demos, tests).",
    )
    feeds_max_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1024,
        description="Largest feed document fetched, in bytes (after gzip).",
    )
    feeds_timeout_seconds: float = Field(10.0, gt=0, description="Time limit of one feed fetch.")
    publish_webhook_secret: str | None = Field(
        None,
        description="HMAC key of the signed publish hook for CMSs that cannot send bearer tokens.",
    )
    digest_hour: int = Field(
        7,
        ge=0,
        le=23,
        description="Local hour (reader's time zone) when daily and weekly digests go out.",
    )
    weekly_digest_day: str = Field(
        "monday", description="Weekday of the weekly digest (monday … sunday), at the digest hour."
    )
    list_unsubscribe_mailto: str | None = Field(
        None,
        description="An address for mailto: unsubscribes, added to List-Unsubscribe after the https URL.",
    )
    max_delivery_attempts: int = Field(
        5, ge=1, le=20, description="Tries of one email before it is given up as failed."
    )
    webhook_postmark: str | None = Field(
        None,
        description="Postmark webhooks: the `user:password` of the Basic auth in the webhook URL.",
    )
    webhook_sendgrid: str | None = Field(
        None,
        description="SendGrid event webhook: the verification public key (base64, as SendGrid shows it).",
    )
    webhook_mailgun: str | None = Field(
        None, description="Mailgun webhooks: the HTTP webhook signing key."
    )
    webhook_resend: str | None = Field(
        None, description="Resend webhooks: the signing secret (`whsec_…`)."
    )
    webhook_ses: str | None = Field(
        None,
        description="SES through SNS: allowed topic ARNs, comma-separated (signatures are always checked).",
    )
    rate_messages_per_second: float | None = Field(
        None, gt=0, description="Fleet-wide cap on messages a second (default: the provider's)."
    )
    rate_requests_per_second: float | None = Field(
        None,
        gt=0,
        description="Fleet-wide cap on provider API requests a second (default: the provider's).",
    )
    claim_timeout_seconds: int = Field(
        600,
        ge=5,
        description="A batch claimed this long ago and not recorded was abandoned by a dead worker.",
    )
    ledger_retention_days: int = Field(
        0,
        ge=0,
        description=(
            "Beat archives the ledger of digests finished this many days ago (as `newsletter"
            " ledger archive`); 0 turns it off."
        ),
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    trusted_proxies: str = Field(
        "",
        description=(
            "Proxies (addresses or networks, comma-separated) whose X-Forwarded-For/-Proto are"
            " believed; empty trusts none."
        ),
    )
    test_send_allowlist: str = Field(
        "",
        description=(
            "Addresses (comma-separated) that test sends of a digest may go to, besides editors'"
            " own."
        ),
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that `GET /metrics` (Prometheus) requires; unset turns the endpoint off.",
    )
    metrics_dir: Path = Field(
        Path("var/metrics"),
        description="Folder where each process keeps its counters for /metrics (shared by a host's processes).",
    )
    log_format: str = Field(
        "text", description="`text` for people, `json` for one JSON object a line (log collectors)."
    )

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value.lower() not in {"text", "json"}:
            raise ValueError(f"NEWSLETTER_LOG_FORMAT: {value!r} is not text or json")
        return value.lower()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if not scheme.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"NEWSLETTER_DATABASE_URL: unsupported database {scheme or value!r}"
                " (use sqlite:///path or postgresql+psycopg://user@host/db)"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "amqp", "amqps", "memory"} or not parts.netloc:
            raise ValueError(
                f"NEWSLETTER_BROKER_URL: malformed URL {value!r} (expected redis://host:port/0)"
            )
        return value

    @field_validator("email_url")
    @classmethod
    def _check_email_url(cls, value: str) -> str:
        parse_email_url(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                f"NEWSLETTER_BASE_URL: malformed URL {value!r} (expected https://news.example.org)"
            )
        return value.rstrip("/")

    @field_validator("from_address")
    @classmethod
    def _check_from(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "\r" in value or "\n" in value or "@" not in address:
            raise ValueError(
                f"NEWSLETTER_FROM: {value!r} is not an address"
                " (expected e.g. 'Institute Updates <news@example.org>')"
            )
        return value

    @field_validator("weekly_digest_day")
    @classmethod
    def _check_weekday(cls, value: str) -> str:
        days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        if value.lower() not in days:
            raise ValueError(
                f"NEWSLETTER_WEEKLY_DIGEST_DAY: {value!r} is not a weekday (monday … sunday)"
            )
        return value.lower()

    @field_validator("list_unsubscribe_mailto")
    @classmethod
    def _check_mailto(cls, value: str | None) -> str | None:
        if value and ("@" not in value or any(c in value for c in "\r\n<>, ")):
            raise ValueError(f"NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO: {value!r} is not a bare address")
        return value or None

    @field_validator("embed_origins")
    @classmethod
    def _check_embed_origins(cls, value: str) -> str:
        origins = []
        for item in value.replace(" ", ",").split(","):
            if not item:
                continue
            parts = urlsplit(item)
            if (
                parts.scheme not in {"http", "https"}
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or "@" in parts.netloc
            ):
                raise ValueError(
                    f"NEWSLETTER_EMBED_ORIGINS: {item!r} is not an origin"
                    " (expected e.g. https://blog.example.org, without a path)"
                )
            origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
        return ",".join(dict.fromkeys(origins))

    @property
    def allowed_embed_origins(self) -> frozenset[str]:
        """The origins of `embed_origins`, normalized (scheme://host[:port], lower case)."""
        return frozenset(o for o in self.embed_origins.split(",") if o)

    @field_validator("default_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"NEWSLETTER_DEFAULT_TIMEZONE: unknown time zone {value!r}") from None
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: str) -> str:
        from subscriptions.i18n import available_languages

        codes = [c.strip().lower() for c in value.split(",") if c.strip()]
        if not codes:
            raise ValueError("NEWSLETTER_LANGUAGES: name at least one language, e.g. `en`")
        known = available_languages()
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise ValueError(
                f"NEWSLETTER_LANGUAGES: no catalog for {', '.join(unknown)}"
                f" (known: {', '.join(sorted(known))}); see README, Languages"
            )
        return ",".join(dict.fromkeys(codes))

    @property
    def language_list(self) -> tuple[str, ...]:
        """The offered languages in order; the first is the fallback."""
        return tuple(self.languages.split(","))

    @model_validator(mode="after")
    def _default_base_url(self) -> Settings:
        if "base_url" not in self.model_fields_set:
            # Through __dict__: an assignment would mark base_url as set, and `dev` asks whether it was.
            self.__dict__["base_url"] = f"http://127.0.0.1:{self.port}"
        return self

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.secret_key.strip().lower() in PLACEHOLDER_SECRETS or len(self.secret_key) < 16:
            if self.environment is Environment.PRODUCTION:
                raise ValueError(
                    "NEWSLETTER_SECRET_KEY: set a random value of at least 16 characters"
                    " (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
            self.secret_key = _development_secret()
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: str) -> str:
        for item in _items(value):
            try:
                ipaddress.ip_network(item)
            except ValueError:
                raise ValueError(
                    f"NEWSLETTER_TRUSTED_PROXIES: {item!r} is not an address or network"
                    " (e.g. 172.18.0.0/16, the docker-compose network)"
                ) from None
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        """The proxies whose forwarded headers are believed (none by default)."""
        return _items(self.trusted_proxies)

    @property
    def test_send_allowed(self) -> frozenset[str]:
        """Extra addresses (lower case) a digest's test copy may go to."""
        return frozenset(item.lower() for item in _items(self.test_send_allowlist))

    @property
    def email(self) -> EmailURL:
        """The parsed email URL."""
        return parse_email_url(self.email_url)

    def webhook_secret(self, provider: str) -> str | None:
        """The webhook secret of `provider` (its meaning is per provider; see the README)."""
        value = getattr(self, f"webhook_{provider}", None)
        return value if isinstance(value, str) and value else None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _development_secret() -> str:
    """A random key kept in var/ so that links survive a restart of `newsletter dev`."""
    try:
        if DEV_SECRET_FILE.exists():
            return DEV_SECRET_FILE.read_text().strip()
        DEV_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        DEV_SECRET_FILE.write_text(key)
        DEV_SECRET_FILE.chmod(0o600)
        return key
    except OSError:
        return secrets.token_urlsafe(32)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; a bad value becomes a one-line ConfigurationError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if not message.startswith(PREFIX):
            field = ".".join(str(p) for p in error.get("loc", ())) or "settings"
            message = f"{PREFIX}{field.upper()}: {message}"
        raise ConfigurationError(message) from None
    except ConfigurationError:
        raise
