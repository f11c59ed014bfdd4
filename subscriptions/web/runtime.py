"""What every request needs, built once per app from the settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from jinja2 import Environment
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from subscriptions.queue import TaskQueue
from subscriptions.settings import Settings
from subscriptions.tokens import TokenSigner


@dataclass
class WebRuntime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    pages: Environment
    signer: TokenSigner
    queue: TaskQueue


def get_runtime(request: Request) -> WebRuntime:
    runtime: WebRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[WebRuntime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with runtime.sessions() as session, session.begin():
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
