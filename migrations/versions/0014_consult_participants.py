"""consult participants: who takes part in a consult, with which role

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Issue 13: a consult has participants (requester, lead specialist, invited specialists,
trainees) instead of a fixed pair. The table is filled for every existing consult: its
requester, and its accepted specialist as the lead. `consults.requester_id` / `specialist_id`
stay, derived from these rows by the services that write both in one transaction.
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'consult_participants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('consult_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.Enum('requester', 'lead_specialist', 'specialist', 'trainee',
                                  name='participantrole', native_enum=False, create_constraint=True,
                                  length=32), nullable=False),
        sa.Column('added_by_id', sa.Integer(), nullable=True),
        sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('removed_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['added_by_id'], ['users.id'],
                                name=op.f('fk_consult_participants_added_by_id_users')),
        sa.ForeignKeyConstraint(['consult_id'], ['consults.id'],
                                name=op.f('fk_consult_participants_consult_id_consults')),
        sa.ForeignKeyConstraint(['removed_by_id'], ['users.id'],
                                name=op.f('fk_consult_participants_removed_by_id_users')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_consult_participants_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_consult_participants')),
    )
    with op.batch_alter_table('consult_participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consult_participants_consult_id'), ['consult_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_consult_participants_user_id'), ['user_id'], unique=False)
    op.create_index('uq_consult_participants_current', 'consult_participants', ['consult_id', 'user_id'],
                    unique=True, postgresql_where=sa.text('removed_at IS NULL'),
                    sqlite_where=sa.text('removed_at IS NULL'))
    # Every existing consult: its requester, and the specialist who accepted it as the lead.
    op.execute(
        "INSERT INTO consult_participants (consult_id, user_id, role, added_by_id, added_at, accepted_at) "
        "SELECT id, requester_id, 'requester', requester_id, created_at, created_at FROM consults "
        "ORDER BY id"
    )
    op.execute(
        "INSERT INTO consult_participants (consult_id, user_id, role, added_by_id, added_at, accepted_at) "
        "SELECT id, specialist_id, 'lead_specialist', COALESCE(assigned_by_id, specialist_id), "
        "COALESCE(accepted_at, created_at), COALESCE(accepted_at, created_at) FROM consults "
        "WHERE specialist_id IS NOT NULL ORDER BY id"
    )


def downgrade():
    op.drop_index('uq_consult_participants_current', table_name='consult_participants')
    with op.batch_alter_table('consult_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consult_participants_user_id'))
        batch_op.drop_index(batch_op.f('ix_consult_participants_consult_id'))
    op.drop_table('consult_participants')
