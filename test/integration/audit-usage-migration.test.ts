import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { auditStore } from '../../src/audit/store.js';
import { MIGRATIONS_DIR, migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { dbUrl, TEST_PG_URL } from '../helpers/env.js';
import { fixtureRows, insert, rawUsage, rollupMismatches } from './audit-usage-fixtures.js';

// Migration 0017 (usage per hour): an upgraded installation's existing audit rows are in the rollup
// (the migration backfills it), and rows written after it are added by the trigger, each exactly once.

const name = `ks_t_${randomBytes(6).toString('hex')}`;
let dir: string;

beforeAll(async () => {
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`).finally(() => admin.end());
  dir = await mkdtemp(join(tmpdir(), 'ks-migrations-'));
  for (const f of await readdir(MIGRATIONS_DIR)) if (/^00(0\d|1[0-6])_/.test(f)) await cp(join(MIGRATIONS_DIR, f), join(dir, f));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => admin.end());
});

it('backfills the rollup from the rows stored before it, and counts rows written after it once', async () => {
  const pool = createPool(dbUrl(name), { max: 2 });
  try {
    await migrate(pool, dir);
    await auditStore.ensurePartitions(pool, new Date('2024-05-01T00:00:00Z'), 1);
    // Before the upgrade: May 2024 (its partition) and April (default partition).
    await insert(pool, fixtureRows('2024-05-30T20:00:00Z', 30, 11));
    await insert(pool, fixtureRows('2024-04-29T00:00:00Z', 10, 17));

    const applied = await migrate(pool);
    expect(applied.map((m) => m.name)).toContain('0017_audit_usage_hourly.sql');
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM audit_usage_hourly');
    expect(rows[0]!.n).toBeGreaterThan(50);
    expect(await rollupMismatches(pool)).toEqual([]);

    // After it: more rows in hours the backfill already counted, and in new ones.
    await insert(pool, fixtureRows('2024-05-31T01:30:00Z', 30, 9));
    expect(await rollupMismatches(pool)).toEqual([]);
    const f = { from: new Date('2024-04-29T03:20:00Z'), to: new Date('2024-06-01T04:40:00Z') };
    expect(await auditStore.usage(pool, f)).toEqual(await rawUsage(pool, f));
  } finally {
    await pool.end();
  }
});
