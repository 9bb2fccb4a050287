import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisGate } from '../../src/limits/gate.js';
import type { GateLimits } from '../../src/limits/limits.js';
import { createGateStep } from '../../src/limits/step.js';
import { awayFromMinuteEnd, minuteNow } from '../helpers/clock.js';
import { TestContext } from '../helpers/context.js';
import { ALL_TRIGGERS, callContext, changedKeys, flushPrefix, gateStep, snapshot, type World, world } from '../helpers/gate-fixtures.js';

// The Redis step against real Redis: session binding, halts, every limit at its boundary, the 80%
// warning, cascade detection, dry runs and the state epoch.

const t = new TestContext();
let w: World;
let db: ReturnType<TestContext['pool']>;

beforeAll(async () => {
  await t.setup();
  w = await world(t);
  db = t.pool();
});
afterAll(() => t.teardown());

const HIGH: GateLimits = { sessionCalls: 100_000, pauseAtPercent: 0, cascade: { threshold: 0, windowCalls: 5 } };

async function sessionRow(id: string) {
  const { rows } = await db.query('SELECT state, trigger, halt_summary FROM sessions WHERE id = $1', [id]);
  return rows[0] as { state: string; trigger: string | null; halt_summary: Record<string, unknown> | null };
}

describe('session binding and halts', () => {
  it('allows a call in an open session and reports the limits used', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 200 } });
    const ctx = callContext(w, agent, sid);
    expect(await step.run(ctx)).toBeUndefined();
    expect(ctx.session).toMatchObject({ id: sid, state: 'active', read_only: false, servers: null });
    expect(ctx.limits['session_calls']).toEqual({ used: 1, max: 200 });
  });

  it('refuses a session id of another token (SESSION_UNKNOWN) and an id we never issued', async () => {
    const a = await w.token();
    const b = await w.token();
    const sid = await w.open(a.agent);
    const { step } = gateStep(w, { limits: HIGH });
    expect((await step.run(callContext(w, b.agent, sid)))?.code).toBe('SESSION_UNKNOWN');
    expect((await step.run(callContext(w, a.agent, '0190aaaa-0000-7000-8000-000000000000')))?.code).toBe('SESSION_UNKNOWN');
    expect((await step.run(callContext(w, a.agent, 's-042')))?.code).toBe('SESSION_UNKNOWN');
    // the owner is not affected
    expect(await step.run(callContext(w, a.agent, sid))).toBeUndefined();
  });

  it('a write in a read-only session is PERMISSION_DENIED and halts it (WRITE_IN_READ_SESSION), recorded in Postgres', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent, { read_only: true });
    const { step } = gateStep(w, { limits: HIGH });
    expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    const ctx2 = callContext(w, agent, sid, { capability: 'write', args: { path: 'a.md' } });
    const d = await step.run(ctx2);
    expect(d?.code).toBe('PERMISSION_DENIED');
    expect(d?.halt).toBe('WRITE_IN_READ_SESSION');
    expect(d?.extra?.['last_calls']).toHaveLength(2);
    expect(ctx2.session).toMatchObject({ id: sid, state: 'halted', trigger: 'WRITE_IN_READ_SESSION', read_only: true });
    const row = await sessionRow(sid);
    expect(row.state).toBe('halted');
    expect(row.trigger).toBe('WRITE_IN_READ_SESSION');
    const next = await step.run(callContext(w, agent, sid, { capability: 'read' }));
    expect(next?.code).toBe('SESSION_HALTED');
  });

  it('a delete call in a read-only session is refused and halts it like a write (WRITE_IN_READ_SESSION)', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent, { read_only: true });
    const { step } = gateStep(w, { limits: HIGH });
    const d = await step.run(callContext(w, agent, sid, { capability: 'delete', tool: 'delete_file' }));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'WRITE_IN_READ_SESSION' });
    expect((await sessionRow(sid)).trigger).toBe('WRITE_IN_READ_SESSION');
  });

  it('a server the session did not declare halts it (UNAUTHORIZED_SERVER)', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent, { servers: ['filesystem'] });
    const { step } = gateStep(w, { limits: HIGH });
    expect(await step.run(callContext(w, agent, sid, { server: 'filesystem' }))).toBeUndefined();
    const d = await step.run(callContext(w, agent, sid, { server: 'github', tool: 'get_issue' }));
    expect(d).toMatchObject({ code: 'PERMISSION_DENIED', halt: 'UNAUTHORIZED_SERVER' });
    expect((await sessionRow(sid)).state).toBe('halted');
  });

  it('a halted token stops its other sessions, and a new session of it is halted too', async () => {
    const { agent } = await w.token();
    const s1 = await w.open(agent, { read_only: true });
    const s2 = await w.open(agent);
    const { step } = gateStep(w, { limits: HIGH, haltTokenOn: ALL_TRIGGERS });
    const d = await step.run(callContext(w, agent, s1, { capability: 'write' }));
    expect(d?.halt).toBe('WRITE_IN_READ_SESSION');
    const other = await step.run(callContext(w, agent, s2));
    expect(other?.code).toBe('SESSION_HALTED');
    expect(other?.message).toContain(`/v1/keys/${agent.id}/resume`);
    // The session that fired it is halted and so is its token: resuming the session alone is not enough.
    const same = await step.run(callContext(w, agent, s1, { capability: 'read' }));
    expect(same?.code).toBe('SESSION_HALTED');
    expect(same?.message).toContain(`and so is this token; an operator resumes both with POST /v1/keys/${agent.id}/resume`);
    const opened = await w.app.ctx.sessions.open(agent, w.gateway, {});
    expect(opened.state).toBe('halted');
    expect(opened.trigger).toBe('WRITE_IN_READ_SESSION');
    expect((await step.run(callContext(w, agent, opened.session_id)))?.code).toBe('SESSION_HALTED');
    const { rows } = await db.query('SELECT trigger, session_id FROM token_halts WHERE token_id = $1 AND resumed_at IS NULL', [agent.id]);
    expect(rows).toEqual([{ trigger: 'WRITE_IN_READ_SESSION', session_id: s1 }]);
  });

  it('the script itself halts session and token in the same round trip (nothing slips in before Postgres)', async () => {
    const { agent } = await w.token();
    const s1 = await w.open(agent, { read_only: true });
    const s2 = await w.open(agent);
    const { gate } = gateStep(w, { limits: HIGH });
    const base = { tokenId: agent.id, server: 'filesystem', tool: 'write_file', resourceIds: ['file:///a'], arguments: {}, limits: HIGH, haltTokenOn: ['WRITE_IN_READ_SESSION' as const] };
    const o = await gate.check({ ...base, decisionId: 'd1', sessionId: s1, capability: 'write' });
    expect(o).toMatchObject({ allowed: false, reason: 'READ_ONLY', trigger: 'WRITE_IN_READ_SESSION', tokenHalted: true });
    // No Postgres record was written (gate.check alone), yet the token's other session is stopped.
    expect((await sessionRow(s1)).state).toBe('active');
    const next = await gate.check({ ...base, decisionId: 'd2', sessionId: s2, capability: 'read' });
    expect(next).toMatchObject({ allowed: false, reason: 'TOKEN_HALTED', heldTrigger: 'WRITE_IN_READ_SESSION' });
  });

  it('a token halt key of another type holds the token halted also when the call names no kill keys', async () => {
    // Production always passes kill keys (kill:all at least); the script's path without any is checked too.
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: HIGH, killKeys: [] });
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    const th = w.app.ctx.redis.key('th', agent.id);
    await w.app.ctx.redis.redis.hset(th, 'trigger', 'UNAUTHORIZED_SERVER');
    try {
      expect((await step.run(callContext(w, agent, sid)))?.code).toBe('SESSION_HALTED');
    } finally {
      await w.app.ctx.redis.redis.del(th);
    }
  });

  it('a break-glass kill key denies with KILL_SWITCH and its stored reason', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const key = w.app.ctx.redis.key('kill', 'server', 'filesystem');
    await w.app.ctx.redis.redis.set(key, JSON.stringify({ reason: 'incident 42: filesystem writes suspended' }));
    const { step } = gateStep(w, { limits: HIGH, killKeys: [w.app.ctx.redis.key('kill', 'all'), key] });
    const d = await step.run(callContext(w, agent, sid));
    expect(d?.code).toBe('KILL_SWITCH');
    expect(d?.message).toContain('incident 42: filesystem writes suspended');
    // What is stopped, in the product's words: never the Redis key (it names the installation's prefix).
    expect(d?.message).not.toContain(key);
    expect(d?.message).not.toContain('must lift');
    await w.app.ctx.redis.redis.del(key);
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    // a kill key of another type still kills (fail closed)
    await w.app.ctx.redis.redis.hset(key, 'reason', 'stored as a hash');
    expect((await step.run(callContext(w, agent, sid)))?.code).toBe('KILL_SWITCH');
    await w.app.ctx.redis.redis.del(key);
  });
});

