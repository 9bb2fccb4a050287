import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/chain.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow, resultRow } from '../../src/audit/rows.js';
import { AuditService } from '../../src/audit/service.js';
import { auditStore } from '../../src/audit/store.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

// Data-growth review: the hourly run deleted the last hour of rows one by one from a live monthly partition
// (1 s and 39 MB of WAL per 100k rows), and the partition was dropped a month later, mostly dead tuples.
// Retention now removes whole months: the cut is the start of the UTC month holding now - AUDIT_RETENTION_DAYS.
//
// A fixed calendar in 2025, long before the months the template database has partitions for, so which month
// a row lands in never depends on the day the tests run. March has a partition, February and April none
// (their rows sit in the default partition), May to August have theirs.

const ctx = new TestContext();
const at = (iso: string) => Date.parse(iso);
// Each run's now - 90 days falls on the 15th of a month, at noon.
const runMar = at('2025-06-13T12:00:00Z'); // now - 90 days = 2025-03-15: the cut is 2025-03-01
const runApr = at('2025-07-14T12:00:00Z'); // now - 90 days = 2025-04-15: the cut is 2025-04-01
const runMay = at('2025-08-13T12:00:00Z'); // now - 90 days = 2025-05-15: the cut is 2025-05-01
let clock = at('2025-02-20T10:00:00Z');
let pool: Pool;
let audit: AuditService;
const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
const token = agentPrincipal({ projectId: 'proj-months' });

const rowsBetween = async (from: string, to: string) =>
  (await pool.query<AuditRecord>('SELECT * FROM audit_events WHERE ts >= $1 AND ts < $2 ORDER BY seq', [from, to])).rows;
const run = async (now: number) => {
  clock = now;
  const result = await audit.applyRetention(new Date(now));
  await audit.writer.flush();
  return result;
};
const verifyAt = (now: number) => verifyChain(pool, { retentionDays: 90, now: new Date(now) });

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 3 });
  await auditStore.ensurePartitions(pool, new Date('2025-03-01T00:00:00Z'), 1);
  await auditStore.ensurePartitions(pool, new Date('2025-05-01T00:00:00Z'), 4);
  audit = await AuditService.start(ctx.config({ auditRetentionDays: 90 }), pool, pino({ level: 'silent' }), {
    clock: () => clock,
    retentionJob: false,
    headLog: false,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-retention-months-')),
  });
  // One chain, written in time order: CHAIN_START and 2 INTENT in February (default partition) ...
  for (let i = 0; i < 2; i++) await audit.recordIntent(intentRow(callContext({ agent: token }), allow));
  // ... 3 INTENT and 3 RESULT on 2025-03-10, 95 days before runMar (partition audit_events_p202503) ...
  clock = at('2025-03-10T08:00:00Z');
  for (let i = 0; i < 3; i++) {
    const c = callContext({ agent: token });
    await audit.recordIntent(intentRow(c, allow));
    audit.enqueue(resultRow(c, { status: 'success', duration_ms: 4, result_bytes: 40, rows: 2 }));
  }
  await audit.writer.flush();
  // ... 2 INTENT on 2025-04-03 (default partition) and 2 on 2025-06-01.
  clock = at('2025-04-03T09:00:00Z');
  for (let i = 0; i < 2; i++) await audit.recordIntent(intentRow(callContext({ agent: token, tool: 'read_file', capability: 'read' }), allow));
  clock = at('2025-06-01T09:00:00Z');
  for (let i = 0; i < 2; i++) await audit.recordIntent(intentRow(callContext({ agent: token }), allow));
  await audit.writer.flush();
  expect((await rowsBetween('2025-03-01', '2025-04-01')).length).toBe(6);
  expect((await pool.query("SELECT count(*)::int AS n FROM audit_events_default WHERE ts < '2025-05-01'")).rows[0].n).toBe(5);
});
afterAll(async () => {
  await audit.close();
  await pool.end();
  await ctx.teardown();
});

