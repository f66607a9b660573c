"""audit entries carry a hash chain; the chain head is kept in audit_chain

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01

Adds seq / prev_hash / hash to audit_events, backfills them for the existing entries in id order
(the one sanctioned rewrite: 0004's append-only triggers are lifted for it and put back), creates
the one-row audit_chain table with the chain head, and makes the database refuse to move that head
backwards or delete it (PostgreSQL; SQLite refuses moving it backwards).
"""
import sqlalchemy as sa
from alembic import op

from webapp.audit.chain import GENESIS, HEAD_ID, entry_hash
from webapp.models.types import UTCDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SQLITE_NO_UPDATE = """
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN
        SELECT RAISE(ABORT, 'audit_events is append-only');
    END
"""


def _backfill(bind) -> tuple[int, str, str]:
    events = sa.table(
        "audit_events", sa.column("id", sa.Integer), sa.column("at", UTCDateTime()),
        sa.column("actor_id", sa.Integer), sa.column("actor_email", sa.String),
        sa.column("action", sa.String), sa.column("consult_id", sa.Integer),
        sa.column("target", sa.String), sa.column("ip", sa.String), sa.column("detail", sa.JSON),
        sa.column("seq", sa.BigInteger), sa.column("prev_hash", sa.String), sa.column("hash", sa.String),
    )
    seq, before, prev = 0, GENESIS, GENESIS
    rows = bind.execute(sa.select(events).order_by(events.c.id)).all()
    for row in rows:
        before = prev
        seq += 1
        digest = entry_hash(seq=seq, at=row.at, actor_id=row.actor_id, actor_email=row.actor_email,
                            action=row.action, consult_id=row.consult_id, target=row.target, ip=row.ip,
                            detail=row.detail, prev_hash=prev)
        bind.execute(events.update().where(events.c.id == row.id).values(seq=seq, prev_hash=prev, hash=digest))
        prev = digest
    return seq, before, prev


def upgrade():
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
    op.create_table('audit_chain',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain'))
    )

    seq, before, head = _backfill(bind)
    op.execute(sa.text("INSERT INTO audit_chain (id, seq, prev_hash, hash) VALUES (:id, :seq, :prev, :hash)")
               .bindparams(id=HEAD_ID, seq=seq, prev=before, hash=head))

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_audit_events_seq'), ['seq'])

    if postgres:
        op.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_change")
        op.execute("""
            CREATE FUNCTION audit_chain_forward_only() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.seq < OLD.seq THEN
                    RAISE EXCEPTION 'the audit chain head only moves forward';
                END IF;
                RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_chain_forward_only BEFORE UPDATE OR DELETE ON audit_chain
            FOR EACH ROW EXECUTE FUNCTION audit_chain_forward_only()
        """)
    else:
        op.execute(SQLITE_NO_UPDATE)
        op.execute("""
            CREATE TRIGGER audit_chain_forward_only BEFORE UPDATE ON audit_chain
            WHEN NEW.id <> OLD.id OR NEW.seq < OLD.seq
            BEGIN
                SELECT RAISE(ABORT, 'the audit chain head only moves forward');
            END
        """)


def downgrade():
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER IF EXISTS audit_chain_forward_only ON audit_chain")
        op.execute("DROP FUNCTION IF EXISTS audit_chain_forward_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_chain_forward_only")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    op.drop_table('audit_chain')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_events_seq'), type_='unique')
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')
    if not postgres:
        op.execute(SQLITE_NO_UPDATE)
