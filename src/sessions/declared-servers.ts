import { redactText } from '../audit/redact.js';
import type { DecisionInput, Denial, HaltTrigger } from '../decisions/types.js';
import type { DecisionCode } from '../errors.js';
import { type CompiledPolicy, checkPolicy, resolveCall } from '../policy/index.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';

// Seed 001 pattern 1 ("at session start, validate that the agent's active MCP configuration matches its
// declared role"): each server a session declares is checked against the token's role with the very
// steps a decision runs (resolveCall, checkPolicy), so the answer can never disagree with the first call.
// A server every call to which will be refused is named in the answer's `warnings` and in the
// session.opened audit row. The session opens all the same: a declaration is a statement of intent, not
// a connection, and a gateway declares every server of its config, broader than what an agent uses; the
// first call to such a server is still denied and halts (DESIGN.md §4), before anything reaches it.

export interface ScopeWarning {
  /** The declared item, `servers.<i>` (its index in the request). */
  field: string;
  problem: string;
  /** What every call to that server is answered. */
  code: Exclude<DecisionCode, 'OK'>;
  /** The kill-switch trigger that call fires, or null when it is refused without a halt. */
  trigger: HaltTrigger | null;
  /** The trigger also halts every session of the token (policy `halt_token_on`). */
  halts_token: boolean;
}

/** A protocol read (resolveCall: the server's read scope, whatever its map and annotations say). */
const READ_PROBE = 'resources/read';
/** No map holds an empty name, and it names no user-management verb: an unmapped tool, the server's write scope. */
const UNMAPPED_PROBE = '';

/**
 * The denial every call to `server` gets from this token's role, or undefined when some call may go
 * ahead. Probes a read, an unmapped tool and every mapped tool, so that a rule prohibiting only some
 * capabilities (database_write) warns of nothing, while a server the role may not use, or whose every
 * capability is prohibited (shell_execution), is named. Production grants count as obtainable, and flags,
 * kills, limits and scopes are left to the decisions: they change from minute to minute or are not the
 * role's. The read's denial is the one reported: it is what an agent's first look at the server gets.
 */
function refusalOf(policy: CompiledPolicy, agent: AgentPrincipal, server: string): Denial | undefined {
  const known = policy.servers.get(server);
  let first: Denial | undefined;
  // A call's policy verdict depends on its tool only through the scope the tool needs (its capability and
  // class): one mapped tool per scope is probed, not every tool (a map of 200 tools has a few scopes).
  const scopes = new Set<string>();
  const probe = (tool: string): 'allowed' | 'unknown' | undefined => {
    const input: DecisionInput = { server, tool, arguments: {}, session_id: '' };
    const resolved = resolveCall(policy, input);
    if ('denial' in resolved) {
      first = resolved.denial; // an unknown server: no tool of it resolves
      return 'unknown';
    }
    const denial = checkPolicy(policy, agent, resolved.call, input, { production: true });
    if (!denial) return 'allowed';
    first ??= denial;
    return undefined;
  };
  for (const tool of [READ_PROBE, UNMAPPED_PROBE]) {
    const verdict = probe(tool);
    if (verdict === 'allowed') return undefined;
    if (verdict === 'unknown') return first;
  }
  for (const [tool, { scope }] of known?.tools ?? []) {
    if (scopes.has(scope)) continue;
    scopes.add(scope);
    if (probe(tool) === 'allowed') return undefined;
  }
  return first;
}

function consequence(policy: CompiledPolicy, denial: Denial): string {
  if (!denial.halt) return `Every call to it is denied ${denial.code} (no halt)`;
  const token = policy.haltTokenOn.has(denial.halt) ? ' and every session of the token (halt_token_on)' : '';
  return `Every call to it is denied ${denial.code} and halts the session${token} until an operator resumes it (${denial.halt})`;
}

/**
 * One warning per declared server this token will be refused, in the order declared. Servers declared
 * twice are reported once, at their first index.
 */
export function declaredServerWarnings(policy: CompiledPolicy, agent: AgentPrincipal, declared: readonly string[] | undefined): ScopeWarning[] {
  const out: ScopeWarning[] = [];
  const seen = new Set<string>();
  for (const [i, name] of (declared ?? []).entries()) {
    if (seen.has(name)) continue;
    seen.add(name);
    const denial = refusalOf(policy, agent, name);
    if (!denial) continue;
    let why: string;
    // Quoted in the answer, the log line and the audit row: the name of an unknown server is the agent's to choose.
    const shown = redactText(name);
    if (denial.code === 'UNKNOWN_SERVER') {
      const known = [...policy.servers.keys()].sort();
      const listed = known.length <= 10 ? known.join(', ') : `${known.slice(0, 10).join(', ')} and ${known.length - 10} more`;
      why = `"${shown}" is not a server of the policy (${known.length === 0 ? 'it lists none' : `its servers: ${listed}`})`;
    } else {
      why = `"${shown}" is refused to this token: ${denial.message}`;
    }
    out.push({
      field: `servers.${i}`,
      problem: `${why}. ${consequence(policy, denial)}.`,
      code: denial.code,
      trigger: denial.halt ?? null,
      halts_token: denial.halt !== undefined && policy.haltTokenOn.has(denial.halt),
    });
  }
  return out;
}

/**
 * The declared servers as a session keeps them (Postgres, Redis, every view): a name the policy does not
 * list masked by redactText, as its warning and the session.opened audit row quote it (an unknown
 * server's name is the agent's to choose, a credential included). The policy's own names are kept as
 * written, whatever they look like: the scope is matched against each call's server (UNDECLARED_SERVER),
 * and a call to a server the policy does not list is refused before the scope is read (UNKNOWN_SERVER),
 * so masking another name changes no decision. Two names masked alike are kept once.
 */
export function keptDeclaredServers(policy: CompiledPolicy | undefined, declared: readonly string[]): string[] {
  return [...new Set(declared.map((name) => (policy?.servers.has(name) ? name : redactText(name))))];
}
