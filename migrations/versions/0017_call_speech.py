"""a trainee's raised hand and the lead's leave to speak in the call

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

Trainees join the call receive-only; they may raise a hand and the lead may let them speak. Both
are kept on the participation row, so every node (and a reloaded page) sees the same, and the
policy reads the grant like the role (consults/policy.py, Standing.SPEAKER).
"""
import sqlalchemy as sa
from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('consult_participants', sa.Column('hand_raised_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('consult_participants', sa.Column('speech_allowed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('consult_participants') as batch:
        batch.drop_column('speech_allowed_at')
        batch.drop_column('hand_raised_at')
