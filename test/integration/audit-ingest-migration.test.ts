import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import { intentRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { auditStore } from '../../src/audit/store.js';
import { AuditWriter } from '../../src/audit/writer.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool } from '../../src/db/pool.js';
import { OlderSchema } from '../helpers/older-schema.js';
import { callContext } from './audit-fixtures.js';

// Migration 0022 (audit_events.ingest_xid, the follow cursor's column) on an installation that has audit
// rows: no partition is rewritten (the table may be huge), the old rows keep NULL, the rows written after
// it get their transaction's id through the limited writer role, and every chain still verifies (the
// column is not hashed).

const old = new OlderSchema(21);
const quiet = { info: () => {}, warn: () => {}, error: () => {} };
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;

beforeAll(() => old.setup());
afterAll(() => old.teardown());

async function writeRows(url: string, dataDir: string, n: number, clock?: () => number): Promise<void> {
  const pool = createWriterPool(url);
  try {
    const writer = await AuditWriter.open({ pool, database: old.name, dataDir, batchMax: 500, log: quiet as never, ...(clock ? { clock } : {}) });
    for (let i = 0; i < n; i++) writer.enqueue(intentRow(callContext(), allow));
    await writer.close();
  } finally {
    await pool.end();
  }
}

it('adds the column without rewriting a partition; old rows keep NULL, new ones (the writer role, a month created later) get their transaction id; audit verify still passes', async () => {
  const pool = createPool(old.url, { max: 3 });
  const dataDir = await mkdtemp(join(tmpdir(), 'ks-ingest-'));
  try {
    await migrate(pool, old.dir);
    await writeRows(old.url, dataDir, 20);
    const files = async () =>
      (await pool.query<{ relname: string; relfilenode: number }>("SELECT c.relname, c.relfilenode FROM pg_class c WHERE c.relname LIKE 'audit\\_events\\_%' AND c.relkind = 'r' ORDER BY 1")).rows;
    const before = await files();
    expect(before.length).toBeGreaterThan(2);

    const applied = await migrate(pool);
    expect(applied.map((m) => m.name)).toEqual(['0022_audit_ingest_xid.sql']);
    // The same files: no partition was rewritten.
    expect(await files()).toEqual(before);
    const count = async (where: string) => Number((await pool.query(`SELECT count(*) AS n FROM audit_events WHERE ${where}`)).rows[0].n);
    // 20 INTENT rows, the chain's CHAIN_START and CHAIN_END.
    expect(await count('ingest_xid IS NULL')).toBe(22);
    expect(await count('ingest_xid IS NOT NULL')).toBe(0);

    // Rows after the upgrade, through the limited writer role: now and in a month whose partition is made after the migration.
    await writeRows(old.url, dataDir, 5);
    const later = new Date(Date.UTC(new Date().getUTCFullYear() + 1, 6, 15));
    expect(await auditStore.ensurePartitions(pool, later, 1)).toBe(1);
    await writeRows(old.url, dataDir, 3, () => later.getTime());
    expect(await count('ingest_xid IS NULL')).toBe(22);
    expect(await count('ingest_xid IS NOT NULL')).toBe(7 + 5);
    expect(await count(`ingest_xid IS NOT NULL AND ts >= '${later.toISOString()}'`)).toBe(5);

    // A follow from the start of time reads only the rows that have a transaction id (old rows are history).
    const bounds = await auditStore.snapshotBounds(pool);
    const followed = await auditStore.followPage(pool, {}, { xmax: 3n, xip: [] }, bounds.xmax, 1000);
    expect(followed).toHaveLength(12);

    const report = await verifyChain(pool, { retentionDays: 3650 });
    expect(report.broken).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.rows).toBe(34);
  } finally {
    await pool.end();
    await rm(dataDir, { recursive: true, force: true });
  }
});
