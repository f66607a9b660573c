"""calendar: availability exceptions (leave, extra hours); why and by whom a booking ended

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-01

Issue 12: dated exceptions to the weekly availability, and the reason (reschedule or cancel) kept
on the appointment that ended, for the consult's visible history; private calendar feeds (the
token's SHA-256 only).
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'availability_exceptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('specialist_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('first_day', sa.Date(), nullable=False),
        sa.Column('last_day', sa.Date(), nullable=False),
        sa.Column('start_minute', sa.Integer(), nullable=True),
        sa.Column('end_minute', sa.Integer(), nullable=True),
        sa.Column('note', sa.String(length=120), nullable=False),
        sa.CheckConstraint("kind IN ('leave', 'extra')", name=op.f('ck_availability_exceptions_exception_kind')),
        sa.CheckConstraint('first_day <= last_day', name=op.f('ck_availability_exceptions_exception_days')),
        sa.CheckConstraint(
            "kind = 'leave' OR (start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute"
            " AND first_day = last_day)",
            name=op.f('ck_availability_exceptions_exception_hours')),
        sa.ForeignKeyConstraint(['specialist_id'], ['users.id'],
                                name=op.f('fk_availability_exceptions_specialist_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_availability_exceptions')),
    )
    with op.batch_alter_table('availability_exceptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_availability_exceptions_specialist_id'), ['specialist_id'], unique=False)
    op.create_table(
        'calendar_feeds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_calendar_feeds_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_calendar_feeds')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_calendar_feeds_token_hash')),
        sa.UniqueConstraint('user_id', name=op.f('uq_calendar_feeds_user_id')),
    )
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('end_reason', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('ended_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_appointments_ended_by_id_users'), 'users', ['ended_by_id'], ['id'])


def downgrade():
    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_appointments_ended_by_id_users'), type_='foreignkey')
        batch_op.drop_column('ended_by_id')
        batch_op.drop_column('end_reason')
    op.drop_table('calendar_feeds')
    with op.batch_alter_table('availability_exceptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_availability_exceptions_specialist_id'))
    op.drop_table('availability_exceptions')
