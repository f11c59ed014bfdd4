"""How an operation's error becomes an /api/v1 problem: one table for every route."""

from __future__ import annotations

import json

from subscriptions.errors import (
    ConfigurationError,
    CountChanged,
    InvalidInput,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenExpired,
)
from subscriptions.web.api import problem_for


def test_each_error_has_its_status_and_invalid_input_names_its_field() -> None:
    cases = [
        (NotFound("no feed 9"), 404, "Not Found"),
        (InvalidInput("poll interval: 60 to 604800 seconds", field="interval"), 422, None),
        (InvalidInput("post 3 is not held", field="status"), 409, "Conflict"),
        (CountChanged("the audience is 12 now", count=12), 409, "Conflict"),
        (RateLimited("slow down", retry_after=30), 429, "Too Many Requests"),
        (TokenExpired("too old"), 401, "Unauthorized"),
        (ServiceUnavailable("the broker is down"), 503, "Service Unavailable"),
        (ConfigurationError("NEWSLETTER_X: wrong"), 500, "Internal Server Error"),
    ]
    for exc, status, title in cases:
        answer = problem_for(exc).response()
        body = json.loads(answer.body)
        assert answer.status_code == status == body["status"], exc
        assert answer.media_type == "application/problem+json"
        if title:
            assert body["title"] == title
    invalid = json.loads(problem_for(InvalidInput("bad", field="topic")).response().body)
    assert invalid["errors"] == [{"field": "topic", "message": "bad"}]
    limited = problem_for(RateLimited("slow down", retry_after=30)).response()
    assert limited.headers["retry-after"] == "30"
    assert problem_for(TokenExpired("x")).response().headers["www-authenticate"] == "Bearer"
    # A configuration error's message names a setting: it is not shown to API clients.
    assert (
        "NEWSLETTER_X"
        not in problem_for(ConfigurationError("NEWSLETTER_X")).response().body.decode()
    )
