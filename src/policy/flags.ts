import type { CompiledPolicy } from './types.js';

/**
 * Flag names the policy implies, for the flags sync: every server (it creates `mcp.<server>.read`,
 * `.write` and `.delete` for each) and the extra flags the servers name per capability
 * (e.g. `mcp.database.write`), each once.
 */
export function policyFlagNames(policy: CompiledPolicy): { servers: string[]; extraFlags: string[] } {
  const extra = new Set<string>();
  for (const s of policy.servers.values()) for (const list of Object.values(s.flags)) for (const f of list) extra.add(f);
  return { servers: [...policy.servers.keys()].sort(), extraFlags: [...extra].sort() };
}
