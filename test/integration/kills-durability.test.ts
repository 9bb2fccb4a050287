import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withTransaction } from '../../src/db/pool.js';
import { killServiceFor } from '../../src/kills/plugin.js';
import { killStore } from '../../src/kills/store.js';
import { createRedis, waitForRedis } from '../../src/redis/client.js';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { flushPrefix } from '../helpers/gate-fixtures.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A kill outlives the control plane and Redis: restart the control plane (close, rebuild), delete every
// Redis key of this installation (its "flush": the state epoch goes with them), start with Unleash down.
// Only this file's own Redis prefix is touched, so it runs beside the others.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const DOWN = 'http://127.0.0.1:9/api';
const t = new TestContext();

/** A control-plane instance, once its first state-epoch reload is done (buildApp returns a moment before). */
async function replica(overrides: Parameters<TestContext['app']>[0]): Promise<FastifyInstance> {
  const app = await t.app(overrides);
  await app.ctx.sessions.ensureState();
  return app;
}

beforeAll(() => t.setup());
afterAll(async () => {
  for (const l of t.logs.lines) if (l.includes('unhandled error')) console.error(l.slice(0, 2000));
  await t.teardown();
});

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });

function driverFor(app: FastifyInstance, from: GatewayDriver): GatewayDriver {
  const d = new GatewayDriver(t, app);
  d.owner = from.owner;
  d.gatewayKey = from.gatewayKey;
  return d;
}

