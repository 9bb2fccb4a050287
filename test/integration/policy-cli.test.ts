import { describe, expect, it } from 'vitest';
import { killswitch } from '../helpers/cli.js';

const policyCheck = (file: string) => killswitch(['policy', 'check', file]);

describe('killswitch policy check', () => {
  it('a valid file → exit 0 with a summary', async () => {
    const res = await policyCheck('policy/default.yaml');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^policy\/default\.yaml: valid policy \(6 servers, 3 roles, sha256 [0-9a-f]{64}\)$/m);
    expect(res.stderr).toBe('');
  });

  it('an invalid file → exit 2, one line per error with file:line:column and key path', async () => {
    const res = await policyCheck('test/fixtures/policy/broken.yaml');
    expect(res.code).toBe(2);
    expect(res.stderr.split('\n')).toEqual([
      'test/fixtures/policy/broken.yaml:11:41 roles.code_agent.allowed_servers.development[2]: unknown server "shel"; servers in this policy: filesystem, github',
      'test/fixtures/policy/broken.yaml: invalid policy (1 error)',
      '',
    ]);
  });

  it('invalid YAML → exit 2 with the position', async () => {
    const res = await policyCheck('test/fixtures/policy/syntax.yaml');
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^test\/fixtures\/policy\/syntax\.yaml:\d+:\d+ /);
  });

  it('without a file: the one POLICY_FILE names, which the control plane loads (the runbook checks it from an operator shell)', async () => {
    const broken = await killswitch(['policy', 'check'], { env: { POLICY_FILE: 'test/fixtures/policy/broken.yaml' } });
    expect(broken.code).toBe(2);
    expect(broken.stderr).toContain('test/fixtures/policy/broken.yaml: invalid policy (1 error)');
    expect(broken.stderr.split('\n')[0]).toBe('policy check: test/fixtures/policy/broken.yaml (POLICY_FILE)');
    const unset = await killswitch(['policy', 'check'], { env: { POLICY_FILE: '' } });
    expect(unset.stderr.split('\n')[0]).toBe('policy check: policy/default.yaml (the default: POLICY_FILE is not set)');
    expect(unset.code).toBe(0);
    const valid = await killswitch(['policy', 'check'], { env: { POLICY_FILE: 'policy/default.yaml' } });
    expect(valid.code).toBe(0);
    expect(valid.stdout).toMatch(/^policy\/default\.yaml: valid policy /m);
  });

  it('an unreadable file → exit 2', async () => {
    const res = await policyCheck('test/fixtures/policy/missing.yaml');
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('test/fixtures/policy/missing.yaml:1:1 cannot read the policy file: file not found');
  });
});
