import type { DecisionCode } from '../errors.js';
import type { AgentPrincipal, GatewayPrincipal } from '../tokens/authenticator.js';
import type { Capability } from '../tokens/scopes.js';
import type { Environment } from '../tokens/store.js';

// The contract between the decision pipeline's steps. Each step reads the CallContext and either
// returns nothing (continue) or a Denial (first denial wins). Steps live in their domain folders
// (policy/, flags/, limits/, audit/) and are composed in decisions/pipeline.ts.

export type { Capability };

/** Kill-switch triggers of seed 001 (DESIGN.md §4), the one list of their names. */
export const HALT_TRIGGERS = [
  'UNAUTHORIZED_SERVER',
  'WRITE_IN_READ_SESSION',
  'PRODUCTION_ENVIRONMENT',
  'SESSION_LIMIT',
  'LARGE_RESULT',
  'CASCADE_WRITE',
  'MAX_ROWS',
  'MAX_EXECUTION_TIME',
] as const;
export type HaltTrigger = (typeof HALT_TRIGGERS)[number];

export interface DecisionInput {
  server: string;
  tool: string;
  arguments: Record<string, unknown>;
  session_id: string;
  environment?: Environment;
  tool_hash?: string;
  resources?: string[];
  annotations?: { readOnlyHint?: boolean; destructiveHint?: boolean; idempotentHint?: boolean; openWorldHint?: boolean; title?: string };
  client?: { name?: string; version?: string; user_agent?: string };
}

/** The call as resolved from the policy (step 3). */
export interface ResolvedCall {
  server: string;
  serverClass: string;
  tool: string;
  requiredScope: string;
  capability: Capability;
  /** Where the scope came from, for messages and explain (`user-management-name`: an unmapped tool named like user management needs auth:*). */
  scopeSource: 'map' | 'protocol' | 'user-management-name' | 'annotation' | 'untrusted-default';
  /** Extra Unleash flags the policy names for this server and capability (e.g. mcp.database.write). */
  extraFlags: string[];
  /** Identities of the resources touched, for cascade detection (at least one: server+tool). */
  resourceIds: string[];
  /** Network identities (hosts, database names) the production patterns are matched against. */
  networkIdentities: string[];
}

export interface Denial {
  code: Exclude<DecisionCode, 'OK'>;
  message: string;
  /** Set when the denial fires a kill-switch trigger: the session (and by policy the token) is halted. */
  halt?: HaltTrigger;
  retryAfterS?: number;
  /** Extra fields for the answer, e.g. approval_id. */
  extra?: Record<string, unknown>;
}

export interface SessionView {
  id: string;
  state: 'active' | 'halted' | 'closed';
  trigger?: HaltTrigger | null;
  read_only: boolean;
  servers: string[] | null;
  purpose: string;
}

export interface LimitUse {
  used: number;
  max: number;
}

export interface CallContext {
  decisionId: string;
  receivedAt: number;
  gateway: GatewayPrincipal;
  agent: AgentPrincipal;
  input: DecisionInput;
  /** Peer address and user agent of the gateway's request, for the audit trail. */
  ip: string;
  /** Filled by the policy step. */
  call?: ResolvedCall;
  flagsEvaluated: Array<{ name: string; enabled: boolean }>;
  session?: SessionView;
  limits: Record<string, LimitUse>;
  warnings: string[];
  /** When true (explain), steps must not change any state. */
  dryRun: boolean;
  /**
   * Set by the gate step when it let the call through: gives back what the gate spent for it (counters,
   * its last-calls entry, the decision's metadata) when the call is denied after all, by a later step or
   * because its INTENT could not be recorded. Resolves false when there was nothing to undo.
   */
  undoGate?: (code: string) => Promise<boolean>;
  /**
   * Set when a halting denial found that the session the call names is not this token's (another token's,
   * or none): the answer shows no session, and the audit row and alert keep the id only as
   * `claimed_session_id`, so nothing of that session is shown to this caller or joins its timeline.
   */
  sessionNotBound?: true;
  /** Per-step verdicts for explain and tracing. */
  trace: Array<{ step: string; verdict: 'pass' | 'deny' | 'skip'; code?: string; message?: string; micros: number }>;
}

export type StepResult = Denial | undefined;

export interface PipelineStep {
  name: string;
  /**
   * What the step reads beyond this process's memory, in product words ("Redis (sessions, halts and
   * limits)"): a denial when the step throws names it. Unset: the step reads memory only.
   */
  dependency?: string;
  run(ctx: CallContext): StepResult | Promise<StepResult>;
}
