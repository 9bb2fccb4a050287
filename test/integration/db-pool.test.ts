import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_CONNECTION_CHECK_MS, createPool, isQueryTimeout, withQueryTimeout } from '../../src/db/pool.js';
import { TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

const ctx = new TestContext();
const app = `ks-pool-${randomUUID().slice(0, 8)}`;
let pool: pg.Pool;

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 2, applicationName: app });
});
afterAll(async () => {
  await pool.end();
  await ctx.teardown();
});

/** Statements of this file's pool that Postgres is still running. */
const running = async () =>
  (await ctx.pool().query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'", [app])).rows[0]!.n;

describe('the main pool', () => {
  it('each connection checks for a gone client while a statement runs, set before its first query without a warning from pg', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const fresh = createPool(ctx.databaseUrl, { max: 1, applicationName: app });
    try {
      expect((await fresh.query<{ v: string }>("SELECT current_setting('client_connection_check_interval') AS v")).rows[0]!.v).toBe(`${CLIENT_CONNECTION_CHECK_MS / 1000}s`);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
      await fresh.end();
    }
    // A SET sent from the pool's 'connect' event ran beside the first query: "Calling client.query() when the client is already executing a query".
    expect(warnings).toEqual([]);
    expect((await pool.query<{ v: string }>("SELECT current_setting('client_connection_check_interval') AS v")).rows[0]!.v).toBe(`${CLIENT_CONNECTION_CHECK_MS / 1000}s`);
  });

  it('a statement abandoned at its query timeout stops in Postgres too, instead of running to its end', async () => {
    const err = await pool.query(withQueryTimeout({ text: 'SELECT pg_sleep(60)' }, 500)).catch((e: unknown) => e);
    expect(isQueryTimeout(err)).toBe(true);
    // pg-pool discarded the connection; the backend sees its client gone at its next check (2 s), not in 60 s.
    await until(async () => (await running()) === 0, 15_000, 'the abandoned pg_sleep to be cancelled', 200);
    expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]!.one).toBe(1);
  });
});
