"""The store: SQLAlchemy 2 typed models. Operations return plain data, never these objects."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class Frequency(enum.StrEnum):
    IMMEDIATE = "immediate"
    DAILY = "daily"
    WEEKLY = "weekly"


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


class PostStatus(enum.StrEnum):
    PUBLISHED = "published"
    HELD = "held"


class DigestKind(enum.StrEnum):
    IMMEDIATE = "immediate"
    DAILY = "daily"
    WEEKLY = "weekly"
    EDITORIAL = "editorial"
    TRANSACTIONAL = "transactional"


class DigestStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    PLANNING = "planning"
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"


#: The largest id of the 32-bit INTEGER key columns (readers, topics, posts, digests, ...): a
#: larger id in a URL can never match, and is refused before it reaches the database.
MAX_ID = 2_147_483_647


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: Name and description in other languages: {"es": {"name": "…", "description": "…"}}; a
    #: language missing here shows `name` and `description` (the default language's).
    translations: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    archived_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.PENDING
    )
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: The reader's language for emails and pages; None: the first of NEWSLETTER_LANGUAGES.
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    paused_until: Mapped[datetime | None]
    # Raising it revokes every link issued before (tokens carry the version they were made with).
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    confirmation_sent_at: Mapped[datetime | None]
    #: What the last unsubscribe removed, [[topic id, frequency], ...], for its undo within
    #: readers.UNDO_DAYS of `unsubscribed_at`; cleared by the undo or a new confirmation.
    left_subscriptions: Mapped[list[Any] | None] = mapped_column(JSON, default=None)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (Index("ix_subscribers_status", "status"),)


class Subscription(Base):
    """One reader's choice of one topic, with its own frequency."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    frequency: Mapped[Frequency] = mapped_column(_enum(Frequency, "frequency"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")

    __table_args__ = (
        UniqueConstraint("subscriber_id", "topic_id"),
        # The planner's fan-out: readers of a topic at a frequency.
        Index("ix_subscriptions_topic_frequency", "topic_id", "frequency", "subscriber_id"),
    )


class DigestMark(Base):
    """Where a reader's last digest window of one frequency ended, kept by the planner.

    Their next window of that frequency starts there, so a change of time zone neither skips nor
    repeats posts. No row: the next window is their zone's period (a new reader, one back after
    unsubscribing, or one with no topic at that frequency lately). A table of its own, narrow and
    with room on each page, so that moving 100,000 marks after a run rewrites small rows in place
    (HOT updates on PostgreSQL: `through` is in no index) instead of whole readers and every index
    of `subscribers`.
    """

    __tablename__ = "digest_marks"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    frequency: Mapped[Frequency] = mapped_column(_enum(Frequency, "frequency"), primary_key=True)
    through: Mapped[datetime]

    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)