describe('limits', () => {
  it('new limits or kill keys for the same session apply to the very next call (the encoded arguments are not kept stale)', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const state: { limits: GateLimits; killKeys: string[] } = { limits: HIGH, killKeys: [] };
    const { step } = gateStep(w, state);
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    const kill = w.app.ctx.redis.key('kill', 'session', sid);
    await w.app.ctx.redis.redis.set(kill, JSON.stringify({ reason: 'stop this one' }));
    state.killKeys = [kill];
    expect((await step.run(callContext(w, agent, sid)))?.code).toBe('KILL_SWITCH');
    state.killKeys = [];
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    await w.app.ctx.redis.redis.del(kill);
    // a policy reload lowers the session total to 4: the 4th counted call passes, the 5th halts
    state.limits = { ...HIGH, sessionCalls: 4 };
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    const d = await step.run(callContext(w, agent, sid));
    expect(d?.code).toBe('SESSION_HALTED');
    expect(d?.halt).toBe('SESSION_LIMIT');
  });

  it('the 200th call is allowed, the 201st is denied and halts the session (SESSION_LIMIT) with a summary', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 200 } });
    for (let i = 1; i <= 200; i++) {
      const ctx = callContext(w, agent, sid, { args: { path: `f${i}.md` } });
      const d = await step.run(ctx);
      if (d) throw new Error(`call ${i} denied: ${d.code} ${d.message}`);
      if (i === 200) expect(ctx.limits['session_calls']).toEqual({ used: 200, max: 200 });
    }
    const ctx = callContext(w, agent, sid, { args: { path: 'f201.md' } });
    const d = await step.run(ctx);
    expect(d).toMatchObject({ code: 'SESSION_HALTED', halt: 'SESSION_LIMIT' });
    expect(d?.message).toContain('200/200 calls in this session');
    expect(ctx.limits['session_calls']).toEqual({ used: 200, max: 200 });
    const row = await sessionRow(sid);
    expect(row.state).toBe('halted');
    expect(row.trigger).toBe('SESSION_LIMIT');
    expect(row.halt_summary).toMatchObject({ calls_so_far: { session_calls: { used: 200, max: 200 } } });
    const last = (row.halt_summary?.['last_calls'] ?? []) as Array<{ args: string; code: string }>;
    expect(last.map((c) => c.args)).toEqual(['{"path":"f201.md"}', '{"path":"f200.md"}', '{"path":"f199.md"}']);
    expect(last[0]?.code).toBe('SESSION_HALTED');
    const detail = await w.app.ctx.sessions.get(sid);
    expect(detail.last_calls).toHaveLength(3);
    expect(detail.state).toBe('halted');
  });

  it('per-server session totals: filesystem 3 writes then halt, reads counted apart', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, serverWrites: 3, serverReads: 5 } });
    for (let i = 0; i < 3; i++) expect(await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['file:///a'] }))).toBeUndefined();
    for (let i = 0; i < 5; i++) expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    const d = await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['file:///a'] }));
    expect(d).toMatchObject({ code: 'SESSION_HALTED', halt: 'SESSION_LIMIT', extra: { limit: 'server_writes' } });
  });

  it('per-server read total (seed 001: filesystem max_read_calls_per_session): the read past it halts (server_reads), writes are not counted in it', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, serverWrites: 10, serverReads: 3 } });
    for (let i = 0; i < 2; i++) expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    for (let i = 0; i < 4; i++) expect(await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['file:///a'] }))).toBeUndefined();
    const third = callContext(w, agent, sid, { capability: 'read' });
    expect(await step.run(third)).toBeUndefined();
    expect(third.limits['server_reads']).toEqual({ used: 3, max: 3 });
    const ctx = callContext(w, agent, sid, { capability: 'read' });
    const d = await step.run(ctx);
    expect(d).toMatchObject({ code: 'SESSION_HALTED', halt: 'SESSION_LIMIT', extra: { limit: 'server_reads' } });
    expect(d?.message).toContain('3/3 read calls to');
    expect((await sessionRow(sid)).trigger).toBe('SESSION_LIMIT');
  });

  it('a per-minute limit answers RATE_LIMITED with retry-after, does not halt, and resets in the next window', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const windows = { minuteMs: 1_500, dayMs: 86_400_000 };
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCallsPerMinute: 5 } }, { windows });
    await waitForWindowStart(windows.minuteMs);
    for (let i = 0; i < 5; i++) expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    const ctx = callContext(w, agent, sid);
    const d = await step.run(ctx);
    expect(d?.code).toBe('RATE_LIMITED');
    expect(d?.halt).toBeUndefined();
    // A denial still reports the session it was checked against.
    expect(ctx.session).toMatchObject({ id: sid, state: 'active', read_only: false });
    expect(d?.retryAfterS).toBeGreaterThanOrEqual(1);
    expect(d?.retryAfterS).toBeLessThanOrEqual(2);
    // the denied call consumed nothing: the session total still counts 5
    expect(ctx.limits['session_calls']).toEqual({ used: 5, max: 100_000 });
    expect((await sessionRow(sid)).state).toBe('active');
    await waitForWindowStart(windows.minuteMs);
    const again = callContext(w, agent, sid);
    expect(await step.run(again)).toBeUndefined();
    expect(again.limits['session_calls_per_minute']).toEqual({ used: 1, max: 5 });
  });

  it('RATE_LIMITED says how long until the window ends, not the window\'s whole length', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    // A window length that puts Redis's clock well inside a window, so the time left is clearly shorter.
    const [s, us] = await w.app.ctx.redis.redis.time();
    const now = Number(s) * 1000 + Math.floor(Number(us) / 1000);
    let minuteMs = 100_000;
    while (now % minuteMs < 30_000 || minuteMs - (now % minuteMs) < 30_000) minuteMs += 7_000;
    const left = minuteMs - (now % minuteMs);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCallsPerMinute: 1 } }, { windows: { minuteMs, dayMs: 86_400_000 } });
    expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    const d = await step.run(callContext(w, agent, sid));
    expect(d?.code).toBe('RATE_LIMITED');
    // At most what was left when the test began (less has passed since), and never the whole window.
    expect(d?.retryAfterS).toBeLessThanOrEqual(Math.ceil(left / 1000));
    expect(d?.retryAfterS).toBeGreaterThan(Math.ceil(left / 1000) - 20);
  });

  it('a new session per call does not escape the per-token per-minute and per-day limits', async () => {
    const { agent } = await w.token();
    const windows = { minuteMs: 60_000, dayMs: 86_400_000 };
    const perMinute = gateStep(w, { limits: { ...HIGH, tokenCallsPerMinute: 4 } }, { windows });
    await waitForWindowStart(windows.minuteMs, 5_000);
    for (let i = 0; i < 4; i++) expect(await perMinute.step.run(callContext(w, agent, await w.open(agent)))).toBeUndefined();
    const d = await perMinute.step.run(callContext(w, agent, await w.open(agent)));
    expect(d).toMatchObject({ code: 'RATE_LIMITED', extra: { limit: 'token_calls_per_minute' } });

    const other = await w.token();
    const perDay = gateStep(w, { limits: { ...HIGH, tokenCallsPerDay: 3 } });
    for (let i = 0; i < 3; i++) expect(await perDay.step.run(callContext(w, other.agent, await w.open(other.agent)))).toBeUndefined();
    const day = await perDay.step.run(callContext(w, other.agent, await w.open(other.agent)));
    expect(day).toMatchObject({ code: 'RATE_LIMITED', extra: { limit: 'token_calls_per_day' } });
    expect(day?.retryAfterS).toBeGreaterThan(0);
    expect(day?.retryAfterS).toBeLessThanOrEqual(86_400);
  });

  it('per server per minute across all of the token\'s sessions', async () => {
    const { agent } = await w.token();
    const windows = { minuteMs: 60_000, dayMs: 86_400_000 };
    const { step } = gateStep(w, { limits: { ...HIGH, tokenServerCallsPerMinute: 2 } }, { windows });
    await waitForWindowStart(windows.minuteMs, 5_000);
    for (let i = 0; i < 2; i++) expect(await step.run(callContext(w, agent, await w.open(agent), { server: 'github', tool: 'get_issue' }))).toBeUndefined();
    expect(await step.run(callContext(w, agent, await w.open(agent), { server: 'github', tool: 'get_issue' }))).toMatchObject({ code: 'RATE_LIMITED' });
    // another server is counted apart
    expect(await step.run(callContext(w, agent, await w.open(agent), { server: 'filesystem' }))).toBeUndefined();
  });

  it('80%: calls at or past the threshold carry a warning; the alert is raised exactly once per window', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const alerts: Array<{ limit: string; used: number; message: string }> = [];
    const windows = { minuteMs: 2_000, dayMs: 86_400_000 };
    const state = { limits: { ...HIGH, sessionCalls: 200, sessionCallsPerMinute: 10, pauseAtPercent: 80 }, alerts };
    const { step } = gateStep(w, state, { windows });
    await waitForWindowStart(windows.minuteMs);
    const warningsAt: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const ctx = callContext(w, agent, sid);
      expect(await step.run(ctx)).toBeUndefined();
      if (ctx.warnings.length) warningsAt.push(i);
      if (i === 9) expect(ctx.warnings).toEqual(['9/10 calls per minute in this session, 90%']);
    }
    expect(warningsAt).toEqual([8, 9, 10]);
    expect(alerts.filter((a) => a.limit === 'session_calls_per_minute').map((a) => a.used)).toEqual([8]);
    // next window: once again
    await waitForWindowStart(windows.minuteMs);
    for (let i = 1; i <= 9; i++) expect(await step.run(callContext(w, agent, sid))).toBeUndefined();
    expect(alerts.filter((a) => a.limit === 'session_calls_per_minute').map((a) => a.used)).toEqual([8, 8]);
  });

  it('80% of the session total: "161/200 calls in this session, 81%", alert once for the session', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const alerts: Array<{ limit: string; used: number; message: string }> = [];
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 200, pauseAtPercent: 80 }, alerts });
    let at161: string[] = [];
    for (let i = 1; i <= 170; i++) {
      const ctx = callContext(w, agent, sid);
      expect(await step.run(ctx)).toBeUndefined();
      if (i === 159) expect(ctx.warnings).toEqual([]);
      if (i === 161) at161 = ctx.warnings;
    }
    expect(at161).toEqual(['161/200 calls in this session, 81%']);
    expect(alerts.map((a) => [a.limit, a.used])).toEqual([['session_calls', 160]]);
  });
});

