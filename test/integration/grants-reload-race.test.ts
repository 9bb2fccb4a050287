import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { GrantService } from '../../src/grants/service.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// Every replica keeps the grants in memory. A periodic reload whose query read Postgres before a revocation
// committed, and that ends after the reload the revocation announced, must not bring the grant back.

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: 'test/fixtures/decisions/policy.yaml' });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

describe('a grants reload that ends after a later one', () => {
  it('is dropped: a revoked grant does not come back into force', async () => {
    const tok = await gw.token('rw', { environment: 'production' });
    const made = await app.inject({ method: 'POST', url: '/v1/grants', headers: bearer(gw.owner), payload: { token_id: tok.id, reason: 'INC-8 prod logs', expires_in: 600 } });
    expect(made.statusCode, made.body).toBe(201);
    const grantId = (made.json().grant?.id ?? made.json().id) as string;

    // A replica's pool whose next grants read is answered by Postgres at once but handed over only when the
    // test says: a reload that read the grant in force, and is slow to finish.
    const pool = createPool(t.databaseUrl, { max: 2 });
    const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let holdNext = true;
    let read!: () => void;
    const readDone = new Promise<void>((r) => {
      read = r;
    });
    (pool as unknown as { query: (...a: unknown[]) => Promise<unknown> }).query = async (...args: unknown[]) => {
      const sql = typeof args[0] === 'string' ? args[0] : '';
      const hold = holdNext && /FROM grants/.test(sql);
      if (hold) holdNext = false;
      const result = await query(...args);
      if (hold) {
        read();
        await held;
      }
      return result;
    };
    const replica = new GrantService(pool, app.ctx.redis, 3_600);
    try {
      const slow = replica.reload('timer');
      await readDone; // it has read the grant, before the revocation
      // The grant is revoked, and the reload the revocation announces ends first.
      expect((await app.inject({ method: 'DELETE', url: `/v1/grants/${grantId}`, headers: bearer(gw.owner) })).statusCode).toBeLessThan(300);
      await replica.reload('announced');
      expect(replica.has('production', tok.id, undefined)).toBe(false);
      // The slow one ends now, with the grant it read before the revocation.
      release();
      await slow;
      expect(replica.has('production', tok.id, undefined)).toBe(false);
    } finally {
      await pool.end();
    }
  });
});
