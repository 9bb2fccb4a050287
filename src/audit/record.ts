// The shape of one audit row, shared by the row builders, the writer, the hash chain and the store.
// AUDIT_COLUMNS is the single list: the INSERT, the verifier's SELECT and the CSV export all follow it.

export type AuditKind = 'INTENT' | 'RESULT' | 'ADMIN' | 'POLICY_RELOAD' | 'CHAIN_START' | 'CHAIN_END' | (string & {});
export type ActorType = 'mcp_token' | 'operator' | 'system';

/** What a caller hands the writer: every column except the ones the writer assigns (id, ts, chain). */
export interface AuditEvent {
  kind: AuditKind;
  decision_id: string | null;
  actor_type: ActorType;
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
  flags: Record<string, boolean> | null;
  decision: 'allow' | 'deny' | null;
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
  client_version: string | null;
  user_agent: string | null;
  ip: string | null;
  details: Record<string, unknown> | null;
}

/** A row as stored: the event plus identity, time and its place in a hash chain. */
export interface AuditRecord extends AuditEvent {
  id: string;
  ts: Date;
  replica_id: string;
  seq: number;
  prev_hash: string;
  hash: string;
}

type PgType = 'uuid' | 'timestamptz' | 'text' | 'bigint' | 'double precision' | 'jsonb';

/** Every stored column in table order, with its Postgres type (the INSERT, the verifier and exports follow it). */
export const AUDIT_COLUMNS: ReadonlyArray<readonly [keyof AuditRecord, PgType]> = [
  ['id', 'uuid'],
  ['ts', 'timestamptz'],
  ['replica_id', 'text'],
  ['seq', 'bigint'],
  ['kind', 'text'],
  ['decision_id', 'text'],
  ['actor_type', 'text'],
  ['actor_id', 'text'],
  ['token_id', 'text'],
  ['token_type', 'text'],
  ['project_id', 'text'],
  ['environment', 'text'],
  ['session_id', 'text'],
  ['gateway_id', 'text'],
  ['server', 'text'],
  ['tool', 'text'],
  ['capability', 'text'],
  ['arguments', 'jsonb'],
  ['flags', 'jsonb'],
  ['decision', 'text'],
  ['code', 'text'],
  ['message', 'text'],
  ['purpose', 'text'],
  ['action', 'text'],
  ['target', 'text'],
  ['result_status', 'text'],
  ['summary', 'text'],
  ['duration_ms', 'double precision'],
  ['result_bytes', 'bigint'],
  ['rows', 'bigint'],
  ['ai_client', 'text'],
  ['client_name', 'text'],
  ['client_version', 'text'],
  ['user_agent', 'text'],
  ['ip', 'text'],
  ['details', 'jsonb'],
  ['prev_hash', 'text'],
  ['hash', 'text'],
];

export const AUDIT_COLUMN_NAMES = AUDIT_COLUMNS.map(([name]) => name);

/**
 * An event with every column present (null when not given), so the hash never depends on absent keys.
 * Written as one literal: objects of this size built by spreading fall out of V8's fast shapes, which
 * showed up as the largest cost per row in the writer benchmark.
 */
export function makeEvent(e: Partial<AuditEvent> & Pick<AuditEvent, 'kind' | 'actor_type'>): AuditEvent {
  return {
    kind: e.kind,
    decision_id: e.decision_id ?? null,
    actor_type: e.actor_type,
    actor_id: e.actor_id ?? null,
    token_id: e.token_id ?? null,
    token_type: e.token_type ?? null,
    project_id: e.project_id ?? null,
    environment: e.environment ?? null,
    session_id: e.session_id ?? null,
    gateway_id: e.gateway_id ?? null,
    server: e.server ?? null,
    tool: e.tool ?? null,
    capability: e.capability ?? null,
    arguments: e.arguments ?? null,
    flags: e.flags ?? null,
    decision: e.decision ?? null,
    code: e.code ?? null,
    message: e.message ?? null,
    purpose: e.purpose ?? null,
    action: e.action ?? null,
    target: e.target ?? null,
    result_status: e.result_status ?? null,
    summary: e.summary ?? null,
    duration_ms: e.duration_ms ?? null,
    result_bytes: e.result_bytes ?? null,
    rows: e.rows ?? null,
    ai_client: e.ai_client ?? null,
    client_name: e.client_name ?? null,
    client_version: e.client_version ?? null,
    user_agent: e.user_agent ?? null,
    ip: e.ip ?? null,
    details: e.details ?? null,
  };
}

/** The stored row of an event at a chain position; `hash` is filled in by the caller once computed. */
export function makeRecord(e: AuditEvent, id: string, ts: Date, replicaId: string, seq: number, prevHash: string): AuditRecord {
  return {
    id,
    ts,
    replica_id: replicaId,
    seq,
    kind: e.kind,
    decision_id: e.decision_id,
    actor_type: e.actor_type,
    actor_id: e.actor_id,
    token_id: e.token_id,
    token_type: e.token_type,
    project_id: e.project_id,
    environment: e.environment,
    session_id: e.session_id,
    gateway_id: e.gateway_id,
    server: e.server,
    tool: e.tool,
    capability: e.capability,
    arguments: e.arguments,
    flags: e.flags,
    decision: e.decision,
    code: e.code,
    message: e.message,
    purpose: e.purpose,
    action: e.action,
    target: e.target,
    result_status: e.result_status,
    summary: e.summary,
    duration_ms: e.duration_ms,
    result_bytes: e.result_bytes,
    rows: e.rows,
    ai_client: e.ai_client,
    client_name: e.client_name,
    client_version: e.client_version,
    user_agent: e.user_agent,
    ip: e.ip,
    details: e.details,
    prev_hash: prevHash,
    hash: '',
  };
}
