import type { HaltTrigger } from '../decisions/types.js';
import { NO_SERVER_LIMITS } from './defaults.js';
import type { CompiledPolicy, EffectiveLimits } from './types.js';

/**
 * Every limit number that applies to one call of `role` on `server`: the global (per session) and
 * per-token limits, the server's limits (seed 001 defaults by kind, overridden by the file), the
 * cascade window (per-role override) and the large-result threshold with the role's permission.
 * Answers are cached per role, then per server, for the life of this compiled policy: two map lookups,
 * no key built per call.
 */
export function limitsFor(policy: CompiledPolicy, role: string, server: string): Readonly<EffectiveLimits> {
  const cached = policy.limitsCache.get(role)?.get(server);
  if (cached) return cached;
  const r = policy.roles.get(role);
  const s = policy.servers.get(server);
  const limits: EffectiveLimits = Object.freeze({
    session: policy.limits.session,
    pauseAtPercent: policy.limits.pauseAtPercent,
    token: policy.limits.token,
    server: s?.limits ?? NO_SERVER_LIMITS,
    cascade: r?.cascade ?? policy.cascade,
    largeResultBytes: policy.largeResultBytes,
    largeResultsAllowed: r?.largeResults ?? false,
  });
  // Bounded by roles × servers of the file (unknown names are not cached, so callers cannot grow it).
  if (r && s) {
    const ofRole = policy.limitsCache.get(role);
    if (ofRole) ofRole.set(server, limits);
    else policy.limitsCache.set(role, new Map([[server, limits]]));
  }
  return limits;
}

/** Whether this trigger halts every session of the token (policy `halt_token_on`), not only the one that fired. */
export function haltsToken(policy: CompiledPolicy, trigger: HaltTrigger): boolean {
  return policy.haltTokenOn.has(trigger);
}

/**
 * Servers whose `max_execution_time_seconds` can never fire: a result is taken only within
 * DECISION_META_TTL_S of its allow (later reports are 404), so a limit at or above it is inert.
 */
export function inertExecutionLimits(policy: CompiledPolicy, decisionMetaTtlS: number): string[] {
  const out: string[] = [];
  for (const [name, server] of policy.servers) {
    const max = server.limits.maxExecutionTimeSeconds;
    if (max !== null && max >= decisionMetaTtlS) {
      out.push(
        `servers.${name}.max_execution_time_seconds is ${max}, not below DECISION_META_TTL_S=${decisionMetaTtlS}: a call's result is taken only within DECISION_META_TTL_S of its allow, so this limit can never fire (raise DECISION_META_TTL_S or lower the limit)`,
      );
    }
  }
  return out;
}
