import { describe, expect, it } from 'vitest';
import { approvalRuleFor, argumentsHash, callKey } from '../../src/approvals/rules.js';
import { formatIssue, type PolicyIssue, parsePolicy } from '../../src/policy/index.js';

const POLICY = `servers:
  fs:
    identity: { command: npx }
    map: filesystem
    approval: [move_file]
  memory:
    identity: { command: npx }
    map: memory
roles:
  code_agent:
    allowed_servers: [fs, memory]
  ops_agent:
    allowed_servers: [fs, memory]
approvals:
  separate_approver: true
  ttl_seconds: 600
  rules:
    - name: memory-deletes
      servers: [memory]
      capabilities: [delete]
      separate_approver: false
    - name: ops-writes-in-production
      roles: [ops_agent]
      capabilities: [write]
      environments: [production]
      ttl_seconds: 120
`;

function compiled(text: string) {
  const result = parsePolicy(text, 'p.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  return result.policy;
}

function errorsOf(text: string): PolicyIssue[] {
  const result = parsePolicy(text, 'p.yaml');
  expect(result.ok).toBe(false);
  return result.issues.filter((i) => i.severity === 'error');
}

const dev = { role: 'code_agent', environment: 'development' as const };

describe('approval rules of the policy', () => {
  const policy = compiled(POLICY);

  it('a server `approval:` list is a rule for those tools, with the top-level separate_approver and window', () => {
    const rule = approvalRuleFor(policy, dev, { server: 'fs', tool: 'move_file', capability: 'write' });
    expect(rule).toMatchObject({ name: 'servers.fs.approval', separateApprover: true, ttlSeconds: 600 });
    expect(approvalRuleFor(policy, dev, { server: 'fs', tool: 'write_file', capability: 'write' })).toBeUndefined();
  });

  it('a rule by server and capability covers every tool of that capability, and may override separate_approver', () => {
    const rule = approvalRuleFor(policy, dev, { server: 'memory', tool: 'delete_entities', capability: 'delete' });
    expect(rule).toMatchObject({ name: 'memory-deletes', separateApprover: false });
    expect(approvalRuleFor(policy, dev, { server: 'memory', tool: 'create_entities', capability: 'write' })).toBeUndefined();
  });

  it('a rule by role and environment applies only to that role in that environment', () => {
    const call = { server: 'memory', tool: 'create_entities', capability: 'write' as const };
    expect(approvalRuleFor(policy, { role: 'ops_agent', environment: 'production' }, call)).toMatchObject({ name: 'ops-writes-in-production', ttlSeconds: 120 });
    expect(approvalRuleFor(policy, { role: 'ops_agent', environment: 'staging' }, call)).toBeUndefined();
    expect(approvalRuleFor(policy, { role: 'code_agent', environment: 'production' }, call)).toBeUndefined();
  });

  it('refuses a rule that matches nothing in particular, an unknown server and a duplicate name', () => {
    const base = 'servers:\n  fs:\n    identity: { command: npx }\n    map: filesystem\nroles: {}\napprovals:\n  rules:\n';
    expect(errorsOf(`${base}    - name: all\n`).map((i) => i.message).join('\n')).toContain('at least one of servers, tools, capabilities, roles, environments');
    expect(errorsOf(`${base}    - name: x\n      servers: [nope]\n`).map((i) => i.message).join('\n')).toContain('unknown server "nope"');
    expect(errorsOf(`${base}    - name: x\n      tools: [a]\n    - name: x\n      tools: [b]\n`).map((i) => i.message).join('\n')).toContain('used twice');
    expect(errorsOf(`${base}    - name: x\n      capabilities: [execute]\n`).length).toBeGreaterThan(0);
  });
});

/** A policy of `n` servers, each with an `approval:` list, and `n` rules by server and role: the platform team's file. */
function largePolicy(n: number): string {
  const lines = ['servers:'];
  for (let i = 0; i < n; i++) lines.push(`  s${i}:`, '    identity: { command: npx }', '    class: db', `    approval: [drop_${i}]`);
  lines.push('roles:');
  for (let i = 0; i < n; i++) lines.push(`  role_${i}:`, `    allowed_servers: [s${i}]`);
  lines.push('approvals:', '  rules:');
  for (let i = 0; i < n; i++) lines.push(`    - name: r${i}`, `      servers: [s${i}]`, `      roles: [role_${i}]`, '      environments: [production]');
  lines.push('    - name: every-delete', '      capabilities: [delete]', '    - name: ops', '      roles: [role_0]', '      tools: [reindex]');
  return `${lines.join('\n')}\n`;
}

/** How many rules approvalRuleFor looks at: each rule's first set counts its lookups (the rules are the policy's own objects). */
function countLookups(policy: ReturnType<typeof compiled>): { count: () => number } {
  let n = 0;
  for (const rule of policy.approvals.rules) {
    const key = (['servers', 'roles', 'tools', 'capabilities', 'environments'] as const).find((k) => rule[k] !== undefined);
    if (key === undefined) continue;
    const set = rule[key] as ReadonlySet<string>;
    const counting = new Set(set);
    counting.has = (v: string) => {
      n++;
      return Set.prototype.has.call(set, v);
    };
    (rule as { -readonly [K in typeof key]: unknown })[key] = counting;
  }
  return { count: () => n };
}

describe('approval rules of a large policy', () => {
  const policy = compiled(largePolicy(500));
  const counter = countLookups(policy);

  it('a call looks only at the rules filed under its server, role and tool, not at every rule of the file', () => {
    const before = counter.count();
    const rule = approvalRuleFor(policy, { role: 'role_499', environment: 'production' }, { server: 's499', tool: 'select', capability: 'read' });
    expect(rule?.name).toBe('r499');
    // s499's `approval:` list, rule r499; not the 999 rules of other servers and roles.
    expect(counter.count() - before).toBeLessThanOrEqual(4);
    const none = counter.count();
    expect(approvalRuleFor(policy, { role: 'role_499', environment: 'staging' }, { server: 's499', tool: 'select', capability: 'read' })).toBeUndefined();
    expect(counter.count() - none).toBeLessThanOrEqual(6);
  });

  it('the first matching rule of the file still wins across servers, roles, tools and the rest', () => {
    expect(approvalRuleFor(policy, { role: 'role_7', environment: 'production' }, { server: 's7', tool: 'drop_7', capability: 'delete' })?.name).toBe('servers.s7.approval');
    expect(approvalRuleFor(policy, { role: 'role_7', environment: 'production' }, { server: 's7', tool: 'x', capability: 'delete' })?.name).toBe('r7');
    expect(approvalRuleFor(policy, { role: 'role_7', environment: 'staging' }, { server: 's7', tool: 'x', capability: 'delete' })?.name).toBe('every-delete');
    expect(approvalRuleFor(policy, { role: 'role_0', environment: 'staging' }, { server: 's3', tool: 'reindex', capability: 'write' })?.name).toBe('ops');
    expect(approvalRuleFor(policy, { role: 'role_0', environment: 'staging' }, { server: 's3', tool: 'reindex', capability: 'delete' })?.name).toBe('every-delete');
    expect(approvalRuleFor(policy, { role: 'role_1', environment: 'staging' }, { server: 's3', tool: 'reindex', capability: 'write' })).toBeUndefined();
  });
});

describe('what one approval covers', () => {
  it('the arguments hash ignores key order and whitespace but not values', () => {
    expect(argumentsHash({ a: 1, b: { c: [1, 2], d: 'x' } })).toBe(argumentsHash({ b: { d: 'x', c: [1, 2] }, a: 1 }));
    expect(argumentsHash({ a: 1 })).not.toBe(argumentsHash({ a: 2 }));
    expect(argumentsHash({ a: [1, 2] })).not.toBe(argumentsHash({ a: [2, 1] }));
    expect(argumentsHash({ a: '1' })).not.toBe(argumentsHash({ a: 1 }));
    expect(argumentsHash({})).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('the call key differs for another token, session, server, tool or arguments, and cannot be forged by shifting separators', () => {
    const base = { tokenId: 't', sessionId: 's', server: 'fs', tool: 'move_file', argumentsHash: 'sha256:aa' };
    const keys = new Set([
      callKey(base),
      callKey({ ...base, tokenId: 't2' }),
      callKey({ ...base, sessionId: 's2' }),
      callKey({ ...base, server: 'fs2' }),
      callKey({ ...base, tool: 'write_file' }),
      callKey({ ...base, argumentsHash: 'sha256:ab' }),
      callKey({ ...base, sessionId: 's|2', server: 'fs' }),
      callKey({ ...base, sessionId: 's', server: '2|fs' }),
    ]);
    expect(keys.size).toBe(8);
    expect(callKey(base)).toBe(callKey({ ...base }));
  });
});
