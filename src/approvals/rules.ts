import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';
import type { ResolvedCall } from '../decisions/types.js';
import type { ApprovalRule, CompiledPolicy, IndexedApprovalRule } from '../policy/types.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';

type Asker = Pick<AgentPrincipal, 'role' | 'environment'>;
type Asked = Pick<ResolvedCall, 'server' | 'tool' | 'capability'>;

function covers(rule: ApprovalRule, agent: Asker, call: Asked): boolean {
  if (rule.servers && !rule.servers.has(call.server)) return false;
  if (rule.tools && !rule.tools.has(call.tool)) return false;
  if (rule.capabilities && !rule.capabilities.has(call.capability)) return false;
  if (rule.roles && !rule.roles.has(agent.role)) return false;
  if (rule.environments && !rule.environments.has(agent.environment)) return false;
  return true;
}

/** The first rule of `list` covering the call that comes before `best` in the file, else `best`. */
function earlier(list: readonly IndexedApprovalRule[] | undefined, agent: Asker, call: Asked, best: IndexedApprovalRule | undefined): IndexedApprovalRule | undefined {
  if (list === undefined) return best;
  for (const entry of list) {
    if (best !== undefined && entry.order >= best.order) return best;
    if (covers(entry.rule, agent, call)) return entry;
  }
  return best;
}

/** Up to this many rules are walked in order rather than looked up in the index. */
export const SCAN_AT_MOST = 8;

/**
 * The first approval rule of the policy that covers this call, if any. Only the rules filed under the
 * call's server, role or tool (and those naming none of them) are looked at (ApprovalIndex): the cost
 * of a call does not grow with the number of servers, roles or rules of the file.
 */
export function approvalRuleFor(policy: CompiledPolicy, agent: Asker, call: Asked): ApprovalRule | undefined {
  const rules = policy.approvals.rules;
  // A few rules (the usual file) are quicker to walk than to look up: the same answer either way.
  if (rules.length <= SCAN_AT_MOST) {
    for (const rule of rules) if (covers(rule, agent, call)) return rule;
    return undefined;
  }
  const index = policy.approvals.index;
  // Most files file every rule under servers: the other lists are then empty and not looked up.
  let best = earlier(index.byServer.get(call.server), agent, call, undefined);
  if (index.byRole.size > 0) best = earlier(index.byRole.get(agent.role), agent, call, best);
  if (index.byTool.size > 0) best = earlier(index.byTool.get(call.tool), agent, call, best);
  if (index.rest.length > 0) best = earlier(index.rest, agent, call, best);
  return best?.rule;
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
