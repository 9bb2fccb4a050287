import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awayFromMinuteEnd, minuteNow } from '../helpers/clock.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A call the Redis gate let through and counted, denied after all (its INTENT could not be recorded; its
// approval was spent elsewhere meanwhile): it never ran, so it must not stay on the record as an allow.
// The gate gives back its counters and its cascade-window entry, drops its metadata (no RESULT can be
// posted for it) and lists it on the session as denied, with the code the gateway was told.

const POLICY = `
version: 1
servers:
  filesystem:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-filesystem", "/tmp/ks-test"] }
    map: filesystem
    approval: [move_file]
roles:
  code_agent:
    allowed_servers: [filesystem]
rate_limits:
  global: { max_calls_per_session: 1000, max_calls_per_minute: 1000 }
  per_token: { max_calls_per_minute: 1000, max_calls_per_day: 100000, max_open_sessions: 50, max_new_sessions_per_hour: 500 }
cascade: { threshold: 3, window_calls: 5 }
`;

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
/** A second replica on the same Postgres and Redis whose audit trail takes nothing. */
let broken: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  mkdirSync(t.dataDir, { recursive: true });
  const policyFile = join(t.dataDir, 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  app = await t.app({ policyFile });
  gw = await new GatewayDriver(t, app).init();
  const brokenApp = await t.app({ policyFile });
  await brokenApp.ctx.audit.writer.close();
  broken = new GatewayDriver(t, brokenApp);
  broken.owner = gw.owner;
  broken.gatewayKey = gw.gatewayKey;
});
afterAll(() => t.teardown());

const write = (path: string, session_id: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' }, session_id });
const lastCalls = async (sid: string) =>
  (await app.inject({ url: `/v1/sessions/${sid}`, headers: bearer(gw.owner) })).json().last_calls as Array<{ id: string; decision: string; code: string; tool: string }>;

describe('a call denied after the gate allowed it', () => {
  it('(its INTENT could not be recorded) is listed as denied, uses no quota, counts for no cascade and takes no RESULT', async () => {
    const tok = await gw.token('rw');
    const { session_id: sid } = await gw.session(tok.raw);

    // Per-minute and per-day counters are fixed windows of the clock: start clear of a minute's end, and
    // should a loaded run still straddle one, its next call is counted in a new window.
    await awayFromMinuteEnd();
    const minuteAtFirst = minuteNow();
    const first = await gw.decide(tok.raw, write('src/a.ts', sid));
    expect(first).toMatchObject({ decision: 'allow', code: 'OK' });
    const denied = await broken.decide(tok.raw, write('src/b.ts', sid));
    expect(denied).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    // Its answer shows the counts as they are once it was given back.
    // (A windowed count may have rolled over between the two calls: then the denied call's window holds none.)
    for (const name of Object.keys(first.limits)) {
      const windowed = /_per_(minute|day)/.test(name);
      if (windowed) expect([first.limits[name].used, 0], name).toContain(denied.limits[name].used);
      else expect(denied.limits[name].used, name).toBe(first.limits[name].used);
    }

    // Three writes to three files within five calls would trip the cascade trigger; the denied one did not run.
    const next = await gw.decide(tok.raw, write('src/c.ts', sid));
    expect(next).toMatchObject({ decision: 'allow', code: 'OK' });
    const counters = Object.keys(first.limits);
    expect(counters.length).toBeGreaterThan(0);
    const rolledOver = minuteNow() !== minuteAtFirst;
    for (const name of counters) {
      if (rolledOver && /_per_(minute|day)/.test(name)) expect([first.limits[name].used + 1, 1], name).toContain(next.limits[name].used);
      else expect(next.limits[name].used, name).toBe(first.limits[name].used + 1);
    }

    const listed = await lastCalls(sid);
    expect(listed.map((c) => [c.id, c.decision, c.code])).toEqual([
      [next.decision_id, 'allow', 'OK'],
      [denied.decision_id, 'deny', 'DEPENDENCY_UNAVAILABLE'],
      [first.decision_id, 'allow', 'OK'],
    ]);
    const result = await gw.result(tok.raw, denied.decision_id, { status: 'success', duration_ms: 3, result_bytes: 10 });
    expect(result.statusCode).toBe(404);
    expect((await gw.result(tok.raw, next.decision_id, { status: 'success', duration_ms: 3, result_bytes: 10 })).statusCode).toBe(200);
  });

  it('(its approval was spent elsewhere meanwhile: APPROVAL_USED after the gate) gives back what the gate counted', async () => {
    const tok = await gw.token('rw');
    const { session_id: sid } = await gw.session(tok.raw);
    const move = { server: 'filesystem', tool: 'move_file', arguments: { source: 'a.md', destination: 'b.md' }, session_id: sid };
    const asked = await gw.decide(tok.raw, move);
    expect(asked.code).toBe('APPROVAL_REQUIRED');
    const approved = await app.inject({ method: 'POST', url: `/v1/approvals/${asked.approval_id}/approve`, headers: bearer(gw.owner), payload: { reason: 'paths checked' } });
    expect(approved.statusCode).toBe(200);
    const before = await gw.decide(tok.raw, write('src/a.ts', sid));
    // Another replica spent the approval and its word has not reached Redis yet: Redis still says approved,
    // so the call passes the approval check and the gate, and only spending the approval in Postgres fails.
    const pool = t.pool();
    await pool.query(`UPDATE approvals SET state = 'used', used_at = now(), used_decision_id = $2 WHERE id = $1`, [asked.approval_id, '00000000-0000-7000-8000-000000000001']);
    const denied = await gw.decide(tok.raw, move);
    expect(denied).toMatchObject({ decision: 'deny', code: 'APPROVAL_USED' });
    expect(denied.message).toContain('already allowed one call');
    for (const name of Object.keys(before.limits)) expect(denied.limits[name].used, name).toBe(before.limits[name].used);

    // With the move counted, a third write (to a third file) would trip the cascade trigger.
    const after = await gw.decide(tok.raw, write('src/c.ts', sid));
    expect(after).toMatchObject({ decision: 'allow', code: 'OK' });
    for (const name of Object.keys(before.limits)) expect(after.limits[name].used, name).toBe(before.limits[name].used + 1);
    const listed = await lastCalls(sid);
    expect(listed.find((c) => c.id === denied.decision_id)).toMatchObject({ decision: 'deny', code: 'APPROVAL_USED', tool: 'move_file' });
    expect((await gw.result(tok.raw, denied.decision_id, { status: 'success', duration_ms: 3, result_bytes: 10 })).statusCode).toBe(404);
  });
});
