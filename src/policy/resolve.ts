import type { DecisionInput, Denial, ResolvedCall } from '../decisions/types.js';
import { capabilityOf } from './compile.js';
import { USER_MANAGEMENT_KEY_QUALIFIERS, USER_MANAGEMENT_KEY_WORDS, USER_MANAGEMENT_NOUNS, USER_MANAGEMENT_VERBS } from './defaults.js';
import { callIdentitiesOf, resourceIdsOf } from './resources.js';
import type { CompiledPolicy } from './types.js';

// Step 3 of DESIGN.md §4: which server, which exact scope, which capability. The map decides first;
// an unmapped tool whose name manages users or credentials needs `auth:*` (whatever its annotations
// say: a read-only hint on `delete_user` must not make it a read); annotations count only for servers
// the policy trusts (read-only hint, not contradicted by a destructive one → the class's read scope,
// anything else → its write scope); every other unmapped tool needs the write scope. Delete scopes
// come only from a map, never from an annotation.

/** MCP protocol reads that gateways send as decisions: `resources/read` and `prompts/get`. */
export const PROTOCOL_READS: ReadonlySet<string> = new Set(['resources/read', 'prompts/get']);

/** A tool name's words, lowercased: split on anything but letters and digits, and at camelCase humps (`resetUserMFA` → reset, user, mfa; `enable2FA` → enable, 2fa). */
export function toolNameWords(tool: string): string[] {
  return tool.match(/[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+[A-Za-z]*/g)?.map((w) => w.toLowerCase()) ?? [];
}

/** Whether an unmapped tool's name says it manages users, roles, permissions or credentials (docs/policy.md). */
export function isUserManagementName(tool: string): boolean {
  const words = toolNameWords(tool);
  if (!words.some((w) => USER_MANAGEMENT_VERBS.has(w))) return false;
  return words.some((w, i) => USER_MANAGEMENT_NOUNS.has(w) || (USER_MANAGEMENT_KEY_QUALIFIERS.has(w) && USER_MANAGEMENT_KEY_WORDS.has(words[i + 1] ?? '')));
}

export function resolveCall(policy: CompiledPolicy, input: DecisionInput): { call: ResolvedCall } | { denial: Denial } {
  const server = policy.servers.get(input.server);
  if (!server) {
    return {
      denial: {
        code: 'UNKNOWN_SERVER',
        halt: 'UNAUTHORIZED_SERVER',
        message: `server "${input.server}" is not in the policy: calls to unknown servers are refused and halt the session; an operator must add it to the policy file`,
      },
    };
  }

  let requiredScope: string;
  let scopeSource: ResolvedCall['scopeSource'];
  const mapped = server.tools.get(input.tool);
  if (mapped) {
    requiredScope = mapped.scope;
    scopeSource = 'map';
  } else if (PROTOCOL_READS.has(input.tool)) {
    // Not tools but MCP reads the gateway decides (issue 8): reading a resource or getting a prompt
    // is a read of that server, whatever annotations say.
    requiredScope = server.readScope;
    scopeSource = 'protocol';
  } else if (isUserManagementName(input.tool)) {
    // Fail closed (seed 000 US-012): a false positive is fixed by mapping the tool, a miss would let
    // read-only and write tokens manage users.
    requiredScope = 'auth:*';
    scopeSource = 'user-management-name';
  } else if (server.trustAnnotations && input.annotations !== undefined) {
    // A destructive hint contradicts a read-only one: the write scope (never delete: only a map gives that).
    const readOnly = input.annotations.readOnlyHint === true && input.annotations.destructiveHint !== true;
    requiredScope = readOnly ? server.readScope : server.writeScope;
    scopeSource = 'annotation';
  } else {
    requiredScope = server.writeScope;
    scopeSource = 'untrusted-default';
  }
  const capability = mapped?.capability ?? capabilityOf(requiredScope);

  const identities = new Set(server.networkIdentities);
  callIdentitiesOf(input.arguments, input.resources, identities);

  return {
    call: {
      server: server.name,
      serverClass: server.serverClass,
      tool: input.tool,
      requiredScope,
      capability,
      scopeSource,
      extraFlags: [...server.flags[capability]],
      resourceIds: resourceIdsOf(server.name, input.arguments, input.resources),
      networkIdentities: [...identities],
    },
  };
}

/** The policy names this tool under `approval:`: a human must approve the exact arguments first. */
export function requiresApproval(policy: CompiledPolicy, server: string, tool: string): boolean {
  return policy.servers.get(server)?.approval.has(tool) ?? false;
}