describe('cascade writes', () => {
  const cascadeLimits: GateLimits = { ...HIGH, cascade: { threshold: 3, windowCalls: 5 } };
  const write = (path: string) => ({ capability: 'write' as const, resources: [`file:///repo/${path}`], args: { path } });

  it('3 writes to 3 different files halt with CASCADE_WRITE', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: cascadeLimits, haltTokenOn: ['CASCADE_WRITE'] });
    expect(await step.run(callContext(w, agent, sid, write('a.md')))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, write('b.md')))).toBeUndefined();
    const d = await step.run(callContext(w, agent, sid, write('c.md')));
    expect(d).toMatchObject({ code: 'CASCADE_WRITE', halt: 'CASCADE_WRITE' });
    expect((await sessionRow(sid)).trigger).toBe('CASCADE_WRITE');
    const detail = await w.app.ctx.sessions.get(sid);
    expect(detail.last_calls.map((c) => [c.args, c.code])).toEqual([
      ['{"path":"c.md"}', 'CASCADE_WRITE'],
      ['{"path":"b.md"}', 'OK'],
      ['{"path":"a.md"}', 'OK'],
    ]);
  });

  it('write-read-write-read-write across 3 files halts too', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: cascadeLimits });
    expect(await step.run(callContext(w, agent, sid, write('a.md')))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, write('b.md')))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, write('c.md')))).toMatchObject({ code: 'CASCADE_WRITE' });
  });

  it('3 (and 10) writes to the same file do not', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: cascadeLimits });
    for (let i = 0; i < 10; i++) expect(await step.run(callContext(w, agent, sid, write('same.md')))).toBeUndefined();
  });

  it('writes spread out by enough reads leave the window and do not halt', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: cascadeLimits });
    expect(await step.run(callContext(w, agent, sid, write('a.md')))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, write('b.md')))).toBeUndefined();
    for (let i = 0; i < 3; i++) expect(await step.run(callContext(w, agent, sid, { capability: 'read' }))).toBeUndefined();
    // window of 5 = this call + the 4 before it: a.md has left it
    expect(await step.run(callContext(w, agent, sid, write('c.md')))).toBeUndefined();
  });

  it('a new session per call does not reset the window (it is the token\'s)', async () => {
    const { agent } = await w.token();
    const { step } = gateStep(w, { limits: cascadeLimits, haltTokenOn: ['CASCADE_WRITE'] });
    expect(await step.run(callContext(w, agent, await w.open(agent), write('a.md')))).toBeUndefined();
    expect(await step.run(callContext(w, agent, await w.open(agent), write('b.md')))).toBeUndefined();
    const s3 = await w.open(agent);
    expect(await step.run(callContext(w, agent, s3, write('c.md')))).toMatchObject({ code: 'CASCADE_WRITE', halt: 'CASCADE_WRITE' });
    const opened = await w.app.ctx.sessions.open(agent, w.gateway, {});
    expect(opened.state).toBe('halted');
  });

  it('another token\'s writes do not count, and the threshold is configurable', async () => {
    const a = await w.token();
    const b = await w.token();
    const { step } = gateStep(w, { limits: { ...HIGH, cascade: { threshold: 4, windowCalls: 6 } } });
    const sa = await w.open(a.agent);
    const sb = await w.open(b.agent);
    expect(await step.run(callContext(w, a.agent, sa, write('a1')))).toBeUndefined();
    expect(await step.run(callContext(w, b.agent, sb, write('b1')))).toBeUndefined();
    expect(await step.run(callContext(w, a.agent, sa, write('a2')))).toBeUndefined();
    expect(await step.run(callContext(w, a.agent, sa, write('a3')))).toBeUndefined();
    expect(await step.run(callContext(w, a.agent, sa, write('a4')))).toMatchObject({ code: 'CASCADE_WRITE' });
  });

  it('after an operator resumes, the chain starts again (window cleared)', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: cascadeLimits });
    for (const f of ['a', 'b']) expect(await step.run(callContext(w, agent, sid, write(f)))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, write('c')))).toMatchObject({ code: 'CASCADE_WRITE' });
    await w.app.ctx.sessions.resumeSession(sid, w.ownerPrincipal, 'chain was intended');
    expect(await step.run(callContext(w, agent, sid, write('d')))).toBeUndefined();
  });
});

