-- Huizhen on PostgreSQL: two roles, so that the running application cannot rewrite its audit log.
--
-- Run ONCE, as a superuser, connected to Huizhen's database:
--     psql -v ON_ERROR_STOP=1 -U postgres -d huizhen -f deploy/postgres-roles.sql
-- then set the passwords (\password huizhen_owner, \password huizhen_app).
--
--   huizhen_owner  owns the schema and every table; runs `flask db upgrade` and then
--                  deploy/postgres-grants.sql. Its credentials are NOT given to the application.
--   huizhen_app    the application's DATABASE_URL. Reads and writes the tables it needs; on the
--                  audit log only INSERT and SELECT. Not the owner of anything, so it cannot
--                  ALTER, DROP, TRUNCATE or DISABLE TRIGGER on any table.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'huizhen_owner') THEN
        CREATE ROLE huizhen_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'huizhen_app') THEN
        CREATE ROLE huizhen_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO huizhen_owner, huizhen_app', current_database());
END
$$;

-- Only the owner creates objects; the application may use the schema, nothing more.
ALTER SCHEMA public OWNER TO huizhen_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO huizhen_app;
