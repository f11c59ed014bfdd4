"""The console and the JSON API as tests use them: an app on a real database and Redis, editors
signed in through the real sign-in form, API tokens made by the real operation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from subscriptions import editors
from subscriptions.settings import Settings
from subscriptions.web.app import create_app
from tests import webforms
from tests.factories import add_demo_topics, make_settings, migrated_sessions

PASSWORD = "correct horse battery staple"


class Console:
    """The app under test, its database, and ways in as an editor or an API client."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str, **settings: Any) -> None:
        self.sessions: sessionmaker[Session] = migrated_sessions(database_url)
        with self.sessions.begin() as session:
            add_demo_topics(session)
        values: dict[str, Any] = {"broker_url": redis_url, "form_min_seconds": 0}
        values.update(settings)
        self.settings: Settings = make_settings(tmp_path, database_url=database_url, **values)
        self.app: FastAPI = create_app(self.settings)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://127.0.0.1:8000", follow_redirects=False)

    def editor(self, email: str = "admin@example.org", role: str = "admin") -> editors.EditorInfo:
        with self.sessions.begin() as session:
            return editors.create_editor(session=session, email=email, password=PASSWORD, role=role)

    def signed_in(self, email: str = "admin@example.org", role: str = "admin") -> TestClient:
        """A client signed in as a new editor with `role`, through the sign-in form."""
        self.editor(email, role)
        client = self.client()
        answer = webforms.post_form(
            client, "/admin/login", "/admin/login", {"email": email, "password": PASSWORD}
        )
        assert answer.status_code == 303, answer.text
        return client

    def token(self, role: str = "admin", name: str = "test") -> str:
        """A fresh API bearer token with `role`."""
        with self.sessions.begin() as session:
            _, plain = editors.create_token(session=session, name=name, role=role)
        return plain

    def api(self, role: str = "admin") -> TestClient:
        """A client that sends a fresh bearer token with `role` on every request."""
        client = self.client()
        client.headers["Authorization"] = f"Bearer {self.token(role)}"
        return client

    def close(self) -> None:
        self.app.state.runtime.engine.dispose()
