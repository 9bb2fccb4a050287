import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intentRow } from '../../src/audit/rows.js';
import { AUDIT_QUERY_TIMEOUT_MS, createWriterPool } from '../../src/audit/service.js';
import { AuditWriter } from '../../src/audit/writer.js';
import { createPool, isQueryTimeout, tolerateConnectionLoss, withQueryTimeout } from '../../src/db/pool.js';
import { CREDENTIAL_LOOKUP_TIMEOUT_MS } from '../../src/db/query-timeout.js';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { stall } from '../helpers/stall.js';
import { until } from '../helpers/unleash.js';
import { callContext } from './audit-fixtures.js';

// The client-side query timeout after a stall of the control plane's own event loop: pg armed a plain
// timer per query, which is due when the loop comes back, and Node runs due timers before it reads the
// sockets, so a query whose reply had arrived during the stall failed as 'Query read timeout': an audit
// INSERT went to the spool, a credential lookup denied a decision DEPENDENCY_UNAVAILABLE. Now the reply that
// is there is used (TimedClient, src/db/pool.ts), and a query Postgres does not answer still fails.
// Nothing shared is paused: the stalls are this process's own.

const ctx = new TestContext();
const pools: pg.Pool[] = [];
const writers: AuditWriter[] = [];
const quiet = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {}, child: () => quiet };
const POLICY = 'test/fixtures/decisions/policy.yaml';

beforeAll(() => ctx.setup());
afterAll(async () => {
  for (const w of writers) await w.close().catch(() => {});
  for (const p of pools) await p.end().catch(() => {});
  await ctx.teardown();
});

function pool(queryTimeoutMillis: number, applicationName = 'killswitch-stall-test'): pg.Pool {
  const p = createPool(ctx.databaseUrl, { max: 2, queryTimeoutMillis, applicationName });
  pools.push(p);
  return p;
}

/** Holds the loop right after what was issued in this turn was written (pg-pool hands out an idle connection at nextTick), before any read of a socket. */
const stallOnceWritten = (ms: number) => new Promise<void>((resolve) => setImmediate(() => resolve(stall(ms))));

