import { describe, expect, it } from 'vitest';
import { DependencyFailureLog } from '../../src/decisions/dependency-failures.js';
import { type DecisionPorts, DecisionService, newCallContext } from '../../src/decisions/service.js';
import type { CallContext } from '../../src/decisions/types.js';

// The paths of decide() that no real dependency reaches today (SessionService.halt never rejects for an
// unavailable store; AuditWriter rejects with its own AuditUnavailable), so a driver's rejection stands
// in: whatever rejects, its words go to the log, never to the answer or its INTENT row.

const DRIVER = new Error('connect ECONNREFUSED 10.0.3.4:5432');
const DRIVER_TEXT = /ECONNREFUSED|10\.0\.3\.4|5432/;

function call(): CallContext {
  return newCallContext({
    gateway: { kind: 'gateway', id: 'gw' } as never,
    agent: { kind: 'agent', id: 'tok', displayPrefix: 'ks_' } as never,
    input: { server: 'filesystem', tool: 'write_file', arguments: {}, session_id: 's1' },
    ip: '127.0.0.1',
  });
}

function service(over: Partial<DecisionPorts>) {
  const reported: Array<{ dependency: string; err: unknown; fields: Record<string, unknown> }> = [];
  const intents: Array<{ code: string; message: string }> = [];
  const svc = new DecisionService({
    steps: () => [],
    halt: async () => undefined,
    recordIntent: async () => {},
    enqueueIntent: (_c, o) => intents.push(o),
    enqueueUncheckedIntent: () => {},
    raiseAlerts: () => {},
    failures: { report: (dependency, err, fields) => reported.push({ dependency, err, fields }) },
    ...over,
  });
  return { svc, reported, intents };
}

describe('driver errors on the decision path', () => {
  it('the audit trail unavailable: DEPENDENCY_UNAVAILABLE naming the audit trail and the decision id; the error is reported', async () => {
    const { svc, reported } = service({ recordIntent: () => Promise.reject(DRIVER) });
    const ctx = call();
    const a = await svc.decide(ctx);
    expect(a).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    expect(a.message).toMatch(/audit trail/);
    expect(a.message).toContain(ctx.decisionId);
    expect(a.message).not.toMatch(DRIVER_TEXT);
    expect(reported).toEqual([{ dependency: 'the audit trail', err: DRIVER, fields: { decision_id: ctx.decisionId } }]);
  });

  it('a halt that fails: the denial says so in product words, in the answer and the INTENT row', async () => {
    const { svc, reported, intents } = service({
      steps: () => [{ name: 'scopes', run: () => ({ code: 'PERMISSION_DENIED', message: 'not allowed', halt: 'UNAUTHORIZED_SERVER' }) }],
      halt: () => Promise.reject(DRIVER),
    });
    const a = await svc.decide(call());
    expect(a.code).toBe('PERMISSION_DENIED');
    expect(a.message).toMatch(/^not allowed\. The kill-switch halt \(UNAUTHORIZED_SERVER\) could not be applied/);
    expect(a.message).not.toMatch(DRIVER_TEXT);
    expect(intents[0]?.message).toBe(a.message);
    expect(reported[0]?.err).toBe(DRIVER);
  });

  it('a step that throws: named by what it depends on, never by the error', async () => {
    const { svc, reported } = service({ steps: () => [{ name: 'approval', dependency: 'The approval queue (Redis or Postgres)', run: () => Promise.reject(DRIVER) }] });
    const a = await svc.decide(call());
    expect(a.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(a.message).toMatch(/^The approval queue \(Redis or Postgres\) did not answer the approval check/);
    expect(a.message).not.toMatch(DRIVER_TEXT);
    expect(reported[0]).toMatchObject({ dependency: 'The approval queue (Redis or Postgres)', fields: { step: 'approval' } });
  });
});

describe('DependencyFailureLog', () => {
  it('logs the first failure of a dependency, then at most one line per interval counting the others', () => {
    const lines: Array<Record<string, unknown>> = [];
    let now = 0;
    const log = new DependencyFailureLog({ error: (o) => lines.push(o as Record<string, unknown>) }, 30_000, () => now);
    log.report('Redis', DRIVER, { decision_id: 'd1' });
    log.report('Redis', DRIVER, { decision_id: 'd2' });
    log.report('the audit trail', DRIVER, { decision_id: 'd3' });
    now = 10_000;
    log.report('Redis', DRIVER, { decision_id: 'd4' });
    now = 31_000;
    log.report('Redis', DRIVER, { decision_id: 'd5' });
    expect(lines.map((l) => [l['dependency'], l['decision_id'], l['repeats']])).toEqual([
      ['Redis', 'd1', undefined],
      ['the audit trail', 'd3', undefined],
      ['Redis', 'd5', 2],
    ]);
    expect(lines[0]?.['err']).toBe('Error: connect ECONNREFUSED 10.0.3.4:5432');
  });
});
