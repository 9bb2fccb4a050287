import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/audit/record.js';
import { intentRow, resultRow } from '../../src/audit/rows.js';
import { createWriterPool } from '../../src/audit/service.js';
import { type AuditFilters, auditStore } from '../../src/audit/store.js';
import { bearer, TestContext } from '../helpers/context.js';
import { agentPrincipal, callContext } from './audit-fixtures.js';
import { fixtureRows, insert, rawMonthlyUsage, rawUsage, rollupMismatches } from './audit-usage-fixtures.js';

// Usage reads audit_usage_hourly (migrations/0017_audit_usage_hourly.sql) for the whole hours of its window
// and raw rows only for the partial hours at the edges. Whatever the window, the answer must be what
// aggregating every raw row gave before: the expected values here come from that old query (audit-usage-fixtures.ts).
//
// A fixed calendar in 2024, long before the template's partitions: May and June 2024 get theirs, April's
// rows sit in the default partition (retention deletes those row by row, and drops the others).

const ctx = new TestContext();
let app: FastifyInstance;
let db: pg.Pool;
let owner: string;

const hourlyRows = async () => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM audit_usage_hourly')).rows[0]!.n);

const WINDOWS: Array<[string, AuditFilters]> = [
  ['several days, partial hours at both edges', { from: new Date('2024-05-30T10:17:23.456Z'), to: new Date('2024-06-02T15:42:10.001Z') }],
  ['inside one hour', { from: new Date('2024-05-31T08:05:00Z'), to: new Date('2024-05-31T08:50:00Z') }],
  ['under an hour, across an hour boundary', { from: new Date('2024-05-31T08:40:00Z'), to: new Date('2024-05-31T09:20:00.5Z') }],
  ['whole hours only', { from: new Date('2024-05-31T00:00:00Z'), to: new Date('2024-06-01T00:00:00Z') }],
  ['a whole hour and a partial one', { from: new Date('2024-05-31T08:00:00Z'), to: new Date('2024-05-31T09:00:00.001Z') }],
  ['empty', { from: new Date('2024-05-31T08:10:00Z'), to: new Date('2024-05-31T08:10:00Z') }],
  ['no end', { from: new Date('2024-06-01T22:59:59.999Z') }],
  ['no start', { to: new Date('2024-05-30T03:00:00.001Z') }],
  ['no bounds', {}],
  ['a token', { token: 'tok-2', from: new Date('2024-05-29T23:30:00Z'), to: new Date('2024-06-03T00:30:00Z') }],
  ['a type and a server', { type: 'rw', server: 'filesystem', from: new Date('2024-05-30T05:45:00Z'), to: new Date('2024-06-01T12:15:00Z') }],
  ['a project', { project: 'proj-b', from: new Date('2024-05-30T05:45:00Z'), to: new Date('2024-06-01T12:15:00Z') }],
  ['a project-limited operator', { projects: ['proj-b', 'proj-x'], from: new Date('2024-05-31T05:01:00Z'), to: new Date('2024-06-02T07:59:00Z') }],
];

beforeAll(async () => {
  await ctx.setup();
  app = await ctx.app();
  db = ctx.pool();
  owner = await ctx.operatorKey(app, 'owner');
  await auditStore.ensurePartitions(db, new Date('2024-05-01T00:00:00Z'), 2);
  // May 29 to June 3 (partitioned), and April (default partition). Several statements, so the trigger
  // adds to hours that already have rows.
  const rows = [...fixtureRows('2024-05-29T20:00:00Z', 100, 7), ...fixtureRows('2024-04-20T00:00:00Z', 30, 13)];
  for (let i = 0; i < rows.length; i += 97) await insert(db, rows.slice(i, i + 97));
});
afterAll(async () => {
  await ctx.teardown();
});

