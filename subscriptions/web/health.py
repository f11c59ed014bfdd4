"""GET /healthz: is the database reachable, is the broker reachable. GET /metrics: Prometheus."""

from __future__ import annotations

import hmac

import redis
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from subscriptions.web.runtime import RuntimeDep

router = APIRouter()


@router.get("/healthz")
def healthz(runtime: RuntimeDep) -> JSONResponse:
    """200 with each check's result when all pass, 503 when one fails."""
    checks: dict[str, str] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    broker = runtime.settings.broker_url
    if broker is None:
        checks["broker"] = "not configured"
    elif broker.startswith(("redis://", "rediss://")):
        try:
            client = redis.Redis.from_url(broker, socket_timeout=2, socket_connect_timeout=2)
            client.ping()
            client.close()
            checks["broker"] = "ok"
        except redis.RedisError as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
    else:
        checks["broker"] = "not checked"
    healthy = not any(v.startswith("error") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "error", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get("/livez", include_in_schema=False)
def livez() -> JSONResponse:
    """The process answers; no checks (also the bare baseline of the subscribe benchmark)."""
    return JSONResponse({"status": "ok"})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus text format; needs `Authorization: Bearer NEWSLETTER_METRICS_TOKEN`, off when unset."""
    from subscriptions.metrics import CONTENT_TYPE, render

    token = runtime.settings.metrics_token
    if not token:
        raise HTTPException(404)
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        return JSONResponse(
            {"detail": "metrics need Authorization: Bearer <NEWSLETTER_METRICS_TOKEN>"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    stream = runtime.intake.stream if runtime.intake else None
    body = await run_in_threadpool(render, runtime.sessions, runtime.settings.broker_url, stream)
    return Response(body, media_type=CONTENT_TYPE)
