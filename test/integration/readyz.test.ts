import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotReady, readinessReason } from '../../src/http/health.js';
import { TestContext } from '../helpers/context.js';
import { dbUrl, TEST_REDIS_URL } from '../helpers/env.js';
import { freePort, until } from '../helpers/unleash.js';
import { PgProxy } from './audit-fixtures.js';

// GET /readyz needs no credential, so anyone who reaches the port reads it: it names each dependency and
// a short reason, while the driver's error (hosts, ports, database names) goes to the log, once a minute.

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

const logLines = (prefix: string) => t.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => String(l['msg']).startsWith(prefix));

describe('GET /readyz', () => {
  it('Postgres and Redis gone after start: 503 with "unreachable" and "not ready", no address or driver text; the errors are in the log, once', { timeout: 30_000 }, async () => {
    const pgProxy = new PgProxy();
    const redisProxy = new PgProxy(Number(new URL(TEST_REDIS_URL).port || 6379), new URL(TEST_REDIS_URL).hostname);
    await pgProxy.reserve();
    await redisProxy.reserve();
    await pgProxy.up();
    await redisProxy.up();
    const app = await t.app({ databaseUrl: pgProxy.url(t.name), redisUrl: `redis://127.0.0.1:${redisProxy.port}` });
    await app.ctx.sessions.ensureState();
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    await pgProxy.down();
    await redisProxy.down();
    // Until ioredis has noticed the cut connection, a ping could still be on its way.
    await until(async () => app.ctx.redis.redis.status !== 'ready', 5_000, 'Redis connection to drop');

    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await app.inject({ method: 'GET', url: '/readyz' }));
    for (const res of answers) {
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ ready: false, checks: { postgres: 'unreachable', redis: 'not ready' } });
      for (const leak of ['127.0.0.1', String(pgProxy.port), String(redisProxy.port), 'ECONNREFUSED', t.name, 'connect']) expect(res.body).not.toContain(leak);
    }

    // For operators: the full error, once however often the orchestrator probes.
    const pgLines = logLines('readyz: postgres unreachable');
    expect(pgLines).toHaveLength(1);
    expect(pgLines[0]).toMatchObject({ level: 40, check: 'postgres', reason: 'unreachable' });
    expect(String(pgLines[0]!['err'])).toContain(`127.0.0.1:${pgProxy.port}`);
    const redisLines = logLines('readyz: redis not ready');
    expect(redisLines).toHaveLength(1);
    expect(String(redisLines[0]!['err'])).toMatch(/connection (connecting|reconnecting|close|end)/);
  });

  it('reasons from real driver errors: a refused connection is "unreachable", a missing database "database missing"', async () => {
    const errorOf = async (url: string) => {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      try {
        await client.connect();
      } catch (err) {
        return err;
      } finally {
        await client.end().catch(() => {});
      }
      throw new Error(`connected to ${url}`);
    };
    expect(readinessReason(await errorOf(`postgres://postgres@127.0.0.1:${await freePort()}/x`))).toBe('unreachable');
    expect(readinessReason(await errorOf(dbUrl('ks_t_no_such_database')))).toBe('database missing');
    expect(readinessReason(new NotReady('not ready', 'connection reconnecting'))).toBe('not ready');
    expect(readinessReason(new Error('something else'))).toBe('failing');
  });

  it('all up: 200, every check "ok"', async () => {
    const app = await t.app();
    await app.ctx.sessions.ensureState();
    const res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode, res.body).toBe(200);
    expect(Object.values(res.json().checks).every((c) => c === 'ok')).toBe(true);
  });
});
