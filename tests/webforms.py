"""Fill in the product's forms as a browser would: fetch the page, keep the cookie, send the token back."""

from __future__ import annotations

import re
from typing import Any

import httpx

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(client: Any, path: str) -> str:
    """The CSRF token of the first form on `path` (the client keeps the cookie it came with)."""
    page = client.get(path)
    found = TOKEN.search(page.text)
    assert found, f"no form token on {path} ({page.status_code})"
    return found.group(1)


def post_form(client: Any, page: str, action: str, data: dict[str, Any]) -> httpx.Response:
    """GET `page` for a token, then POST `data` with it to `action`."""
    response: httpx.Response = client.post(
        action, data={"csrf_token": form_token(client, page), **data}
    )
    return response


def subscribe(
    client: Any, email: str, topics: list[str], frequency: str = "daily", **extra: Any
) -> httpx.Response:
    """Send the subscribe form."""
    return post_form(
        client,
        "/",
        "/subscribe",
        {"email": email, "topics": topics, "frequency": frequency, **extra},
    )
