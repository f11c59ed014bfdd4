"""Console pages: readers (see subscriptions/web/admin/__init__.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
