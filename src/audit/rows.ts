import type { CallContext, DecisionInput, HaltTrigger } from '../decisions/types.js';
import type { AgentPrincipal, GatewayPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { aiClientOf } from './clients.js';
import { type AuditEvent, type AuditKind, type AuditRecord, makeEvent } from './record.js';
import { redactDetails, redactText, redactValue, storable } from './redact.js';

// Builds audit events from the decision pipeline's shapes. Everything a caller supplied is redacted
// and made storable here, so the writer and the hash chain only ever see clean values.

export interface DecisionOutcome {
  decision: 'allow' | 'deny';
  code: string;
  message: string;
  /** Set when the denial fired a kill-switch trigger. */
  halt?: HaltTrigger | undefined;
  extra?: Record<string, unknown> | undefined;
}

/** The body of POST /v1/decisions/:id/result. */
export interface CallResult {
  status: string;
  duration_ms?: number | undefined;
  result_bytes?: number | undefined;
  rows?: number | undefined;
  error?: string | undefined;
  /** The gateway's own summary of the result (kept masked in `details.summary`). */
  summary?: string | undefined;
}

/** An after-call trigger that fired on the result (large result, max rows, max execution time). */
export interface ResultOutcome {
  code: string;
  message: string;
  halt?: HaltTrigger | undefined;
}

/** A result reported after the call's agent token was revoked or expired (the call ran before). */
export type CredentialEnded = 'revoked' | 'expired';

/** What a RESULT row needs when the full CallContext is no longer at hand (see resultSourceFromIntent). */
export interface ResultSource {
  decisionId: string;
  agent: Pick<AgentPrincipal, 'id' | 'tokenType' | 'projectId' | 'environment'>;
  gateway?: Pick<GatewayPrincipal, 'id'> | undefined;
  ip?: string | undefined;
  server?: string | null | undefined;
  tool?: string | null | undefined;
  capability?: string | null | undefined;
  sessionId?: string | null | undefined;
  purpose?: string | null | undefined;
  client?: DecisionInput['client'] | undefined;
}

// A text column holds text whatever a caller passed (a value that was not a string was hashed as one thing
// and stored as another: the row never verified again); the type says string, this keeps the chain if not.
const text = (v: string | null | undefined): string | null => (v === undefined || v === null ? null : storable(typeof v === 'string' ? v : String(v)));
/**
 * A tool name as recorded: masked like free text. The reference gateway only passes names an upstream
 * listed, but any gateway may send one holding a credential (`get_file?token=ghp_...`); the row, the
 * usage rollups built from it and every export would keep it for the whole retention.
 */
const toolName = (v: string | null | undefined): string | null => (v === undefined || v === null ? null : redactText(v));
const count = (v: number | null | undefined): number | null =>
  typeof v === 'number' && Number.isFinite(v) ? Math.max(0, Math.min(Math.round(v), Number.MAX_SAFE_INTEGER)) : null;
const millis = (v: number | null | undefined): number | null => (typeof v === 'number' && Number.isFinite(v) ? Math.max(0, v) : null);

// Also a server name: a known one reads the same, but the name of an unknown one is the caller's to choose (a credential, even).
const masked = (v: string | null | undefined): string | null => (v === undefined || v === null ? null : redactText(v));

/** The client as the gateway reported it: masked like free text (a user agent can quote a header: "curl Authorization: Bearer …"). */
function clientColumns(client: DecisionInput['client'] | undefined): Pick<AuditEvent, 'ai_client' | 'client_name' | 'client_version' | 'user_agent'> {
  return {
    ai_client: aiClientOf(client),
    client_name: masked(client?.name),
    client_version: masked(client?.version),
    user_agent: masked(client?.user_agent),
  };
}

/** The INTENT row of one decision (allow or deny), written before the answer. */
export function intentRow(ctx: CallContext, outcome: DecisionOutcome): AuditEvent {
  const { agent, input, call } = ctx;
  const details: Record<string, unknown> = {};
  if (input.environment && input.environment !== agent.environment) details['requested_environment'] = input.environment;
  if (outcome.halt) details['halt'] = outcome.halt;
  if (outcome.extra && Object.keys(outcome.extra).length > 0) details['extra'] = outcome.extra;
  if (call) {
    details['required_scope'] = call.requiredScope;
    details['scope_source'] = call.scopeSource;
  }
  if (input.tool_hash) details['tool_hash'] = input.tool_hash;
  if (input.resources?.length) details['resources'] = input.resources;
  if (input.annotations) details['annotations'] = input.annotations;
  if (Object.keys(ctx.limits).length > 0) details['limits'] = ctx.limits;
  if (ctx.warnings.length > 0) details['warnings'] = ctx.warnings;
  if (ctx.session?.trigger) details['session_trigger'] = ctx.session.trigger;
  if (ctx.dryRun) details['dry_run'] = true;
  if (ctx.sessionNotBound) details['claimed_session_id'] = input.session_id;

  const flags: Record<string, boolean> = {};
  for (const f of ctx.flagsEvaluated) flags[storable(f.name)] = f.enabled;

  return makeEvent({
    kind: 'INTENT',
    actor_type: 'mcp_token',
    decision_id: text(ctx.decisionId),
    actor_id: agent.id,
    token_id: agent.id,
    token_type: agent.tokenType,
    project_id: text(agent.projectId),
    environment: agent.environment,
    session_id: ctx.sessionNotBound ? null : text(input.session_id),
    gateway_id: ctx.gateway.id,
    server: masked(call?.server ?? input.server),
    tool: toolName(call?.tool ?? input.tool),
    capability: call?.capability ?? null,
    arguments: redactValue(input.arguments ?? {}),
    flags,
    decision: outcome.decision,
    code: text(outcome.code),
    message: redactText(outcome.message),
    purpose: ctx.session ? redactText(ctx.session.purpose) : null,
    ...clientColumns(input.client),
    ip: text(ctx.ip),
    details: Object.keys(details).length > 0 ? (redactValue(details) as Record<string, unknown>) : null,
  });
}

/**
 * The INTENT row of a call denied before its agent token could be checked (the credential store was
 * unavailable). Nothing the agent claims is trusted: no token, project or environment, and the session id
 * it sent goes into `details.claimed_session_id`, never the `session_id` column, so the row joins no
 * session's timeline. `token_type` is the presented token's prefix (checked by its checksum, no lookup).
 */
export function uncheckedIntentRow(p: {
  decisionId: string;
  gateway: Pick<GatewayPrincipal, 'id'>;
  input: DecisionInput;
  ip: string;
  tokenType: AgentPrincipal['tokenType'] | undefined;
  outcome: Pick<DecisionOutcome, 'code' | 'message'>;
}): AuditEvent {
  const details: Record<string, unknown> = { agent: 'unchecked' };
  if (p.input.session_id) details['claimed_session_id'] = p.input.session_id;
  if (p.input.environment) details['requested_environment'] = p.input.environment;
  if (p.input.tool_hash) details['tool_hash'] = p.input.tool_hash;
  if (p.input.resources?.length) details['resources'] = p.input.resources;
  return makeEvent({
    kind: 'INTENT',
    actor_type: 'mcp_token',
    decision_id: text(p.decisionId),
    actor_id: null,
    token_id: null,
    token_type: p.tokenType ?? null,
    project_id: null,
    environment: null,
    session_id: null,
    gateway_id: p.gateway.id,
    server: masked(p.input.server),
    tool: toolName(p.input.tool),
    capability: null,
    arguments: redactValue(p.input.arguments ?? {}),
    flags: {},
    decision: 'deny',
    code: text(p.outcome.code),
    message: redactText(p.outcome.message),
    purpose: null,
    ...clientColumns(p.input.client),
    ip: text(p.ip),
    details: redactValue(details) as Record<string, unknown>,
  });
}

function isCallContext(s: CallContext | ResultSource): s is CallContext {
  return 'input' in s && typeof (s as CallContext).input === 'object';
}

/** Everything a RESULT row carries over from its decision, from a CallContext. */
export function resultSourceOf(ctx: CallContext): ResultSource {
  return {
    decisionId: ctx.decisionId,
    agent: ctx.agent,
    gateway: ctx.gateway,
    ip: ctx.ip,
    server: ctx.call?.server ?? ctx.input.server,
    tool: ctx.call?.tool ?? ctx.input.tool,
    capability: ctx.call?.capability ?? null,
    sessionId: ctx.input.session_id,
    purpose: ctx.session?.purpose ?? null,
    client: ctx.input.client,
  };
}

/**
 * Everything a RESULT row carries over from its stored INTENT row (AuditService.findIntent), with the
 * gateway and address of the request that reports the result.
 */
export function resultSourceFromIntent(intent: AuditRecord, via: { gateway?: Pick<GatewayPrincipal, 'id'>; ip?: string } = {}): ResultSource {
  const client: NonNullable<DecisionInput['client']> = {};
  if (intent.client_name) client.name = intent.client_name;
  if (intent.client_version) client.version = intent.client_version;
  if (intent.user_agent) client.user_agent = intent.user_agent;
  return {
    decisionId: intent.decision_id ?? '',
    agent: {
      id: intent.token_id ?? '',
      tokenType: (intent.token_type ?? 'ro') as AgentPrincipal['tokenType'],
      projectId: intent.project_id ?? '',
      environment: (intent.environment ?? 'development') as AgentPrincipal['environment'],
    },
    gateway: via.gateway ?? (intent.gateway_id ? { id: intent.gateway_id } : undefined),
    ip: via.ip ?? intent.ip ?? undefined,
    server: intent.server,
    tool: intent.tool,
    capability: intent.capability,
    sessionId: intent.session_id,
    purpose: intent.purpose,
    client,
  };
}

function summaryOf(result: CallResult): string {
  const parts = [result.status];
  if (result.error) parts.push(`error: ${result.error.slice(0, 500)}`);
  if (typeof result.result_bytes === 'number') parts.push(`${result.result_bytes} bytes`);
  if (typeof result.rows === 'number') parts.push(`${result.rows} rows`);
  if (typeof result.duration_ms === 'number') parts.push(`${result.duration_ms} ms`);
  return redactText(parts.join(' · '));
}

/** The RESULT row of a decision, from POST /v1/decisions/:id/result (same decision_id as its INTENT). */
export function resultRow(source: CallContext | ResultSource, result: CallResult, outcome?: ResultOutcome, credentialEnded?: CredentialEnded): AuditEvent {
  const s = isCallContext(source) ? resultSourceOf(source) : source;
  const details: Record<string, unknown> = {};
  if (result.error) details['error'] = redactText(result.error);
  if (result.summary) details['summary'] = redactText(result.summary);
  if (outcome?.halt) details['halt'] = outcome.halt;
  if (credentialEnded) details['credential_ended'] = credentialEnded;
  return makeEvent({
    kind: 'RESULT',
    actor_type: 'mcp_token',
    decision_id: text(s.decisionId),
    actor_id: s.agent.id,
    token_id: s.agent.id,
    token_type: s.agent.tokenType,
    project_id: text(s.agent.projectId),
    environment: s.agent.environment,
    session_id: text(s.sessionId),
    gateway_id: s.gateway?.id ?? null,
    server: masked(s.server),
    tool: toolName(s.tool),
    capability: text(s.capability),
    code: outcome ? text(outcome.code) : null,
    message: outcome ? redactText(outcome.message) : null,
    purpose: s.purpose ? redactText(s.purpose) : null,
    result_status: text(result.status),
    summary: summaryOf(result),
    duration_ms: millis(result.duration_ms),
    result_bytes: count(result.result_bytes),
    rows: count(result.rows),
    ...clientColumns(s.client),
    ip: text(s.ip),
    details: Object.keys(details).length > 0 ? details : null,
  });
}

/** Who did an administrative action: an operator key, or a named part of the system ("cli", "retention"). */
export type AdminActor = OperatorPrincipal | string;

export interface AdminAction {
  actor: AdminActor;
  /** What was done, dotted: key.created, key.revoked, grant.created, session.resumed, policy.reloaded ... */
  action: string;
  /** What it was done to, e.g. "agent_token:<id>". */
  target?: string | undefined;
  /** The project the target belongs to, so project-limited operators see the row. */
  projectId?: string | undefined;
  /**
   * The one session the action concerns (a kill or grant limited to it), for the row's session_id column,
   * so GET /v1/audit?session= finds it beside the session's calls. A `session:<id>` target sets it too.
   */
  sessionId?: string | null | undefined;
  /**
   * The agent token the action concerns, for the row's token_id column, so GET /v1/audit?token= finds it
   * beside the token's calls. An `agent_token:<id>` target, or a `token_id` in the details (a session's
   * token), sets it too.
   */
  tokenId?: string | null | undefined;
  details?: Record<string, unknown> | undefined;
  /** ADMIN unless the action has its own kind (POLICY_RELOAD ...). */
  kind?: AuditKind | undefined;
  ip?: string | undefined;
}

const sessionOfTarget = (target: string | undefined): string | null => (target?.startsWith('session:') ? target.slice('session:'.length) || null : null);
const tokenOfTarget = (target: string | undefined): string | null => (target?.startsWith('agent_token:') ? target.slice('agent_token:'.length) || null : null);
const tokenOfDetails = (details: Record<string, unknown> | undefined): string | null => (typeof details?.['token_id'] === 'string' ? details['token_id'] : null);

/** The ADMIN row of an operator or system action. String actors "operator:<id>" name an operator. */
export function adminRow(a: AdminAction): AuditEvent {
  let actorType: AuditEvent['actor_type'];
  let actorId: string;
  const details: Record<string, unknown> = { ...(a.details ?? {}) };
  if (typeof a.actor === 'string') {
    const m = /^operator:(.+)$/.exec(a.actor);
    actorType = m ? 'operator' : 'system';
    actorId = m ? m[1]! : a.actor;
  } else {
    actorType = 'operator';
    actorId = a.actor.id;
    details['operator_name'] = a.actor.name;
    details['operator_role'] = a.actor.role;
  }
  return makeEvent({
    kind: a.kind ?? 'ADMIN',
    actor_type: actorType,
    actor_id: text(actorId),
    project_id: text(a.projectId),
    session_id: text(a.sessionId ?? sessionOfTarget(a.target)),
    token_id: text(a.tokenId ?? tokenOfTarget(a.target) ?? tokenOfDetails(a.details)),
    action: text(a.action),
    target: text(a.target),
    ip: text(a.ip),
    details: Object.keys(details).length > 0 ? redactDetails(details) : null,
  });
}
