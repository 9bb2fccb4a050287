import { checkPolicy, type PolicyStore, resolveCall, scopeCheck } from '../policy/index.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';
import type { DecisionInput } from './types.js';

/**
 * Which tools a token may ever call, for a gateway's tools/list: the static part of the pipeline
 * (policy and scopes). Flags, limits and halts change from minute to minute and are left to decisions;
 * a production grant counts as obtainable, so production tokens still see their tools.
 */
export class Callability {
  constructor(private readonly policy: PolicyStore) {}

  knowsServer(server: string): boolean {
    return this.policy.current().servers.has(server);
  }

  mayEverCall(agent: AgentPrincipal, server: string, tool: string, annotations?: DecisionInput['annotations']): { callable: true } | { callable: false; reason: string } {
    const policy = this.policy.current();
    const input: DecisionInput = { server, tool, arguments: {}, session_id: '' };
    if (annotations) input.annotations = annotations;
    const resolved = resolveCall(policy, input);
    if ('denial' in resolved) return { callable: false, reason: resolved.denial.message };
    const denial = checkPolicy(policy, agent, resolved.call, input, { production: true }) ?? scopeCheck(agent, resolved.call);
    return denial ? { callable: false, reason: denial.message } : { callable: true };
  }
}
