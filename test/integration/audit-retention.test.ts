import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { auditRetention } from '../../src/audit/commands.js';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow, resultRow } from '../../src/audit/rows.js';
import { AuditService, retentionCutoff } from '../../src/audit/service.js';
import { auditStore } from '../../src/audit/store.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';

const ctx = new TestContext();
const DAY = 86_400_000;
const now = Date.now();
let clock = now;
let pool: Pool;
let audit: AuditService;

const allow = { decision: 'allow', code: 'OK', message: 'allowed' } as const;
const deny = { decision: 'deny', code: 'KILL_SWITCH', message: 'flag off' } as const;
const monthOf = (t: number) => new Date(t).toISOString().slice(0, 7);

beforeAll(async () => {
  await ctx.setup();
  pool = createPool(ctx.databaseUrl, { max: 3 });
  audit = await AuditService.start(ctx.config({ auditRetentionDays: 90 }), pool, pino({ level: 'silent' }), {
    clock: () => clock,
    retentionJob: false,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-retention-')),
  });
});
afterAll(async () => {
  await audit.close();
  await pool.end();
  await ctx.teardown();
});

it('retention drops old partitions and rows, keeps monthly rollups, and what remains still verifies from its anchor', async () => {
  const token = agentPrincipal({ projectId: 'proj-r' });
  // Retention removes whole months: everything before the start of the month holding now - 90 days.
  const cutoff = retentionCutoff(new Date(now), 90).getTime();
  const old = now - 200 * DAY; // a month with its own partition: dropped whole
  const older = cutoff - DAY; // the last day before the cut, a month without a partition: the rows sit in the default partition, deleted
  await auditStore.ensurePartitions(pool, new Date(old), 1);

  clock = old;
  for (let i = 0; i < 3; i++) {
    const c = callContext({ agent: token });
    await audit.recordIntent(intentRow(c, allow));
    audit.enqueue(resultRow(c, { status: i < 2 ? 'success' : 'timeout', duration_ms: 5, result_bytes: 50, rows: 1 }));
  }
  audit.enqueue(intentRow(callContext({ agent: token }), deny));
  clock = older;
  for (let i = 0; i < 2; i++) await audit.recordIntent(intentRow(callContext({ agent: token, tool: 'read_file', capability: 'read' }), allow));
  clock = now - 10 * DAY;
  const kept = [callContext({ agent: token }), callContext({ agent: token })];
  for (const c of kept) await audit.recordIntent(intentRow(c, allow));
  clock = now;
  await audit.writer.flush();
  const before = (await pool.query('SELECT count(*) AS n FROM audit_events')).rows[0].n as number;
  expect((await audit.verify()).ok).toBe(true);

  const result = await audit.applyRetention(new Date(now));
  expect(result.partitions_dropped).toEqual([`audit_events_p${monthOf(old).replace('-', '')}`]);
  // CHAIN_START + 3 INTENT + 3 RESULT + 1 deny in the dropped partition, 2 INTENT in the default one.
  expect(result.rows_removed).toBe(10);
  expect(result.chains_anchored).toBe(1);
  await audit.writer.flush();

  const left = (await pool.query<AuditRecord>('SELECT * FROM audit_events ORDER BY seq')).rows;
  expect(left.every((r) => r.ts.getTime() >= cutoff)).toBe(true);
  expect(left.filter((r) => r.kind === 'INTENT').map((r) => r.decision_id)).toEqual(kept.map((c) => c.decisionId));
  // The retention run itself is on the record.
  expect(left.at(-1)).toMatchObject({ kind: 'ADMIN', action: 'audit.retention', actor_type: 'system', actor_id: 'retention' });
  expect(left.length).toBe(before - 10 + 1);

  const report = await audit.verify();
  expect(report).toMatchObject({ ok: true, chains: 1, rows: left.length });
  expect(left[0]!.seq).toBe(11);

  // Monthly rollups keep what the raw rows said.
  const months = await audit.monthlyUsage(undefined, { token: token.id });
  const byMonth = Object.fromEntries(months.map((m) => [m.month.slice(0, 7), m]));
  expect(byMonth[monthOf(old)]).toMatchObject({ calls: 4, allowed: 3, denied: 1, results: 3, successes: 2, errors: 1, tool: 'write_file' });
  expect(months.filter((m) => m.month.slice(0, 7) === monthOf(older)).reduce((n, m) => n + Number(m.calls), 0)).toBe(2);
  expect(months.reduce((n, m) => n + Number(m.calls), 0)).toBe(3 + 1 + 2 + 2);

  // A second run removes nothing and counts nothing twice.
  const again = await audit.applyRetention(new Date(now));
  expect(again.rows_removed).toBe(0);
  expect((await audit.monthlyUsage(undefined, { token: token.id })).reduce((n, m) => n + Number(m.calls), 0)).toBe(8);
});

