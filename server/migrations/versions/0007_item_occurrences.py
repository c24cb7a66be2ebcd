"""item occurrences

Every occurrence of a recurring calendar object, so that a time-range REPORT answers for a
series spanning the range without parsing it. NULL (every row written before this revision)
means "not indexed": such an item is parsed and tested, as before.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dav_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('occurrences', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('dav_items', schema=None) as batch_op:
        batch_op.drop_column('occurrences')
