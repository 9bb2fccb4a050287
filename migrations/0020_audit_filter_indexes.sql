-- Indexes for four of the audit filters that had none (docs/performance.md, "Audit reads at scale";
-- ADR 0026).
--
-- GET /v1/audit and /v1/audit/export read newest (oldest) first along (ts, id) and filter as they go: a
-- filter that matches few or no rows read the whole trail, or the whole window (1.2-1.5 s for 2.4 million
-- rows with no window, 0.3 s for a week of 185,000; linear in the trail, so at the 2,000 decisions/s the
-- product is built for, minutes, cut at the 30 s query limit). These four let such a read start at its
-- first match. Each is partial, leaving out the rows a filter on it never needs an index for, so that
-- the writer's INSERT (every decision) maintains as few entries as it can:
--   * code: an allowed INTENT's 'OK' (most rows; reading along ts finds them at once) and NULL;
--   * tool: rows without a tool (operator and system rows);
--   * actor_id: agent-token rows, whose actor_id is their token_id (src/audit/rows.ts): the store reads
--     them through audit_events_token_idx (src/audit/store.ts, pageQuery), so only operator and system
--     rows are here;
--   * kind: INTENT and RESULT (nearly every row; reading along ts finds them at once).
--
-- On the partitioned parent: Postgres builds the index on every existing partition in this migration's
-- transaction, and audit_ensure_partitions' new months get it too. The build holds a SHARE lock on
-- audit_events, so audit INSERTs wait for it (the writer spools after 2.5 s): 13-24 s for the four on
-- 2.4 million rows on a 2-core machine shared with other work, 5-10 s per million rows. IF NOT EXISTS:
-- an installation with a large trail can build the same indexes beforehand without blocking writes
-- (docs/audit.md, "Indexes"), and this migration then does nothing.
--
-- Not indexed: server and project (also the projects a limited operator key sees). Both are set on every
-- decision row, so their indexes cost every INSERT an entry each; with them the writer's INSERT took
-- ~13 µs more Postgres CPU a row, with these four alone 1-6 µs (docs/performance.md). A value that
-- matches few rows still reads the window (or the whole trail): docs/audit.md says to bound such a read
-- with from/to.
CREATE INDEX IF NOT EXISTS audit_events_code_idx ON audit_events (code, ts) WHERE code <> 'OK';
CREATE INDEX IF NOT EXISTS audit_events_tool_idx ON audit_events (tool, ts) WHERE tool IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_events_actor_idx ON audit_events (actor_id, ts) WHERE actor_type <> 'mcp_token';
CREATE INDEX IF NOT EXISTS audit_events_kind_idx ON audit_events (kind, ts) WHERE kind NOT IN ('INTENT', 'RESULT');
