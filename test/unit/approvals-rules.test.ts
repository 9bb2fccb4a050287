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
