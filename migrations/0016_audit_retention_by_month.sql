-- Audit retention removes whole months (docs/adr/0018-audit-retention-by-month.md). The cut used to move
-- every hour, so each hourly run deleted the last hour's rows one by one from a monthly partition (1 s and
-- 39 MB of WAL per 100k rows), and the partition was dropped only once it lay wholly before the cut, by
-- then mostly dead tuples; the run that dropped it held the AccessExclusiveLock of the DROP on audit_events
-- through the DELETE that followed, blocking every audit INSERT until commit.
--
-- Now the cut is rounded down to the start of its UTC month, so only whole monthly partitions go (rows are
-- kept at least the retention and at most about a month more). Everything that reads, rolls up, anchors,
-- counts or deletes row by row (the default partition only) runs first; the DROPs come last, so the lock
-- is held for the drops and the commit alone. A run whose cut has not reached a new month finds nothing
-- to drop and no old row in the default partition and returns at once.
--
-- Same name and signature: 0014's trigger recognises the function by its call stack, and the grants stay.
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

  -- The hourly run between two month boundaries: nothing to drop, and the ts index of the (normally
  -- small) default partition says it has no row to delete.
  IF cardinality(doomed) = 0 AND NOT EXISTS (SELECT 1 FROM audit_events_default WHERE ts < cut) THEN
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

  -- Last: each DROP takes the AccessExclusiveLock on audit_events, held until commit.
  FOREACH part_name IN ARRAY doomed LOOP
    EXECUTE format('DROP TABLE %I', part_name);
  END LOOP;

  RETURN jsonb_build_object('cutoff', cut, 'rolled_up_groups', rolled, 'chains_anchored', anchored,
    'partitions_dropped', to_jsonb(doomed), 'rows_removed', dropped_rows + deleted);
END
$$;
