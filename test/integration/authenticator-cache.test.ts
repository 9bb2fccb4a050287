import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pool } from '../../src/db/pool.js';
import { Authenticator, refusalOf } from '../../src/tokens/authenticator.js';
import { bearer, TestContext } from '../helpers/context.js';

// The credential cache under load: concurrent misses of one credential share one query, a credential in
// use is refreshed in the background before it expires (no burst of requests waiting on Postgres every
// TTL), revocation still bounds staleness, and a lookup that raced a revocation does not fill the cache.

const t = new TestContext();
let app: FastifyInstance;
let owner: string;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
  owner = await t.operatorKey(app, 'owner');
});
afterAll(() => t.teardown());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The app's pool, counting credential lookups; `hold` keeps their results until released. */
function countingPool() {
  const pool = t.pool();
  const state = { lookups: 0, held: [] as Array<() => void>, hold: false };
  const wrapped = {
    // A query as text and values, or as a config object (the lookup carries its own query_timeout).
    query: async (query: string | { text: string }, values?: unknown[]) => {
      const isLookup = /WHERE key_hash = \$1/.test(typeof query === 'string' ? query : query.text);
      if (isLookup) state.lookups++;
      const result = await (typeof query === 'string' ? pool.query(query, values) : pool.query(query as never));
      if (isLookup && state.hold) await new Promise<void>((r) => state.held.push(r));
      return result;
    },
  } as unknown as Pool;
  return { pool: wrapped, state, release: () => {
      for (const r of state.held.splice(0)) r();
    },
  };
}

