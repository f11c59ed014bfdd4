"""The editors' console under /admin: server-rendered pages, the same look as the reader pages.

Each module owns one part and its router: `auth` (sign-in), `dashboard`, `content` (topics, feeds,
posts, suppressions), `readers` (search, detail and audit, CSV import and export, erasure), `digests`
(compose, preview, test, send, schedule, cancel, progress), `team` (editors and API tokens) and
`settings` (the configuration, sending pause and resume), the last two for admins only; `embed`
(the subscribe box snippets for the publisher's pages).
"""

from __future__ import annotations

from fastapi import APIRouter

from subscriptions.web.admin import (
    auth,
    content,
    dashboard,
    digests,
    embed,
    readers,
    settings,
    team,
)

router = APIRouter(include_in_schema=False)
for part in (auth, dashboard, content, readers, digests, team, settings, embed):
    router.include_router(part.router, prefix="/admin")
