"""one open call record per consult

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

Two doctors pressing Join at the same moment each created a call record (a read, then an insert).
Older duplicates still open are closed at the start of the newest one's time, then a partial unique
index keeps one open call per consult.
"""
import sqlalchemy as sa
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.execute(sa.text(
        "UPDATE call_sessions SET ended_at = started_at "
        "WHERE ended_at IS NULL AND id < ("
        "  SELECT MAX(c2.id) FROM call_sessions c2"
        "  WHERE c2.consult_id = call_sessions.consult_id AND c2.ended_at IS NULL)"
    ))
    op.create_index('uq_call_sessions_open', 'call_sessions', ['consult_id'], unique=True,
                    postgresql_where=sa.text('ended_at IS NULL'), sqlite_where=sa.text('ended_at IS NULL'))


def downgrade():
    op.drop_index('uq_call_sessions_open', table_name='call_sessions')
