import type { Capability } from '../tokens/scopes.js';
import type { CompiledPolicy, CompiledServer } from './types.js';

/**
 * Flag names the policy implies, for the flags sync: every server (it creates `mcp.<server>.read`,
 * `.write` and `.delete` for each) and the extra flags of the servers per capability, each once: the
 * ones a server lists under `flags:` and the seed 001 kill switches it answers to by default (every
 * db server's writes → `mcp.database.write`, ...: defaults.ts, seedFlags).
 */
export function policyFlagNames(policy: CompiledPolicy): { servers: string[]; extraFlags: string[] } {
  const extra = new Set<string>();
  for (const s of policy.servers.values()) for (const list of Object.values(s.flags)) for (const f of list) extra.add(f);
  return { servers: [...policy.servers.keys()].sort(), extraFlags: [...extra].sort() };
}

/**
 * The server flags a call to this server needs per capability, in the order the flag step checks them
 * (`mcp.<server>.<capability>`, then the extra flags), without `mcp.enabled` and `mcp.tokens.<type>`,
 * which every call needs.
 */
export function serverFlagNames(server: CompiledServer): Record<Capability, string[]> {
  const of = (cap: Capability) => [...new Set([`mcp.${server.name}.${cap}`, ...server.flags[cap]])];
  return { read: of('read'), write: of('write'), delete: of('delete') };
}
