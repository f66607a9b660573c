-- The application role's privileges on Huizhen's tables (see deploy/postgres-roles.sql).
--
-- Run as huizhen_owner after EVERY `flask db upgrade` (it is idempotent):
--     psql -v ON_ERROR_STOP=1 -U huizhen_owner -d huizhen -f deploy/postgres-grants.sql
-- A table added by a new migration is unusable by the application until this has run.

-- Every table: read and write rows, and draw ids from the sequences.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO huizhen_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO huizhen_app;

-- The migration bookkeeping: read only.
REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM huizhen_app;

-- The audit log: append and read, never change or remove (and no TRUNCATE, REFERENCES, TRIGGER).
REVOKE ALL ON audit_events FROM PUBLIC, huizhen_app;
GRANT SELECT, INSERT ON audit_events TO huizhen_app;

-- The audit chain head: read it and move it (seq and hashes only); its trigger refuses moving it
-- backwards or deleting it.
REVOKE ALL ON audit_chain FROM PUBLIC, huizhen_app;
GRANT SELECT ON audit_chain TO huizhen_app;
GRANT UPDATE (seq, prev_hash, hash) ON audit_chain TO huizhen_app;
