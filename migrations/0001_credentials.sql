-- Credentials of the three kinds: agent tokens (mcp_*), gateway keys (ksgw_) and operator keys (ksop_).
-- Only a keyed hash (HMAC-SHA-256) of each raw credential is stored.

CREATE TABLE settings (
  key text PRIMARY KEY,
  value text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operator_keys (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  role text NOT NULL CHECK (role IN ('viewer', 'operator', 'owner')),
  projects text[],                       -- NULL: every project
  key_hash bytea NOT NULL UNIQUE,
  display_prefix text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz
);

CREATE TABLE gateway_keys (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  key_hash bytea NOT NULL UNIQUE,
  display_prefix text NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz
);

CREATE TABLE agent_tokens (
  id uuid PRIMARY KEY,
  type text NOT NULL CHECK (type IN ('ro', 'rw', 'admin')),
  key_prefix text NOT NULL CHECK (key_prefix IN ('mcp_ro_', 'mcp_rw_', 'mcp_admin_')),
  display_prefix text NOT NULL,
  key_hash bytea NOT NULL UNIQUE,
  scopes text[] NOT NULL,
  role text NOT NULL,
  project_id text NOT NULL,
  environment text NOT NULL CHECK (environment IN ('development', 'staging', 'production')),
  description text NOT NULL DEFAULT '',
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  revoked_by text,
  revoke_reason text,
  last_used_at timestamptz,
  CHECK (type = 'admin' OR NOT ('auth:*' = ANY (scopes)))
);
CREATE INDEX agent_tokens_project_idx ON agent_tokens (project_id, created_at DESC);
