-- Break-glass kills (DESIGN.md §5, src/kills): the record of every operator kill. Redis holds what the
-- decision gate reads (one string key per target_key, under the installation's prefix: kill:<target_key>);
-- this table is what Redis is rebuilt from after a restart or flush, so losing Redis never lifts a kill.

CREATE TABLE kills (
  id uuid PRIMARY KEY,
  target text NOT NULL CHECK (target IN ('everything', 'server', 'capability', 'token', 'project', 'role', 'environment', 'session')),
  -- What the kill stops, as the gate's key suffix: all, server:<s>, cap:<c>, cap:<s>:<c>, token:<id>,
  -- project:<p>, role:<r>, env:<e>, session:<id>. Several kills may share one (the key lives while any does).
  target_key text NOT NULL,
  server text,
  capability text CHECK (capability IN ('read', 'write', 'delete')),
  token_id uuid,
  -- For project, token and session kills: the project they belong to (visibility of project-limited operators).
  project_id text,
  role text,
  environment text CHECK (environment IN ('development', 'staging', 'production')),
  session_id text,
  reason text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  lifted_at timestamptz,
  lifted_by text,
  lift_reason text,
  -- Set once, by whichever replica first notices the expiry (it audits and alerts it).
  expiry_recorded_at timestamptz,
  CHECK ((lifted_at IS NULL) = (lifted_by IS NULL)),
  CHECK (expires_at IS NULL OR expires_at > created_at)
);

-- The gate's reload and the reconciler read the kills in force.
CREATE INDEX kills_active_idx ON kills (target_key) WHERE lifted_at IS NULL;
CREATE INDEX kills_created_idx ON kills (created_at DESC);
CREATE INDEX kills_expiry_idx ON kills (expires_at) WHERE lifted_at IS NULL AND expiry_recorded_at IS NULL AND expires_at IS NOT NULL;
