-- Human approvals of single tool calls (seed 004: the AI prepares, a person approves the exact arguments,
-- the call then runs once). This table is the record; Redis holds the live state the decision path reads
-- (src/approvals/README.md). `call_key` identifies the call an approval covers: token, session, server,
-- tool and the hash of the canonical arguments.

CREATE TABLE approvals (
  id uuid PRIMARY KEY,
  call_key text NOT NULL,
  token_id uuid NOT NULL REFERENCES agent_tokens (id),
  project_id text NOT NULL,
  environment text NOT NULL,
  role text NOT NULL,
  session_id text NOT NULL,
  gateway_id uuid,
  server text NOT NULL,
  tool text NOT NULL,
  capability text NOT NULL,
  -- Redacted like the audit trail; the hash is over the real arguments.
  arguments jsonb NOT NULL,
  arguments_hash text NOT NULL,
  rule text NOT NULL,
  separate_approver boolean NOT NULL,
  -- The window of this request's rule: how long it waits, and how long an approval or rejection lasts.
  ttl_seconds integer NOT NULL CHECK (ttl_seconds > 0),
  state text NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired', 'used')),
  requested_decision_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- Pending: the deadline for a human decision. Approved: the end of the window the call may run in.
  -- Rejected: until then an identical call is refused without a new request.
  expires_at timestamptz NOT NULL,
  decided_at timestamptz,
  decided_by text,
  decided_by_name text,
  reason text,
  used_at timestamptz,
  used_decision_id text,
  CHECK (state NOT IN ('approved', 'rejected', 'used') OR decided_at IS NOT NULL)
);

CREATE INDEX approvals_created_idx ON approvals (created_at DESC);
CREATE INDEX approvals_open_idx ON approvals (expires_at) WHERE state IN ('pending', 'approved');
CREATE INDEX approvals_token_idx ON approvals (token_id, created_at DESC);
CREATE INDEX approvals_project_idx ON approvals (project_id, created_at DESC);
