"""time-range index only for time ranges (PostgreSQL)

``ix_dav_items_time_range`` becomes partial on PostgreSQL (``WHERE range_start IS NOT NULL``,
true of every row): a query with a time range still uses it, a look-up by UID or href no
longer can. For a calendar filled since the last ANALYZE the planner costed it the same as
the unique (collection, uid) and (collection, href) indexes and chose it, filtering every
item of the calendar on each PUT. SQLite keeps the plain index (its planner would not use
the partial one for ranges, and always prefers the unique ones for these look-ups).

Rebuilding the index takes a write lock on dav_items for the time it takes (seconds per
million items).

Revision ID: 0008
Revises: 0007
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_COLUMNS = ['collection_id', 'range_start', 'range_end']


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_dav_items_time_range', table_name='dav_items')
    op.create_index('ix_dav_items_time_range', 'dav_items', _COLUMNS,
                    postgresql_where='range_start IS NOT NULL')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_index('ix_dav_items_time_range', table_name='dav_items')
    op.create_index('ix_dav_items_time_range', 'dav_items', _COLUMNS)
