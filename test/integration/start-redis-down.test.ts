import { createServer, type Server, connect as tcpConnect } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { freePort, until } from '../helpers/unleash.js';

// A replica that starts while Redis is unreachable (a blip during a rollout) must come up, say why it is
// not ready, and deny: not exit with an error that names no dependency (a crash loop).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const unleash = inject('unleash');
const t = new TestContext();

beforeAll(() => t.setup());
afterAll(() => t.teardown());

describe('Redis unreachable at start', () => {
  it('the control plane starts, is not ready, and denies decisions with DEPENDENCY_UNAVAILABLE', { timeout: 60_000 }, async () => {
    // Credentials are made on a healthy replica first; the second one cannot reach Redis at all.
    const healthy = await t.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, healthy).init();
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);

    const cut = await t.app({ policyFile: POLICY, redisUrl: 'redis://127.0.0.1:1' });
    const ready = await cut.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.body).toMatch(/redis/i);
    const d = await cut.inject({
      method: 'POST',
      url: '/v1/decisions',
      headers: gw.headers(tok.raw),
      payload: { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id },
    });
    expect(d.statusCode).toBe(200);
    expect(d.json()).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
    // The answer says Redis cannot be reached, as /readyz does: it said "the connection to Redis was just
    // (re)opened ... retry in a few seconds", which sent an operator looking elsewhere while Redis was down.
    expect(d.json().message).toMatch(/^Redis \(sessions, halts and limits\) is unreachable/);
    const warnings = (await cut.inject({ method: 'GET', url: '/readyz' })).json().warnings as string[];
    expect(warnings.some((w) => w.startsWith('decisions failed closed') && w.includes('Redis'))).toBe(true);
  });
});

/** A port nothing listens on yet; `open()` makes it a plain TCP relay to the test Redis (Redis "comes back"). */
async function lateRedis(): Promise<{ url: string; open(): Promise<void>; close(): Promise<void> }> {
  const port = await freePort();
  const target = new URL(TEST_REDIS_URL);
  let relay: Server | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    async open() {
      relay = createServer((client) => {
        const upstream = tcpConnect(Number(target.port || 6379), target.hostname);
        client.pipe(upstream).pipe(client);
        client.on('error', () => upstream.destroy());
        upstream.on('error', () => client.destroy());
      });
      await new Promise<void>((r) => relay!.listen(port, '127.0.0.1', r));
    },
    async close() {
      relay?.close();
    },
  };
}

describe('Redis back after a start without it', () => {
  it('the replica hears the other replicas once Redis is back: a webhook event and a log level change made on another one reach it', { timeout: 90_000 }, async () => {
    const redis = await lateRedis();
    try {
      const other = await t.app({ policyFile: POLICY });
      const late = await t.app({ policyFile: POLICY, redisUrl: redis.url });
      expect((await late.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      await redis.open();
      await until(async () => (await late.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 30_000, 'the late replica ready');

      // A flag event Unleash posts to another replica reaches this one through Redis (webhook overrides:
      // without them a flag turned off reaches this replica only by polling).
      const viewer = await t.operatorKey(other, 'viewer');
      const overview = async () => (await late.inject({ method: 'GET', url: '/v1/flags', headers: bearer(viewer) })).json() as { webhook: { last_event_flag?: string } };
      const event = { type: 'feature-updated', featureName: 'mcp.sqlite.read', environment: unleash.environment, id: 7 };
      const posted = await other.inject({ method: 'POST', url: '/v1/flags/events', headers: { authorization: unleash.webhookSecret }, payload: event });
      expect(posted.statusCode).toBe(200);
      await until(async () => (await overview()).webhook.last_event_flag === 'mcp.sqlite.read', 5_000, 'the late replica heard of the webhook event');

      // A log level set on another replica applies here too.
      const owner = await t.operatorKey(other, 'owner');
      const set = await other.inject({ method: 'PUT', url: '/v1/admin/log-level', headers: bearer(owner), payload: { level: 'debug' } });
      expect(set.json()).toMatchObject({ level: 'debug' });
      await until(() => late.ctx.log.level === 'debug', 5_000, 'the late replica at debug');
    } finally {
      await redis.close();
    }
  });
});
