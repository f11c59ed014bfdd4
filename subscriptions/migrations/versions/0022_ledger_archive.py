"""ledger archive: archived_digests and archived_deliveries (one compressed row per digest and block)

`newsletter ledger archive --older-than 90d` (subscriptions/ledger_archive.py) moves the per-reader
delivery rows of digests finished before the cutoff into `archived_deliveries`, one zlib-compressed
row per digest and block of 1,024 reader ids, and deletes them from `deliveries` (their
`delivery_posts` go with them through the triggers of migration 0008). `archived_digests` keeps,
per digest, the moved deliveries' counts by status and of the provider events that named them, and whether the move has finished. Two new
tables only: nothing existing is rewritten, on SQLite or PostgreSQL.

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-04 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscriptions.models

revision: str = "0022"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "archived_digests",
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("started_at", subscriptions.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_archived_digests_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest_id", name=op.f("pk_archived_digests")),
    )
    op.create_table(
        "archived_deliveries",
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("readers", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["digests.id"],
            name=op.f("fk_archived_deliveries_digest_id_digests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest_id", "block", name=op.f("pk_archived_deliveries")),
    )
    op.create_index(
        "ix_archived_deliveries_block", "archived_deliveries", ["block"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_archived_deliveries_block", table_name="archived_deliveries")
    op.drop_table("archived_deliveries")
    op.drop_table("archived_digests")