describe('consumes nothing when denied; explain changes nothing', () => {
  it('a call denied by one limit consumes no quota of the others', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 50, serverCalls: 2, tokenCallsPerDay: 1000 } });
    expect(await step.run(callContext(w, agent, sid, { server: 'shell', tool: 'run' }))).toBeUndefined();
    expect(await step.run(callContext(w, agent, sid, { server: 'shell', tool: 'run' }))).toBeUndefined();
    const ctx = callContext(w, agent, sid, { server: 'shell', tool: 'run' });
    expect(await step.run(ctx)).toMatchObject({ halt: 'SESSION_LIMIT', extra: { limit: 'server_calls' } });
    expect(ctx.limits['session_calls']).toEqual({ used: 2, max: 50 });
    expect(ctx.limits['token_calls_per_day']).toEqual({ used: 2, max: 1000 });
    // What Redis holds, not only what the denial reports: the token's windowed counters were given back
    // too, so the token's next call (in another session) is its third, not its fourth.
    const next = callContext(w, agent, await w.open(agent), { server: 'shell', tool: 'run' });
    expect(await step.run(next)).toBeUndefined();
    expect(next.limits['token_calls_per_day']).toEqual({ used: 3, max: 1000 });
  });

  it('dryRun (explain) reports the verdict without changing any key', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step } = gateStep(w, { limits: { ...HIGH, sessionCalls: 2, pauseAtPercent: 50, cascade: { threshold: 2, windowCalls: 5 } } });
    expect(await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['x'] }))).toBeUndefined();
    const before = await snapshot(w.app.ctx.redis);
    const ok = callContext(w, agent, sid, { dryRun: true });
    expect(await step.run(ok)).toBeUndefined();
    expect(ok.limits['session_calls']).toEqual({ used: 2, max: 2 });
    expect(ok.warnings).toEqual(['2/2 calls in this session, 100%']);
    const cascade = callContext(w, agent, sid, { capability: 'write', resources: ['y'], dryRun: true });
    expect(await step.run(cascade)).toMatchObject({ code: 'CASCADE_WRITE', halt: 'CASCADE_WRITE' });
    const after = await snapshot(w.app.ctx.redis);
    expect(after.size).toBeGreaterThan(0);
    expect(changedKeys(before, after)).toEqual([]);
    expect((await sessionRow(sid)).state).toBe('active');
  });
});

