import { beforeAll, describe, expect, it } from 'vitest';
import { type CompiledPolicy, formatIssue, haltsToken, limitsFor, loadPolicyFile, parsePolicy, policyFlagNames } from '../../src/policy/index.js';

let fixture: CompiledPolicy;

beforeAll(async () => {
  const result = await loadPolicyFile('test/fixtures/policy/test.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  fixture = result.policy;
});

describe('limitsFor', () => {
  it('merges file values over the seed 001 defaults', () => {
    const l = limitsFor(fixture, 'code_agent', 'github');
    expect(l.session).toEqual({ maxCalls: 150, maxCallsPerMinute: 30 });
    expect(l.pauseAtPercent).toBe(80);
    expect(l.token).toEqual({ maxCallsPerMinute: 120, maxCallsPerDay: 1000 });
    // github defaults 50/session; the file lowers the per-minute limit to 5, which also holds per token.
    expect(l.server).toMatchObject({ maxCallsPerSession: 50, maxCallsPerMinute: 5, maxCallsPerMinuteAllSessions: 5 });
    expect(l.cascade).toEqual({ threshold: 3, windowCalls: 5 });
    expect(l.largeResultBytes).toBe(1048576);
    expect(l.largeResultsAllowed).toBe(false);
  });

  it('applies seed 001 per-server defaults by kind', () => {
    expect(limitsFor(fixture, 'code_agent', 'filesystem').server).toMatchObject({ maxWriteCallsPerSession: 30, maxReadCallsPerSession: 200, maxCallsPerSession: null });
    expect(limitsFor(fixture, 'code_agent', 'files2').server).toMatchObject({ maxWriteCallsPerSession: 30, maxReadCallsPerSession: 200 });
    // db class: 100 calls; the file sets max_rows_returned to null (no limit).
    expect(limitsFor(fixture, 'database_agent', 'postgres').server).toMatchObject({ maxCallsPerSession: 100, maxRowsReturned: null });
    expect(limitsFor(fixture, 'code_agent', 'runner').server).toMatchObject({ maxCallsPerSession: 20, maxExecutionTimeSeconds: 30 });
    expect(limitsFor(fixture, 'code_agent', 'memory').server).toEqual({
      maxCallsPerSession: null,
      maxCallsPerMinute: null,
      maxCallsPerMinuteAllSessions: null,
      maxWriteCallsPerSession: null,
      maxReadCallsPerSession: null,
      maxRowsReturned: null,
      maxExecutionTimeSeconds: null,
    });
  });

  it('takes the cascade window and large-result permission from the role', () => {
    const l = limitsFor(fixture, 'database_agent', 'postgres');
    expect(l.cascade).toEqual({ threshold: 4, windowCalls: 10 });
    expect(l.largeResultsAllowed).toBe(true);
  });

  it('answers for unknown roles and servers with the global numbers and no permission', () => {
    const l = limitsFor(fixture, 'ghost', 'nope');
    expect(l.session.maxCalls).toBe(150);
    expect(l.largeResultsAllowed).toBe(false);
    expect(l.server.maxCallsPerSession).toBeNull();
    expect(fixture.limitsCache.has('ghost')).toBe(false);
  });

  it('is cached per role and server', () => {
    expect(limitsFor(fixture, 'code_agent', 'github')).toBe(limitsFor(fixture, 'code_agent', 'github'));
  });

  it('is cached by role, then by server: a lookup per call builds no key string', () => {
    const l = limitsFor(fixture, 'database_agent', 'postgres');
    expect(fixture.limitsCache.get('database_agent')).toBeInstanceOf(Map);
    expect(fixture.limitsCache.get('database_agent')?.get('postgres')).toBe(l);
  });
});

describe('halt_token_on', () => {
  it('defaults to the six triggers of seed 001', () => {
    for (const t of ['UNAUTHORIZED_SERVER', 'WRITE_IN_READ_SESSION', 'PRODUCTION_ENVIRONMENT', 'SESSION_LIMIT', 'LARGE_RESULT', 'CASCADE_WRITE'] as const) {
      expect(haltsToken(fixture, t)).toBe(true);
    }
    expect(haltsToken(fixture, 'MAX_ROWS')).toBe(false);
  });

  it('an empty list halts sessions only', async () => {
    const bench = await loadPolicyFile('policy/bench.yaml');
    if (!bench.ok) throw new Error('bench policy invalid');
    expect(haltsToken(bench.policy, 'UNAUTHORIZED_SERVER')).toBe(false);
  });
});

describe('policyFlagNames', () => {
  it('lists every server and each extra flag once', () => {
    expect(policyFlagNames(fixture)).toEqual({
      servers: ['files2', 'filesystem', 'github', 'idp', 'liveproxy', 'memory', 'postgres', 'runner', 'shell', 'trusted', 'untrusted', 'web'],
      // Seed defaults included: runner and shell (class exec), files2 and filesystem deletes (map filesystem), github deletes.
      extraFlags: ['mcp.database.write', 'mcp.filesystem.write', 'mcp.github.api', 'mcp.shell.execute'],
    });
  });

  it('includes prohibited servers (their flags exist so operators can see them)', () => {
    const result = parsePolicy('servers:\n  sh: { identity: { command: sh }, class: exec, prohibited: true, flags: { write: [mcp.shell.execute] } }\nroles: {}\n', 'p.yaml');
    if (!result.ok) throw new Error('invalid');
    expect(policyFlagNames(result.policy)).toEqual({ servers: ['sh'], extraFlags: ['mcp.shell.execute'] });
  });
});
