"""chat messages keep their sender's participant role (a trainee's question stays marked)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

Every existing message takes the role its sender holds (or last held) in its consult.
"""
import sqlalchemy as sa
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('sender_role', sa.Enum('requester', 'lead_specialist', 'specialist', 'trainee',
                                                          name='participantrole', native_enum=False,
                                                          create_constraint=True, length=32), nullable=True))
    op.execute(sa.text(
        "UPDATE messages SET sender_role = ("
        "  SELECT p.role FROM consult_participants p"
        "  WHERE p.consult_id = messages.consult_id AND p.user_id = messages.sender_id"
        "  ORDER BY p.id DESC LIMIT 1)"
    ))


def downgrade():
    with op.batch_alter_table('messages') as batch:
        batch.drop_constraint('participantrole', type_='check')  # SQLite's copy of the table keeps it otherwise
        batch.drop_column('sender_role')
