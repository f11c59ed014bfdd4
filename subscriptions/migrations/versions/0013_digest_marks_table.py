"""digest_marks: readers' digest marks in a narrow table of their own, out of subscribers

The planner moves the mark of every reader a daily run considers: 100,000 rows a day. As columns of
subscribers (0012) each move rewrote a whole reader row and added an entry to every index of the
table. Here a mark is a small row keyed by (reader, frequency), on pages kept half empty, so a move
is an update in place (HOT on PostgreSQL: `through` is in no index) or, the first time, a small
insert. Existing marks are copied; a reader without one had none before either.

The columns go with a plain ALTER TABLE ... DROP COLUMN on SQLite too (3.35 and later), not with a
batch: a batch copies subscribers into a new table and drops the old one, and with foreign keys on
(they cannot be turned off inside the migration's transaction) dropping it deletes every row that
references a reader, by ON DELETE CASCADE: subscriptions, consents, deliveries and the marks.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 02:00:00
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscriptions.models


revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKS = (("daily", "daily_through"), ("weekly", "weekly_through"))


def _drop_mark_columns() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(
            f"migration 0013 needs SQLite 3.35 or later to drop columns in place (this Python has"
            f" {sqlite3.sqlite_version}); run it with a Python built on a newer SQLite"
        )
    for _, column in MARKS:
        op.execute(f"ALTER TABLE subscribers DROP COLUMN {column}")


def upgrade() -> None:
    op.create_table(
        "digest_marks",
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column(
            "frequency",
            sa.Enum(
                "immediate",
                "daily",
                "weekly",
                name="frequency",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("through", subscriptions.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_digest_marks_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscriber_id", "frequency", name=op.f("pk_digest_marks")),
        postgresql_with={"fillfactor": 50},
    )
    for frequency, column in MARKS:
        op.execute(
            f"INSERT INTO digest_marks (subscriber_id, frequency, through)"
            f" SELECT id, '{frequency}', {column} FROM subscribers WHERE {column} IS NOT NULL"
        )
    _drop_mark_columns()


def downgrade() -> None:
    # Adding nullable columns is an ALTER TABLE in place on SQLite too (no copy of the table).
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "daily_through", subscriptions.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "weekly_through", subscriptions.models.UTCDateTime(timezone=True), nullable=True
            )
        )
    for frequency, column in MARKS:
        op.execute(
            f"UPDATE subscribers SET {column} = (SELECT through FROM digest_marks"
            f" WHERE digest_marks.subscriber_id = subscribers.id"
            f" AND digest_marks.frequency = '{frequency}')"
        )
    op.drop_table("digest_marks")
