"""One set of helpers for the provider unit tests: documented payloads, a message factory, and a
recorder that stands in for a provider's API through httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from mail.providers.base import EmailMessage, Outcome, SendResult

FIXTURES = Path(__file__).parent / "fixtures" / "providers"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def fixture_text(provider: str, name: str) -> str:
    """A documented payload of `provider`, from tests/fixtures/providers/PROVIDER/NAME."""
    return (FIXTURES / provider / name).read_text()


def fixture(provider: str, name: str) -> Any:
    """A documented JSON payload of `provider`."""
    return json.loads(fixture_text(provider, name))


def make_message(n: int = 1, **overrides: Any) -> EmailMessage:
    """Reader n's copy of a digest: the same content for every n, their own unsubscribe headers and
    delivery id (100 + n); `overrides` replace any field."""
    fields: dict[str, Any] = {
        "to": f"Reader {n} <reader{n}@example.net>",
        "sender": "Topic News <news@example.org>",
        "subject": "Weekly digest",
        "text": "Hello reader\n",
        "html": "<p>Hello reader</p>",
        "headers": {
            "List-Unsubscribe": f"<https://news.example.org/u/tok{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Weekly <weekly.news.example.org>",
        },
        "metadata": {"delivery_id": str(100 + n)},
    }
    fields.update(overrides)
    return EmailMessage(**fields)


def own_body(n: int) -> dict[str, str]:
    """Reader n's body with their own links in it, as digests are (overrides for make_message)."""
    return {"text": f"Unsubscribe: https://news.example.org/u/tok{n}\n", "html": f"<a>tok{n}</a>"}


def outcomes(results: Sequence[SendResult]) -> list[Outcome]:
    """Just the outcomes of a list of SendResults."""
    return [result.outcome for result in results]


class Recorder:
    """An httpx.MockTransport handler: records every request and plays the scripted answers in
    order (a response, a function of the request, or an exception to raise). Past the script it
    answers with `default(request, n)` (n counts requests from 1) or, without one, the last answer
    again."""

    def __init__(
        self,
        *answers: Answer,
        default: Callable[[httpx.Request, int], httpx.Response] | None = None,
    ) -> None:
        if not answers and default is None:
            raise ValueError("a Recorder needs answers or a default")
        self.answers = list(answers)
        self.default = default
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.answers) > 1 or (self.answers and self.default is not None):
            answer = self.answers.pop(0)
        elif self.answers:
            answer = self.answers[0]
        else:
            assert self.default is not None
            return self.default(request, len(self.requests))
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def json(self, index: int = 0) -> Any:
        """The JSON body of request `index`."""
        return json.loads(self.requests[index].content)