describe('undoing an allow (the call was denied after the gate)', () => {
  it('gives back everything the gate spent: only the session list differs, with the call denied; a second undo changes nothing', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const limits: GateLimits = {
      sessionCalls: 1000,
      sessionCallsPerMinute: 1000,
      serverWrites: 1000,
      serverCallsPerMinute: 1000,
      tokenServerCallsPerMinute: 1000,
      serverCallsPerMinuteAllTokens: 100_000,
      tokenCallsPerMinute: 1000,
      tokenCallsPerDay: 100_000,
      pauseAtPercent: 0,
      cascade: { threshold: 3, windowCalls: 5 },
    };
    const { step } = gateStep(w, { limits });
    // The per-minute and per-day counters are fixed windows of the clock: start clear of a minute's end, and
    // should a loaded run still straddle one, its later calls are counted in a new window.
    await awayFromMinuteEnd();
    const minuteAtFirst = minuteNow();
    const usedAll = (c: { limits: Record<string, { used: number }> }, n: number) =>
      Object.entries(c.limits).every(([name, l]) => l.used === n || (minuteNow() !== minuteAtFirst && /_per_(minute|day)/.test(name) && l.used < n));
    expect(await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['file:a'] }))).toBeUndefined();
    const before = await snapshot(w.app.ctx.redis);

    const ctx = callContext(w, agent, sid, { capability: 'write', resources: ['file:b', 'file:c'] });
    expect(await step.run(ctx)).toBeUndefined();
    expect(usedAll(ctx, 2), JSON.stringify(ctx.limits)).toBe(true);
    expect(await ctx.undoGate?.('DEPENDENCY_UNAVAILABLE')).toBe(true);
    const after = await snapshot(w.app.ctx.redis);
    expect(changedKeys(before, after)).toEqual([w.app.ctx.redis.key('lc', sid)]);
    const listed = await w.app.ctx.sessions.lastCalls(sid, 3);
    expect(listed.map((c) => [c.id, c.decision, c.code])).toEqual([
      [ctx.decisionId, 'deny', 'DEPENDENCY_UNAVAILABLE'],
      [expect.any(String), 'allow', 'OK'],
    ]);
    expect(await w.app.ctx.gate.decisionMeta(ctx.decisionId)).toBeUndefined();

    expect(await ctx.undoGate?.('DEPENDENCY_UNAVAILABLE')).toBe(false);
    expect(changedKeys(after, await snapshot(w.app.ctx.redis))).toEqual([]);
    const next = callContext(w, agent, sid, { capability: 'write', resources: ['file:d'] });
    expect(await step.run(next)).toBeUndefined();
    expect(usedAll(next, 2), JSON.stringify(next.limits)).toBe(true);
    // Only the undone call left the token's cascade window: two more writes to other files trip it.
    expect(await w.app.ctx.redis.redis.lrange(w.app.ctx.redis.key('tc', agent.id), 0, -1)).toEqual(['w\x1ffile:d', 'w\x1ffile:a']);
    expect(await step.run(callContext(w, agent, sid, { capability: 'write', resources: ['file:e'] }))).toMatchObject({ code: 'CASCADE_WRITE' });
  });

  it('a dry run (explain) and a denial leave nothing to undo', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent, { read_only: true });
    const { step } = gateStep(w, { limits: HIGH });
    const dry = callContext(w, agent, sid, { dryRun: true });
    expect(await step.run(dry)).toBeUndefined();
    expect(dry.undoGate).toBeUndefined();
    const denied = callContext(w, agent, sid, { capability: 'write' });
    expect((await step.run(denied))?.code).toBe('PERMISSION_DENIED');
    expect(denied.undoGate).toBeUndefined();
  });
});

