"""every consult has its chat counter row from the start

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03

New consults get their room_counters row in the transaction that creates them (the chat's first
message then takes the one-statement fast path instead of creating the row); this fills the row
for every consult made before.
"""
import sqlalchemy as sa
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    op.execute(sa.text(
        "INSERT INTO room_counters (consult_id, last_seq) "
        "SELECT c.id, 0 FROM consults c "
        "WHERE NOT EXISTS (SELECT 1 FROM room_counters r WHERE r.consult_id = c.id)"
    ))


def downgrade():
    # Counters with no message behind them are the ones this revision (or a new consult) made;
    # the chat creates them again on the first message.
    op.execute(sa.text(
        "DELETE FROM room_counters WHERE last_seq = 0 "
        "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.consult_id = room_counters.consult_id)"
    ))
