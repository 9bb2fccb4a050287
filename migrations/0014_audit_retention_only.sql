-- The append-only triggers accept retention's DELETE (and its rollup UPDATE) only from inside
-- audit_apply_retention(), not from any transaction that sets killswitch.audit_retention by hand
-- (security review: `SET LOCAL killswitch.audit_retention = 'on'; DELETE FROM audit_events ...` worked for
-- the owner). The function never deletes anchors or rollups, so those are refused whatever the flag.
--
-- What this does not stop: the owner (the DATABASE_URL user) can still disable or drop the triggers,
-- replace these functions, drop partitions, or call audit_apply_retention() with a recent cut. Those are
-- for `killswitch audit verify` to find (suspicious anchors, gaps) and, for a removed tail or whole chain,
-- `--expect` / `--witnesses` with the head log kept outside the database (docs/audit.md).
CREATE OR REPLACE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  stack text;
BEGIN
  IF TG_LEVEL = 'ROW' AND current_setting('killswitch.audit_retention', true) = 'on'
     AND ((TG_OP = 'DELETE' AND TG_TABLE_NAME ~ '^audit_events') OR (TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_usage_monthly')) THEN
    -- The call stack: the statement must have been run by audit_apply_retention() itself.
    GET DIAGNOSTICS stack = PG_CONTEXT;
    IF stack LIKE '%PL/pgSQL function audit_apply_retention(timestamp with time zone) line %' THEN
      IF TG_OP = 'DELETE' THEN
        RETURN OLD;
      END IF;
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % is refused (rows leave only through audit retention)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
