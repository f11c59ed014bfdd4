"""POST /webhooks/{provider}: provider events, verified the provider's way, stored once, applied at once.

The one place where the web app uses the worker's code: the pure, database-free signature checks and
event parsing of mail/providers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mail.providers import PROVIDERS
from mail.providers.base import Provider
from mail.providers.webhooks import WebhookConfig, WebhookEvent, WebhookRejected, WebhookRequest
from subscriptions import metrics
from subscriptions.events import record_event
from subscriptions.web.runtime import RuntimeDep, WebRuntime

router = APIRouter()

MAX_BODY_BYTES = 1024 * 1024
AWS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


@router.post("/webhooks/{provider}")
async def receive(provider: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Verify, parse, store and apply; a forged, stale or malformed call gets 4xx and changes nothing."""
    provider_class = PROVIDERS.get(provider)
    if provider_class is None or not provider_class.has_webhooks:
        return JSONResponse({"detail": f"no webhooks for {provider!r}"}, status_code=404)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return JSONResponse({"detail": "body too large"}, status_code=413)
    call = WebhookRequest(
        headers={k.lower(): v for k, v in request.headers.items()}, body=body, url=str(request.url)
    )
    config = WebhookConfig(
        secret=runtime.settings.webhook_secret(provider),
        now=time.time(),
        fetch_certificate=certificate_fetcher(runtime),
    )
    # SES too: without a topic allowlist, any AWS account's genuinely signed topic would be let in.
    if config.secret is None:
        return JSONResponse(
            {"detail": f"webhooks for {provider} are not configured"}, status_code=403
        )
    try:
        # Off the event loop: SES/SNS verification may fetch a certificate (up to 10 s), and
        # every check is CPU work that would otherwise hold up every other request.
        events = await run_in_threadpool(_verify, runtime, provider_class, provider, call, config)
    except WebhookRejected as exc:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)
    except (ValueError, UnicodeError, OverflowError) as exc:
        # A malformed credential or field that a provider's parser did not expect: refused, not a 500.
        return JSONResponse(
            {"detail": f"malformed webhook call ({type(exc).__name__})"}, status_code=400
        )
    metrics.count_webhook_events(provider, [event.type.value for event in events])
    stored = await run_in_threadpool(_apply, runtime, provider, events)
    return JSONResponse({"received": len(events), "stored": stored})


def _verify(
    runtime: WebRuntime,
    provider_class: type[Provider],
    provider: str,
    call: WebhookRequest,
    config: WebhookConfig,
) -> list[WebhookEvent]:
    """Verify the call's signature, parse its events and refuse a replayed signature."""
    provider_class.verify_webhook(call, config)
    events = provider_class.parse_events(call)
    replay = provider_class.replay_key(call)
    if replay is not None and not runtime.limiter.bind_once(
        f"webhook:{provider}",
        replay,
        call.body.decode("utf-8", "replace"),
        ttl_seconds=2 * config.tolerance_seconds,
    ):
        raise WebhookRejected("this signature was already used", status=401)
    return events


def _apply(runtime: WebRuntime, provider: str, events: list[WebhookEvent]) -> int:
    stored = 0
    with runtime.sessions() as session, session.begin():
        for event in events:
            confirm = (
                event.raw.get("SubscribeURL")
                if event.raw.get("Type") == "SubscriptionConfirmation"
                else None
            )
            if isinstance(confirm, str):
                _confirm_sns_subscription(runtime, confirm)
                continue
            if not event.email:
                continue
            outcome = record_event(
                session=session,
                provider=provider,
                event_id=event.event_id,
                type=event.type.value,
                email=event.email,
                occurred_at=event.occurred_at,
                provider_message_id=event.provider_message_id,
                delivery_id=event.delivery_id,
                detail=event.detail,
                payload=dict(event.raw),
            )
            stored += outcome.stored
    return stored


def _aws_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(AWS_HOST.match(parts.hostname or ""))


def _confirm_sns_subscription(runtime: WebRuntime, url: str) -> None:
    """Follow an SNS SubscribeURL (only an https URL on an SNS host), which confirms the topic."""
    if not _aws_url(url):
        return
    with httpx.Client(timeout=10, transport=runtime.http_transport) as client:
        client.get(url)


def certificate_fetcher(runtime: WebRuntime) -> Callable[[str], bytes]:
    """Fetch an SNS signing certificate, only from an https SNS host (remembered in production)."""
    if runtime.http_transport is None:
        return _fetch_cached
    transport = runtime.http_transport
    return lambda url: _fetch(url, transport)


def _fetch(url: str, transport: httpx.BaseTransport | None) -> bytes:
    if not _aws_url(url):
        raise WebhookRejected("signing certificate is not on an SNS host", status=403)
    try:
        with httpx.Client(timeout=10, transport=transport) as client:
            response = client.get(url)
            response.raise_for_status()
            return response.content
    except httpx.HTTPError as exc:
        raise WebhookRejected(
            # Our side failed, not the caller: 503 makes SNS retry (it never retries a 4xx).
            f"cannot fetch the signing certificate: {type(exc).__name__}",
            status=503,
        ) from None


@lru_cache(maxsize=16)
def _fetch_cached(url: str) -> bytes:
    return _fetch(url, None)
