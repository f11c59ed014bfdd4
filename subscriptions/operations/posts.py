"""Post operations: add (or update) one by hand or from a CMS, hold it, approve a held one.

A post that is new, published and not a feed's backlog (`PostInfo.announce`) has its immediate
alerts planned by the worker: each operation records `PLAN_POST_ALERTS` for it, so the console,
the API and the CLI agree on when alerts go out.
"""

from __future__ import annotations

from datetime import datetime

from subscriptions import posts
from subscriptions.operations import UnitOfWork
from subscriptions.posts import PostInfo
from subscriptions.queue import PLAN_POST_ALERTS


def _announce(uow: UnitOfWork, info: PostInfo) -> PostInfo:
    if info.announce:
        uow.later(PLAN_POST_ALERTS, info.id)
    return info


def add(
    uow: UnitOfWork,
    *,
    title: str,
    link: str,
    topics: list[str],
    summary: str = "",
    author: str = "",
    guid: str | None = None,
    published_at: datetime | None = None,
    categories: list[str] | None = None,
    held: bool = False,
) -> PostInfo:
    """Store a post, or update the one with its GUID or link; a new published post is announced."""
    info = posts.add_post(
        session=uow.session,
        title=title,
        link=link,
        topics=topics,
        summary=summary,
        author=author,
        guid=guid,
        published_at=published_at,
        categories=categories,
        held=held,
    )
    return _announce(uow, info)


def hold(uow: UnitOfWork, post_id: int) -> PostInfo:
    """Hold a published post (InvalidInput on field `status` if it already is)."""
    return posts.hold_post(session=uow.session, post_id=post_id)


def approve(uow: UnitOfWork, post_id: int) -> PostInfo:
    """Release a held post; its immediate alerts are planned unless it is a feed's backlog."""
    return _announce(uow, posts.approve_post(session=uow.session, post_id=post_id))