class Consent(Base):
    """What a reader agreed to, when, and from where: kept for every sign-up."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(200), default="")
    user_agent: Mapped[str] = mapped_column(String(400), default="")
    topics: Mapped[list[str]] = mapped_column(default=list)
    wording: Mapped[str] = mapped_column(Text, default="")
    frequency: Mapped[Frequency] = mapped_column(_enum(Frequency, "frequency"))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # False when no email is due for this sign-up (too many confirmations to one address today).
    send_email: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when the confirmation email for this sign-up was handed to the provider.
    email_sent_at: Mapped[datetime | None]
    # Set when the reader confirmed this sign-up: its link then no longer works.
    confirmed_at: Mapped[datetime | None]
    # Set when the welcome email (with the reader's manage and unsubscribe links) was handed over.
    welcome_sent_at: Mapped[datetime | None]
    # The sign-up's entry id in the intake stream (subscriptions/intake.py): applied at most once.
    intake_key: Mapped[str | None] = mapped_column(String(40), unique=True)


class Feed(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    title: Mapped[str] = mapped_column(String(400), default="")
    default_topic_id: Mapped[int | None] = mapped_column(
        ForeignKey("topics.id", ondelete="SET NULL")
    )
    category_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    poll_interval_seconds: Mapped[int] = mapped_column(Integer, default=900)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    # On the first poll, mail the newest N entries; the rest of the backlog is recorded as seen.
    send_latest: Mapped[int] = mapped_column(Integer, default=0)
    etag: Mapped[str | None] = mapped_column(String(400))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_at: Mapped[datetime | None]
    next_poll_at: Mapped[datetime | None] = mapped_column(index=True)
    last_status: Mapped[str] = mapped_column(String(40), default="new")
    last_error: Mapped[str] = mapped_column(Text, default="")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


post_topics = Table(
    "post_topics",
    Base.metadata,
    Column("post_id", ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    # GUID, else the normalized link, else a hash of title and date: what makes two entries one post.
    identity: Mapped[str] = mapped_column(String(2000), unique=True)
    guid: Mapped[str | None] = mapped_column(String(2000))
    link: Mapped[str] = mapped_column(String(2000), default="", index=True)
    title: Mapped[str] = mapped_column(String(1000))
    summary: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(400), default="")
    categories: Mapped[list[str]] = mapped_column(default=list)
    unmapped_categories: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[PostStatus] = mapped_column(
        _enum(PostStatus, "post_status"), default=PostStatus.PUBLISHED
    )
    # False for a new feed's backlog: recorded as seen, never mailed.
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    # When the post became due for mailing (stored, or approved if held); digests take posts by it.
    released_at: Mapped[datetime | None] = mapped_column(index=True)
    published_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    topics: Mapped[list[Topic]] = relationship(secondary=post_topics)


class Digest(Base):
    """One planned send: an immediate alert, a daily or weekly run, an editor's digest."""

    __tablename__ = "digests"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[DigestKind] = mapped_column(_enum(DigestKind, "digest_kind"))
    status: Mapped[DigestStatus] = mapped_column(
        _enum(DigestStatus, "digest_status"), default=DigestStatus.DRAFT
    )
    # Unique per kind: two planners for the same period or post cannot both create a run.
    run_key: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(400), default="")
    intro_markdown: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    scheduled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("kind", "run_key"),
        Index("ix_digests_status_scheduled", "status", "scheduled_at"),
    )


class BatchStatus(enum.StrEnum):
    """A batch is claimed by one worker, waits for its retry, or is done (no pending row left)."""

    CLAIMED = "claimed"
    WAITING = "waiting"
    DONE = "done"


class Batch(Base):
    """One provider request's worth of deliveries, with one identity for all its tries.

    Made by the claim that first takes the rows, with the idempotency key fixed then: every retry is
    the whole batch (its rows still pending), claimed by exactly one worker through this row, under
    the same key. `handed_at` is committed only when the request is about to leave (after the rate
    limiter, after rendering): a claim abandoned before it goes back to waiting and is sent normally;
    one abandoned after it may have reached the provider (see worker/digests/sender.py, reap()).
    """

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"))
    status: Mapped[BatchStatus] = mapped_column(
        _enum(BatchStatus, "batch_status"), default=BatchStatus.CLAIMED
    )
    idempotency_key: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    # Changes with every claim: a worker whose claim was reaped cannot hand the batch over.
    claim_token: Mapped[str | None] = mapped_column(String(40))
    handed_at: Mapped[datetime | None]
    # The last try's outcome is unknown: the next must be the identical request (no regrouping,
    # no reader dropped), so that an idempotent provider recognises it.
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # The claim's search for retries that are due, and the reaper's for abandoned claims.
        Index(
            "ix_batches_waiting",
            "digest_id",
            "next_attempt_at",
            sqlite_where=text("status = 'waiting'"),
            postgresql_where=text("status = 'waiting'"),
        ),
        Index(
            "ix_batches_claimed",
            "claimed_at",
            sqlite_where=text("status = 'claimed'"),
            postgresql_where=text("status = 'claimed'"),
        ),
    )


