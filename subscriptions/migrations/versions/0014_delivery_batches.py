"""delivery batches: one identity per batch, its idempotency key fixed at the first try

A `batches` row per provider request's worth of deliveries, which the deliveries point to
(`deliveries.batch_id`). A retry claims the batch row (one worker, `FOR UPDATE SKIP LOCKED` on one
row) and sends the batch whole under the key stored there; before, a retry was found through one
delivery of the group, so two workers could split it, each half under a new key. The hand-over
time moves to the batch: it is committed when the request is about to leave, after the rate limiter.

Work in flight at the upgrade: a pending group that kept its batch key becomes a waiting batch
(uncertain, under its old key); a claimed row that was handed over becomes `unknown` (the old
worker may have sent it), one that was not goes back to pending. Upgrade with the workers stopped.
The columns go with a plain ALTER TABLE ... DROP COLUMN (see 0013 on why not a batch on SQLite).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 20:40:00
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscriptions.models


revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRY = "status = 'pending' AND batch_key IS NOT NULL"
BATCH_PENDING = "status = 'pending' AND batch_id IS NOT NULL"
WAITING = "status = 'waiting'"
CLAIMED = "status = 'claimed'"
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"migration 0014 needs SQLite 3.35 or later to drop columns in place (this Python has"
            f" {sqlite3.sqlite_version})"
        )
    op.create_table(
        "batches",
        sa.Column("id", _ID, nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "claimed",
                "waiting",
                "done",
                name="batch_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claim_token", sa.String(length=40), nullable=True),
        sa.Column("handed_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column(
            "next_attempt_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", subscriptions.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_batches_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index(
        "ix_batches_waiting",
        "batches",
        ["digest_id", "next_attempt_at"],
        unique=False,
        sqlite_where=sa.text(WAITING),
        postgresql_where=sa.text(WAITING),
    )
    op.create_index(
        "ix_batches_claimed",
        "batches",
        ["claimed_at"],
        unique=False,
        sqlite_where=sa.text(CLAIMED),
        postgresql_where=sa.text(CLAIMED),
    )
    op.add_column("deliveries", sa.Column("batch_id", _ID, nullable=True))
    # Work in flight: groups waiting under a key become batches; claims end truthfully.
    op.execute(
        "INSERT INTO batches (digest_id, status, idempotency_key, attempts, uncertain,"
        " next_attempt_at, created_at)"
        " SELECT digest_id, 'waiting', batch_key, max(attempts), true, min(next_attempt_at),"
        " min(created_at) FROM deliveries WHERE status = 'pending' AND batch_key IS NOT NULL"
        " GROUP BY digest_id, batch_key"
    )
    op.execute(
        "UPDATE deliveries SET batch_id = (SELECT b.id FROM batches b"
        " WHERE b.digest_id = deliveries.digest_id AND b.idempotency_key = deliveries.batch_key)"
        " WHERE status = 'pending' AND batch_key IS NOT NULL"
    )
    op.execute(
        "UPDATE deliveries SET status = 'unknown',"
        " last_error = 'claimed and handed over when migration 0014 ran: may have been sent'"
        " WHERE status = 'claimed' AND handed_at IS NOT NULL"
    )
    op.execute("UPDATE deliveries SET status = 'pending' WHERE status = 'claimed'")
    op.drop_index("ix_deliveries_retry", table_name="deliveries")
    op.execute("ALTER TABLE deliveries DROP COLUMN batch_key")
    op.execute("ALTER TABLE deliveries DROP COLUMN handed_at")
    op.create_index(
        "ix_deliveries_batch_pending",
        "deliveries",
        ["batch_id"],
        unique=False,
        sqlite_where=sa.text(BATCH_PENDING),
        postgresql_where=sa.text(BATCH_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_batch_pending", table_name="deliveries")
    op.add_column(
        "deliveries",
        sa.Column("handed_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column("deliveries", sa.Column("batch_key", sa.String(length=40), nullable=True))
    op.execute(
        "UPDATE deliveries SET batch_key = (SELECT b.idempotency_key FROM batches b"
        " WHERE b.id = deliveries.batch_id) WHERE status = 'pending' AND batch_id IS NOT NULL"
    )
    op.create_index(
        "ix_deliveries_retry",
        "deliveries",
        ["digest_id", "batch_key"],
        unique=False,
        sqlite_where=sa.text(RETRY),
        postgresql_where=sa.text(RETRY),
    )
    op.execute("ALTER TABLE deliveries DROP COLUMN batch_id")
    op.drop_index("ix_batches_claimed", table_name="batches")
    op.drop_index("ix_batches_waiting", table_name="batches")
    op.drop_table("batches")