describe('call records', () => {
  it('stores decision metadata for the RESULT and attaches the outcome to the last calls; secrets are redacted', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step, gate } = gateStep(w, { limits: HIGH });
    const ctx = callContext(w, agent, sid, { capability: 'write', args: { path: 'a.md', api_key: 'sk-live-123', body: 'x'.repeat(2000) } });
    expect(await step.run(ctx)).toBeUndefined();
    expect(await gate.decisionMeta(ctx.decisionId)).toMatchObject({ tokenId: agent.id, sessionId: sid, server: 'filesystem', tool: 'write_file', capability: 'write' });
    expect(await gate.decisionMeta('0190aaaa-0000-7000-8000-000000000000')).toBeUndefined();
    expect(await gate.recordOutcome(ctx.decisionId, { status: 'success', duration_ms: 12, result_bytes: 4821 })).toBe(true);
    const [last] = await w.app.ctx.sessions.lastCalls(sid, 3);
    expect(last?.outcome).toEqual({ status: 'success', duration_ms: 12, result_bytes: 4821 });
    expect(last?.args).toContain('"api_key":"[REDACTED]"');
    expect(last?.args).not.toContain('sk-live-123');
    expect(last?.args.length).toBeLessThanOrEqual(500);
  });

  it('keeps the last-calls list and the token\'s cascade window bounded: trimmed to what is kept once they hold twice that, newest first', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    // Cascade detection on (never reached), so the token's window is kept: at least 20 entries.
    const { step, gate } = gateStep(w, { limits: { ...HIGH, cascade: { threshold: 1000, windowCalls: 5 } } });
    const redis = w.app.ctx.redis;
    const ids: string[] = [];
    const lengths: number[] = [];
    const windowLengths: number[] = [];
    for (let i = 0; i < 45; i++) {
      const ctx = callContext(w, agent, sid, { capability: 'write', resources: [`file:///w/${i}`] });
      expect(await step.run(ctx)).toBeUndefined();
      ids.push(ctx.decisionId);
      lengths.push(await redis.redis.llen(redis.key('lc', sid)));
      windowLengths.push(await redis.redis.llen(redis.key('tc', agent.id)));
    }
    // 10 kept: the list grows to 20, is cut back to 10 on the 21st call, and so on.
    expect(Math.max(...lengths)).toBe(20);
    expect(lengths.slice(19, 22)).toEqual([20, 10, 11]);
    expect(Math.max(...windowLengths)).toBe(40);
    expect(windowLengths.slice(39, 42)).toEqual([40, 20, 21]);
    const last = await w.app.ctx.sessions.lastCalls(sid, 10);
    expect(last.map((c) => c.id)).toEqual(ids.slice(-10).reverse());
    // A RESULT finds the entry of any of the 10 newest calls.
    expect(await gate.recordOutcome(ids[35]!, { status: 'success', duration_ms: 1, result_bytes: 2 })).toBe(true);
    expect((await w.app.ctx.sessions.lastCalls(sid, 10))[9]?.outcome).toEqual({ status: 'success', duration_ms: 1, result_bytes: 2 });
  });

  it('pushCall records a denial of an earlier step only on the token\'s own session', async () => {
    const a = await w.token();
    const b = await w.token();
    const sid = await w.open(a.agent);
    const entry = { id: 'd-1', server: 'memory', tool: 'delete_entities', args: '{}', decision: 'deny' as const, code: 'PERMISSION_DENIED' };
    expect(await w.app.ctx.sessions.pushCall(b.agent.id, sid, entry)).toBe(false);
    expect(await w.app.ctx.sessions.pushCall(a.agent.id, sid, entry)).toBe(true);
    expect((await w.app.ctx.sessions.lastCalls(sid)).map((c) => c.code)).toEqual(['PERMISSION_DENIED']);
  });
});

