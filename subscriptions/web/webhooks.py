"""POST /webhooks/{provider}: provider events, verified the provider's way, stored once, applied at once.

Generic: the signature checks, event parsing and set-up handshakes (SNS's subscription confirmation)
are the provider's own, in `mail.providers`, which is free of the store and of the web.
"""

from __future__ import annotations

import time

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
        transport=runtime.http_transport,
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
    """Verify the call's signature, parse its events, refuse a replayed signature, and let the
    provider answer its set-up messages; the events left are for the store."""
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
    return provider_class.acknowledge(events, config)


def _apply(runtime: WebRuntime, provider: str, events: list[WebhookEvent]) -> int:
    stored = 0
    with runtime.sessions() as session, session.begin():
        for event in events:
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
