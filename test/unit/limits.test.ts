import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../src/decisions/types.js';
import type { GateOutcome } from '../../src/limits/gate.js';
import { countersFor, fromPolicyLimits, REAL_WINDOWS, seedLimitsFor, usageText } from '../../src/limits/limits.js';
import { denialFor } from '../../src/limits/step.js';
import { summarizeArguments } from '../../src/limits/summary.js';

describe('limits', () => {
  it('seed 001 defaults per server, with the per-server per-minute limit also across the token\'s sessions', () => {
    expect(seedLimitsFor('github')).toMatchObject({ sessionCalls: 200, sessionCallsPerMinute: 30, serverCalls: 50, serverCallsPerMinute: 10, tokenServerCallsPerMinute: 10, pauseAtPercent: 80, cascade: { threshold: 3, windowCalls: 5 } });
    expect(seedLimitsFor('filesystem')).toMatchObject({ serverWrites: 30, serverReads: 200 });
    expect(seedLimitsFor('shell')).toMatchObject({ serverCalls: 20 });
    expect(seedLimitsFor('unknown').serverCalls).toBeUndefined();
  });

  it('orders halting session totals before windowed limits, and picks reads or writes by capability', () => {
    const limits = { ...seedLimitsFor('filesystem'), tokenCallsPerMinute: 120, tokenCallsPerDay: 5000 };
    const read = countersFor({ tokenId: 't', sessionId: 's', server: 'filesystem', capability: 'read' }, limits, REAL_WINDOWS);
    expect(read.map((c) => [c.n, c.h])).toEqual([
      ['session_calls', 1],
      ['server_reads', 1],
      ['session_calls_per_minute', 0],
      ['token_calls_per_minute', 0],
      ['token_calls_per_day', 0],
    ]);
    const del = countersFor({ tokenId: 't', sessionId: 's', server: 'filesystem', capability: 'delete' }, limits, REAL_WINDOWS);
    expect(del.map((c) => c.n)).toContain('server_writes');
    expect(del.find((c) => c.n === 'token_calls_per_day')?.w).toBe(86_400_000);
  });

  it('a missing, zero or negative number is no limit', () => {
    expect(countersFor({ tokenId: 't', sessionId: 's', server: 'x', capability: 'read' }, { sessionCalls: 0, tokenCallsPerMinute: -1 }, REAL_WINDOWS)).toEqual([]);
  });

  it('maps the policy module\'s EffectiveLimits (null = no limit)', () => {
    const g = fromPolicyLimits({
      session: { maxCalls: 200, maxCallsPerMinute: 30 },
      pauseAtPercent: 80,
      token: { maxCallsPerMinute: 120, maxCallsPerDay: null },
      // Distinct numbers, so a per-session limit mapped onto the per-token one would show.
      server: { maxCallsPerSession: 50, maxCallsPerMinute: 10, maxCallsPerMinuteAllSessions: 12, maxWriteCallsPerSession: null, maxReadCallsPerSession: null },
      cascade: { threshold: 3, windowCalls: 5 },
    });
    expect(g).toEqual({
      sessionCalls: 200,
      sessionCallsPerMinute: 30,
      serverCalls: 50,
      serverCallsPerMinute: 10,
      tokenServerCallsPerMinute: 12,
      tokenCallsPerMinute: 120,
      pauseAtPercent: 80,
      cascade: { threshold: 3, windowCalls: 5 },
    });
  });

  it('warning text in the seed\'s words', () => {
    expect(usageText(161, 200, 'calls in this session')).toBe('161/200 calls in this session, 81%');
    expect(usageText(42, 50, 'calls to github in this session')).toBe('42/50 calls to github in this session, 84%');
  });

  it('call summaries redact secrets and stay short', () => {
    const s = summarizeArguments({
      path: 'a.md',
      password: 'hunter2',
      nested: { Authorization: 'Bearer x', items: [{ api_key: 'k' }] },
      // A credential under a key that names no secret: masked by its look, as in the audit trail.
      header: 'Bearer eyJhbGciOiJIUzI1NiJ9abcdefgh',
      note: 'use mcp_rw_8f7a6b5c4d3e2f1a0b9c8d7e6f',
      body: 'y'.repeat(1000),
    });
    expect(s).not.toContain('hunter2');
    expect(s).not.toContain('Bearer x');
    expect(s).not.toContain('eyJhbGciOiJIUzI1NiJ9abcdefgh');
    expect(s).not.toContain('8f7a6b5c4d3e2f1a0b9c8d7e6f');
    expect(s).toContain('"password":"[REDACTED]"');
    expect(s).toContain('"api_key":"[REDACTED]"');
    expect(s.length).toBe(500);
    expect(s.endsWith('…')).toBe(true);
  });

  it('never cuts a summary between the two halves of a surrogate pair (Redis cjson refuses a lone one)', () => {
    // {"c":" is 6 characters: the 499th character kept is the first half of the first emoji.
    const s = summarizeArguments({ c: `${'a'.repeat(492)}😀😀` });
    expect(s).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/);
    expect(s.endsWith('a…')).toBe(true);
    expect(summarizeArguments({ c: `${'a'.repeat(491)}😀😀` }).endsWith('😀…')).toBe(true);
  });
});

describe('the gate step reading a reply', () => {
  const ctx = { input: { session_id: 's1', server: 'filesystem', tool: 'write_file' }, agent: { id: 't1' } } as unknown as CallContext;
  const outcome = (o: Partial<GateOutcome>): GateOutcome => ({ allowed: false, reason: 'OK', now: 0, limits: {}, warnings: [], alerts: [], ...o }) as GateOutcome;

  it('allows only an OK that the gate marked allowed', () => {
    expect(denialFor(outcome({ allowed: true, reason: 'OK' }), ctx)).toBeUndefined();
    expect(denialFor(outcome({ allowed: false, reason: 'OK' }), ctx)?.code).toBe('DEPENDENCY_UNAVAILABLE');
  });

  it('denies a reason it does not know (fail closed), naming it', () => {
    const d = denialFor(outcome({ reason: 'BOGUS' as GateOutcome['reason'] }), ctx);
    expect(d?.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(d?.message).toContain('BOGUS');
  });
});
