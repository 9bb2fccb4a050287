// Shapes of the admin API responses the UI reads (the OpenAPI document at /docs/openapi.json is the source).

export type TokenType = 'ro' | 'rw' | 'admin';
export type Environment = 'development' | 'staging' | 'production';
export type OperatorRole = 'viewer' | 'operator' | 'owner';

export interface AgentToken {
  id: string;
  type: TokenType;
  key_prefix: string;
  display_prefix: string;
  scopes: string[];
  role: string;
  project_id: string;
  environment: Environment;
  description: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  revoked_by: string | null;
  revoke_reason: string | null;
  last_used_at: string | null;
  /** Its halt in force (a kill-switch trigger; resumed on the Sessions page), or null. GET /v1/keys and /v1/keys/:id only. */
  halt?: { trigger: string; halted_at: string } | null;
}

export interface GatewayKey {
  id: string;
  name: string;
  display_prefix: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface OperatorKey extends GatewayKey {
  role: OperatorRole;
  projects: string[] | null;
}

export interface ScopeCatalogue {
  scopes: { scope: string; capability: string; allowed_types: TokenType[]; doc: string }[];
  defaults: Record<TokenType, string[]>;
  write_risk_warning: string;
}

export interface AuditEvent {
  id: string;
  ts: string;
  kind: string;
  decision_id: string | null;
  actor_type: string;
  actor_id: string | null;
  token_id: string | null;
  token_type: string | null;
  project_id: string | null;
  environment: string | null;
  session_id: string | null;
  gateway_id: string | null;
  server: string | null;
  tool: string | null;
  capability: string | null;
  arguments: unknown;
  flags: unknown;
  decision: string | null;
  code: string | null;
  message: string | null;
  purpose: string | null;
  action: string | null;
  target: string | null;
  result_status: string | null;
  summary: string | null;
  duration_ms: number | null;
  result_bytes: number | null;
  rows: number | null;
  ai_client: string | null;
  client_name: string | null;
  user_agent: string | null;
  ip: string | null;
  details: unknown;
  hash: string;
}

export interface Alert {
  id: string;
  kind: string;
  severity: 'info' | 'warning' | 'critical';
  token_id: string | null;
  project_id: string | null;
  session_id: string | null;
  server: string | null;
  numbers: Record<string, number>;
  details: Record<string, unknown>;
  message: string;
  created_at: string;
  acknowledged_at: string | null;
  acknowledged_by: string | null;
  ack_note: string | null;
}

export interface CallSummary {
  id: string;
  at: number;
  server: string;
  tool: string;
  args: string;
  decision: string;
  code: string;
  outcome?: { status: string; duration_ms?: number; result_bytes?: number; rows?: number; error?: string };
}

export interface Session {
  id: string;
  token_id: string;
  project_id: string;
  gateway_id: string | null;
  read_only: boolean;
  servers: string[] | null;
  purpose: string;
  state: 'active' | 'halted' | 'closed';
  trigger: string | null;
  halted_by: 'session' | 'token' | null;
  halted_at: string | null;
  token_halt: { trigger: string; halted_at: string } | null;
  created_at: string;
  closed_at: string | null;
  closed_by: string | null;
}

export interface SessionDetail extends Session {
  halt_summary: Record<string, unknown> | null;
  last_calls: CallSummary[];
  halts: { trigger: string; halted_at: string; resumed_at: string | null; resumed_by: string | null; resume_reason: string | null }[];
}

export interface Counts {
  calls: number;
  allowed: number;
  denied: number;
  results: number;
  successes: number;
  errors: number;
}

export interface TokenUsage extends Counts {
  token_id: string;
  token_type: string | null;
  project_id: string | null;
  success_rate: number | null;
  error_rate: number | null;
  avg_duration_ms: number | null;
  last_used: string | null;
  operations: ({ server: string | null; tool: string | null; capability: string | null } & Counts)[];
  per_day: ({ day: string } & Counts)[];
}

export interface FlagsOverview {
  environment: string;
  ready: boolean;
  source: string;
  last_fetch_at: string | null;
  /** Seconds since the last successful fetch from Unleash; null: none since the control plane started. */
  age_s: number | null;
  /** The latest fetch failed; false once a later one succeeded (last_error is then past). */
  fetch_failing: boolean;
  last_error_at: string | null;
  last_error: string | null;
  stale: boolean;
  /** UNLEASH_STALE_AFTER_S: the age at which FLAGS_STALE is raised. */
  stale_after_s: number;
  revision: number | null;
  backup: { state: string; age_s: number | null };
  overrides: { flag: string; reason: string; event_id: number | null; at: string }[];
  webhook: { url: string; registration: WebhookRegistration; last_event_at: string | null; last_event_type: string | null; last_event_flag: string | null };
  flags: {
    name: string;
    description: string | null;
    type: string | null;
    enabled: boolean;
    source: string;
    strategies: number;
    /** Constraints on its active strategies: more than 0 means on for some calls only, which evaluations do not show. */
    constraints: number;
    /** Its strategies in force: the flag is on for a call when any of them is. */
    active_strategies: FlagStrategy[];
    /** Null: cannot be evaluated without counting in Unleash's usage metrics (unleash-client's internals changed). */
    evaluations: Record<TokenType, Record<Environment, boolean>> | null;
  }[];
}

export interface FlagConstraint {
  context_name: string;
  operator: string;
  /** The first 20 values; values_total says how many there are. */
  values: string[];
  values_total: number;
  /** For a key limited to projects: how many of the first values name another project's token, session or project, and are not shown. */
  values_withheld: number;
  /** The single value of NUM_*, DATE_* and SEMVER_* operators. */
  value: string | null;
  inverted: boolean;
  case_insensitive: boolean;
}

export interface FlagStrategy {
  name: string;
  parameters: Record<string, string>;
  /** For a key limited to projects: token ids withheld from the userIds parameter. */
  parameters_withheld: number;
  constraints: FlagConstraint[];
  /** constraints null: the segment is not in this replica's data, so the strategy is never on. */
  segments: { id: number; constraints: FlagConstraint[] | null }[];
}

/** The latest attempt, by any replica's start or a flags sync, to register the webhook in Unleash. */
export interface WebhookRegistration {
  state: 'registered' | 'elsewhere' | 'failed' | 'not-attempted' | 'unknown';
  at: string | null;
  by: 'start' | 'flags sync' | null;
  host: string | null;
  result: 'created' | 'updated' | 'unchanged' | null;
  error: string | null;
  url: string | null;
  same_secret: boolean | null;
  /** The latest success, also when a later attempt failed. */
  registered_at: string | null;
  registered_url: string | null;
  /** Whether that success carries this replica's secret (false: its events are refused). */
  registered_same_secret: boolean | null;
}

export interface ToolDefinition {
  id: string;
  server: string;
  tool: string;
  hash: string;
  definition: { name?: string; title?: string; description?: string; inputSchema?: unknown; annotations?: Record<string, unknown> } | null;
  status: string;
  upstream_identity: unknown;
  first_seen_at: string;
  last_reported_at: string;
  decided_at: string | null;
  decided_by: string | null;
  decision_reason: string | null;
}

export interface Grant {
  id: string;
  kind: 'production' | 'large_results';
  token_id: string;
  session_id: string | null;
  environment: string;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoked_by: string | null;
}

export interface UiSettings {
  unleash_ui_url: string | null;
  unleash_environment: string;
}

export interface Approval {
  id: string;
  kind: 'call' | 'tool_definition';
  state: 'pending' | 'approved' | 'rejected' | 'expired' | 'used' | 'superseded';
  server: string;
  tool: string;
  token_id: string | null;
  project_id: string | null;
  environment: string | null;
  role: string | null;
  session_id: string | null;
  gateway_id: string | null;
  capability: string | null;
  arguments: Record<string, unknown> | null;
  arguments_hash: string | null;
  tool_hash: string | null;
  definition: unknown;
  rule: string | null;
  separate_approver: boolean;
  requested_decision_id: string | null;
  created_at: string;
  expires_at: string | null;
  decided_at: string | null;
  decided_by: string | null;
  decided_by_name: string | null;
  reason: string | null;
  used_at: string | null;
  used_decision_id: string | null;
}

/** One dry run of the call (POST /v1/decisions/explain without a session_id); session_id null: a new session of the token. */
export interface SessionVerdict {
  session_id: string | null;
  last_active_at: string | null;
  decision: 'allow' | 'deny';
  code: string;
  message: string;
}

export interface Explanation {
  decision: 'allow' | 'deny';
  code: string;
  message: string;
  steps: { step: string; verdict: string; code?: string; message?: string; micros: number }[];
  /** The session the verdict, steps and flags are for; null: a new session of the token (or none: revoked token, Redis unreadable). */
  session_id: string | null;
  /** Without a session_id: how many open sessions the token has (more than were checked when above 100). */
  open_sessions?: number;
  /** Without a session_id: the verdict in each open session checked, the most recently active first, then in a new session. */
  sessions?: SessionVerdict[];
  flags: { name: string; enabled: boolean }[];
}

/** GET /v1/operator-keys/me: the key this browser is signed in with. */
export interface CurrentOperatorKey {
  id: string;
  name: string;
  role: 'viewer' | 'operator' | 'owner';
  /** null: every project. */
  projects: string[] | null;
  expires_at: string | null;
}
