"""consent intake key: the sign-up's entry id in the intake stream, unique

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 23:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intake_key", sa.String(length=40), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_consents_intake_key"), ["intake_key"])


def downgrade() -> None:
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_consents_intake_key"), type_="unique")
        batch_op.drop_column("intake_key")