async function newToken(): Promise<{ raw: string; id: string }> {
  const res = await app.inject({ method: 'POST', url: '/v1/keys', headers: bearer(owner), payload: { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' } });
  return { raw: res.json().token as string, id: res.json().key.id as string };
}

function authenticator(pool: Pool, ttlMs: number): Authenticator {
  return new Authenticator(pool, app.ctx.redis, app.ctx.config.tokenHashSecret!, ttlMs);
}

const refused = (p: Promise<unknown>) =>
  p.then(
    () => false,
    (err: { code?: string }) => err.code === 'UNAUTHENTICATED',
  );

describe('credential cache', () => {
  it('50 concurrent requests with an uncached credential make one query', async () => {
    const { raw } = await newToken();
    const c = countingPool();
    const auth = authenticator(c.pool, 5_000);
    const all = await Promise.all(Array.from({ length: 50 }, () => auth.authenticate(raw)));
    expect(all.every((p) => p.kind === 'agent')).toBe(true);
    expect(c.state.lookups).toBe(1);
  });

  it('a credential in use is refreshed in the background during the second half of its TTL and never expires into a wait', async () => {
    const { raw } = await newToken();
    const c = countingPool();
    const auth = authenticator(c.pool, 400);
    await auth.authenticate(raw);
    expect(c.state.lookups).toBe(1);
    await sleep(250);
    c.state.hold = true; // the refresh's answer waits: the request must not
    expect((await auth.authenticate(raw)).kind).toBe('agent');
    expect(c.state.lookups).toBe(2);
    c.state.hold = false;
    c.release();
    // Past the first entry's TTL: the refreshed entry answers at once, even though Postgres is held again.
    await sleep(250);
    c.state.hold = true;
    const answer = await Promise.race([auth.authenticate(raw), sleep(150).then(() => 'waited on Postgres')]);
    expect(answer).toMatchObject({ kind: 'agent' });
    c.state.hold = false;
    c.release();
  });

  it('a token revoked in Postgres (no announcement) is refused within the TTL even while it is used all the time', async () => {
    const { raw, id } = await newToken();
    const c = countingPool();
    const auth = authenticator(c.pool, 400);
    await auth.authenticate(raw);
    await t.pool().query('UPDATE agent_tokens SET revoked_at = now() WHERE id = $1', [id]);
    expect(c.state.lookups).toBe(1);
    // Used every 20 ms, the entry is never idle: a cache whose use extended it would answer from it forever
    // (the generous deadline below fails such a cache). The revocation must come from the entry's own
    // re-read, the first lookup after the revocation, while the credential is still in use.
    const deadline = Date.now() + 10_000;
    let cachedAnswers = 0;
    while (!(await refused(auth.authenticate(raw)))) {
      if (Date.now() > deadline) throw new Error(`still accepted after ${cachedAnswers} answers and ${c.state.lookups} lookups`);
      cachedAnswers++;
      await sleep(20);
    }
    expect(cachedAnswers).toBeGreaterThan(0);
    expect(c.state.lookups).toBe(2);
  });

  it('a revocation announced while a lookup runs: later requests query again, and the lookup does not fill the cache', async () => {
    const { raw, id } = await newToken();
    const c = countingPool();
    const auth = authenticator(c.pool, 5_000);
    c.state.hold = true;
    const first = auth.authenticate(raw); // reads the row before the revocation; its answer is held
    while (c.state.held.length === 0) await sleep(5);
    c.state.hold = false;
    await t.pool().query('UPDATE agent_tokens SET revoked_at = now() WHERE id = $1', [id]);
    await auth.announceRevoked(id);
    expect(await refused(auth.authenticate(raw))).toBe(true); // its own query, not the held one
    expect(c.state.lookups).toBe(2);
    c.release();
    expect((await first).kind).toBe('agent'); // the request that began before the revocation
    expect(await refused(auth.authenticate(raw))).toBe(true); // not from a cache the held lookup filled
  });
});

// Soak test: every credential ever authenticated stayed in the id -> cache key map until restart.
describe('credential cache memory', () => {
  it('the ids of expired entries are dropped with them when stale entries are purged', async () => {
    const tokens = await Promise.all(Array.from({ length: 20 }, () => newToken()));
    const auth = authenticator(t.pool() as unknown as Pool, 100);
    for (const { raw } of tokens) await auth.authenticate(raw);
    expect(auth.cachedIds).toBe(20);
    await sleep(150);
    auth.purgeStale();
    expect(auth.cachedIds).toBe(0);
    // Authenticated again, they are tracked again.
    await auth.authenticate(tokens[0]!.raw);
    expect(auth.cachedIds).toBe(1);
  });

  it('an entry replaced by a negative one (refresh found it revoked) no longer keeps its id', async () => {
    const { raw, id } = await newToken();
    const auth = authenticator(t.pool() as unknown as Pool, 400);
    await auth.authenticate(raw);
    expect(auth.cachedIds).toBe(1);
    await t.pool().query('UPDATE agent_tokens SET revoked_at = now() WHERE id = $1', [id]);
    while (!(await refused(auth.authenticate(raw)))) await sleep(20);
    expect(auth.cachedIds).toBe(0);
  });

  it('after a purge, a revocation still reaches a replica that cached the token again, and its refusal names the token', async () => {
    const replica = await t.app({ tokenCacheTtlMs: 100 });
    const { raw, id } = await newToken();
    await replica.ctx.auth.authenticate(raw);
    await sleep(150);
    replica.ctx.auth.purgeStale();
    expect(replica.ctx.auth.cachedIds).toBe(0);
    await replica.ctx.auth.authenticate(raw);
    expect(replica.ctx.auth.cachedIds).toBe(1);
    const rev = await app.inject({ method: 'POST', url: `/v1/keys/${id}/revoke`, headers: bearer(owner), payload: { reason: 'soak' } });
    expect(rev.statusCode).toBe(200);
    let refusal: ReturnType<typeof refusalOf>;
    for (let i = 0; i < 100 && !refusal; i++) {
      refusal = await replica.ctx.auth.authenticate(raw).then(() => undefined, refusalOf);
      if (!refusal) await sleep(20);
    }
    expect(refusal).toMatchObject({ reason: 'revoked', kind: 'agent', id });
  });
});
