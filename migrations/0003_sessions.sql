-- Sessions issued by the control plane, and the halts of sessions and tokens (seed 001 kill-switch
-- triggers). Postgres is the record; Redis mirrors what the decision step reads, and is rebuilt from
-- these tables after a Redis restart or flush. A halt row is never deleted: resuming fills resumed_*.

CREATE TABLE sessions (
  id uuid PRIMARY KEY,                              -- issued by us (uuid v7), never chosen by the caller
  token_id uuid NOT NULL REFERENCES agent_tokens (id),
  gateway_id uuid REFERENCES gateway_keys (id),
  read_only boolean NOT NULL DEFAULT false,
  servers text[],                                   -- declared servers; NULL: any server the policy allows
  purpose text NOT NULL DEFAULT '',
  state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'halted', 'closed')),
  trigger text,                                     -- the kill-switch trigger while halted
  halted_at timestamptz,
  halt_summary jsonb,                               -- calls so far and the last 3 calls when it was halted
  created_at timestamptz NOT NULL DEFAULT now(),
  closed_at timestamptz,
  CHECK ((state = 'halted') = (trigger IS NOT NULL))
);
CREATE INDEX sessions_token_idx ON sessions (token_id, id DESC);
CREATE INDEX sessions_state_idx ON sessions (state, id DESC);

-- A token halt stops every session of the token, including sessions opened later.
CREATE TABLE token_halts (
  id uuid PRIMARY KEY,
  token_id uuid NOT NULL REFERENCES agent_tokens (id),
  trigger text NOT NULL,
  session_id uuid REFERENCES sessions (id),         -- the session whose call fired the trigger, if any
  summary jsonb NOT NULL DEFAULT '{}'::jsonb,
  halted_at timestamptz NOT NULL DEFAULT now(),
  resumed_at timestamptz,
  resumed_by text,
  resume_reason text,
  CHECK ((resumed_at IS NULL) = (resumed_by IS NULL))
);
-- At most one halt in force per token: a second trigger while halted adds nothing.
CREATE UNIQUE INDEX token_halts_active_idx ON token_halts (token_id) WHERE resumed_at IS NULL;
CREATE INDEX token_halts_token_idx ON token_halts (token_id, halted_at DESC);

-- History of session halts and resumes (sessions.trigger only holds the halt in force).
CREATE TABLE session_halts (
  id uuid PRIMARY KEY,
  session_id uuid NOT NULL REFERENCES sessions (id),
  token_id uuid NOT NULL REFERENCES agent_tokens (id),
  trigger text NOT NULL,
  token_halt_id uuid REFERENCES token_halts (id),   -- set when the token was halted by the same event
  summary jsonb NOT NULL DEFAULT '{}'::jsonb,
  halted_at timestamptz NOT NULL DEFAULT now(),
  resumed_at timestamptz,
  resumed_by text,
  resume_reason text,
  CHECK ((resumed_at IS NULL) = (resumed_by IS NULL))
);
CREATE UNIQUE INDEX session_halts_active_idx ON session_halts (session_id) WHERE resumed_at IS NULL;
CREATE INDEX session_halts_token_idx ON session_halts (token_id, halted_at DESC);
