"""The editors' JSON API under /api/v1 (shared plumbing: `subscriptions/web/api.py`).

Bearer tokens (`newsletter editors create-token`), two roles, RFC 9457 problem details for every
error, offset pagination (`common.py`). Modules: `posts` (publish, search, hold, approve),
`content` (topics, feeds, suppressions), `readers`, `digests`, `tokens`.
"""

from __future__ import annotations

from fastapi import APIRouter

from subscriptions.web.apiv1 import content, digests, posts, readers, tokens

router = APIRouter(prefix="/api/v1")
for part in (posts, content, readers, digests, tokens):
    router.include_router(part.router)
