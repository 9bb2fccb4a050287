-- Alerts: what operators must notice (80% warnings, halts, kills, changed tools, approvals, stale flags).
-- `kind` is an open string on purpose: the list of kinds lives in src/alerts/kinds.ts and grows without
-- a migration. Ids are UUIDv7 (time-ordered), so `ORDER BY id DESC` is newest first and pages by keyset.

CREATE TABLE alerts (
  id uuid PRIMARY KEY,
  kind text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  token_id text,
  project_id text,
  session_id text,
  server text,
  numbers jsonb NOT NULL DEFAULT '{}'::jsonb,
  details jsonb NOT NULL DEFAULT '{}'::jsonb,
  message text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  acknowledged_at timestamptz,
  acknowledged_by text,
  ack_note text,
  CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);

CREATE INDEX alerts_created_idx ON alerts (created_at DESC);
CREATE INDEX alerts_kind_idx ON alerts (kind, id DESC);
CREATE INDEX alerts_token_idx ON alerts (token_id, id DESC) WHERE token_id IS NOT NULL;
CREATE INDEX alerts_session_idx ON alerts (session_id, id DESC) WHERE session_id IS NOT NULL;
CREATE INDEX alerts_project_idx ON alerts (project_id, id DESC);
-- The operator's inbox: unacknowledged alerts, newest first.
CREATE INDEX alerts_open_idx ON alerts (id DESC) WHERE acknowledged_at IS NULL;
