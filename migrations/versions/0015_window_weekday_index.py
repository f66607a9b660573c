"""availability windows indexed by weekday and time, for the earliest-free-slot query

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Issue 15: first_available expands every eligible specialist's windows of the days it scans; this
covering index lets it read only the windows of those weekdays that start before the step's end.
"""
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_availability_windows_weekday_start', 'availability_windows',
                    ['weekday', 'start_minute', 'end_minute', 'specialist_id'])


def downgrade():
    op.drop_index('ix_availability_windows_weekday_start', table_name='availability_windows')
