import { checkPolicy, type PolicyStore, resolveCall, scopeCheck } from '../policy/index.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';
import type { Capability } from '../tokens/scopes.js';
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

  /**
   * With the call's capability (read, write, delete: its required scope's action) when the policy resolves
   * it, so a gateway can also hide what its session's declared scope excludes (a read-only session halts on
   * any call that is not a read) without knowing the policy.
   */
  mayEverCall(
    agent: AgentPrincipal,
    server: string,
    tool: string,
    annotations?: DecisionInput['annotations'],
  ): ({ callable: true } | { callable: false; reason: string }) & { capability: Capability | null } {
    const policy = this.policy.current();
    const input: DecisionInput = { server, tool, arguments: {}, session_id: '' };
    if (annotations) input.annotations = annotations;
    const resolved = resolveCall(policy, input);
    if ('denial' in resolved) return { callable: false, reason: resolved.denial.message, capability: null };
    const capability = resolved.call.capability;
    const denial = checkPolicy(policy, agent, resolved.call, input, { production: true }) ?? scopeCheck(agent, resolved.call);
    return denial ? { callable: false, reason: denial.message, capability } : { callable: true, capability };
  }
}
