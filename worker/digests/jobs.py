"""Load a claimed batch as plain data: who gets which posts under which topics, and why."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from mail.bodies import Group, group_posts
from subscriptions.models import (
    Delivery,
    Digest,
    Post,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    delivery_posts,
    post_topics,
    utcnow,
)


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed delivery, ready to render."""

    delivery_id: int
    subscriber_id: int
    email: str
    token_version: int
    mailable: bool
    kind: str
    groups: tuple[Group, ...]
    subscriptions: tuple[tuple[str, str], ...]
    #: The reader's stored language (None: the fallback); the Sender resolves it against the settings.
    language: str | None = None

    @property
    def variant(self) -> tuple[object, ...]:
        """Readers with equal variants share one rendered body (one per language)."""
        return (self.kind, self.groups, self.language)


@dataclass(frozen=True, slots=True)
class DigestInfo:
    id: int
    kind: str
    subject: str
    intro_markdown: str


class JobCache:
    """What one worker keeps between the batches of a digest: the digest and its posts' views.

    A digest's posts are read and made into views once, not once per batch; readers with the same
    posts and wanted topics share one tuple of groups. Like the Sender's rendered bodies (keyed by
    digest), what is cached for a digest is what its first batch saw. Bounded: a few digests.
    """

    MAX_DIGESTS = 16

    def __init__(self) -> None:
        self._digests: dict[int, _DigestCache] = {}

    def digest(self, session: Session, digest_id: int) -> _DigestCache:
        cached = self._digests.get(digest_id)
        if cached is None:
            if len(self._digests) >= self.MAX_DIGESTS:
                self._digests.clear()
            digest = session.get(Digest, digest_id)
            assert digest is not None  # its deliveries were just read in this transaction
            info = DigestInfo(digest.id, digest.kind.value, digest.subject, digest.intro_markdown)
            cached = self._digests[digest_id] = _DigestCache(info)
        return cached


@dataclass
class _CachedPost:
    order: tuple[datetime, int]  # (published, -id): sorted in reverse, newest first, then by id
    rows: list[tuple[int, str, str, str, str]]  # (post id, title, link, summary, topic) per topic


@dataclass
class _DigestCache:
    info: DigestInfo
    posts: dict[int, _CachedPost] = field(default_factory=dict)
    groups: dict[tuple[tuple[int, ...], frozenset[str]], tuple[Group, ...]] = field(
        default_factory=dict
    )


def among(session: Session, column: Any, values: Sequence[int]) -> Any:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`: one parameter, one plan, any length."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(BigInteger)))
    return column.in_(values)


def load_jobs(
    session: Session,
    delivery_ids: list[int],
    *,
    cache: JobCache | None = None,
    claimed: tuple[int, Sequence[tuple[int, int]]] | None = None,
) -> tuple[DigestInfo | None, list[Job]]:
    """The digest and the jobs of `delivery_ids` (all of one digest).

    Each query reads one table by its key, so no plan depends on statistics (which are stale right
    after a digest is planned); posts and the digest come from `cache` after the first batch.
    `claimed`: (digest id, (delivery id, reader id) of each delivery) when the claim already returned
    them, so the deliveries are not read again.
    """
    if not delivery_ids:
        return None, []
    rows: Sequence[Any]
    if claimed is not None and len(claimed[1]) == len(delivery_ids):
        rows = sorted((d, claimed[0], r) for d, r in claimed[1])
    else:
        rows = session.execute(
            select(Delivery.id, Delivery.digest_id, Delivery.subscriber_id)
            .where(among(session, Delivery.id, delivery_ids))
            .order_by(Delivery.id)
        ).all()
    if not rows:
        return None, []
    digest = (cache or JobCache()).digest(session, rows[0][1])
    info = digest.info
    reader_ids = sorted({r[2] for r in rows})
    readers = {
        r[0]: r
        for r in session.execute(
            select(
                Subscriber.id,
                Subscriber.email,
                Subscriber.token_version,
                Subscriber.status,
                Subscriber.paused_until,
                Subscriber.language,
            ).where(among(session, Subscriber.id, reader_ids))
        )
    }
    subs: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for reader_id, name, frequency in session.execute(
        select(Subscription.subscriber_id, Topic.name, Subscription.frequency)
        .join(Topic, Topic.id == Subscription.topic_id)
        .where(among(session, Subscription.subscriber_id, reader_ids))
    ):
        subs[reader_id].append((name, frequency.value))
    post_ids: dict[int, list[int]] = defaultdict(list)
    for delivery_id, post_id in session.execute(
        select(delivery_posts.c.delivery_id, delivery_posts.c.post_id).where(
            among(session, delivery_posts.c.delivery_id, delivery_ids)
        )
    ):
        post_ids[delivery_id].append(post_id)
    _read_posts(session, digest, {p for ps in post_ids.values() for p in ps})
    now = utcnow()
    jobs = []
    for delivery_id, _, reader_id in rows:
        _, email, version, status, paused_until, language = readers[reader_id]
        mailable = status is SubscriberStatus.ACTIVE and (
            paused_until is None or paused_until <= now
        )
        mine = subs[reader_id]
        jobs.append(
            Job(
                delivery_id=delivery_id,
                subscriber_id=reader_id,
                email=email,
                token_version=version,
                mailable=mailable,
                kind=info.kind,
                groups=_cached_groups(digest, post_ids[delivery_id], mine),
                subscriptions=tuple(sorted(mine)),
                language=language,
            )
        )
    return info, jobs


def _read_posts(session: Session, digest: _DigestCache, post_ids: set[int]) -> None:
    missing = sorted(post_ids - digest.posts.keys())
    if not missing:
        return
    for post_id, title, link, summary, published_at, topic in session.execute(
        select(Post.id, Post.title, Post.link, Post.summary, Post.published_at, Topic.name)
        .join(post_topics, post_topics.c.post_id == Post.id)
        .join(Topic, Topic.id == post_topics.c.topic_id)
        .where(Post.id.in_(missing))
        .order_by(Post.id, Topic.name)
    ):
        post = digest.posts.get(post_id)
        if post is None:
            post = digest.posts[post_id] = _CachedPost((published_at, -post_id), [])
        post.rows.append((post_id, title, link, summary, topic))


def _cached_groups(
    digest: _DigestCache, post_ids: list[int], subscriptions: list[tuple[str, str]]
) -> tuple[Group, ...]:
    posts = sorted(
        (digest.posts[p] for p in post_ids if p in digest.posts),
        key=lambda p: p.order,
        reverse=True,
    )
    kind = digest.info.kind
    shown = {row[4] for post in posts for row in post.rows}
    # Only the reader's wanted topics among these posts' topics change the grouping.
    wanted = frozenset(
        name
        for name, freq in subscriptions
        if (kind == "editorial" or freq == kind) and name in shown
    )
    key = (tuple(-post.order[1] for post in posts), wanted)
    groups = digest.groups.get(key)
    if groups is None:
        if len(digest.groups) > 4096:
            digest.groups.clear()
        rows = [row for post in posts for row in post.rows]
        groups = digest.groups[key] = group_posts(kind, rows, subscriptions)
    return groups
