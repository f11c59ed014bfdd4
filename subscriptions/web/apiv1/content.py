"""JSON API: content (see subscriptions/web/apiv1/__init__.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