it('a run whose now - 90 days falls in the middle of March removes nothing from March: rows 95 days old stay until March is wholly older', async () => {
  const result = await run(runMar);
  // Only February goes (CHAIN_START and 2 INTENT, in the default partition), at the start of March.
  expect(result).toMatchObject({ partitions_dropped: [], rows_removed: 3, chains_anchored: 1 });
  expect(new Date(result.cutoff).toISOString()).toBe('2025-03-01T00:00:00.000Z');
  expect((await rowsBetween('2025-03-01', '2025-04-01')).length).toBe(6);
  expect((await rowsBetween('2025-04-01', '2025-05-01')).length).toBe(2);
  // An hour later the cut is still the start of March: nothing is removed, no audit.retention row is written.
  const again = await run(runMar + 3_600_000);
  expect(again).toMatchObject({ partitions_dropped: [], rows_removed: 0, rolled_up_groups: 0, chains_anchored: 0 });
  expect((await verifyAt(runMar + 3_600_000)).ok).toBe(true);
});

it("once March is wholly older its partition is dropped whole, its rows rolled up and anchored, April's rows kept, and the chain still verifies", async () => {
  const march = await rowsBetween('2025-03-01', '2025-04-01');
  const result = await run(runApr);
  expect(result).toMatchObject({ partitions_dropped: ['audit_events_p202503'], rows_removed: 6, chains_anchored: 1 });
  expect(new Date(result.cutoff).toISOString()).toBe('2025-04-01T00:00:00.000Z');
  // April is the month of the cut: its rows (now 102 days old) stay, in the default partition as well.
  expect((await rowsBetween('2025-04-01', '2025-05-01')).length).toBe(2);
  // The chain is anchored at the last row March had.
  const last = march.reduce((a, b) => (Number(b.seq) > Number(a.seq) ? b : a));
  const anchor = (await auditStore.anchors(pool)).find((a) => a.cut_before.toISOString() === '2025-04-01T00:00:00.000Z');
  expect(anchor && { seq: Number(anchor.seq), hash: anchor.hash }).toEqual({ seq: Number(last.seq), hash: last.hash });
  const usage = await audit.monthlyUsage(undefined, { token: token.id });
  expect(usage.filter((m) => m.month.startsWith('2025-03'))).toMatchObject([{ calls: 3, allowed: 3, results: 3, successes: 3, errors: 0 }]);
  const report = await verifyAt(runApr);
  expect(report).toMatchObject({ ok: true, chains: 1, suspicious: [], broken: [] });
  // Still verifies when read with the real clock, as `killswitch audit verify` does.
  expect((await verifyAt(Date.now())).ok).toBe(true);
});

it("rows in the default partition older than the cut are removed once their month is wholly older (April's, at the start of May)", async () => {
  const result = await run(runMay);
  expect(result).toMatchObject({ partitions_dropped: [], rows_removed: 2, chains_anchored: 1, rolled_up_groups: 1 });
  expect((await pool.query("SELECT count(*)::int AS n FROM audit_events_default WHERE ts < '2025-05-01'")).rows[0].n).toBe(0);
  expect((await audit.monthlyUsage(undefined, { token: token.id })).filter((m) => m.month.startsWith('2025-04'))).toMatchObject([{ calls: 2, tool: 'read_file' }]);
  expect((await verifyAt(runMay)).ok).toBe(true);
  const left = (await pool.query<AuditRecord>('SELECT * FROM audit_events ORDER BY ts')).rows;
  expect(left.every((r) => r.ts.getTime() >= at('2025-05-01T00:00:00Z'))).toBe(true);
  expect(left.filter((r) => r.kind === 'INTENT')).toHaveLength(2);
});

it('a cut passed to audit_apply_retention() in the middle of a month is rounded down to the month start: no row of a kept partition is rolled up or anchored', async () => {
  const { rows } = await pool.query<{ result: { cutoff: string; rows_removed: number; rolled_up_groups: number } }>(
    'SELECT audit_apply_retention($1) AS result',
    [new Date('2025-06-20T00:00:00Z')],
  );
  expect(new Date(rows[0]!.result.cutoff).toISOString()).toBe('2025-06-01T00:00:00.000Z');
  // May's partition (empty) lies wholly before June and goes; June's rows, older than the cut passed, stay.
  expect(rows[0]!.result).toMatchObject({ partitions_dropped: ['audit_events_p202505'], rows_removed: 0, rolled_up_groups: 0 });
  expect((await rowsBetween('2025-06-01', '2025-07-01')).filter((r) => r.kind === 'INTENT')).toHaveLength(2);
});
