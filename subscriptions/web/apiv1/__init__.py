"""The editors' JSON API under /api/v1 (besides publishing posts, in subscriptions/web/api.py).

Bearer tokens (`newsletter editors create-token`), two roles, RFC 9457 problem details for every
error, offset pagination (`common.py`). Modules: `content` (topics, feeds, posts, suppressions),
`readers`, `digests`, `tokens`.
"""

from __future__ import annotations

from fastapi import APIRouter

from subscriptions.web.apiv1 import content, digests, readers, tokens

router = APIRouter(prefix="/api/v1")
for part in (content, readers, digests, tokens):
    router.include_router(part.router)
