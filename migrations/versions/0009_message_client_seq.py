"""chat: the sender's client sequence number, to keep each sender's messages in order

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-01

Browsers number their outbox per user and consult; the send path refuses a message whose number
is not above the sender's last stored one (issue 9 item 1). Older messages have none (NULL).
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_seq', sa.Integer(), nullable=True))
        batch_op.create_index('ix_messages_sender_order', ['consult_id', 'sender_id', 'client_seq'], unique=False)


def downgrade():
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_sender_order')
        batch_op.drop_column('client_seq')
