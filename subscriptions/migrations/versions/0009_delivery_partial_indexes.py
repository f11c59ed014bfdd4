"""delivery partial indexes: batch keys, claims and provider message ids indexed only where looked up

The full indexes on `batch_key` and `provider_message_id` gave every claim and every record of a
delivery one more index entry to write; the claim only looks for pending rows that kept a batch key,
the reaper only for claimed rows, webhooks only for rows with a provider message id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRY = "status = 'pending' AND batch_key IS NOT NULL"
CLAIMED = "status = 'claimed'"
MESSAGE_ID = "provider_message_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_batch_key')
        batch_op.drop_index('ix_deliveries_provider_message_id')
        batch_op.create_index('ix_deliveries_retry', ['digest_id', 'batch_key'], unique=False, sqlite_where=sa.text(RETRY), postgresql_where=sa.text(RETRY))
        batch_op.create_index('ix_deliveries_claimed', ['claimed_at'], unique=False, sqlite_where=sa.text(CLAIMED), postgresql_where=sa.text(CLAIMED))
        batch_op.create_index('ix_deliveries_provider_message_id', ['provider_message_id'], unique=False, sqlite_where=sa.text(MESSAGE_ID), postgresql_where=sa.text(MESSAGE_ID))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_provider_message_id', sqlite_where=sa.text(MESSAGE_ID), postgresql_where=sa.text(MESSAGE_ID))
        batch_op.drop_index('ix_deliveries_claimed', sqlite_where=sa.text(CLAIMED), postgresql_where=sa.text(CLAIMED))
        batch_op.drop_index('ix_deliveries_retry', sqlite_where=sa.text(RETRY), postgresql_where=sa.text(RETRY))
        batch_op.create_index('ix_deliveries_provider_message_id', ['provider_message_id'], unique=False)
        batch_op.create_index('ix_deliveries_batch_key', ['batch_key'], unique=False)