describe('usage from the hourly rollup', () => {
  it('a new installation (no audit row at migration 0017) rolls up from the beginning: its start is -infinity', async () => {
    expect((await db.query('SELECT starts_at FROM audit_usage_hourly_start')).rows).toEqual([{ starts_at: Number.NEGATIVE_INFINITY }]);
  });

  it('the rollup holds, per hour, token and operation, exactly the raw rows’ counts', async () => {
    expect(await hourlyRows()).toBeGreaterThan(300);
    expect(await rollupMismatches(db)).toEqual([]);
  });

  it.each(WINDOWS)('usage equals the raw aggregation: %s', async (_name, f) => {
    const expected = await rawUsage(db, f);
    expect(await auditStore.usage(db, f)).toEqual(expected);
    expect(await auditStore.monthlyUsage(db, f)).toEqual(await rawMonthlyUsage(db, f));
  });

  it('whole hours are read from the rollup, partial hours from raw rows', async () => {
    // A row only the rollup has, for 09:00-10:00 (rolled back after): seen when that hour is whole in the window.
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO audit_usage_hourly (hour, token_id, calls, allowed, denied, results, successes, errors, duration_ms_sum, duration_ms_count, last_used, last_at)
         VALUES ('2024-05-31T09:00:00Z', 'tok-probe', 1, 1, 0, 0, 0, 0, 0, 0, '2024-05-31T09:30:00Z', '2024-05-31T09:30:00Z')`,
      );
      const probed = async (from: string, to: string) => (await auditStore.usage(client, { from: new Date(from), to: new Date(to) })).some((r) => r.token_id === 'tok-probe');
      expect(await probed('2024-05-31T08:40:00Z', '2024-05-31T10:20:00Z')).toBe(true);
      expect(await probed('2024-05-31T09:00:00Z', '2024-05-31T10:00:00Z')).toBe(true);
      expect(await probed('2024-05-31T09:00:00Z', '2024-05-31T09:59:59.999Z')).toBe(false);
      expect(await probed('2024-05-31T08:40:00Z', '2024-05-31T09:20:00Z')).toBe(false);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });

  it('GET /v1/usage answers from the rollup what the raw rows say, also for a project-limited operator key', async () => {
    const from = '2024-05-30T10:17:23.456Z';
    const to = '2024-06-02T15:42:10.001Z';
    const expected = await rawUsage(db, { from: new Date(from), to: new Date(to) });
    const res = await app.inject({ method: 'GET', url: `/v1/usage?from=${from}&to=${to}`, headers: bearer(owner) });
    expect(res.statusCode).toBe(200);
    const tokens = res.json().tokens as Array<{ token_id: string; calls: number; last_used: string; avg_duration_ms: number; per_day: unknown[]; operations: unknown[] }>;
    expect(tokens.map((t) => t.token_id).sort()).toEqual(['tok-1', 'tok-2', 'tok-3']);
    for (const t of tokens) {
      const total = expected.find((r) => r.grp === 'token' && r.token_id === t.token_id)!;
      expect({ calls: t.calls, last_used: t.last_used, avg: t.avg_duration_ms }).toEqual({ calls: Number(total.calls), last_used: total.last_used.toISOString(), avg: total.duration_ms_avg });
      expect(t.per_day).toHaveLength(expected.filter((r) => r.grp === 'day' && r.token_id === t.token_id).length);
      expect(t.operations).toHaveLength(expected.filter((r) => r.grp === 'operation' && r.token_id === t.token_id).length);
    }

    const limited = await ctx.operatorKey(app, 'viewer', ['proj-b']);
    const scoped = await app.inject({ method: 'GET', url: `/v1/usage?from=${from}&to=${to}`, headers: bearer(limited) });
    expect((scoped.json().tokens as Array<{ token_id: string; calls: number }>).map((t) => [t.token_id, t.calls])).toEqual([
      ['tok-3', Number(expected.find((r) => r.grp === 'token' && r.token_id === 'tok-3')!.calls)],
    ]);
  });
});

describe('writes', () => {
  it('rows the audit writer inserts as its limited role are counted, by the app’s own writer and by a replayed batch', async () => {
    const agent = agentPrincipal({ projectId: 'proj-w' });
    for (let i = 0; i < 5; i++) {
      const call = callContext({ agent });
      await app.ctx.audit.recordIntent(intentRow(call, { decision: 'allow', code: 'OK', message: 'allowed' }));
      app.ctx.audit.enqueue(resultRow(call, { status: i < 4 ? 'success' : 'error', duration_ms: 8 }));
    }
    await app.ctx.audit.writer.flush();
    const { rows } = await db.query('SELECT sum(calls)::int AS calls, sum(results)::int AS results, sum(errors)::int AS errors FROM audit_usage_hourly WHERE token_id = $1', [agent.id]);
    expect(rows[0]).toEqual({ calls: 5, results: 5, errors: 1 });
    expect(await auditStore.usage(db, { token: agent.id })).toEqual(await rawUsage(db, { token: agent.id }));
  });

  it('a spool replay of rows already stored (ON CONFLICT DO NOTHING) counts nothing twice; the new rows of the batch are counted', async () => {
    const agent = agentPrincipal({ projectId: 'proj-r' });
    for (let i = 0; i < 3; i++) await app.ctx.audit.recordIntent(intentRow(callContext({ agent }), { decision: 'allow', code: 'OK', message: 'allowed' }));
    await app.ctx.audit.writer.flush();
    const stored = (await db.query<AuditRecord>("SELECT * FROM audit_events WHERE token_id = $1 AND kind = 'INTENT' ORDER BY seq", [agent.id])).rows;
    expect(stored).toHaveLength(3);
    const before = await rawUsage(db, { token: agent.id });

    // The writer's own INSERT, as its limited role: the same rows again, then the same rows with one new.
    const writerPool = createWriterPool(ctx.databaseUrl);
    try {
      expect(await auditStore.insertBatch(writerPool, stored)).toBe(0);
      expect(await auditStore.usage(db, { token: agent.id })).toEqual(before);
      expect(await rollupMismatches(db)).toEqual([]);

      const fresh = { ...stored[0]!, id: uuidv7(), replica_id: 'replayed', seq: 1 };
      expect(await auditStore.insertBatch(writerPool, [...stored, fresh])).toBe(1);
    } finally {
      await writerPool.end();
    }
    const after = await auditStore.usage(db, { token: agent.id });
    expect(after.find((r) => r.grp === 'token')).toMatchObject({ calls: 4, allowed: 4 });
    expect(after).toEqual(await rawUsage(db, { token: agent.id }));
    expect(await rollupMismatches(db)).toEqual([]);
  });

  it('the audit writer has no privilege on the rollup itself: only its audit rows change the counts', async () => {
    const writerPool = createWriterPool(ctx.databaseUrl);
    try {
      await expect(writerPool.query("UPDATE audit_usage_hourly SET calls = calls + 1 WHERE token_id = 'tok-1'")).rejects.toThrow(/permission denied/);
      await expect(writerPool.query('DELETE FROM audit_usage_hourly')).rejects.toThrow(/permission denied/);
    } finally {
      await writerPool.end();
    }
  });
});

describe('retention', () => {
  it('removes the hourly rows of the months it cuts (rolled up monthly); /v1/usage/monthly is unchanged by the cut', async () => {
    const monthlyBefore = await app.inject({ method: 'GET', url: '/v1/usage/monthly?from=2024-01-01T00:00:00Z&to=2024-07-01T00:00:00Z', headers: bearer(owner) });
    expect(monthlyBefore.statusCode).toBe(200);
    expect((monthlyBefore.json().months as Array<{ month: string }>).map((m) => m.month)).toEqual(expect.arrayContaining(['2024-04-01', '2024-05-01', '2024-06-01']));
    const hoursOf = async (from: string, to: string) =>
      Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM audit_usage_hourly WHERE hour >= $1 AND hour < $2', [from, to])).rows[0]!.n);
    expect(await hoursOf('2024-04-01', '2024-06-01')).toBeGreaterThan(0);
    const juneHours = await hoursOf('2024-06-01', '2024-07-01');

    // The cut at June 1st: April (default partition, deleted row by row) and May (its partition dropped).
    const result = await auditStore.applyRetention(db, new Date('2024-06-01T00:00:00Z'));
    expect(result.partitions_dropped).toEqual(['audit_events_p202405']);
    expect(await hoursOf('2000-01-01', '2024-06-01')).toBe(0);
    expect(await hoursOf('2024-06-01', '2024-07-01')).toBe(juneHours);
    expect(await rollupMismatches(db)).toEqual([]);

    const monthlyAfter = await app.inject({ method: 'GET', url: '/v1/usage/monthly?from=2024-01-01T00:00:00Z&to=2024-07-01T00:00:00Z', headers: bearer(owner) });
    expect(monthlyAfter.json()).toEqual(monthlyBefore.json());
    // A window across the cut: what is left, from one table or the other, still as the raw rows say.
    const f = { from: new Date('2024-05-31T10:30:00Z'), to: new Date('2024-06-01T10:30:00Z') };
    expect(await auditStore.usage(db, f)).toEqual(await rawUsage(db, f));
  });
});
