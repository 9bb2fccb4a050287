-- Tool definitions reported by gateways (pinned on first sight; a changed definition waits for an
-- operator) and human grants (production access, large results), bounded in time.

CREATE TABLE tool_definitions (
  id uuid PRIMARY KEY,
  server text NOT NULL,
  tool text NOT NULL,
  hash text NOT NULL,
  definition jsonb NOT NULL,
  status text NOT NULL CHECK (status IN ('approved', 'pending', 'rejected', 'superseded')),
  reported_by_gateway uuid,
  upstream_identity jsonb,
  first_seen_at timestamptz NOT NULL DEFAULT now(),
  decided_at timestamptz,
  decided_by text,
  decision_reason text,
  UNIQUE (server, tool, hash)
);
CREATE INDEX tool_definitions_status_idx ON tool_definitions (status, first_seen_at DESC);

CREATE TABLE grants (
  id uuid PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('production', 'large_results')),
  token_id uuid NOT NULL REFERENCES agent_tokens (id),
  session_id text,
  environment text NOT NULL,
  reason text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoked_by text
);
CREATE INDEX grants_active_idx ON grants (expires_at) WHERE revoked_at IS NULL;
