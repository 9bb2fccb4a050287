import { checkPolicy, describeProductionHit, matchProductionPattern, type PolicyStore, resolveCall, scopeCheck } from '../policy/index.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';
import type { Capability } from '../tokens/scopes.js';
import type { DecisionInput } from './types.js';

/** Whether a production grant covers the token now (GrantService.has, in memory). */
export interface ProductionGrants {
  has(kind: 'production', tokenId: string, sessionId: string | undefined): boolean;
}

/**
 * Which tools a token may ever call, for a gateway's tools/list: the static part of the pipeline
 * (policy and scopes). Flags, limits and halts change from minute to minute and are left to decisions;
 * a production grant counts as obtainable, so production tokens still see their tools. Except where the
 * call itself would halt the token: a server whose identity (the policy's, or what the gateway reports
 * running it with) matches one of the token's environment's production patterns, while no grant covers
 * the token, is not callable: its first call would be ENVIRONMENT_FORBIDDEN and halt the token, a trap
 * the agent cannot see in its list (integrator review).
 */
export class Callability {
  constructor(
    private readonly policy: PolicyStore,
    private readonly grants?: ProductionGrants,
  ) {}

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
    reportedIdentities: readonly string[] = [],
  ): ({ callable: true } | { callable: false; reason: string }) & { capability: Capability | null } {
    const policy = this.policy.current();
    const input: DecisionInput = { server, tool, arguments: {}, session_id: '' };
    if (annotations) input.annotations = annotations;
    const resolved = resolveCall(policy, input);
    if ('denial' in resolved) return { callable: false, reason: resolved.denial.message, capability: null };
    const capability = resolved.call.capability;
    const denial = checkPolicy(policy, agent, resolved.call, input, { production: true }) ?? scopeCheck(agent, resolved.call);
    if (denial) return { callable: false, reason: denial.message, capability };
    const env = agent.environment;
    const hit = matchProductionPattern([...resolved.call.networkIdentities, ...reportedIdentities], policy.environments[env].forbiddenPatterns);
    if (hit && !this.grants?.has('production', agent.id, undefined)) {
      return {
        callable: false,
        reason: `${server} ${describeProductionHit(hit)}: a call of this ${env} token would be denied ENVIRONMENT_FORBIDDEN and halt the token (PRODUCTION_ENVIRONMENT). An operator's production grant for the token (POST /v1/grants) makes it callable; list the tools again after it.`,
        capability,
      };
    }
    return { callable: true, capability };
  }
}
