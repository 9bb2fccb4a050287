import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';
import type { ResolvedCall } from '../decisions/types.js';
import type { ApprovalRule, CompiledPolicy } from '../policy/types.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';

/** The first approval rule of the policy that covers this call, if any. */
export function approvalRuleFor(policy: CompiledPolicy, agent: Pick<AgentPrincipal, 'role' | 'environment'>, call: Pick<ResolvedCall, 'server' | 'tool' | 'capability'>): ApprovalRule | undefined {
  for (const rule of policy.approvals.rules) {
    if (rule.servers && !rule.servers.has(call.server)) continue;
    if (rule.tools && !rule.tools.has(call.tool)) continue;
    if (rule.capabilities && !rule.capabilities.has(call.capability)) continue;
    if (rule.roles && !rule.roles.has(agent.role)) continue;
    if (rule.environments && !rule.environments.has(agent.environment)) continue;
    return rule;
  }
  return undefined;
}

/** `sha256:<hex>` of the canonical JSON of the arguments: key order and spacing do not matter, values do. */
export function argumentsHash(args: Record<string, unknown>): string {
  return `sha256:${createHash('sha256').update(canonicalJson(args)).digest('hex')}`;
}

/**
 * What one approval covers: the same token, session, server, tool and arguments. Hashed so the Redis
 * key has a bounded length whatever the names are; the parts are length-prefixed so no two different
 * calls can produce the same string.
 */
export function callKey(p: { tokenId: string; sessionId: string; server: string; tool: string; argumentsHash: string }): string {
  const parts = [p.tokenId, p.sessionId, p.server, p.tool, p.argumentsHash].map((s) => `${s.length}:${s}`).join('|');
  return createHash('sha256').update(parts).digest('hex');
}

/** What a production grant request covers: one token and session (any call that needs the grant). */
export function grantKey(tokenId: string, sessionId: string): string {
  return createHash('sha256').update(['production_grant', tokenId, sessionId].map((s) => `${s.length}:${s}`).join('|')).digest('hex');
}
