import type { Pool } from '../db/pool.js';
import { notFound } from '../errors.js';
import { canSeeProject } from '../http/auth.js';
import type { AgentPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { credentialStore } from '../tokens/store.js';
import { runPipeline } from './pipeline.js';
import { newCallContext } from './service.js';
import type { DecisionInput, HaltTrigger, PipelineStep } from './types.js';

export interface ExplainRequest {
  token_id: string;
  server: string;
  tool: string;
  arguments?: Record<string, unknown>;
  session_id?: string;
  environment?: DecisionInput['environment'];
  tool_hash?: string;
  resources?: string[];
  annotations?: DecisionInput['annotations'];
}

/**
 * "Why was this denied?": runs the same steps as a decision in dry-run mode (no counters, no halts,
 * no audit row) and returns every step's verdict.
 */
export class Explainer {
  constructor(
    private readonly pool: Pool,
    private readonly steps: () => readonly PipelineStep[],
    /** Whether the policy halts the token too on this trigger (policy `halt_token_on`). */
    private readonly haltsToken: (trigger: HaltTrigger) => boolean,
  ) {}

  async explain(op: OperatorPrincipal, req: ExplainRequest) {
    const row = await credentialStore.getAgentToken(this.pool, req.token_id);
    if (!row || !canSeeProject(op, row.project_id)) throw notFound('token');
    const agent: AgentPrincipal = {
      kind: 'agent',
      id: row.id,
      tokenType: row.type,
      scopes: row.scopes,
      role: row.role,
      projectId: row.project_id,
      environment: row.environment,
      displayPrefix: row.display_prefix,
      expiresAt: row.expires_at ? row.expires_at.getTime() : null,
    };
    const input: DecisionInput = { server: req.server, tool: req.tool, arguments: req.arguments ?? {}, session_id: req.session_id ?? '' };
    if (req.environment) input.environment = req.environment;
    if (req.tool_hash) input.tool_hash = req.tool_hash;
    if (req.resources) input.resources = req.resources;
    if (req.annotations) input.annotations = req.annotations;
    const ctx = newCallContext({ gateway: { kind: 'gateway', id: 'explain', name: 'explain', expiresAt: null }, agent, input, ip: '', dryRun: true });
    const revoked = row.revoked_at !== null || (agent.expiresAt !== null && agent.expiresAt <= Date.now());
    const denial = revoked ? { code: 'PERMISSION_DENIED' as const, message: 'the token is revoked or expired: every call is refused with 401 before any step' } : await runPipeline(this.steps(), ctx);
    return {
      decision: denial ? ('deny' as const) : ('allow' as const),
      code: denial ? denial.code : 'OK',
      message: denial ? denial.message : `${req.server}/${req.tool} would be allowed${ctx.warnings.length > 0 ? `; ${ctx.warnings.join('; ')}` : ''}`,
      steps: ctx.trace,
      ...(ctx.call ? { call: { ...ctx.call } } : {}),
      flags: ctx.flagsEvaluated,
      // What the real call would also do: halt the session (and by policy the token). Explain halts nothing.
      ...(denial && 'halt' in denial && denial.halt ? { halt: { trigger: denial.halt, token: this.haltsToken(denial.halt) } } : {}),
    };
  }
}
