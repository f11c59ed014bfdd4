"""editor_sessions: console sign-ins kept server-side, so that signing out ends a copied cookie

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscriptions.models

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "editor_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("editor_id", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", subscriptions.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("ended_at", subscriptions.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["editor_id"],
            ["editors.id"],
            name=op.f("fk_editor_sessions_editor_id_editors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_editor_sessions")),
    )
    with op.batch_alter_table("editor_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_editor_sessions_editor_id"), ["editor_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("editor_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_editor_sessions_editor_id"))
    op.drop_table("editor_sessions")