/** Decides until the answer is not DEPENDENCY_UNAVAILABLE (the epoch reload after a flush), at most 5 s. */
async function decideAfterReload(gw: GatewayDriver, raw: string, body: Record<string, unknown>) {
  const deadline = Date.now() + 5_000;
  const seen: string[] = [];
  for (;;) {
    const d = await gw.decide(raw, body);
    seen.push(d.code);
    if (d.code !== 'DEPENDENCY_UNAVAILABLE' || Date.now() > deadline) return { d, seen };
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('kills are durable', () => {
  it('survive a control-plane restart and a Redis flush (with their remaining expiry); a lift survives them too', async () => {
    const first = await replica({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, first).init();
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const forever = (await first.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'server', server: 'filesystem', reason: 'INC-3 survives restarts' } })).json().kill;
    const expiring = (await first.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'server', server: 'memory', reason: 'INC-3 for an hour', expires_in: 3600 } })).json().kill;
    const lifted = (await first.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'server', server: 'github', reason: 'INC-3 lifted before the restart' } })).json().kill;
    expect((await first.inject({ method: 'DELETE', url: `/v1/kills/${lifted.id}`, headers: bearer(gw.owner), payload: { reason: 'false alarm' } })).statusCode).toBe(200);
    expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('KILL_SWITCH');

    // 1. Restart the control plane.
    await first.close();
    const second = await replica({ policyFile: POLICY });
    const gw2 = driverFor(second, gw);
    expect((await gw2.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('KILL_SWITCH');

    // 2. Flush this installation's Redis: the epoch goes, decisions deny until the reload, then the kill is back.
    expect(await flushPrefix(second.ctx.redis)).toBeGreaterThan(0);
    const { d, seen } = await decideAfterReload(gw2, tok.raw, { ...read('a'), session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    expect(d.message).toContain(forever.id);
    // Nothing in between allowed the call.
    expect(seen.every((c) => c === 'DEPENDENCY_UNAVAILABLE' || c === 'KILL_SWITCH')).toBe(true);
    // The expiring kill came back with what was left of its hour, not a fresh one and not forever.
    const ttl = await second.ctx.redis.redis.pttl(second.ctx.redis.key('kill', 'server:memory'));
    expect(ttl).toBeGreaterThan(3_500_000);
    expect(ttl).toBeLessThanOrEqual(3_600_000);
    expect((await gw2.decide(tok.raw, { server: 'memory', tool: 'read_graph', arguments: {}, session_id: s })).code).toBe('KILL_SWITCH');
    // The kill lifted before the restart stays lifted.
    expect(await second.ctx.redis.redis.exists(second.ctx.redis.key('kill', 'server:github'))).toBe(0);

    // 3. Both at once: stop, flush, start.
    await second.close();
    await flushInstallation();
    const third = await replica({ policyFile: POLICY });
    const gw3 = driverFor(third, gw);
    const again = await decideAfterReload(gw3, tok.raw, { ...read('a'), session_id: s });
    expect(again.d.code).toBe('KILL_SWITCH');

    // Lift: gone for good, also after another flush.
    expect((await third.inject({ method: 'DELETE', url: `/v1/kills/${forever.id}`, headers: bearer(gw.owner), payload: { reason: 'INC-3 over' } })).statusCode).toBe(200);
    expect((await third.inject({ method: 'DELETE', url: `/v1/kills/${expiring.id}`, headers: bearer(gw.owner), payload: { reason: 'INC-3 over' } })).statusCode).toBe(200);
    await flushPrefix(third.ctx.redis);
    expect((await decideAfterReload(gw3, tok.raw, { ...read('a'), session_id: s })).d.code).toBe('OK');
  });

  it('a kill Redis did not take is kept (enforced: false) and applied by the reconciler once Redis answers', async () => {
    const app = await replica({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const op = await app.ctx.auth.authenticate(gw.owner);
    if (op.kind !== 'operator') throw new Error('owner key expected');
    // The same installation seen through a Redis that does not answer.
    const deadRedis = createRedis('redis://127.0.0.1:1', app.ctx.redis.prefix, 100);
    const cut = killServiceFor(app.ctx, deadRedis);
    try {
      const res = await cut.create(op, { target: 'token', token_id: tok.id, reason: 'INC-4 while Redis was away' });
      expect(res.enforced).toBe(false);
      expect(res.message).toContain('Redis did not take it');
      // Recorded in Postgres and listed.
      const list = (await app.inject({ method: 'GET', url: '/v1/kills', headers: bearer(gw.owner) })).json();
      expect(list.kills.map((k: { id: string }) => k.id)).toContain(res.kill.id);
      // The real Redis does not know it yet; the reconciler (every few seconds on every replica) applies it.
      expect(await app.ctx.redis.redis.exists(app.ctx.redis.key('kill', `token:${tok.id}`))).toBe(0);
      await app.ctx.kills.tick();
      expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('KILL_SWITCH');
    } finally {
      await deadRedis.close();
    }
  });

  it('a kill key whose transaction failed after the Redis write (no row in Postgres) is removed by the reconciler', async () => {
    const app = await replica({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    const target = `token:${tok.id}`;
    // What KillService.create does, up to a COMMIT that fails: the row is rolled back, the key stays.
    await expect(
      withTransaction(app.ctx.pool, async (c) => {
        await killStore.lockTarget(c, target);
        await killStore.insert(c, { id: uuidv7(), target: 'token', target_key: target, server: null, capability: null, token_id: tok.id, project_id: 'alpha', role: null, environment: null, session_id: null, reason: 'INC-5 never committed', created_by: 'test', expiresInS: null });
        await app.ctx.kills.mirror.apply(c, target);
        throw new Error('the commit failed');
      }),
    ).rejects.toThrow('the commit failed');
    expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('KILL_SWITCH');
    const listed = (await app.inject({ method: 'GET', url: '/v1/kills', headers: bearer(gw.owner) })).json().kills as Array<{ token_id: string | null }>;
    expect(listed.filter((k) => k.token_id === tok.id)).toEqual([]);
    // tick() joins a run already in progress, which may have read Redis before the key was written: the
    // second call is a run that starts after it.
    await app.ctx.kills.tick();
    await app.ctx.kills.tick();
    expect(await app.ctx.redis.redis.exists(app.ctx.redis.key('kill', target))).toBe(0);
    expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('OK');
  });

  it('with Unleash unreachable (flags from the backup file), a kill still stops calls and a lift restores them', async () => {
    const dataDir = `${t.dataDir}/unleash-down`;
    // A replica that reached Unleash leaves the flag backup behind ...
    const withUnleash = await replica({ policyFile: POLICY, dataDir });
    await withUnleash.close();
    // ... and this one starts while Unleash is unreachable, from that backup.
    const app = await replica({ policyFile: POLICY, dataDir, unleashUrl: DOWN });
    expect(app.ctx.flags.status()).toMatchObject({ source: 'bootstrap' });
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('rw');
    const s = (await gw.session(tok.raw)).session_id;
    expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('OK');
    const kill = await app.inject({ method: 'POST', url: '/v1/kills', headers: bearer(gw.owner), payload: { target: 'everything', reason: 'INC-5 Unleash is down, stop everything' } });
    expect(kill.statusCode).toBe(201);
    const d = await gw.decide(tok.raw, { ...read('a'), session_id: s });
    expect(d.code).toBe('KILL_SWITCH');
    expect(d.message).toContain('INC-5 Unleash is down');
    expect((await app.inject({ method: 'DELETE', url: `/v1/kills/${kill.json().kill.id}`, headers: bearer(gw.owner), payload: { reason: 'INC-5 over' } })).statusCode).toBe(200);
    expect((await gw.decide(tok.raw, { ...read('a'), session_id: s })).code).toBe('OK');
  });
});

/** Deletes every Redis key of this file's installation, with a connection of its own (the apps may be closed). */
async function flushInstallation(): Promise<void> {
  const probe = createRedis(TEST_REDIS_URL, t.redisPrefix, 2_000);
  try {
    await waitForRedis(probe);
    expect(await flushPrefix(probe)).toBeGreaterThan(0);
  } finally {
    await probe.close();
  }
}
