-- The audit writer connects as the owner and switches to killswitch_audit_writer (SET ROLE, as the
-- connection option `-c role=`). Two things 0002 did not make sure of, both met on managed Postgres where
-- the owner is no superuser (docs/operations.md, "Managed Postgres"):
--
--   * From Postgres 16 on, switching to a role is a grant option of its own (SET). A CREATEROLE user that
--     creates a role is given ADMIN OPTION on it, but neither SET nor INHERIT (createrole_self_grant
--     unset, the default on RDS, Cloud SQL and Azure). 0002 checked only membership, which that ADMIN
--     grant is, so it granted nothing: every writer connection was refused ("permission denied to set
--     role") and every audit row went to the local spool, while the start and /readyz said all was well.
--     The owner grants the role to itself with SET (its ADMIN OPTION allows that); INHERIT stays off, the
--     owner needs none of the writer's privileges. Before 16, membership is what SET ROLE needs, and 0002
--     made sure of it.
--   * The writer must be allowed to use the schema the tables are in. PUBLIC may use `public`, but a
--     schema named after the owner (CREATE SCHEMA AUTHORIZATION, where the default search_path puts the
--     tables when the owner may not create in `public`) is the owner's alone: the owner grants USAGE on
--     it when it owns it. (The writer's connections set their search_path to this schema: src/audit/service.ts.)
--
-- When the owner may do neither, the start refuses before this runs and names what the DBA runs
-- (src/db/privileges.ts); so does a start whose writer is refused later.
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 160000 AND NOT pg_has_role(current_user, 'killswitch_audit_writer', 'SET') THEN
    EXECUTE format('GRANT killswitch_audit_writer TO %I WITH INHERIT FALSE, SET TRUE', current_user);
  END IF;
  IF NOT has_schema_privilege('killswitch_audit_writer', current_schema(), 'USAGE')
     AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = current_schema() AND pg_has_role(nspowner, 'USAGE')) THEN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO killswitch_audit_writer', current_schema());
  END IF;
END
$$;
