"""delivery_posts without foreign keys: cascades by trigger instead of a check per planned row

PostgreSQL checks a foreign key with one query per inserted row. A daily digest to 100,000 readers
writes about 770,000 delivery_posts rows, and their two checks cost 7 of the 12 seconds planning took.
The planner writes these rows only from a join with the deliveries it has just inserted and with
posts it has just read (under the planning lock), so the checks cannot fail; what the keys did beyond
checking, removing a delivery's posts when the delivery (or its reader, or its digest) or the post
is deleted, is kept by triggers that fire on those deletes instead of on every insert.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 23:40:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Statement-level on PostgreSQL: one DELETE per deleting statement, whatever it deleted.
POSTGRESQL_UP = [
    """
    CREATE FUNCTION delivery_posts_cascade_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM delivery_posts WHERE delivery_id IN (SELECT id FROM gone);
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deliveries_delete_posts AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION delivery_posts_cascade_deliveries()
    """,
    """
    CREATE FUNCTION delivery_posts_cascade_posts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM delivery_posts WHERE post_id IN (SELECT id FROM gone);
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER posts_delete_delivery_posts AFTER DELETE ON posts
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION delivery_posts_cascade_posts()
    """,
]
POSTGRESQL_DOWN = [
    "DROP TRIGGER posts_delete_delivery_posts ON posts",
    "DROP FUNCTION delivery_posts_cascade_posts()",
    "DROP TRIGGER deliveries_delete_posts ON deliveries",
    "DROP FUNCTION delivery_posts_cascade_deliveries()",
]
# SQLite fires these for deletes made by its own ON DELETE CASCADE actions too (a reader erased).
SQLITE_UP = [
    """
    CREATE TRIGGER deliveries_delete_posts AFTER DELETE ON deliveries FOR EACH ROW
    BEGIN DELETE FROM delivery_posts WHERE delivery_id = OLD.id; END
    """,
    """
    CREATE TRIGGER posts_delete_delivery_posts AFTER DELETE ON posts FOR EACH ROW
    BEGIN DELETE FROM delivery_posts WHERE post_id = OLD.id; END
    """,
]
SQLITE_DOWN = [
    "DROP TRIGGER posts_delete_delivery_posts",
    "DROP TRIGGER deliveries_delete_posts",
]


def upgrade() -> None:
    with op.batch_alter_table('delivery_posts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_delivery_posts_delivery_id_deliveries', type_='foreignkey')
        batch_op.drop_constraint('fk_delivery_posts_post_id_posts', type_='foreignkey')
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for statement in POSTGRESQL_UP if postgresql else SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == 'postgresql'
    for statement in POSTGRESQL_DOWN if postgresql else SQLITE_DOWN:
        op.execute(statement)
    # Rows whose delivery or post is gone would fail the keys: they had nothing to say anyway.
    op.execute(
        'DELETE FROM delivery_posts WHERE delivery_id NOT IN (SELECT id FROM deliveries)'
        ' OR post_id NOT IN (SELECT id FROM posts)'
    )
    with op.batch_alter_table('delivery_posts', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_delivery_posts_delivery_id_deliveries', 'deliveries', ['delivery_id'], ['id'],
            ondelete='CASCADE',
        )
        batch_op.create_foreign_key(
            'fk_delivery_posts_post_id_posts', 'posts', ['post_id'], ['id'], ondelete='CASCADE'
        )