describe('key hygiene', () => {
  it('after all of the above, the only keys without a TTL are the epoch, token halts, halted sessions and per-token session sets', async () => {
    const redis = w.app.ctx.redis;
    const persistent: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await redis.redis.scan(cursor, 'MATCH', `${redis.prefix}*`, 'COUNT', 1000);
      cursor = next;
      for (const k of keys) if ((await redis.redis.pttl(k)) === -1) persistent.push(k.slice(redis.prefix.length));
    } while (cursor !== '0');
    const unexpected: string[] = [];
    for (const k of persistent) {
      // so:<token> is pruned whenever the token opens a session; one small set per token.
      if (k === 'epoch' || k.startsWith('th:') || k.startsWith('so:')) continue;
      const m = /^(s|lc):(.+)$/.exec(k);
      if (m && (await redis.redis.hget(redis.key('s', m[2]!), 'st')) === 'halted') continue;
      unexpected.push(k);
    }
    expect(unexpected).toEqual([]);
    expect(persistent.length).toBeGreaterThan(0);
  });
});

describe('state epoch', () => {
  /** A gate step of its own whose gate counts how often it asks for the epoch's reload. */
  function epochWatchingStep(over: { stateVerified?: () => boolean } = {}) {
    let asked = 0;
    const gate = new RedisGate(w.app.ctx.redis, {
      sessionIdleMs: 3_600_000,
      decisionTtlMs: 3_600_000,
      ...over,
      onMissingEpoch: () => {
        asked++;
      },
    });
    const step = createGateStep({ gate, sessions: w.app.ctx.sessions, limitsFor: () => HIGH, haltTokenOn: () => [] });
    return { step, asked: () => asked };
  }

  it('a missing epoch asks for the reload at once (not only at the next once-a-second check)', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step, asked } = epochWatchingStep();
    await w.app.ctx.redis.redis.del(w.app.ctx.redis.key('epoch'));
    try {
      const d = await step.run(callContext(w, agent, sid));
      expect(d?.code).toBe('DEPENDENCY_UNAVAILABLE');
      expect(d?.message).toContain('Redis lost its state');
      expect(asked()).toBe(1);
    } finally {
      expect(await w.app.ctx.sessions.ensureState()).not.toBe('unavailable');
    }
  });

  it('a replica that has not checked Redis since its connection (re)opened denies without counting (UNVERIFIED) and asks for the check', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    const { step: unverified, asked } = epochWatchingStep({ stateVerified: () => false });
    const d = await unverified.run(callContext(w, agent, sid));
    expect(d?.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(d?.message).toContain('just (re)opened');
    expect(asked()).toBe(1);
    // Nothing was counted: the next checked call is the session's first.
    const next = callContext(w, agent, sid);
    expect(await gateStep(w, { limits: HIGH }).step.run(next)).toBeUndefined();
    expect(next.limits['session_calls']).toEqual({ used: 1, max: 100_000 });
  });

  it('losing this installation\'s keys denies with DEPENDENCY_UNAVAILABLE; after the reload halts are back, never lifted', async () => {
    const { agent } = await w.token();
    const halted = await w.open(agent, { read_only: true });
    const active = await w.open(agent);
    const other = await w.token();
    const otherSession = await w.open(other.agent);
    const { step } = gateStep(w, { limits: HIGH, haltTokenOn: ['WRITE_IN_READ_SESSION'] });
    expect((await step.run(callContext(w, agent, halted, { capability: 'write' })))?.halt).toBe('WRITE_IN_READ_SESSION');

    // The once-a-second epoch check would reload the state by itself; on a slow machine it can do so
    // between the flush and the next call. Stopped here, the reload happens where the test asks for it.
    await w.app.ctx.sessions.epoch.stop();
    expect(await flushPrefix(w.app.ctx.redis)).toBeGreaterThan(0);
    const d = await step.run(callContext(w, other.agent, otherSession));
    expect(d?.code).toBe('DEPENDENCY_UNAVAILABLE');
    expect(d?.message).toContain('reloaded from Postgres');
    // opening sessions is refused too
    await expect(w.app.ctx.sessions.open(other.agent, w.gateway, {})).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });

    expect(['reloaded', 'present']).toContain(await w.app.ctx.sessions.ensureState());
    expect((await step.run(callContext(w, agent, halted)))?.code).toBe('SESSION_HALTED');
    expect((await step.run(callContext(w, agent, active)))?.code).toBe('SESSION_HALTED');
    expect((await w.app.ctx.sessions.open(agent, w.gateway, {})).state).toBe('halted');
    // an active session of another token survives the reload
    expect(await step.run(callContext(w, other.agent, otherSession))).toBeUndefined();
    w.app.ctx.sessions.epoch.start();
  });
});

/** Waits until Redis time is just past the start of a window of `ms` (so a burst fits in one window). */
async function waitForWindowStart(ms: number, maxWaitMs = ms + 500): Promise<void> {
  const [s, us] = await w.app.ctx.redis.redis.time();
  const now = Number(s) * 1000 + Math.floor(Number(us) / 1000);
  const into = now % ms;
  // Long windows: only wait if the burst could straddle the boundary.
  if (ms - into > Math.min(ms / 2, 3_000) && ms > maxWaitMs) return;
  await new Promise((r) => setTimeout(r, ms - into + 20));
}
