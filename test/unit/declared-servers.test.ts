import { describe, expect, it } from 'vitest';
import { formatIssue, parsePolicy } from '../../src/policy/index.js';
import type { CompiledPolicy, CompiledRole } from '../../src/policy/types.js';
import { declaredServerWarnings } from '../../src/sessions/declared-servers.js';
import type { AgentPrincipal } from '../../src/tokens/authenticator.js';

/** `n` servers of 200 mapped tools each; the role may use only the first. */
function largePolicy(n: number): CompiledPolicy {
  const tools = Array.from({ length: 200 }, (_, t) => `t${t}: ${['db:select', 'db:insert', 'db:update', 'db:delete'][t % 4]}`).join(', ');
  const lines = ['servers:', ...Array.from({ length: n }, (_, i) => `  s${i}: { identity: { command: npx }, class: db, tools: { ${tools} } }`)];
  lines.push('roles:', '  r: { allowed_servers: [s0] }', 'prohibited_capabilities: [database_write]');
  const result = parsePolicy(`${lines.join('\n')}\n`, 'p.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  return result.policy;
}

const agent: AgentPrincipal = {
  kind: 'agent',
  id: 'tok-1',
  tokenType: 'rw',
  scopes: ['db:select', 'db:insert', 'db:update'],
  role: 'r',
  projectId: 'demo',
  environment: 'development',
  displayPrefix: 'mcp_rw_abcd',
  expiresAt: null,
};

describe('declared servers of a session, on a policy with large tool maps', () => {
  const policy = largePolicy(50);
  // Each policy check of a probe looks the role up once: counts how many calls are probed.
  let probes = 0;
  const roles = policy.roles as Map<string, CompiledRole>;
  const get = roles.get.bind(roles);
  roles.get = (name: string) => {
    probes++;
    return get(name);
  };

  it('50 declared servers the role may not use: one probe per scope of each, not one per tool', () => {
    probes = 0;
    const warnings = declaredServerWarnings(
      policy,
      agent,
      Array.from({ length: 50 }, (_, i) => `s${i}`),
    );
    expect(warnings.map((w) => w.field)).toEqual(Array.from({ length: 49 }, (_, i) => `servers.${i + 1}`));
    expect(warnings[0]).toMatchObject({ code: 'PERMISSION_DENIED', trigger: 'UNAUTHORIZED_SERVER' });
    // A read, an unmapped tool and one tool per scope (4) of each server: 6 × 50, not 202 × 50.
    expect(probes).toBeLessThanOrEqual(6 * 50);
  });

  it('a server whose reads are allowed is not refused, whatever prohibits its writes', () => {
    expect(declaredServerWarnings(policy, agent, ['s0'])).toEqual([]);
  });
});
