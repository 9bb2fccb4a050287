import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { freePort, restoreFlag, testAdmin, until } from '../helpers/unleash.js';

// Decisions through HTTP where a shared service is touched: a real FLUSHALL of Redis and a flag turned
// off in the run's Unleash. Serial: other files must not see either.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const unleash = inject('unleash');
const admin = testAdmin(unleash);
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterEach(async () => {
  await restoreFlag(unleash, 'mcp.filesystem.write');
  await restoreFlag(unleash, 'mcp.database.write');
});
afterAll(() => t.teardown());

async function explain(tokenId: string, call: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/decisions/explain', headers: { authorization: `Bearer ${gw.owner}` }, payload: { token_id: tokenId, ...call } });
  return res.json() as { code: string };
}

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });
const write = (path: string) => ({ server: 'filesystem', tool: 'write_file', arguments: { path, content: 'x' } });

describe('Redis FLUSHALL', () => {
  it('denies with DEPENDENCY_UNAVAILABLE until state is reloaded, then the halt is back in force, never lifted', async () => {
    const tok = await gw.token('ro');
    const s = await gw.session(tok.raw);
    const halted = await gw.decide(tok.raw, { ...write('a.md'), session_id: s.session_id });
    expect(halted.session).toMatchObject({ state: 'halted' });
    const healthy = await gw.token('rw');
    const hs = await gw.session(healthy.raw);
    expect((await gw.decide(healthy.raw, { ...read('a.md'), session_id: hs.session_id })).code).toBe('OK');

    // The once-a-second epoch check is paused, so it cannot reload between the FLUSHALL and the first
    // call (it did once on a slow machine); the reload then comes from that call's own NO_EPOCH.
    await app.ctx.sessions.epoch.stop();
    const redis = new Redis(TEST_REDIS_URL);
    await redis.flushall();
    redis.disconnect();

    const codes: string[] = [];
    codes.push((await gw.decide(healthy.raw, { ...read('a.md'), session_id: hs.session_id })).code);
    expect(codes[0]).toBe('DEPENDENCY_UNAVAILABLE');
    // The reload runs in the background; decisions deny until it is done.
    await until(async () => (await gw.decide(healthy.raw, { ...read('a.md'), session_id: hs.session_id })).code === 'OK', 10_000, 'reload after FLUSHALL');
    app.ctx.sessions.epoch.start();
    expect((await gw.decide(tok.raw, { ...read('a.md'), session_id: s.session_id })).code).toBe('SESSION_HALTED');
    const s2 = await gw.session(tok.raw);
    expect(s2.state).toBe('halted');
  });
});

describe('Unleash flags through the decision API', () => {
  it('mcp.filesystem.write off → writes deny with KILL_SWITCH naming the flag, reads stay allowed', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, { ...write('k.md'), session_id: s.session_id })).code).toBe('OK');
    await admin.setEnabled('mcp.filesystem.write', unleash.environment, false);
    // Poll with explain (no side effects): repeated real writes would hit the session's write limit.
    await until(async () => (await explain(tok.id, write('k.md'))).code === 'KILL_SWITCH', 5_000, 'flag off → deny');
    const d = await gw.decide(tok.raw, { ...write('k.md'), session_id: s.session_id });
    expect(d.message).toContain('mcp.filesystem.write');
    expect((await gw.decide(tok.raw, { ...read('k.md'), session_id: s.session_id })).code).toBe('OK');
  });

  it('mcp.database.write off → postgres writes deny with KILL_SWITCH, postgres reads do not', async () => {
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    const writeCall = { server: 'postgres', tool: 'execute', arguments: { sql: 'update t set a = 1' }, session_id: s.session_id };
    const readCall = { server: 'postgres', tool: 'query', arguments: { sql: 'select 1' }, session_id: s.session_id };
    expect((await gw.decide(tok.raw, writeCall)).code).toBe('OK');
    await admin.setEnabled('mcp.database.write', unleash.environment, false);
    await until(async () => (await explain(tok.id, { server: 'postgres', tool: 'execute' })).code === 'KILL_SWITCH', 5_000, 'database write killed');
    expect((await gw.decide(tok.raw, writeCall)).message).toContain('mcp.database.write');
    expect((await gw.decide(tok.raw, readCall)).code).toBe('OK');
  });
});

describe('Unleash unreachable at a cold start', () => {
  it('with no backup every decision is denied with DEPENDENCY_UNAVAILABLE (a decision, not an error page)', async () => {
    const deadPort = await freePort();
    const cold = new TestContext();
    await cold.setup();
    try {
      const coldApp = await cold.app({ policyFile: POLICY, unleashUrl: `http://127.0.0.1:${deadPort}/api`, unleashStartWaitMs: 500 });
      const d = await new GatewayDriver(cold, coldApp).init();
      const tok = await d.token('rw');
      const s = await d.session(tok.raw);
      const answer = await d.decide(tok.raw, { ...read('a.md'), session_id: s.session_id });
      expect(answer).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
      const ready = await coldApp.inject({ url: '/readyz' });
      expect(ready.statusCode).toBe(503);
      expect(ready.json().checks.flags).not.toBe('ok');
    } finally {
      await cold.teardown();
    }
  });
});
