-- Audit trail (DESIGN.md §7): append-only, hash-chained, partitioned by month on the event time.
--
-- Who may do what:
--   * the owner (the DATABASE_URL user, who runs migrations) owns the tables; triggers still refuse its
--     UPDATE, DELETE and TRUNCATE. The only way rows leave is audit_apply_retention() below, which sets a
--     transaction-local flag the trigger accepts for DELETE (never for UPDATE or TRUNCATE), or drops whole
--     monthly partitions older than the cut after anchoring the chains.
--   * the request path writes through killswitch_audit_writer: INSERT and SELECT on audit_events, nothing
--     else. The writer connects as the owner and switches to this role at connection start.

-- Roles are cluster-wide while every test database is cloned from one template: create it only once.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'killswitch_audit_writer') THEN
    CREATE ROLE killswitch_audit_writer NOLOGIN;
  END IF;
  IF NOT pg_has_role(current_user, 'killswitch_audit_writer', 'MEMBER') THEN
    EXECUTE format('GRANT killswitch_audit_writer TO %I', current_user);
  END IF;
END
$$;

CREATE TABLE audit_events (
  id uuid NOT NULL,
  ts timestamptz NOT NULL,
  replica_id text NOT NULL,            -- one hash chain per writer lifetime (docs/adr/0002-audit-hash-chain.md)
  seq bigint NOT NULL CHECK (seq >= 1),
  kind text NOT NULL CHECK (kind ~ '^[A-Z][A-Z_]*$'),
  decision_id text,
  actor_type text NOT NULL CHECK (actor_type IN ('mcp_token', 'operator', 'system')),
  actor_id text,
  token_id text,
  token_type text,
  project_id text,
  environment text,
  session_id text,
  gateway_id text,
  server text,
  tool text,
  capability text,
  arguments jsonb,                     -- secrets redacted before they get here
  flags jsonb,                         -- {"flag name": enabled} as evaluated for this call
  decision text CHECK (decision IN ('allow', 'deny')),
  code text,
  message text,
  purpose text,
  action text,                         -- ADMIN rows: what the operator did (key.created, key.revoked ...)
  target text,                         -- ADMIN rows: what it was done to
  result_status text,
  summary text,
  duration_ms double precision,
  result_bytes bigint,
  rows bigint,
  ai_client text,
  client_name text,
  client_version text,
  user_agent text,
  ip text,
  details jsonb,
  prev_hash text NOT NULL,
  hash text NOT NULL,
  -- Replaying a spooled row twice is a no-op: ON CONFLICT on the chain position (ts is part of the row
  -- and of every unique key of a partitioned table).
  PRIMARY KEY (replica_id, seq, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

CREATE INDEX audit_events_ts_idx ON audit_events (ts, id);
CREATE INDEX audit_events_token_idx ON audit_events (token_id, ts);
CREATE INDEX audit_events_session_idx ON audit_events (session_id, ts);
CREATE INDEX audit_events_decision_idx ON audit_events (decision_id);

-- Where retention cut each chain: the last removed row's position and hash, so what remains still
-- verifies (the first remaining row's prev_hash must equal the anchor's hash).
CREATE TABLE audit_anchors (
  replica_id text NOT NULL,
  seq bigint NOT NULL,
  hash text NOT NULL,
  ts timestamptz NOT NULL,
  cut_before timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (replica_id, seq)
);

-- Monthly usage kept after raw rows are gone (seed 003): one row per month, token and operation.
CREATE TABLE audit_usage_monthly (
  month date NOT NULL,
  token_id text,
  token_type text,
  project_id text,
  server text,
  tool text,
  capability text,
  calls bigint NOT NULL DEFAULT 0,
  allowed bigint NOT NULL DEFAULT 0,
  denied bigint NOT NULL DEFAULT 0,
  results bigint NOT NULL DEFAULT 0,
  successes bigint NOT NULL DEFAULT 0,
  errors bigint NOT NULL DEFAULT 0,
  duration_ms_sum double precision NOT NULL DEFAULT 0,
  result_bytes_sum bigint NOT NULL DEFAULT 0,
  rows_sum bigint NOT NULL DEFAULT 0,
  last_at timestamptz,
  UNIQUE NULLS NOT DISTINCT (month, token_id, token_type, project_id, server, tool, capability)
);

CREATE FUNCTION audit_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('killswitch.audit_retention', true) = 'on' THEN
    RETURN OLD;
  END IF;
  IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_usage_monthly' AND current_setting('killswitch.audit_retention', true) = 'on' THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % is refused (rows leave only through audit retention)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
-- Statement triggers are not inherited: each partition gets its own TRUNCATE guard.
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_events_default
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();

CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_usage_monthly_guard BEFORE UPDATE OR DELETE ON audit_usage_monthly
  FOR EACH ROW EXECUTE FUNCTION audit_reject_change();
CREATE TRIGGER audit_usage_monthly_no_truncate BEFORE TRUNCATE ON audit_usage_monthly
  FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change();

-- Creates monthly partitions (UTC months) from the month of from_ts on. Idempotent; safe on every
-- replica at once. A month whose rows already sit in the default partition is skipped (they stay there
-- and retention still removes them).
CREATE FUNCTION audit_ensure_partitions(from_ts timestamptz, months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  m timestamp := date_trunc('month', from_ts AT TIME ZONE 'UTC');
  part text;
  created integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(7305411903);
  FOR i IN 1..months LOOP
    part := 'audit_events_p' || to_char(m, 'YYYYMM');
    IF to_regclass(part) IS NULL THEN
      BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
          part, (m AT TIME ZONE 'UTC'), ((m + interval '1 month') AT TIME ZONE 'UTC'));
        EXECUTE format('CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION audit_reject_change()', part);
        created := created + 1;
      EXCEPTION WHEN check_violation THEN
        RAISE WARNING 'audit partition % not created: rows for that month are already in audit_events_default', part;
      END;
    END IF;
    m := m + interval '1 month';
  END LOOP;
  RETURN created;
END
$$;

-- The retention job's one path: rolls raw INTENT/RESULT rows older than cutoff into audit_usage_monthly,
-- anchors every chain at its last removed row, drops monthly partitions wholly before the cut and deletes
-- the remaining older rows. One transaction; concurrent runs on several replicas serialise on a lock.
CREATE FUNCTION audit_apply_retention(cutoff timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  part record;
  upper_bound timestamptz;
  rolled bigint;
  anchored bigint;
  dropped text[] := '{}';
  dropped_rows bigint := 0;
  n bigint;
  deleted bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(7305411904);
  PERFORM set_config('killswitch.audit_retention', 'on', true);

  INSERT INTO audit_usage_monthly AS u (month, token_id, token_type, project_id, server, tool, capability,
      calls, allowed, denied, results, successes, errors, duration_ms_sum, result_bytes_sum, rows_sum, last_at)
  SELECT date_trunc('month', ts AT TIME ZONE 'UTC')::date, token_id, token_type, project_id, server, tool, capability,
      count(*) FILTER (WHERE kind = 'INTENT'),
      count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'allow'),
      count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'deny'),
      count(*) FILTER (WHERE kind = 'RESULT'),
      count(*) FILTER (WHERE kind = 'RESULT' AND result_status IN ('success', 'ok')),
      count(*) FILTER (WHERE kind = 'RESULT' AND result_status NOT IN ('success', 'ok')),
      coalesce(sum(duration_ms) FILTER (WHERE kind = 'RESULT'), 0),
      coalesce(sum(result_bytes) FILTER (WHERE kind = 'RESULT'), 0),
      coalesce(sum(rows) FILTER (WHERE kind = 'RESULT'), 0),
      max(ts)
  FROM audit_events
  WHERE ts < cutoff AND kind IN ('INTENT', 'RESULT')
  GROUP BY 1, 2, 3, 4, 5, 6, 7
  ON CONFLICT (month, token_id, token_type, project_id, server, tool, capability) DO UPDATE SET
    calls = u.calls + excluded.calls,
    allowed = u.allowed + excluded.allowed,
    denied = u.denied + excluded.denied,
    results = u.results + excluded.results,
    successes = u.successes + excluded.successes,
    errors = u.errors + excluded.errors,
    duration_ms_sum = u.duration_ms_sum + excluded.duration_ms_sum,
    result_bytes_sum = u.result_bytes_sum + excluded.result_bytes_sum,
    rows_sum = u.rows_sum + excluded.rows_sum,
    last_at = greatest(u.last_at, excluded.last_at);
  GET DIAGNOSTICS rolled = ROW_COUNT;

  INSERT INTO audit_anchors (replica_id, seq, hash, ts, cut_before)
  SELECT DISTINCT ON (replica_id) replica_id, seq, hash, ts, cutoff
  FROM audit_events WHERE ts < cutoff
  ORDER BY replica_id, seq DESC
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS anchored = ROW_COUNT;

  FOR part IN
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'audit_events'::regclass AND c.relname ~ '^audit_events_p[0-9]{6}$'
    ORDER BY c.relname
  LOOP
    upper_bound := (to_timestamp(substr(part.relname, 15), 'YYYYMM')::timestamp + interval '1 month') AT TIME ZONE 'UTC';
    IF upper_bound <= cutoff THEN
      EXECUTE format('SELECT count(*) FROM %I', part.relname) INTO n;
      EXECUTE format('DROP TABLE %I', part.relname);
      dropped := dropped || part.relname::text;
      dropped_rows := dropped_rows + n;
    END IF;
  END LOOP;

  DELETE FROM audit_events WHERE ts < cutoff;
  GET DIAGNOSTICS deleted = ROW_COUNT;

  RETURN jsonb_build_object('cutoff', cutoff, 'rolled_up_groups', rolled, 'chains_anchored', anchored,
    'partitions_dropped', to_jsonb(dropped), 'rows_removed', dropped_rows + deleted);
END
$$;

REVOKE ALL ON audit_events, audit_anchors, audit_usage_monthly FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_apply_retention(timestamptz), audit_ensure_partitions(timestamptz, integer) FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events TO killswitch_audit_writer;
GRANT SELECT ON audit_anchors TO killswitch_audit_writer;

SELECT audit_ensure_partitions(now() - interval '1 month', 4);
