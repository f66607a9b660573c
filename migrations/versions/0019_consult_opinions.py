"""second specialists' signed opinions

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

An invited specialist's opinion is an addendum under the lead's recommendation: its text, its
author, the time it was signed and the sha256 taken at signing. Rows are only ever added.
"""
import sqlalchemy as sa
from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'consult_opinions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('consult_id', sa.Integer(), nullable=False),
        sa.Column('author_id', sa.Integer(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('signed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('content_sha256', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['author_id'], ['users.id']),
        sa.ForeignKeyConstraint(['consult_id'], ['consults.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_consult_opinions_consult_id', 'consult_opinions', ['consult_id'], unique=False)


def downgrade():
    op.drop_index('ix_consult_opinions_consult_id', table_name='consult_opinions')
    op.drop_table('consult_opinions')