it('rows removed outside retention (the first remaining one) are reported: no anchor covers the gap', async () => {
  const [first] = (await pool.query<AuditRecord>('SELECT * FROM audit_events ORDER BY seq LIMIT 1')).rows;
  const client = await pool.connect();
  try {
    await client.query('SET session_replication_role = replica');
    await client.query('DELETE FROM audit_events WHERE id = $1', [first!.id]);
    await client.query('SET session_replication_role = origin');
  } finally {
    client.release();
  }
  const report = await audit.verify();
  expect(report.ok).toBe(false);
  expect(report.broken[0]!.reason).toMatch(/no retention anchor/);
});

// Last in the file: a one-day retention removes what the tests above kept.
it('with a short AUDIT_RETENTION_DAYS a run creates no partition that it or the next run drops again (no hourly DDL, no audit.retention row per hour)', async () => {
  const short = await AuditService.start(ctx.config({ auditRetentionDays: 1 }), pool, pino({ level: 'silent' }), {
    retentionJob: false,
    dataDir: await mkdtemp(join(tmpdir(), 'ks-retention-short-')),
  });
  try {
    await short.applyRetention(new Date(now));
    const again = await short.applyRetention(new Date(now));
    expect(again.partitions_dropped).toEqual([]);
    expect(again.rows_removed).toBe(0);
  } finally {
    await short.close();
  }
});

it("monthly usage's to bound is read in UTC whatever Postgres's time zone", async () => {
  const client = await pool.connect();
  try {
    // A rolled-up December (raw rows gone): only retention writes rollups, so as it does.
    await client.query('BEGIN');
    await client.query("SET LOCAL killswitch.audit_retention = 'on'");
    await client.query(`INSERT INTO audit_usage_monthly (month, token_id, token_type, project_id, server, tool, capability, calls) VALUES ('2026-12-01', 'tz-token', 'rw', 'ptz', 'memory', 'read_graph', 'read', 7)`);
    await client.query('COMMIT');
    for (const zone of ['UTC', 'America/Los_Angeles', 'Pacific/Kiritimati']) {
      await client.query(`SET timezone = '${zone}'`);
      const to = async (iso: string) => (await auditStore.monthlyUsage(client, { project: 'ptz', to: new Date(iso) })).map((m) => m.month);
      // December starts at 2026-12-01T00:00Z: a bound after it includes it, one before it does not.
      expect(await to('2026-12-01T05:00:00Z'), zone).toEqual(['2026-12-01']);
      expect(await to('2026-11-30T20:00:00Z'), zone).toEqual([]);
    }
  } finally {
    await client.query('RESET timezone');
    client.release();
  }
});

it('--dry-run names the month-start cut, how many rows are older, and why the cut is not now - N days', async () => {
  const dry = (await auditRetention(ctx.config({ auditRetentionDays: 90 }), { dryRun: true })) as { cutoff: string; rows_older: number; note: string };
  expect(dry.cutoff).toBe(retentionCutoff(new Date(), 90).toISOString());
  expect(dry.cutoff).toMatch(/^\d{4}-\d\d-01T00:00:00\.000Z$/);
  expect(dry.rows_older).toBe(await auditStore.countOlderThan(pool, new Date(dry.cutoff)));
  expect(dry.note).toMatch(/^retention removes whole months: the cut is the start of the UTC month that holds now - 90 days \(\d{4}-.*\), so no row younger than 90 days goes/);
});