class Delivery(Base):
    """The ledger: one row per digest and reader, claimed, sent and recorded exactly once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    # The batch this delivery was first claimed in (batches.id; no foreign key, so a claim writes no
    # extra check per row). It stays for the delivery's life: a retry is always its whole batch.
    batch_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    provider_message_id: Mapped[str | None] = mapped_column(String(400))
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    posts: Mapped[list[Post]] = relationship(
        secondary="delivery_posts",
        primaryjoin="Delivery.id == foreign(delivery_posts.c.delivery_id)",
        secondaryjoin="Post.id == foreign(delivery_posts.c.post_id)",
        viewonly=True,
    )

    __table_args__ = (
        UniqueConstraint("digest_id", "subscriber_id"),
        Index("ix_deliveries_subscriber", "subscriber_id"),
        # The claim query scans only work still to do.
        Index(
            "ix_deliveries_pending",
            "digest_id",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # The indexes below hold only the few rows that need finding, so the claim and the record of
        # a batch add no entries to them (every index entry costs a write per row updated).
        # The rows of a batch waiting to be sent again whole (a claim adds no entry: claimed rows
        # are not pending).
        Index(
            "ix_deliveries_batch_pending",
            "batch_id",
            sqlite_where=text("status = 'pending' AND batch_id IS NOT NULL"),
            postgresql_where=text("status = 'pending' AND batch_id IS NOT NULL"),
        ),
        # The reaper's search for abandoned claims.
        Index(
            "ix_deliveries_claimed",
            "claimed_at",
            sqlite_where=text("status = 'claimed'"),
            postgresql_where=text("status = 'claimed'"),
        ),
        # Webhook events name the provider's message id (`= x` implies NOT NULL: the index serves).
        Index(
            "ix_deliveries_provider_message_id",
            "provider_message_id",
            sqlite_where=text("provider_message_id IS NOT NULL"),
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
    )


# The posts each delivery carries, written only by the planner. No foreign keys: PostgreSQL would
# check each planned row with a query of its own (most of a big digest's planning time); triggers
# made by migration 0008 delete a delivery's rows with the delivery and a post's with the post.
delivery_posts = Table(
    "delivery_posts",
    Base.metadata,
    Column("delivery_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("post_id", Integer, primary_key=True, index=True),
)


class ArchivedDigest(Base):
    """A digest whose per-reader ledger rows were moved to `archived_deliveries`.

    Written by subscriptions/ledger_archive.py when it starts on a digest, and updated in the same
    transaction as each chunk of deliveries it moves, so `counts` (moved deliveries by status) always
    matches what is in the archive; `finished_at` is None while rows remain to move.
    """

    __tablename__ = "archived_digests"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Provider events that named the moved deliveries, by type (the digest's report counts them).
    events: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ArchivedDeliveries(Base):
    """The archived outcomes of one digest for one block of 1,024 reader ids, zlib-compressed.

    One row per (digest, block), not per reader: the ledger of a million-reader digest becomes about
    a thousand rows, and a reader's archived copies are read through `block` (subscriber_id // 1024),
    one small blob per archived digest (see subscriptions/ledger_archive.py for the format).
    """

    __tablename__ = "archived_deliveries"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    readers: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_archived_deliveries_block", "block"),)


class Event(Base):
    """A provider's report about a message (delivered, bounced, complained, unsubscribed)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    provider_event_id: Mapped[str] = mapped_column(String(400))
    type: Mapped[str] = mapped_column(String(40))
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True
    )
    detail: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (UniqueConstraint("provider", "provider_event_id"),)


class Suppression(Base):
    """An address that must not be mailed; kept as a hash so an erased reader stays erased."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Editor(Base):
    """A person who runs the newsletter from the console; only an Argon2 hash of the password."""

    __tablename__ = "editors"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default="editor")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    # Raised to end every session of this editor at once (logout everywhere, password change).
    session_version: Mapped[int] = mapped_column(default=1)


class EditorSession(Base):
    """A console sign-in, named by a random id in the editor's cookie (only its hash is stored).

    Signing out ends the row, so a copy of the cookie stops working too; a signed cookie alone
    would keep opening the console until it expired.
    """

    __tablename__ = "editor_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    editor_id: Mapped[int] = mapped_column(ForeignKey("editors.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class EditorToken(Base):
    """An API bearer token; only its hash is stored."""

    __tablename__ = "editor_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="editor")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Notice(Base):
    """Something editors must know and act on: sending paused, a batch the provider refused."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
