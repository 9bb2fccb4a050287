import { afterAll, beforeAll, expect, it } from 'vitest';
import { auditStore } from '../../src/audit/store.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { OlderSchema } from '../helpers/older-schema.js';
import { fixtureRows, insert, rawMonthlyUsage, rawUsage, rollupMismatches } from './audit-usage-fixtures.js';

// Migration 0017 (usage per hour) on an installation that has audit rows: no backfill (it would hold the
// upgrade's pause for ~2.3 s per million rows); the rollup starts at the second whole hour after the
// migration, rows before it are read raw, and every row is counted once, from one side or the other.

const old = new OlderSchema(16);

beforeAll(() => old.setup());
afterAll(() => old.teardown());

it('starts the rollup after the migration instead of backfilling it: usage reads raw rows before the start, the rollup after, each row once', async () => {
  const pool = createPool(old.url, { max: 2 });
  try {
    await migrate(pool, old.dir);
    await auditStore.ensurePartitions(pool, new Date('2024-05-01T00:00:00Z'), 1);
    // Before the upgrade: May 2024 (its partition) and April (default partition).
    await insert(pool, fixtureRows('2024-05-30T20:00:00Z', 30, 11));
    await insert(pool, fixtureRows('2024-04-29T00:00:00Z', 10, 17));

    const applied = await migrate(pool);
    expect(applied.map((m) => m.name)).toContain('0017_audit_usage_hourly.sql');
    const { rows } = await pool.query<{ starts_at: Date; expected: Date; hourly: number }>(
      "SELECT starts_at, date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '2 hours' AS expected, (SELECT count(*)::int FROM audit_usage_hourly) AS hourly FROM audit_usage_hourly_start",
    );
    const start = rows[0]!.starts_at;
    expect(start).toEqual(rows[0]!.expected);
    expect(rows[0]!.hourly).toBe(0);

    // After it: late rows from before the start (a spool replayed after the upgrade) stay out of the
    // rollup; rows from the start on go in.
    await insert(pool, fixtureRows('2024-05-31T01:30:00Z', 30, 9));
    expect(Number((await pool.query('SELECT count(*) AS n FROM audit_usage_hourly')).rows[0].n)).toBe(0);
    await auditStore.ensurePartitions(pool, start, 2);
    await insert(pool, fixtureRows(new Date(start.getTime() - 90 * 60_000).toISOString(), 8, 7));
    expect(Number((await pool.query('SELECT count(*) AS n FROM audit_usage_hourly')).rows[0].n)).toBeGreaterThan(10);
    expect(await rollupMismatches(pool, start)).toEqual([]);

    for (const f of [
      { from: new Date('2024-04-29T03:20:00Z'), to: new Date(start.getTime() + 4 * 3_600_000 + 1_234) },
      { from: new Date(start.getTime() - 3_600_000 - 17_000), to: new Date(start.getTime() + 3 * 3_600_000) },
      { from: new Date(start.getTime() + 3_600_000), to: new Date(start.getTime() + 5 * 3_600_000) },
      {},
    ]) {
      expect(await auditStore.usage(pool, f)).toEqual(await rawUsage(pool, f));
      expect(await auditStore.monthlyUsage(pool, f)).toEqual(await rawMonthlyUsage(pool, f));
    }
  } finally {
    await pool.end();
  }
});
