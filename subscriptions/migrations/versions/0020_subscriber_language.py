"""subscribers.language and topics.translations: readers and topics in more than one language

Chosen at sign-up from the page's language, changeable in the preference centre, carried by CSV import
and export and the API. A nullable column with no default: NULL means "the first of
NEWSLETTER_LANGUAGES", so every reader who signed up before it follows the publisher's fallback, and
adding it rewrites nothing, on SQLite or PostgreSQL.

Dropped with a plain ALTER TABLE ... DROP COLUMN on SQLite too (3.35 and later), not with a batch, for
the reason migration 0013 gives (a batch would recreate subscribers and cascade-delete every row that
references a reader).

topics.translations holds a topic's name and description in other languages, as JSON
({"es": {"name": ..., "description": ...}}); NULL: the default language's name everywhere.

Revision ID: 0020
Revises: 0016
Create Date: 2026-12-04 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
# Assigned "0013"; 0016 (already merged) also follows 0013, and two heads would stop `upgrade head`.
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("language", sa.String(length=16), nullable=True))
    op.add_column("topics", sa.Column("translations", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE topics DROP COLUMN translations")
    op.execute("ALTER TABLE subscribers DROP COLUMN language")
