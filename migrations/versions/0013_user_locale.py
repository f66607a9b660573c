"""the language Huizhen speaks to each user

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Issue 11: a user's own choice of language ("zh_CN" or "en"), set by the header's switch. NULL
means no choice yet: the browser's Accept-Language, else DEFAULT_LOCALE, decides.
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locale', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('locale')
