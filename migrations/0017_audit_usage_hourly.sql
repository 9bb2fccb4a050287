-- Usage per UTC hour (docs/audit.md, "The hourly rollup"; ADR 0019), so GET /v1/usage and /v1/usage/monthly read a few
-- rows per token, operation and hour instead of aggregating every raw INTENT and RESULT of their window:
-- that took ~2.6 µs a row and met the 30 s query limit near 11 million rows (~20 decisions/s over the
-- Usage page's 7 days), far below the 2,000 decisions/s the product is built for.
--
-- Derived, not evidence: audit_events stays the record (hash-chained, append-only) and this table is
-- what the trigger below adds up from it. It is not guarded like the audit tables: its rows are
-- updated by every batch, and retention deletes them with the months it cuts.
--
-- Counting rules are those of usage (src/audit/store.ts COUNTS) and of the retention rollup (0002): a
-- RESULT whose status is 'success' or 'ok' is a success, any other status an error. The duration average
-- is kept as a sum and a count of the RESULT rows' non-null duration_ms (what avg() divides).
--
-- token_type and project_id are part of the key as in audit_usage_monthly: a token has one of each, so
-- this adds no rows, and usage filtered on type or project stays exact.
CREATE TABLE audit_usage_hourly (
  hour timestamptz NOT NULL,           -- start of the UTC hour
  token_id text NOT NULL,
  token_type text,
  project_id text,
  server text,
  tool text,
  capability text,
  calls bigint NOT NULL,
  allowed bigint NOT NULL,
  denied bigint NOT NULL,
  results bigint NOT NULL,
  successes bigint NOT NULL,
  errors bigint NOT NULL,
  duration_ms_sum double precision NOT NULL,
  duration_ms_count bigint NOT NULL,
  last_used timestamptz,               -- newest INTENT (null: the hour has RESULT rows only)
  last_at timestamptz NOT NULL,        -- newest row
  -- Hour first: usage reads a range of hours, retention deletes one.
  CONSTRAINT audit_usage_hourly_key UNIQUE NULLS NOT DISTINCT (hour, token_id, token_type, project_id, server, tool, capability)
) WITH (fillfactor = 70); -- every batch updates the current hour's rows: room on the page keeps them HOT

-- Where the rollup starts: it holds the rows whose ts is at or after starts_at, and usage reads raw rows
-- for anything before (src/audit/store.ts). No backfill: filling the table from the stored trail inside
-- this migration took ~2.3 s per million rows (performance.md, "Usage rollup"), which on a busy
-- installation (hundreds of millions of rows) would have held the upgrade's pause for minutes to hours,
-- every gateway denying meanwhile. A new installation (no audit row yet) starts at -infinity. An upgraded
-- one starts at the second whole hour after the migration: every row stored before has an earlier ts
-- unless a replica's clock runs more than an hour ahead, and rows written after it with an earlier ts
-- (late batches, a spool replayed after the upgrade) are left to the raw reads, so each row is counted
-- once, from one side. A usage window wholly after starts_at reads the rollup alone (the Usage page's 7
-- days, a week after the upgrade).
CREATE TABLE audit_usage_hourly_start (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  starts_at timestamptz NOT NULL
);
INSERT INTO audit_usage_hourly_start (starts_at)
SELECT CASE WHEN EXISTS (SELECT 1 FROM audit_events) THEN date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '2 hours'
            ELSE '-infinity'::timestamptz END;
REVOKE ALL ON audit_usage_hourly_start FROM PUBLIC;

-- Adds one INSERT statement's rows to their hours. A statement trigger with a transition table: one
-- aggregate and one upsert per batch, not one per row. The transition table holds only the rows the
-- statement inserted, so a spool replay of rows already stored (the writer's ON CONFLICT DO NOTHING skips
-- them) counts nothing twice. Upserted in key order, so two replicas' writers adding to the same hours
-- lock those rows in the same order and wait for each other instead of deadlocking.
--
-- SECURITY DEFINER: the audit writer (killswitch_audit_writer) may only INSERT and SELECT audit_events;
-- it gets no privilege on this table, so it cannot change the counts except by writing audit rows. The
-- function runs as its owner (the migration's user) with a search_path fixed below.
CREATE FUNCTION audit_usage_hourly_add() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  INSERT INTO audit_usage_hourly AS u (hour, token_id, token_type, project_id, server, tool, capability,
      calls, allowed, denied, results, successes, errors, duration_ms_sum, duration_ms_count, last_used, last_at)
  SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', token_id, token_type, project_id, server, tool, capability,
      count(*) FILTER (WHERE kind = 'INTENT'),
      count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'allow'),
      count(*) FILTER (WHERE kind = 'INTENT' AND decision = 'deny'),
      count(*) FILTER (WHERE kind = 'RESULT'),
      count(*) FILTER (WHERE kind = 'RESULT' AND result_status IN ('success', 'ok')),
      count(*) FILTER (WHERE kind = 'RESULT' AND result_status NOT IN ('success', 'ok')),
      coalesce(sum(duration_ms) FILTER (WHERE kind = 'RESULT'), 0),
      count(duration_ms) FILTER (WHERE kind = 'RESULT'),
      max(ts) FILTER (WHERE kind = 'INTENT'),
      max(ts)
  FROM inserted
  WHERE token_id IS NOT NULL AND kind IN ('INTENT', 'RESULT') AND ts >= (SELECT starts_at FROM audit_usage_hourly_start)
  GROUP BY 1, 2, 3, 4, 5, 6, 7
  ORDER BY 1, 2, 3, 4, 5, 6, 7
  ON CONFLICT ON CONSTRAINT audit_usage_hourly_key DO UPDATE SET
    calls = u.calls + excluded.calls,
    allowed = u.allowed + excluded.allowed,
    denied = u.denied + excluded.denied,
    results = u.results + excluded.results,
    successes = u.successes + excluded.successes,
    errors = u.errors + excluded.errors,
    duration_ms_sum = u.duration_ms_sum + excluded.duration_ms_sum,
    duration_ms_count = u.duration_ms_count + excluded.duration_ms_count,
    last_used = greatest(u.last_used, excluded.last_used),
    last_at = greatest(u.last_at, excluded.last_at);
  RETURN NULL;
END
$$;

-- The schema the tables were just created in, then pg_temp last: a SECURITY DEFINER function must not
-- resolve a name to a temporary table its caller created.
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION audit_usage_hourly_add() SET search_path = %I, pg_temp', current_schema());
END
$$;

REVOKE ALL ON audit_usage_hourly FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_usage_hourly_add() FROM PUBLIC;

-- A statement trigger on the partitioned parent sees the rows routed to every partition, also those
-- created later by audit_ensure_partitions (the writer always inserts through audit_events).
--
-- Rolling upgrade: an older replica still writing after this migration fires the trigger too (it belongs
-- to the table, not to the writer), so its rows with a ts after starts_at are counted like any others.
CREATE TRIGGER audit_events_usage_hourly AFTER INSERT ON audit_events
  REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION audit_usage_hourly_add();

-- Retention (0016) also removes the hourly rows before its cut: those months are rolled into
-- audit_usage_monthly in the same transaction, so every usage read counts each row once, from one table
-- or the other. Same name and signature: 0014's trigger recognises the function by its call stack.
CREATE OR REPLACE FUNCTION audit_apply_retention(cutoff timestamptz) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  -- Callers pass the month start already (AuditService.applyRetention); rounding here too keeps any other
  -- cut from rolling up and anchoring rows in a partition that is then neither dropped nor deleted from.
  cut timestamptz := date_trunc('month', cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  doomed text[];
  part_name text;
  rolled bigint := 0;
  anchored bigint := 0;
  n bigint;
  dropped_rows bigint := 0;
  deleted bigint := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(7305411904);
  PERFORM set_config('killswitch.audit_retention', 'on', true);

  -- Monthly partitions wholly before the cut. Every other monthly partition starts at or after it (both
  -- are month starts), so the rows older than the cut are these partitions' and the default partition's.
  SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}') INTO doomed
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'audit_events'::regclass AND c.relname ~ '^audit_events_p[0-9]{6}$'
    AND (to_timestamp(substr(c.relname, 15), 'YYYYMM')::timestamp + interval '1 month') AT TIME ZONE 'UTC' <= cut;

  -- The hourly run between two month boundaries: nothing to drop, the ts index of the (normally small)
  -- default partition says it has no row to delete, and the rollup's key no hour before the cut.
  IF cardinality(doomed) = 0 AND NOT EXISTS (SELECT 1 FROM audit_events_default WHERE ts < cut)
     AND NOT EXISTS (SELECT 1 FROM audit_usage_hourly WHERE hour < cut) THEN
    RETURN jsonb_build_object('cutoff', cut, 'rolled_up_groups', 0, 'chains_anchored', 0,
      'partitions_dropped', '[]'::jsonb, 'rows_removed', 0);
  END IF;

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
  WHERE ts < cut AND kind IN ('INTENT', 'RESULT')
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
  SELECT DISTINCT ON (replica_id) replica_id, seq, hash, ts, cut
  FROM audit_events WHERE ts < cut
  ORDER BY replica_id, seq DESC
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS anchored = ROW_COUNT;

  -- Counted before any DROP: after the first one, this session holds the AccessExclusiveLock on
  -- audit_events and every statement until commit keeps the writers waiting.
  FOREACH part_name IN ARRAY doomed LOOP
    EXECUTE format('SELECT count(*) FROM %I', part_name) INTO n;
    dropped_rows := dropped_rows + n;
  END LOOP;

  -- Rows that arrived while their month had no partition. Only this partition is deleted from row by row.
  DELETE FROM audit_events_default WHERE ts < cut;
  GET DIAGNOSTICS deleted = ROW_COUNT;

  -- The hours of the months removed: audit_usage_monthly now counts them (the rollup above), and the
  -- usage reads never ask the hourly table for what has no raw rows left. Keyed by hour first: a range.
  DELETE FROM audit_usage_hourly WHERE hour < cut;

  -- Last: each DROP takes the AccessExclusiveLock on audit_events, held until commit.
  FOREACH part_name IN ARRAY doomed LOOP
    EXECUTE format('DROP TABLE %I', part_name);
  END LOOP;

  RETURN jsonb_build_object('cutoff', cut, 'rolled_up_groups', rolled, 'chains_anchored', anchored,
    'partitions_dropped', to_jsonb(doomed), 'rows_removed', dropped_rows + deleted);
END
$$;