const outcome = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describe('a Postgres reply that arrived while the event loop was held', () => {
  it("is used, not failed as a query timeout: the pool's timeout and a query's own (the stall is 10 times the timeout)", async () => {
    const p = pool(100);
    const long = pool(60_000);
    await p.query('SELECT 1');
    const client = await long.connect();
    try {
      const byPool = p.query('SELECT 42 AS n');
      const byQuery = client.query(withQueryTimeout({ text: 'SELECT $1::int AS n', values: [7] }, 100));
      await stallOnceWritten(1_000);
      expect((await byPool).rows[0].n).toBe(42);
      expect((await byQuery).rows[0].n).toBe(7);
    } finally {
      client.release();
    }
  });

  it('a reply that comes after the stall, within one more timeout, is used (the timer ran late: the query gets one more timeout)', async () => {
    const p = pool(500);
    await p.query('SELECT 1');
    // Postgres answers at ~1.25 s: after the stall (1.2 s), before its end plus one more timeout (~1.7 s).
    const slow = p.query('SELECT pg_sleep(1.25), 1 AS n');
    await stallOnceWritten(1_200);
    expect((await slow).rows[0].n).toBe(1);
  });

  it("the audit writer's INSERT answered during a stall longer than AUDIT_QUERY_TIMEOUT_MS is in Postgres, not spooled", async () => {
    const writerPool = createWriterPool(ctx.databaseUrl);
    pools.push(writerPool);
    const dataDir = await mkdtemp(join(tmpdir(), 'ks-pgstall-'));
    const writer = await AuditWriter.open({ pool: writerPool, database: ctx.name, dataDir, batchMax: 50, log: quiet as never, replayIntervalMs: 100 });
    writers.push(writer);
    await writer.recordIntent(intentRow(callContext(), { decision: 'allow', code: 'OK', message: 'allowed' }));
    // The next INSERT is written, then the loop is held for longer than its timeout.
    let held = false;
    writerPool.on('acquire', (client: pg.PoolClient) => {
      if (held) return;
      const query = client.query;
      client.query = function (this: pg.PoolClient, ...args: unknown[]) {
        client.query = query;
        const sent = (query as (...a: unknown[]) => unknown).apply(this, args);
        if (!held && (args[0] as { name?: string }).name === 'audit_insert_batch') {
          held = true;
          stall(AUDIT_QUERY_TIMEOUT_MS + 500);
        }
        return sent;
      } as typeof client.query;
    });
    const call = callContext();
    await writer.recordIntent(intentRow(call, { decision: 'allow', code: 'OK', message: 'allowed' }));
    expect(held).toBe(true);
    expect(writer.spooling).toBe(false);
    expect(writer.spoolSize).toBe(0);
    const { rows } = await ctx.pool().query('SELECT kind FROM audit_events WHERE decision_id = $1', [call.decisionId]);
    expect(rows.map((r) => r.kind)).toEqual(['INTENT']);
  }, 20_000);

  it('a credential lookup answered during a stall longer than CREDENTIAL_LOOKUP_TIMEOUT_MS: the decision is made, not denied DEPENDENCY_UNAVAILABLE, and lookups do not fail fast after it', async () => {
    // Replica A issues the token and opens the session; replica B has neither credential cached.
    const a: FastifyInstance = await ctx.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(ctx, a).init();
    const token = await gw.token('ro');
    const session = await gw.session(token.raw);
    const b = await ctx.app({ policyFile: POLICY });
    // B looks the gateway key up now (with another token), so that the decision below looks up only the agent token.
    const other = await gw.token('ro');
    expect((await b.inject({ method: 'POST', url: '/v1/sessions', headers: gw.headers(other.raw), payload: {} })).statusCode).toBe(201);

    const bPool = b.ctx.pool;
    const query = bPool.query;
    bPool.query = function (this: pg.Pool, ...args: unknown[]) {
      const sent = (query as (...a: unknown[]) => unknown).apply(this, args);
      const config = args[0] as string | { text?: string };
      if (/FROM agent_tokens WHERE key_hash/.test(typeof config === 'string' ? config : (config.text ?? ''))) {
        bPool.query = query;
        // pg-pool sends it at the next tick: held right after that, for longer than the lookup's timeout.
        process.nextTick(() => stall(CREDENTIAL_LOOKUP_TIMEOUT_MS + 1_000));
      }
      return sent;
    } as typeof bPool.query;
    try {
      const res = await b.inject({
        method: 'POST',
        url: '/v1/decisions',
        headers: gw.headers(token.raw),
        payload: { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' }, session_id: session.session_id },
      });
      expect(bPool.query).toBe(query);
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json(), res.body).toMatchObject({ decision: "allow", code: "OK" });
      expect(b.ctx.auth.failingFast).toBe(false);
    } finally {
      bPool.query = query;
    }
  }, 60_000);
});

describe('a query Postgres does not answer in time', () => {
  it('still fails as a query timeout, after a stall too, and its connection is closed (Postgres ends the statement)', async () => {
    const name = `killswitch-stall-hang-${process.pid}`;
    const p = pool(200, name);
    await p.query('SELECT 1');
    const quietLoop = await outcome(p.query('SELECT pg_sleep(30)'));
    expect('error' in quietLoop && isQueryTimeout(quietLoop.error), JSON.stringify(quietLoop)).toBe(true);
    const held = outcome(p.query('SELECT pg_sleep(30)'));
    await stallOnceWritten(500);
    const afterStall = await held;
    expect('error' in afterStall && isQueryTimeout(afterStall.error), JSON.stringify(afterStall)).toBe(true);
    expect(p.totalCount).toBe(0);
    // The connections were closed: Postgres cancels the sleeps (client_connection_check_interval) instead of running them for 30 s.
    await until(
      async () => (await ctx.pool().query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'SELECT pg_sleep%'", [name])).rows[0].n === 0,
      20_000,
      'the abandoned statements to end',
    );
  }, 30_000);
});

describe("the parts of pg TimedClient relies on (if one fails, pg changed: read src/db/pool.ts's TimedClient again)", () => {
  it("pg's own query_timeout is a plain timer: after a stall it fails a query whose reply is waiting (what TimedClient replaces)", async () => {
    const plain = new pg.Pool({ connectionString: ctx.databaseUrl, max: 1, query_timeout: 100 });
    tolerateConnectionLoss(plain);
    pools.push(plain);
    await plain.query('SELECT 1');
    const answered = outcome(plain.query('SELECT 1 AS n'));
    await stallOnceWritten(1_000);
    const o = await answered;
    expect('error' in o && isQueryTimeout(o.error), JSON.stringify(o)).toBe(true);
  });
});
