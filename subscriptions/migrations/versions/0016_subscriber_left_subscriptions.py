"""subscribers.left_subscriptions: what a reader's last unsubscribe removed, for its 30-day undo

An unsubscribe deletes the reader's subscriptions (the planner's fan-out reads only live rows). To let
the reader undo it for 30 days without a new double opt-in, the removed (topic id, frequency) pairs
are kept on the reader's row, as JSON, until the undo, a new confirmation, or erasure (which deletes
the row). A nullable column with no default: adding it rewrites nothing, on SQLite or PostgreSQL.

The column is dropped with a plain ALTER TABLE ... DROP COLUMN on SQLite too (3.35 and later), not with
a batch, for the reason migration 0013 gives (a batch would recreate subscribers and cascade-delete
every row that references a reader).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("left_subscriptions", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE subscribers DROP COLUMN left_subscriptions")
