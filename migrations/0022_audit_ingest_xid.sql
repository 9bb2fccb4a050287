-- Which transaction inserted each audit row, for `GET /v1/audit?after=` and `killswitch audit search
-- --follow` (docs/adr/0034-audit-follow-cursor.md): a follow asks for the rows its last answer's
-- snapshot could not see (transactions in progress then, or begun after), so a row committed late (a
-- spool replayed after a Postgres outage, a replica whose clock is behind, a slow batch) is shown once,
-- whatever its ts.
--
-- Not part of the row's content: no hash covers it (src/audit/record.ts, AUDIT_COLUMNS leaves it out),
-- the API's rows, the exports and `audit verify` do not read it. Rows inserted before this migration
-- keep NULL.
--
-- Without rewriting the table: the column is added without a default (a catalog change on the parent and
-- every partition), then given one, which applies to rows inserted from then on only. Added in one
-- statement with its volatile default, Postgres would rewrite every partition to fill it. The default is
-- inherited by the partitions that exist and those audit_ensure_partitions creates; an INSERT through the
-- parent (the writer's) uses the parent's. pg_current_xact_id() is the 64-bit id (epoch and xid), which
-- does not wrap; it may be called by PUBLIC, so killswitch_audit_writer needs no new privilege (its INSERT
-- names the columns it writes, src/audit/store.ts, and this is not one of them).
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS ingest_xid bigint;
ALTER TABLE audit_events ALTER COLUMN ingest_xid SET DEFAULT pg_current_xact_id()::text::bigint;

-- The follow reads `ingest_xid >= $1 AND ingest_xid < $2` and `ingest_xid = ANY($3)`. Partial: the rows
-- from before this migration (NULL) have no entry, so on an upgraded installation the index is built
-- empty. The build still reads every partition once (a SHARE lock on audit_events: audit INSERTs wait,
-- the writer spools after 2.5 s; about as long as a sequential read of the table). IF NOT EXISTS: a large
-- trail can be indexed beforehand without blocking writes (docs/audit.md, "Indexes").
CREATE INDEX IF NOT EXISTS audit_events_ingest_xid_idx ON audit_events (ingest_xid) WHERE ingest_xid IS NOT NULL;
