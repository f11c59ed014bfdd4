"""What a worker process needs, built lazily from the settings after the pool forks."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mail.bodies import DigestRenderer
from mail.providers import Provider, provider_from_url
from mail.rendering import EmailRenderer
from subscriptions.db import create_db_engine, session_factory
from subscriptions.intake import Intake
from subscriptions.settings import Settings
from subscriptions.templating import template_environment
from subscriptions.tokens import TokenSigner
from worker.digests.sender import Sender
from worker.ratelimit import limiter_for


class WorkerRuntime:
    """Engine, sessions, provider and renderer of one worker process, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return create_db_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @cached_property
    def provider(self) -> Provider:
        return provider_from_url(self.settings.email)

    @cached_property
    def renderer(self) -> EmailRenderer:
        return EmailRenderer(template_environment(self.settings, "email"))

    @cached_property
    def intake(self) -> Intake | None:
        """The sign-up stream on the broker's Redis (None when the broker is not Redis)."""
        return Intake.from_url(self.settings.broker_url)

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.settings.secret_key)

    @cached_property
    def digest_renderer(self) -> DigestRenderer:
        return DigestRenderer(template_environment(self.settings, "email"))

    @cached_property
    def sender(self) -> Sender:
        limiter = limiter_for(
            self.settings.broker_url,
            self.provider.name,
            messages=self.settings.rate_messages_per_second,
            requests=self.settings.rate_requests_per_second,
        )
        return Sender(
            self.sessions, self.provider, self.digest_renderer, self.settings, self.signer, limiter
        )

    def close(self) -> None:
        """Release connections (called when a pool process ends)."""
        if "provider" in self.__dict__:
            self.provider.close()
            del self.__dict__["provider"]
            self.__dict__.pop("sender", None)
        if "engine" in self.__dict__:
            self.engine.dispose()
            del self.__dict__["engine"]
            self.__dict__.pop("sessions", None)
            self.__dict__.pop("sender", None)
