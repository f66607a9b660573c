"""reminders and response-time targets: when each was sent, partial indexes for the scan

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Issue 12: a booking's 24 h and 15 min reminders and a request's missed response target are
claimed by setting these columns (UPDATE ... WHERE <column> IS NULL), so each fires once even
with several delivery workers. The scan reads only the unsent rows through partial indexes
ordered by due time.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_day_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reminded_soon_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('consults', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overdue_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_appointments_reminder_day_due', 'appointments', ['starts_at'],
                    postgresql_where=sa.text('reminded_day_at IS NULL AND cancelled_at IS NULL'),
                    sqlite_where=sa.text('reminded_day_at IS NULL AND cancelled_at IS NULL'))
    op.create_index('ix_appointments_reminder_soon_due', 'appointments', ['starts_at'],
                    postgresql_where=sa.text('reminded_soon_at IS NULL AND cancelled_at IS NULL'),
                    sqlite_where=sa.text('reminded_soon_at IS NULL AND cancelled_at IS NULL'))
    op.create_index('ix_consults_overdue_due', 'consults', ['urgency', 'submitted_at'],
                    postgresql_where=sa.text("status = 'requested' AND overdue_at IS NULL"),
                    sqlite_where=sa.text("status = 'requested' AND overdue_at IS NULL"))


def downgrade():
    op.drop_index('ix_consults_overdue_due', table_name='consults')
    op.drop_index('ix_appointments_reminder_soon_due', table_name='appointments')
    op.drop_index('ix_appointments_reminder_day_due', table_name='appointments')
    with op.batch_alter_table('consults', schema=None) as batch_op:
        batch_op.drop_column('overdue_at')
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.drop_column('reminded_soon_at')
        batch_op.drop_column('reminded_day_at')
